"""launch/sim.launch.py without `launch` (not installable from PyPI): parsed with ast, then run
against small recording stand-ins for the four launch classes it uses, so that what it
would hand to `ros2 launch` is checked against config/graphs/sim.yaml, the node modules
and what CMakeLists.txt installs."""
from __future__ import annotations

import ast
import importlib
import re
import sys
import types
from pathlib import Path

import pytest

from swm_ros.graph import load_arguments

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "sim.launch.py"


def test_launch_file_imports_only_launch_and_the_graph_module() -> None:
    tree = ast.parse(LAUNCH.read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules <= {"launch", "launch.actions", "launch.substitutions", "launch_ros.actions", "swm_ros.graph"}
    graph = [n.value.value for n in tree.body if isinstance(n, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == "GRAPH" for t in n.targets)]
    assert graph == ["sim"] and (REPO / "config" / "graphs" / "sim.yaml").is_file()
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions


def test_cmake_installs_launch_and_config() -> None:
    cmake = (REPO / "CMakeLists.txt").read_text()
    m = re.search(r"install\(DIRECTORY ([^)]*?) DESTINATION share/\$\{PROJECT_NAME\}\)", cmake)
    assert m and {"launch", "config"} <= set(m.group(1).split())


class _Recorded:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: dict[str, str]) -> str:
        return context[self.name]


@pytest.fixture
def launch_module(monkeypatch):
    """sim.launch.py imported with stand-ins for launch / launch_ros (recording constructor calls)."""
    stand_ins = {
        "launch": {"LaunchDescription": _Recorded},
        "launch.actions": {"DeclareLaunchArgument": _Recorded, "OpaqueFunction": _Recorded},
        "launch.substitutions": {"LaunchConfiguration": _LaunchConfiguration},
        "launch_ros": {}, "launch_ros.actions": {"Node": _Recorded},
    }
    for name, attrs in stand_ins.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("sim_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cmake_nodes() -> set[str]:
    return set(re.search(r"set\(_nodes ([^)]*)\)", (REPO / "CMakeLists.txt").read_text()).group(1).split())


@pytest.mark.parametrize("overrides", [{}, {"namespace": "robot1", "use_sim_time": "true", "real_time_factor": "0",
                                            "dry_run": "true"}])
def test_launch_declares_every_argument_and_starts_every_node(launch_module, overrides) -> None:
    arguments, _ = load_arguments("sim")
    ld = launch_module.generate_launch_description()
    actions = ld.args[0]
    declared = {a.args[0]: a.kwargs for a in actions if "default_value" in a.kwargs}
    assert set(declared) == set(arguments), "every graph argument must be a launch argument"
    for name, arg in arguments.items():
        assert declared[name]["default_value"] == arg.default and declared[name]["description"]
    opaque = [a for a in actions if "function" in a.kwargs]
    assert len(opaque) == 1

    context = {name: arg.default for name, arg in arguments.items()} | overrides
    nodes = opaque[0].kwargs["function"](context)
    assert [n.kwargs["name"] for n in nodes] == ["sim_node", "policy_node", "controller_node"]
    for node in nodes:
        kw = node.kwargs
        assert kw["package"] == "swm_ros" and kw["executable"] in _cmake_nodes()
        params_file, params = Path(kw["parameters"][0]), kw["parameters"][1]
        assert params_file.is_file() and params_file.parent.parent.name == "config", params_file
        declared_params = set(importlib.import_module(f"swm_ros.ros.{kw['executable']}").PARAMETERS) | {"use_sim_time"}
        assert set(params) <= declared_params
        assert kw["namespace"] == ("/robot1" if overrides else None)
    by = {n.kwargs["name"]: n.kwargs["parameters"][1] for n in nodes}
    if overrides:
        assert by["sim_node"]["publish_clock"] is True and by["sim_node"]["real_time_factor"] == 0
        assert by["controller_node"]["use_sim_time"] is True and by["controller_node"]["dry_run"] is True
