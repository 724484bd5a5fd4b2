"""`swm`: the user CLI for the offline work and for bringing the graph up without `ros2 launch`.

Each subcommand lives in its own module and is imported only when called, so `swm --help`
stays fast and a missing optional dependency only affects the command that needs it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command path -> (module, function, help). The function takes the parsed args.
COMMANDS: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("up",): ("swm_ros.graph", "cli_up", "bring a node graph up (the pip-venv twin of `ros2 launch`)"),
    ("demo",): ("swm_ros.demo", "cli_demo", "run the simulated demo and write a report to runs/demo"),
    ("collect",): ("swm_ros.data.collect", "cli_collect", "collect seeded episodes from base policies"),
    ("collect-branches",): ("swm_ros.data.branches", "cli_collect_branches",
                            "counterfactual episodes: every candidate chunk from the planner's states"),
    ("saqa",): ("swm_ros.saqa.build", "cli_saqa", "build SAQA question rows from collected episodes"),
    ("bench", "env"): ("swm_ros.benchmarks.env_bench", "cli_bench_env", "rendering and physics throughput"),
    ("bench", "planner"): ("swm_ros.planning.bench", "cli_bench_planner", "planning time per chunk, per method"),
    ("train", "world-model"): ("swm_ros.models.train", "cli_train_world_model", "train a world model on SAQA rows"),
    ("ensemble",): ("swm_ros.models.ensemble", "cli_ensemble",
                    "combine world-model checkpoints: an ensemble (mean log-probability) or their weight average"),
    ("train", "policy"): ("swm_ros.policies.learned.train", "cli_train_policy", "train the learned base policy on episodes"),
    ("eval", "policy"): ("swm_ros.policies.learned.evaluate", "cli_eval_policy", "closed-loop success rate of a base policy per task"),
    ("eval", "closed-loop"): ("swm_ros.evaluation.closed_loop", "cli_eval_closed_loop",
                              "success of base policy vs SWM planner in simulation, ID and OOD"),
    ("eval", "world-model"): ("swm_ros.evaluation.world_model_eval", "cli_eval_world_model",
                              "answer accuracy, per family / horizon, calibration of a world model"),
    ("eval", "ranking"): ("swm_ros.evaluation.ranking", "cli_eval_ranking",
                          "does the world model rank the base policy's proposals as the simulator does"),
    ("eval", "label-floor"): ("swm_ros.evaluation.label_floor", "cli_eval_label_floor",
                              "how much of a SAQA split one frame can decide (replayed, perturbed starts)"),
    ("eval", "future-states"): ("swm_ros.evaluation.future_state_eval", "cli_eval_future_states",
                                "how much of the blocks' and hand's motion a run's action tokens predict"),
    ("bag", "record"): ("swm_ros.bags.cli", "cli_bag_record", "record graph topics into a rosbag2 bag (MCAP, v9)"),
    ("bag", "replay"): ("swm_ros.bags.cli", "cli_bag_replay", "publish a bag into the graph (raw, paced, /clock)"),
    ("bag", "eval"): ("swm_ros.bags.cli", "cli_bag_eval", "run a bag's frames through a world model and score it"),
    ("bag", "info"): ("swm_ros.bags.cli", "cli_bag_info", "list a bag's topics, types, counts and QoS"),
    ("bag", "to-episodes"): ("swm_ros.bags.cli", "cli_bag_to_episodes", "convert a labelled bag into episode files"),
    ("bag", "from-episodes"): ("swm_ros.bags.cli", "cli_bag_from_episodes", "convert episode files into a bag"),
    ("bench", "bags"): ("swm_ros.benchmarks.bags_bench", "cli_bench_bags", "bag recording and replay-eval throughput"),
    ("bench", "scoring"): ("swm_ros.benchmarks.scoring_bench", "cli_bench_scoring",
                           "candidate chunks scored per second, torch vs onnxruntime"),
}

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, (module, func, help_) in COMMANDS.items():
        if len(path) == 1:
            p = sub.add_parser(path[0], help=help_)
        else:
            if path[0] not in groups:
                g = sub.add_parser(path[0], help=f"{path[0]} commands")
                groups[path[0]] = g.add_subparsers(dest="subcommand", required=True)
            p = groups[path[0]].add_parser(path[1], help=help_)
        p.set_defaults(_target=(module, func))
        _add_arguments(p, module, func)
    return parser


def _add_arguments(parser: argparse.ArgumentParser, module: str, func: str) -> None:
    # Arguments live in cli_args.ARGUMENTS[func], a light module, so that building the
    # parser (and `swm --help`) never imports torch, mujoco or rclpy.
    from swm_ros import cli_args

    for flags, kwargs in cli_args.ARGUMENTS.get(func, []):
        parser.add_argument(*flags, **kwargs)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, func = args._target
    fn = getattr(importlib.import_module(module), func)
    rc = fn(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
