"""Node graphs described once in YAML (config/graphs/*.yaml), brought up two ways.

* `launch/<graph>.launch.py` (a real ROS 2 install): `launch_arguments` declares every
  argument, an OpaqueFunction calls `resolve_graph(name, launch_values(...))` and
  `launch_nodes` turns each `NodeSpec` into a launch_ros Node.
* `swm up <graph> [name:=value ...] [--duration S]` (the pip venv, which has no `launch`):
  one process per node, `python -m swm_ros.ros.<executable> --ros-args ...`.

This module imports neither rclpy nor launch at import time: plain dataclasses and YAML
(the launch_* helpers import `launch` when a launch file calls them).

Graph YAML:
    arguments: {name: {default: "...", description: "..."}}
    namespace: $(var namespace)
    nodes:
      - name: sim_node                       # node name (also the process label)
        executable: sim_node                 # module swm_ros.ros.<executable>
        parameters_file: config/nodes/x.yaml # relative to the package share dir
        parameters: {key: $(var arg)}        # overrides, after the file
        remappings: {from: to}
        condition: $(var use_camera)         # optional: node runs if this is true
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swm_ros.config import ConfigError, load_yaml
from swm_ros.resources import config_path, share_dir

_VAR = re.compile(r"\$\(var ([A-Za-z_][A-Za-z0-9_]*)\)")
_NODE_KEYS = {"name", "executable", "parameters_file", "parameters", "remappings", "condition", "required"}


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str = ""


@dataclass(frozen=True)
class NodeSpec:
    """One node, fully resolved: every value is a plain Python value."""

    name: str
    executable: str
    namespace: str
    parameters_file: Path | None
    parameters: dict[str, Any]
    remappings: dict[str, str]
    required: bool = True          # if it exits, the whole graph is stopped

    @property
    def module(self) -> str:
        return f"swm_ros.ros.{self.executable}"

    def ros_args(self) -> list[str]:
        """The --ros-args part of the command line that runs this node."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for src, dst in self.remappings.items():
            args += ["-r", f"{src}:={dst}"]
        if self.parameters_file is not None:
            args += ["--params-file", str(self.parameters_file)]
        for key, value in self.parameters.items():
            args += ["-p", f"{key}:={format_value(value)}"]
        return args

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", self.module, *self.ros_args()]


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    arguments: dict[str, Argument]
    values: dict[str, Any]             # resolved argument values (typed)
    nodes: list[NodeSpec] = field(default_factory=list)


def format_value(value: Any) -> str:
    """A parameter value for `-p key:=value` (parsed as YAML by rcl): strings stay strings."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return text.removesuffix("...").strip()   # the document-end marker safe_dump adds to scalars


def parse_value(text: str) -> Any:
    """An argument's string as a typed value, as launch would: "true" -> True, "0" -> 0."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return "" if value is None else value


def graph_path(graph: str | Path) -> Path:
    p = Path(graph)
    if p.suffix in (".yaml", ".yml"):
        return p
    return config_path("graphs", f"{graph}.yaml")


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """["name:=value", ...] -> {name: value} (the `ros2 launch` argument syntax)."""
    out = {}
    for item in items or []:
        if ":=" not in item:
            raise ConfigError(f"argument {item!r} is not name:=value")
        name, value = item.split(":=", 1)
        out[name.strip()] = value
    return out


