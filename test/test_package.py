"""The package is a well-formed ROS 2 package that both colcon and pip can build and run."""
from __future__ import annotations

import importlib
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cmake_nodes() -> list[str]:
    text = (ROOT / "CMakeLists.txt").read_text()
    m = re.search(r"set\(_nodes ([^)]*)\)", text)
    assert m, "CMakeLists.txt must list the node launchers in set(_nodes ...)"
    return m.group(1).split()


def test_package_xml_is_format_3_and_names_the_package():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "swm_ros"
    assert root.find("export/build_type").text == "ament_cmake"
    assert "rosidl_interface_packages" in [e.text for e in root.findall("member_of_group")]
    assert (ROOT / "resource" / "swm_ros").is_file()


def test_versions_agree():
    version = ET.parse(ROOT / "package.xml").getroot().findtext("version")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    import swm_ros

    assert project["version"] == version == swm_ros.__version__


def test_every_node_has_a_launcher_for_colcon_and_pip():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    cmake_nodes = _cmake_nodes()
    pip_nodes = [name for name, target in scripts.items() if target.startswith("swm_ros.ros.")]
    assert sorted(cmake_nodes) == sorted(pip_nodes)
    for node in cmake_nodes:
        assert scripts[node] == f"swm_ros.ros.{node}:main"
        module = ROOT / "swm_ros" / "ros" / f"{node}.py"
        assert module.is_file(), f"{module} missing"
        assert re.search(r"^def main\(", module.read_text(), re.M), f"{module} has no main()"


def test_interfaces_are_generated_and_importable():
    msg = importlib.import_module("swm_ros.msg")
    srv = importlib.import_module("swm_ros.srv")
    for path in (ROOT / "msg").glob("*.msg"):
        assert hasattr(msg, path.stem), f"swm_ros.msg.{path.stem} was not generated"
    for path in (ROOT / "srv").glob("*.srv"):
        assert hasattr(srv, path.stem), f"swm_ros.srv.{path.stem} was not generated"
    chunk = msg.ActionChunk(action_names=["dx", "dy"], dt=0.1, horizon=1, actions=[0.5, -0.5])
    assert list(chunk.actions) == pytest.approx([0.5, -0.5])


def test_cli_help_does_not_import_heavy_modules():
    import subprocess
    import sys

    code = ("import sys; from swm_ros.cli import build_parser; build_parser(); "
            "bad=[m for m in ('torch','mujoco','rclpy') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
