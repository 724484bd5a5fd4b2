"""One graph description (config/graphs/sim.yaml) for `ros2 launch` and `swm up`."""
from __future__ import annotations

import importlib
import subprocess
import sys
import time

import pytest
import yaml

from swm_ros.config import ConfigError
from swm_ros.graph import format_value, parse_overrides, resolve_graph
from swm_ros.resources import share_dir

ROS_BUILTIN = {"use_sim_time"}   # declared by rclpy on every node


def _declared(executable: str) -> set[str]:
    return set(importlib.import_module(f"swm_ros.ros.{executable}").PARAMETERS) | ROS_BUILTIN


def test_sim_graph_resolves_with_defaults() -> None:
    g = resolve_graph("sim")
    assert [n.name for n in g.nodes] == ["sim_node", "policy_node", "controller_node"]
    assert g.values["robot"] == "nicol" and g.values["seed"] == 0 and g.values["use_sim_time"] is False
    sim = g.nodes[0]
    assert sim.parameters["publish_clock"] is False and sim.parameters["task"] == "push"
    assert sim.namespace == "" and sim.module == "swm_ros.ros.sim_node"


def test_overrides_are_typed_and_substituted() -> None:
    g = resolve_graph("sim", parse_overrides(["seed:=7", "use_sim_time:=true", "namespace:=robot1",
                                              "policy:=noisy", "dry_run:=true"]))
    by = {n.name: n for n in g.nodes}
    assert by["sim_node"].parameters["seed"] == 7
    assert by["sim_node"].parameters["publish_clock"] is True
    assert by["policy_node"].parameters["use_sim_time"] is True
    assert by["policy_node"].parameters["policy"] == "noisy"
    assert by["controller_node"].parameters["dry_run"] is True
    assert all(n.namespace == "/robot1" for n in g.nodes)
    args = by["controller_node"].ros_args()
    assert args[:3] == ["--ros-args", "-r", "__node:=controller_node"] and "__ns:=/robot1" in args
    assert "dry_run:=true" in args


def test_unknown_argument_and_bad_syntax_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown argument"):
        resolve_graph("sim", {"robto": "nicol"})
    with pytest.raises(ConfigError, match="name:=value"):
        parse_overrides(["seed=3"])


def test_every_file_exists_and_every_override_is_declared() -> None:
    g = resolve_graph("sim")
    for node in g.nodes:
        declared = _declared(node.executable)
        assert node.parameters_file is not None and node.parameters_file.is_file(), node.parameters_file
        data = yaml.safe_load(node.parameters_file.read_text())
        assert list(data) == ["/**"], "parameter files must use /** so namespaces work"
        from_file = set(data["/**"]["ros__parameters"])
        assert from_file <= declared, f"{node.name}: {from_file - declared} not declared"
        assert set(node.parameters) <= declared, f"{node.name}: {set(node.parameters) - declared} not declared"
    # every node parameter file, including nodes only other graphs use
    for f in (share_dir() / "config" / "nodes").glob("*.yaml"):
        data = yaml.safe_load(f.read_text())
        assert set(data["/**"]["ros__parameters"]) <= _declared(f.stem), f


def test_launch_file_reads_the_same_graph() -> None:
    text = (share_dir() / "launch" / "sim.launch.py").read_text()
    # arguments declared through swm_ros.graph.launch_arguments (DeclareLaunchArgument per argument)
    assert "resolve_graph" in text and "launch_arguments" in text and "OpaqueFunction" in text
    compile(text, "sim.launch.py", "exec")   # `launch` is not installable here; at least it parses


def test_format_value_keeps_types_for_rcl() -> None:
    assert format_value("1") == "'1'" and format_value(1) == "1" and format_value(True) == "true"
    assert format_value("") == "''" and format_value(["overhead"]) == "[overhead]"


@pytest.mark.ros
@pytest.mark.slow
def test_swm_up_sim_brings_the_graph_up_and_exits_0(ros_env) -> None:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "swm_ros.cli", "up", "sim", "--duration", "8"], env=ros_env,
                         capture_output=True, text=True, timeout=90)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "exit codes: sim_node=0, policy_node=0, controller_node=0" in log, log
    for node in ("sim_node", "policy_node", "controller_node"):
        assert f"[{node}]" in log, f"{node} never logged\n{log}"
    assert time.monotonic() - t0 < 30


def test_swm_up_reports_a_failing_node(ros_env) -> None:
    out = subprocess.run([sys.executable, "-m", "swm_ros.cli", "up", "sim", "robot:=no_such_robot",
                          "--duration", "20"], env=ros_env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "no robot profile" in out.stdout + out.stderr
