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
}
