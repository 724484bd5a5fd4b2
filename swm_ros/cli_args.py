"""Arguments of each `swm` command, keyed by the function that runs it (see cli.COMMANDS)."""
from __future__ import annotations

Arg = tuple[tuple[str, ...], dict]

# where a bag's topics are: the robot profile's names under a namespace, each overridable
BAG_TOPIC_ARGS: list[Arg] = [
    (("--robot",), dict(default="nicol", help="robot profile (camera and joint topic names)")),
    (("--camera",), dict(default="overhead", help="profile camera whose image topic is used")),
    (("--namespace",), dict(default="", help="namespace the graph ran in (prefix of its relative topics)")),
    (("--image-topic",), dict(default=None, help="override: image topic in the bag")),
    (("--world-state-topic",), dict(default=None, help="override: WorldState (labels) topic")),
    (("--action-chunk-topic",), dict(default=None, help="override: ActionChunk topic")),
    (("--joint-states-topic",), dict(default=None, help="override: JointState topic")),
    (("--task-info-topic",), dict(default=None, help="override: TaskInfo topic")),
]

# closed-loop benchmark and ranking: plan a task with another objective
TASK_CONFIG: Arg = (("--task-config",), dict(action="append", default=None, metavar="TASK=YAML",
                                             help="plan a task with this objective instead of "
                                                  "config/tasks/<task>.yaml (repeatable; success is "
                                                  "still the env's check)"))

# world-model evaluation and the label floor: the SAQA rows to read
SAQA_DATA: Arg = (("--data",), dict(default="data/saqa/saqa.h5", help="SAQA file (from swm collect + swm saqa)"))