def _substitute(value: Any, values: dict[str, Any], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, values, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    for name in _VAR.findall(value):
        if name not in values:
            raise ConfigError(f"{where}: unknown argument $(var {name}); declared: {sorted(values)}")
    whole = _VAR.fullmatch(value)
    if whole:
        return values[whole.group(1)]
    return _VAR.sub(lambda m: str(values[m.group(1)]), value)


def _truthy(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: condition must resolve to true or false, got {value!r}")


def load_arguments(graph: str | Path) -> tuple[dict[str, Argument], dict[str, Any]]:
    """The declared arguments of a graph, and its raw YAML (for the launch file)."""
    path = graph_path(graph)
    data = load_yaml(path)
    if not isinstance(data, dict) or "nodes" not in data:
        raise ConfigError(f"{path}: a graph needs a `nodes` list")
    args = {}
    for name, spec in (data.get("arguments") or {}).items():
        spec = spec if isinstance(spec, dict) else {"default": spec}
        unknown = set(spec) - {"default", "description"}
        if unknown:
            raise ConfigError(f"{path}: argument {name}: unknown key(s) {sorted(unknown)}")
        default = spec.get("default", "")
        args[name] = Argument(name, "" if default is None else str(default).lower() if isinstance(default, bool)
                              else str(default), str(spec.get("description", "")))
    return args, data


def resolve_graph(graph: str | Path, overrides: dict[str, str] | None = None) -> Graph:
    """Parse a graph YAML and substitute arguments: the one place the graph is interpreted."""
    path = graph_path(graph)
    arguments, data = load_arguments(path)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(arguments))
    if unknown:
        raise ConfigError(f"{path}: unknown argument(s) {unknown}; this graph takes {sorted(arguments)}")
    values = {n: parse_value(overrides.get(n, a.default)) for n, a in arguments.items()}
    namespace = str(_substitute(data.get("namespace", ""), values, "namespace") or "")
    if namespace and not namespace.startswith("/"):
        namespace = "/" + namespace
    root = share_dir()
    nodes = []
    for i, raw in enumerate(data["nodes"]):
        where = f"{path.name}: nodes[{i}]"
        if not isinstance(raw, dict) or not {"name", "executable"} <= set(raw):
            raise ConfigError(f"{where}: a node needs `name` and `executable`")
        bad = set(raw) - _NODE_KEYS
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {sorted(bad)}; allowed {sorted(_NODE_KEYS)}")
        if "condition" in raw and not _truthy(_substitute(raw["condition"], values, f"{where}.condition"),
                                              f"{where}.condition"):
            continue
        pfile = None
        if raw.get("parameters_file"):
            pfile = Path(_substitute(raw["parameters_file"], values, f"{where}.parameters_file"))
            pfile = pfile if pfile.is_absolute() else root / pfile
        nodes.append(NodeSpec(
            name=str(raw["name"]), executable=str(raw["executable"]), namespace=namespace,
            parameters_file=pfile,
            parameters=_substitute(dict(raw.get("parameters") or {}), values, f"{where}.parameters"),
            remappings={str(k): str(v) for k, v in
                        _substitute(dict(raw.get("remappings") or {}), values, f"{where}.remappings").items()},
            required=bool(raw.get("required", True))))
    return Graph(path.stem, str(data.get("description", "")), arguments, values, nodes)


# ----------------------------------------------------------------------------------------
# `swm up`: the pip-venv twin of `ros2 launch`
# ----------------------------------------------------------------------------------------

# ---- for launch files (they run where `launch` exists; imported on call) -------------------
def launch_arguments(graph: str | Path) -> list:
    """A DeclareLaunchArgument for every argument of the graph, with its default and description."""
    from launch.actions import DeclareLaunchArgument

    arguments, _ = load_arguments(graph)
    return [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
            for a in arguments.values()]


def launch_values(graph: str | Path, context) -> dict[str, str]:
    """The graph's argument values as given to `ros2 launch` (inside an OpaqueFunction)."""
    from launch.substitutions import LaunchConfiguration

    arguments, _ = load_arguments(graph)
    return {name: LaunchConfiguration(name).perform(context) for name in arguments}


def launch_nodes(graph: Graph) -> list:
    """One launch_ros Node per node of a resolved graph: parameters file first, then overrides."""
    from launch_ros.actions import Node

    actions = []
    for spec in graph.nodes:
        params = ([str(spec.parameters_file)] if spec.parameters_file else []) + [spec.parameters]
        actions.append(Node(
            package="swm_ros", executable=spec.executable, name=spec.name,
            namespace=spec.namespace or None, parameters=params,
            remappings=list(spec.remappings.items()), output="screen", emulate_tty=True))
    return actions


def stop_graph(procs: dict[str, subprocess.Popen], grace: float = 5.0) -> None:
    """SIGINT each node's process group and wait; escalate to SIGTERM, then SIGKILL, for stragglers."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        alive = {n: p for n, p in procs.items() if p.poll() is None}
        if not alive:
            return
        if sig is not signal.SIGINT:
            print(f"[swm up] {sorted(alive)} still running: sending {sig.name}", flush=True)
        for p in alive.values():
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        for p in alive.values():
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


def start_graph(graph: Graph, python: str = sys.executable, quiet: bool = False,
                log_dir: Path | None = None) -> dict[str, subprocess.Popen]:
    """Start every node as its own process group; stop them with `stop_graph`. Node output goes
    to this terminal, nowhere (`quiet`) or to `<log_dir>/<node>.log`."""
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")   # never multicast on the LAN by default
    env.setdefault("PYTHONUNBUFFERED", "1")
    procs: dict[str, subprocess.Popen] = {}
    for spec in graph.nodes:
        cmd = spec.command(python)
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(log_dir) / f"{spec.name}.log", "wb") as log:       # the child keeps its own handle
                procs[spec.name] = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log,
                                                    stderr=subprocess.STDOUT)
        else:
            out = subprocess.DEVNULL if quiet else None
            procs[spec.name] = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=out, stderr=out)
        if not quiet and log_dir is None:
            print(f"[swm up] {spec.name} pid {procs[spec.name].pid}: {' '.join(cmd[1:])}", flush=True)
    return procs


def run_graph(graph: Graph, duration: float | None = None, python: str = sys.executable) -> int:
    """Start every node as its own process group, forward SIGINT/SIGTERM, wait, report."""
    procs: dict[str, subprocess.Popen] = {}
    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    failed_early: str | None = None
    try:
        procs.update(start_graph(graph, python))
        t_end = None if duration is None else time.monotonic() + duration
        while stopping["signal"] is None and (t_end is None or time.monotonic() < t_end):
            ended = [n for n, p in procs.items() if p.poll() is not None]
            required_end = [n for n in ended if next(s for s in graph.nodes if s.name == n).required]
            if required_end:
                failed_early = required_end[0]
                print(f"[swm up] {failed_early} exited with {procs[failed_early].returncode}: stopping the graph",
                      flush=True)
                break
            if len(ended) == len(procs):
                break
            time.sleep(0.1)
    finally:
        stop_graph(procs)
        for s, h in old.items():
            signal.signal(s, h)
    codes = {n: p.returncode for n, p in procs.items()}
    # a node we stopped with SIGINT/SIGTERM and that exited 0 (or by that signal) ended cleanly
    clean = {n: c in (0, -signal.SIGINT, -signal.SIGTERM) for n, c in codes.items()}
    print("[swm up] exit codes: " + ", ".join(f"{n}={c}" for n, c in codes.items()), flush=True)
    if failed_early is not None:
        return 1
    return 0 if all(clean.values()) else 1


def cli_up(args) -> int:
    try:
        graph = resolve_graph(args.graph, parse_overrides(args.overrides))
    except (ConfigError, FileNotFoundError) as e:
        print(f"swm up: {e}", file=sys.stderr)
        return 2
    print(f"[swm up] graph {graph.name}: {', '.join(n.name for n in graph.nodes)}; "
          + " ".join(f"{k}:={v}" for k, v in graph.values.items()), flush=True)
    return run_graph(graph, args.duration)
