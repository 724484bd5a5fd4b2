"""The NicoL profile loads strictly and carries the operational joint limits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from swm_ros.config import ConfigError
from swm_ros.resources import robot_profile_path
from swm_ros.robots.profile import load_robot_profile

# Operational limits (CycleIK URDF / real-robot move.py), research/nicol-and-ros2.md 1.4.
OPERATIONAL = {
    "r_joint1": (0.0, 2.5), "r_joint2": (-1.5, 1.8), "r_joint3": (-2.25, 1.5), "r_joint4": (-2.9, 2.9),
    "r_joint5": (-math.pi / 2, math.pi / 2), "r_joint6": (-3.0, 3.0),
    "r_joint7": (-math.pi / 4, math.pi / 4), "r_joint8": (-math.pi / 4, math.pi / 4),
}


def _raw() -> dict:
    return yaml.safe_load(robot_profile_path("nicol").read_text())


def test_nicol_profile_loads():
    p = load_robot_profile("nicol")
    assert p.name == "nicol"
    assert p.joint_names == (*OPERATIONAL, "r_gripper")
    assert p.controller.arm_controller == "r_arm_controller"
    assert p.controller.hand_controller == "r_hand_controller"
    assert p.cameras["overhead"].topic == "realsense/color/image_raw"
    assert p.cameras["overhead"].frame_id == "realsense_color_optical_frame"
    assert p.cameras["head"].topic == "right_eye_cam/image_raw"
    assert p.table.height == pytest.approx(0.8)
    assert p.head_joints == ("joint_head_z", "joint_head_y")
    assert max(p.arm.velocity_limit_real) <= 0.15 < min(p.arm.velocity_limit_sim)


def test_limits_equal_operational_table():
    p = load_robot_profile("nicol")
    for j, lo, hi in zip(p.arm.joints, p.arm.lower, p.arm.upper):
        assert (lo, hi) == pytest.approx(OPERATIONAL[j], abs=1e-9), j
    lo, hi = p.position_limits()
    assert np.all((np.asarray(p.arm.home) > lo[:-1]) & (np.asarray(p.arm.home) < hi[:-1]))


def test_unknown_key_raises(tmp_path):
    data = _raw()
    data["arm"]["typo_key"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="typo_key"):
        load_robot_profile(path)


def test_wrong_length_raises(tmp_path):
    data = _raw()
    data["arm"]["lower"] = data["arm"]["lower"][:-1]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="lower"):
        load_robot_profile(path)