ARGUMENTS: dict[str, list[Arg]] = {
    "cli_up": [
        (("graph",), dict(help="graph name in config/graphs (e.g. sim) or a path to a graph YAML")),
        (("overrides",), dict(nargs="*", metavar="NAME:=VALUE", help="launch arguments, as with ros2 launch")),
        (("--duration",), dict(type=float, default=None, help="stop the graph after this many seconds")),
    ],
    "cli_demo": [
        (("--episodes",), dict(type=int, default=3, help="seeded episodes per method")),
        (("--task",), dict(default="reach", help="task family")),
        (("--methods",), dict(default="base,swm", help="comma list: base (policy alone), swm (with the planner)")),
        (("--policy",), dict(default="learned", help="base policy: learned (the shipped one) | noisy | scripted | random")),
        (("--planner",), dict(default="grad", help="planner config for swm: grad | mppi | cem | rank")),
        (("--out",), dict(default="runs/demo", help="report directory")),
    ],
    "cli_bench_planner": [
        (("--model",), dict(default="config/models/tiny.yaml", help="model config YAML (fresh weights) or checkpoint")),
        (("--methods",), dict(default="grad,mppi,cem,rank", help="comma list of planning methods")),
        (("--threads",), dict(type=int, default=2, help="torch CPU threads")),
        (("--repeats",), dict(type=int, default=10, help="timed plans per method")),
        (("--proposals",), dict(type=int, default=4, help="base-policy proposals per plan")),
        (("--json",), dict(action="store_true", help="print one JSON object")),
        (("--out",), dict(default="runs/bench/planner.json", help="where to write the figures")),
    ],
    "cli_bench_env": [
        (("--json",), dict(action="store_true", help="print one JSON object")),
        (("--out",), dict(default="runs/bench/env.json", help="where to write the figures")),
        (("--frames",), dict(type=int, default=300, help="frames per resolution")),
    ],
    "cli_eval_closed_loop": [
        (("--env",), dict(default="nicol_tabletop", help="nicol_tabletop, or an OGBench cube env (ogbench-cube-single)")),
        (("--tasks",), dict(default=None, help="comma list of tasks (default: all of the env's)")),
        (("--methods",), dict(default="base,swm-grad,swm-mppi,swm-cem,swm-rank,scripted",
                              help="comma list: base, swm-grad, swm-mppi, swm-cem, swm-rank, scripted, "
                                   "oracle-rank (the simulator as world model)")),
        (("--seeds",), dict(type=int, default=50, help="episodes per (task, split, method)")),
        (("--first-seed",), dict(type=int, default=None, help="env seed of the first episode (default 100000, the "
                                                              "benchmark's scenes); another gives other scenes")),
        (("--split",), dict(default="both", choices=["id", "ood", "both"], help="nominal scenes, OOD variants or both")),
        (("--checkpoint",), dict(default=None, help="world-model checkpoint (default: the shipped tiny model)")),
        (("--policy",), dict(default=None, help="base policy that proposes chunks (default: the env's: "
                                                 "learned on NicoL, ogbench_misaligned on OGBench)")),
        (("--num-proposals",), dict(type=int, default=8, help="base-policy proposals per plan")),
        (("--execute-steps",), dict(type=int, default=8, help="actions executed before replanning")),
        (("--max-steps",), dict(type=int, default=None, help="step budget per episode (default: the task's)")),
        (("--planner-config",), dict(action="append", default=None, metavar="METHOD=YAML",
                                     help="run a swm-* method with this planner config instead of "
                                          "config/planner/<opt>.yaml (repeatable)")),
        TASK_CONFIG,
        (("--threads",), dict(type=int, default=2, help="torch CPU threads")),
        (("--out",), dict(default="runs/closed_loop", help="results directory (resumable)")),
        (("--json",), dict(action="store_true", help="print the summary as one JSON object")),
    ],
    "cli_eval_ranking": [
        (("--tasks",), dict(default="push,separate", help="comma list of NicoL tasks")),
        (("--seeds",), dict(type=int, default=20, help="episodes per task")),
        (("--first-seed",), dict(type=int, default=200_000, help="env seed of the first episode (default: not "
                                                                 "the closed-loop benchmark's scenes)")),
        (("--num-proposals",), dict(type=int, default=8, help="base-policy proposals per replan")),
        (("--checkpoint",), dict(default=None, help="world-model checkpoint (default: the shipped tiny model)")),
        (("--planner",), dict(default="grad", help="planner config driving the episodes: a name under "
                                                   "config/planner/ or a YAML path")),
        TASK_CONFIG,
        (("--min-spread",), dict(type=float, default=0.05, help="count a replan only where the oracle's scores "
                                                                "of the proposals differ by more than this")),
        (("--threads",), dict(type=int, default=1, help="torch CPU threads")),
        (("--out",), dict(default="runs/ranking", help="directory for ranking.json and ranking.md")),
        (("--json",), dict(action="store_true", help="print the summary as one JSON object")),
    ],
    "cli_eval_label_floor": [
        SAQA_DATA,
        (("--split",), dict(default="test", help="split whose rows to replay")),
        (("--rows",), dict(type=int, default=2000, help="rows drawn (seeded)")),
        (("--sigma-mm",), dict(default="1.5", help="perturbation scales in millimetres, comma list (one floor "
                                                    "each, on the same draws; several also plot label_floor.png)")),
        (("--perturbations",), dict(type=int, default=4, help="perturbed starts per row")),
        (("--mode",), dict(default="blocks", choices=["blocks", "command"],
                           help="shift the objects, or the arm's set-point the actions integrate from")),
        (("--seed",), dict(type=int, default=0, help="row draw and perturbation seed")),
        (("--out",), dict(default="runs/label_floor", help="directory for label_floor.json and label_floor.md")),
        (("--json",), dict(action="store_true", help="print the summary as one JSON object")),
    ],
    "cli_eval_future_states": [
        (("--run",), dict(required=True, help="run directory trained with future_state_loss_weight > 0")),
        (("--data",), dict(default="data/saqa/saqa_6400.h5", help="SAQA file (from swm collect + swm saqa)")),
        (("--split",), dict(default="val", help="split whose rows to read")),
        (("--rows",), dict(type=int, default=768, help="rows drawn (seeded, family-balanced)")),
        (("--seed",), dict(type=int, default=0, help="row draw seed")),
        (("--threads",), dict(type=int, default=1, help="torch CPU threads")),
        (("--out",), dict(default="runs/future_states", help="directory for future_states.json and .md")),
        (("--json",), dict(action="store_true", help="print the summary as one JSON object")),
    ],
    "cli_eval_world_model": [
        (("--checkpoint",), dict(default=None, help="checkpoint directory (default: the shipped model of --backend)")),
        (("--backend",), dict(default="tiny", help="backend whose shipped weights to evaluate without --checkpoint")),
        SAQA_DATA,
        (("--split",), dict(default="test", choices=["train", "val", "test", "ood"], help="rows to evaluate")),
        (("--max-rows",), dict(type=int, default=None, help="evaluate a seeded random subset of this many rows")),
        (("--out",), dict(default="runs/eval", help="directory for the JSON, Markdown and reliability plot")),
        (("--threads",), dict(type=int, default=2, help="torch CPU threads")),
        (("--json",), dict(action="store_true", help="print the result as one JSON object")),
    ],
    "cli_collect": [
        (("--out",), dict(required=True, help="output directory (episodes/ and manifest.json)")),
        (("--episodes",), dict(type=int, default=10, help="episodes in the collection (existing ones are skipped)")),
        (("--tasks",), dict(default="push", help="comma list: reach,push,separate,pick,stack")),
        (("--variants",), dict(default="nominal", help="comma list: nominal,ood_colors,ood_table,ood_distractor")),
        (("--policies",), dict(default="scripted", help="mix with weights, e.g. scripted:0.4,noisy:0.4,random:0.2")),
        (("--workers",), dict(type=int, default=1, help="parallel worker processes, one env each")),
        (("--image-size",), dict(default="64x64", help="stored frame size (after crop + resize), e.g. 64 or 64x64")),
        (("--render-size",), dict(default="240x320", help="HxW rendered before crop + resize (4:3 like the "
                                                          "RealSense); 'none' stores rendered image-size frames")),
        (("--no-crop",), dict(action="store_true", help="resize the whole frame (no crop to the profile's camera roi)")),
        (("--cameras",), dict(default="overhead", help="comma list of cameras to record")),
        (("--max-steps",), dict(type=int, default=None, help="steps per episode (default: the task's)")),
        (("--seed",), dict(type=int, default=0, help="collection seed")),
        (("--robot",), dict(default="nicol", help="robot profile")),
        (("--replan-every",), dict(type=int, default=None, help="actions executed per proposed chunk")),
        (("--compression",), dict(default="lzf", help="image compression: lzf, gzip[:level] or none")),
    ],
    "cli_collect_branches": [
        (("--out",), dict(required=True, help="output directory (episodes/ and manifest.json)")),
        (("--episodes",), dict(type=int, default=10, help="source episodes (existing ones are skipped)")),
        (("--tasks",), dict(default="push", help="comma list: reach,push,separate,pick,stack")),
        (("--variants",), dict(default="nominal", help="comma list: nominal,ood_colors,ood_table,ood_distractor")),
        (("--method",), dict(default="swm-grad", help="planner driving the source episodes (swm-grad, swm-rank, ...)")),
        (("--checkpoint",), dict(default=None, help="world model the planner uses (default: the shipped one)")),
        (("--num-proposals",), dict(type=int, default=8, help="base-policy proposals per replan")),
        (("--execute-steps",), dict(type=int, default=8, help="actions of the chosen chunk executed per replan")),
        (("--branch-every",), dict(type=int, default=1, help="branch at every k-th replan")),
        (("--branch-steps",), dict(type=int, default=16, help="actions per branch")),
        (("--max-steps",), dict(type=int, default=None, help="steps per source episode (default: the task's)")),
        (("--workers",), dict(type=int, default=1, help="parallel worker processes, one env and model each")),
        (("--image-size",), dict(default="64x64", help="stored frame size (after crop + resize)")),
        (("--seed",), dict(type=int, default=0, help="collection seed (source episode i is fixed by seed and i)")),
    ],
    "cli_saqa": [
        (("--episodes",), dict(required=True, help="collection directory (from swm collect)")),
        (("--out",), dict(default=None, help="SAQA file (default: <episodes>/saqa.h5)")),
        (("--first-episodes",), dict(type=int, default=None, help="use only the collection's first N episodes "
                                     "(the rows of a build when it held N)")),
        (("--config",), dict(default=None, help="SAQA config YAML (e.g. config/saqa/default.yaml)")),
        (("--seed",), dict(type=int, default=None, help="sampling seed")),
        (("--horizons-per-start",), dict(type=int, default=None, help="horizons per start frame (8)")),
        (("--max-horizon",), dict(type=int, default=None, help="longest horizon (60)")),
        (("--subjects-per-family",), dict(type=int, default=None, help="subjects per (t, h) and family (1)")),
        (("--families",), dict(default=None, help="comma list of question families (default: all)")),
        (("--json",), dict(action="store_true", help="also print the report as one JSON object")),
    ],
    "cli_train_world_model": [
        (("--config",), dict(default="config/train/world_model_tiny.yaml", help="training config YAML")),
        (("--out",), dict(default=None, help="run / checkpoint directory (default: the config's out)")),
        (("--resume",), dict(action="store_true", help="continue from the checkpoint in --out at its saved step")),
        (("--steps",), dict(type=int, default=None, help="override the config's total steps")),
        (("--seed",), dict(type=int, default=None, help="override the config's seed (e.g. ensemble members)")),
        (("--stop-at",), dict(type=int, default=None, help="end this run after this step (resume later)")),
        (("--no-progress",), dict(action="store_true", help="no progress bar")),
    ],
    "cli_ensemble": [
        (("members",), dict(nargs="+", help="world-model checkpoint directories (at least 2)")),
        (("--out",), dict(required=True, help="directory for the ensemble (member_0, member_1, ... and config.yaml)")),
        (("--average-weights",), dict(action="store_true", help="write the members' weight average as one "
                                      "ordinary checkpoint instead (members fine-tuned from one checkpoint)")),
    ],
    "cli_train_policy": [
        (("--config",), dict(default="config/train/policy_flow.yaml", help="training config YAML")),
        (("--out",), dict(default=None, help="run / checkpoint directory (default: the config's out)")),
        (("--data",), dict(default=None, help="override the config's data.path (a swm collect directory)")),
        (("--resume",), dict(action="store_true", help="continue from the checkpoint in --out at its saved step")),
        (("--steps",), dict(type=int, default=None, help="override the config's total steps")),
        (("--stop-at",), dict(type=int, default=None, help="end this run after this step (resume later)")),
        (("--no-progress",), dict(action="store_true", help="no progress bar")),
    ],
    "cli_eval_policy": [
        (("--policy",), dict(default="learned", help="learned, scripted, noisy or random")),
        (("--checkpoint",), dict(default=None, help="learned policy checkpoint directory (default: shipped)")),
        (("--tasks",), dict(default="reach,push,separate,pick,stack", help="comma list of tasks")),
        (("--episodes",), dict(type=int, default=20, help="episodes per task")),
        (("--variant",), dict(default="nominal", help="scene variant")),
        (("--seed",), dict(type=int, default=100000, help="first episode seed")),
        (("--execute",), dict(type=int, default=8, help="actions executed per proposed chunk")),
        (("--threads",), dict(type=int, default=2, help="torch CPU threads")),
        (("--out",), dict(default=None, help="report JSON (default runs/eval_policy/<policy>_<variant>.json)")),
        (("--json",), dict(action="store_true", help="also print the report as one JSON object")),
        (("--no-progress",), dict(action="store_true", help="no progress bar")),
    ],
    "cli_bag_record": [
        (("--out",), dict(default="", help="bag directory to create (default runs/bags/<date-time>)")),
        (("--topics",), dict(default="", help="comma list of topics (default: the graph's topics)")),
        (("--all",), dict(action="store_true", help="record every topic that appears")),
        (("--exclude",), dict(default="", help="comma list of topics not to record (with --all)")),
        (("--duration",), dict(type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")),
        (("--use-sim-time",), dict(action="store_true", help="timestamps from /clock")),
        (("--robot",), dict(default="nicol", help="robot profile (its camera / controller topics)")),
        (("--namespace",), dict(default="", help="namespace of the graph")),
    ],
    "cli_bag_replay": [
        (("bag",), dict(help="rosbag2 directory or .mcap file")),
        (("--rate",), dict(type=float, default=1.0, help="speed factor; 0 = as fast as possible")),
        (("--topics",), dict(default="", help="comma list of topics to publish (default: all)")),
        (("--remap",), dict(action="append", metavar="FROM:=TO", help="topic remapping, repeatable")),
        (("--no-clock",), dict(action="store_true", help="do not publish /clock")),
        (("--min-subscribers",), dict(type=int, default=1, help="handshake: subscribers per topic before starting")),
        (("--wait-timeout",), dict(type=float, default=5.0, help="s to wait for the handshake")),
        (("--allow-partial",), dict(action="store_true", help="play what a damaged bag holds")),
    ],
    "cli_bag_info": [
        (("bag",), dict(help="rosbag2 directory or .mcap file")),
        (("--count",), dict(action="store_true", help="read every message and check the counts")),
        (("--allow-partial",), dict(action="store_true", help="report damage instead of failing")),
        (("--json",), dict(action="store_true", help="print JSON")),
    ],
    "cli_bag_to_episodes": [
        (("bag",), dict(help="rosbag2 directory")),
        (("--out",), dict(required=True, help="collection directory to write (episodes/ + manifest.json)")),
        (("--compression",), dict(default="lzf", help="image compression: lzf, gzip[:level] or none")),
    ] + BAG_TOPIC_ARGS,
    "cli_bag_from_episodes": [
        (("episodes",), dict(nargs="+", help="episode files or collection directories")),
        (("--out",), dict(required=True, help="bag directory to create")),
    ] + BAG_TOPIC_ARGS,
    "cli_bag_eval": [
        (("bag",), dict(help="rosbag2 directory with images, world_state, action_chunk, joint states")),
        (("--checkpoint",), dict(default=None, help="world-model checkpoint directory (default: shipped tiny)")),
        (("--out",), dict(default="runs/bag_eval", help="report directory (report.md, report.json, plots)")),
        (("--horizons-per-start",), dict(type=int, default=2, help="horizons per frame (h=0 included)")),
        (("--max-horizon",), dict(type=int, default=16, help="longest question horizon, actions")),
        (("--stride",), dict(type=int, default=1, help="evaluate every k-th frame")),
        (("--max-frames",), dict(type=int, default=0, help="stop after this many frames (0: all)")),
        (("--max-seconds",), dict(type=float, default=0.0, help="read and evaluate only the bag's first "
                                                               "seconds (0: all)")),
        (("--seed",), dict(type=int, default=0, help="question sampling seed")),
        (("--planner",), dict(default=None, help="also plan from the recorded frames with this planner config "
                                                 "(grad, mppi, cem, rank or a YAML) and report agreement with the "
                                                 "recorded actions")),
        (("--policy",), dict(default="learned", help="base policy proposing chunks to the planner")),
        (("--proposals",), dict(type=int, default=8, help="chunks proposed per plan")),
        (("--plan-every",), dict(type=int, default=8, help="frames between plans")),
        (("--graph",), dict(action="store_true", help="plan through the ROS 2 graph instead (config/graphs/"
                                                      "replay.yaml: player -> policy -> planner -> controller in "
                                                      "shadow mode, separate processes over DDS); --planner "
                                                      "(default grad), --policy and --proposals apply")),
        (("--rate",), dict(type=float, default=1.0, help="--graph: playback speed factor")),
        (("--execute-steps",), dict(type=int, default=8, help="--graph: actions per plan (receding horizon)")),
        (("--json",), dict(action="store_true", help="print a JSON summary")),
    ] + BAG_TOPIC_ARGS,
    "cli_bench_scoring": [
        (("--json",), dict(action="store_true", help="print one JSON object")),
        (("--out",), dict(default="runs/bench/scoring.json", help="where to write the figures")),
        (("--checkpoint",), dict(default=None, help="world-model checkpoint (default: shipped tiny, else untrained)")),
        (("--batch",), dict(type=int, default=64, help="candidate chunks per call")),
        (("--steps",), dict(type=int, default=16, help="action steps per candidate")),
        (("--threads",), dict(type=int, default=2, help="CPU threads for torch and onnxruntime")),
        (("--repeats",), dict(type=int, default=20, help="timed calls of each (the median is reported)")),
    ],
    "cli_bench_bags": [
        (("--json",), dict(action="store_true", help="print one JSON object")),
        (("--out",), dict(default="runs/bench/bags.json", help="where to write the figures")),
        (("--sim-seconds",), dict(type=float, default=300.0, help="simulated seconds to record")),
        (("--speed",), dict(type=float, default=2.0, help="sim seconds per wall second while recording")),
        (("--image-rate",), dict(type=float, default=30.0, help="image rate, Hz of sim time")),
        (("--image-size",), dict(type=int, default=224, help="square image size, px")),
        (("--eval-seconds",), dict(type=float, default=60.0, help="bag seconds the replay evaluation covers")),
        (("--eval-threads",), dict(type=int, default=2, help="torch threads of the replay evaluation")),
        (("--checkpoint",), dict(default=None, help="world-model checkpoint (default: shipped tiny, else untrained)")),
        (("--keep",), dict(action="store_true", help="keep the recorded bag (runs/bench/bags_bench_bag)")),
    ],
}
