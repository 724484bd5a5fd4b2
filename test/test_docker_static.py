"""docker/Dockerfile and docker/compose.yaml, checked statically (no Docker engine runs here).

Every file the Dockerfile copies exists, the build is colcon on ros:jazzy with torch pinned,
and every compose service runs an executable, launch file, parameter file and parameters
that this package really has.
"""
from __future__ import annotations

import importlib
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
SHARE_IN_IMAGE = "/ws/install/swm_ros/share/swm_ros/"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _cmake_nodes() -> list[str]:
    return re.search(r"set\(_nodes ([^)]*)\)", (ROOT / "CMakeLists.txt").read_text()).group(1).split()


def test_dockerfile_builds_this_package_with_colcon_on_ros_jazzy() -> None:
    ins = _instructions()
    assert ins[0] == ("FROM", "ros:jazzy")
    run = " ".join(a for w, a in ins if w == "RUN")
    assert "colcon build" in run and "rosdep install --from-paths src" in run
    assert "torch==2.13.0" in run and "torchvision" not in run, "torch pinned, never torchvision"
    assert "ros-jazzy-xacro" in run and "ros-jazzy-gz-ros2-control" in run
    args = {a.split("=")[0] for w, a in ins if w == "ARG"}
    assert {"TORCH_INDEX", "GAZEBO"} <= args
    for word, rest in ins:
        if word == "COPY":
            for src in shlex.split(rest)[:-1]:
                if not src.startswith("--"):
                    assert (ROOT / src).exists(), f"COPY {src}: not in the build context"
    entry = [a for w, a in ins if w == "ENTRYPOINT"][0]
    script = ROOT / "docker" / Path(yaml.safe_load(entry)[0]).name
    assert script.is_file() and os.access(script, os.X_OK)
    assert "source /ws/install/setup.bash" in script.read_text() and 'exec "$@"' in script.read_text()
    cmd = yaml.safe_load([a for w, a in ins if w == "CMD"][0])
    assert cmd[:3] == ["ros2", "launch", "swm_ros"] and (ROOT / "launch" / cmd[3]).is_file()


def test_compose_services_build_from_this_repository() -> None:
    services = COMPOSE["services"]
    assert {s for svc in services.values() for s in svc["profiles"]} == {"robot", "gpu", "gazebo"}
    for name, svc in services.items():
        assert svc["network_mode"] == "host", f"{name}: DDS discovery needs the host network"
        env = svc["environment"]
        assert "ROS_DOMAIN_ID" in env and "ROS_AUTOMATIC_DISCOVERY_RANGE" in env
        if "build" in svc:
            context = (DOCKER / svc["build"]["context"]).resolve()
            assert context == ROOT and (context / svc["build"]["dockerfile"]).is_file()
    images = {svc["image"] for svc in services.values() if "build" in svc}
    assert {svc["image"] for svc in services.values()} <= images, "every image is built by some service"
    gpu = services["policy"]
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


@pytest.mark.parametrize("service", sorted(COMPOSE["services"]))
def test_compose_commands_use_real_executables_files_and_parameters(service: str) -> None:
    argv = shlex.split(re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", COMPOSE["services"][service]["command"]))
    assert argv[:2] in (["ros2", "run"], ["ros2", "launch"]) and argv[2] == "swm_ros"
    if argv[1] == "launch":
        assert (ROOT / "launch" / argv[3]).is_file()
        return
    node = argv[3]
    assert node in _cmake_nodes(), f"{node} is not an installed executable"
    declared = set(importlib.import_module(f"swm_ros.ros.{node}").PARAMETERS) | {"use_sim_time"}
    rest = argv[4:]
    assert rest[0] == "--ros-args"
    for flag, value in zip(rest[1::2], rest[2::2]):
        if flag == "--params-file":
            assert value.startswith(SHARE_IN_IMAGE) and (ROOT / value[len(SHARE_IN_IMAGE):]).is_file(), value
        elif flag == "-p":
            assert value.split(":=")[0] in declared, f"{node}: parameter {value} not declared"
        else:
            assert flag == "-r" and ":=" in value


def test_robot_side_is_a_dry_run_unless_armed() -> None:
    for name in ("controller", "nias_bridge"):
        assert "dry_run:=${DRY_RUN:-true}" in COMPOSE["services"][name]["command"]
