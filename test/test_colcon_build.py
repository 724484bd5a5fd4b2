"""The same package builds with colcon, as on a real ROS 2 Jazzy install."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_colcon_build_installs_nodes_interfaces_and_data(tmp_path):
    colcon = VENV_BIN / "colcon"
    if not colcon.exists():
        pytest.fail("colcon is not installed in the venv (requirements.txt lists colcon-common-extensions)")
    src = tmp_path / "src"
    src.mkdir()
    # a copy of the sources, without the venv and build outputs
    shutil.copytree(ROOT, src / "swm_ros", ignore=shutil.ignore_patterns(
        ".venv", "build", "install", "log", "runs", "data", ".git", "__pycache__", ".pytest_cache"))
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV_BIN.parent),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(colcon), "build", "--cmake-args", "-DBUILD_TESTING=OFF"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    prefix = tmp_path / "install" / "swm_ros"
    for node in ("sim_node", "camera_node", "policy_node", "controller_node"):
        exe = prefix / "lib" / "swm_ros" / node
        assert exe.is_file() and os.access(exe, os.X_OK), f"ros2 run swm_ros {node} would not find {exe}"
    share = prefix / "share" / "swm_ros"
    for rel in ("package.xml", "launch/sim.launch.py", "config/robots/nicol.yaml", "config/graphs/sim.yaml"):
        assert (share / rel).is_file(), f"{rel} not installed"
    site = next(prefix.glob("lib/python3*/site-packages"))
    pkg = site / "swm_ros"
    assert (pkg / "msg" / "_action_chunk.py").is_file(), "generated interfaces missing"
    assert (pkg / "ros" / "controller_node.py").is_file(), "hand-written modules missing"
    assert list(pkg.glob("swm_ros_s__rosidl_typesupport_c*.so")), "typesupport library missing"

    # The installed package, not the editable checkout, finds its share directory
    # (with the environment `source install/setup.bash` sets up).
    code = "import swm_ros.resources as r; print(r.share_dir())"
    pythonpath = os.pathsep.join([str(site), *[p for p in sys.path if p.endswith("site-packages")]])
    sourced = {**env, "PYTHONPATH": pythonpath, "AMENT_PREFIX_PATH": f"{prefix}{os.pathsep}{env['AMENT_PREFIX_PATH']}"}
    found = subprocess.run([sys.executable, "-S", "-c", code], env=sourced,
                           capture_output=True, text=True, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == share
