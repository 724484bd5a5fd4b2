"""Arguments of each `swm` command, keyed by the function that runs it (see cli.COMMANDS)."""
from __future__ import annotations

Arg = tuple[tuple[str, ...], dict]

ARGUMENTS: dict[str, list[Arg]] = {
    "cli_up": [
        (("graph",), dict(help="graph name in config/graphs (e.g. sim) or a path to a graph YAML")),
        (("overrides",), dict(nargs="*", metavar="NAME:=VALUE", help="launch arguments, as with ros2 launch")),
        (("--duration",), dict(type=float, default=None, help="stop the graph after this many seconds")),
    ],
    "cli_demo": [
        (("--episodes",), dict(type=int, default=3, help="seeded episodes to run")),
        (("--task",), dict(default="push", help="task family")),
        (("--out",), dict(default="runs/demo", help="report directory")),
    ],
    "cli_bench_env": [
        (("--json",), dict(action="store_true", help="print one JSON object")),
        (("--out",), dict(default="runs/bench/env.json", help="where to write the figures")),
        (("--frames",), dict(type=int, default=300, help="frames per resolution")),
    ],
    "cli_collect": [
        (("--out",), dict(required=True, help="output directory (episodes/ and manifest.json)")),
        (("--episodes",), dict(type=int, default=10, help="episodes in the collection (existing ones are skipped)")),
        (("--tasks",), dict(default="push", help="comma list: reach,push,separate,pick,stack")),
        (("--variants",), dict(default="nominal", help="comma list: nominal,ood_colors,ood_table,ood_distractor")),
        (("--policies",), dict(default="scripted", help="mix with weights, e.g. scripted:0.4,noisy:0.4,random:0.2")),
        (("--workers",), dict(type=int, default=1, help="parallel worker processes, one env each")),
        (("--image-size",), dict(default="64x64", help="camera image size, e.g. 64 or 64x64")),
        (("--cameras",), dict(default="overhead", help="comma list of cameras to record")),
        (("--max-steps",), dict(type=int, default=None, help="steps per episode (default: the task's)")),
        (("--seed",), dict(type=int, default=0, help="collection seed")),
        (("--robot",), dict(default="nicol", help="robot profile")),
        (("--replan-every",), dict(type=int, default=None, help="actions executed per proposed chunk")),
        (("--compression",), dict(default="lzf", help="image compression: lzf, gzip[:level] or none")),
    ],
    "cli_saqa": [
        (("--episodes",), dict(required=True, help="collection directory (from swm collect)")),
        (("--out",), dict(default=None, help="SAQA file (default: <episodes>/saqa.h5)")),
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
        (("--stop-at",), dict(type=int, default=None, help="end this run after this step (resume later)")),
        (("--no-progress",), dict(action="store_true", help="no progress bar")),
    ],
}
