"""sim_node over DDS: publishes what a robot + camera driver would, follows JTC semantics,
rejects malformed trajectories (holding its motion), serves ~/reset, publishes /clock."""
from __future__ import annotations

import numpy as np
import pytest
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory

from swm_ros.msg import TaskInfo, WorldState
from swm_ros.robots.profile import load_robot_profile
from swm_ros.ros import conversions as conv
from swm_ros.ros import qos
from swm_ros.srv import ResetEpisode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PROFILE = load_robot_profile("nicol")
NAMES = list(PROFILE.joint_names)


def test_sim_node_streams_follows_and_rejects(start_node, probe) -> None:
    proc = start_node("sim_node", "-p", "publish_clock:=true", "-p", "image_width:=48", "-p", "image_height:=32",
                      "-p", "task:=reach")
    cam = PROFILE.cameras["overhead"]
    images = probe.collect(Image, cam.topic, qos.SENSOR)
    infos = probe.collect(CameraInfo, cam.info_topic, qos.SENSOR)
    joints = probe.collect(JointState, "/joint_states", qos.STATE)
    world = probe.collect(WorldState, "world_state", qos.STATE)
    tasks = probe.collect(TaskInfo, "task_info", qos.LATCHED)
    clock = probe.collect(Clock, "/clock", qos.CLOCK)
    pub = probe.node.create_publisher(JointTrajectory, f"/{PROFILE.controller.arm_controller}/joint_trajectory",
                                      qos.COMMAND)
    assert probe.wait_for(lambda: images and infos and joints and world and tasks and clock, 60), proc.output()
    img = conv.image_to_numpy(images[-1])
    assert img.shape == (32, 48, 3) and images[-1].header.frame_id == cam.frame_id
    assert infos[-1].k[0] > 0 and tasks[-1].name == "reach"
    assert joints[-1].name == NAMES
    # stamps are sim time (we publish /clock): they track the clock, not the wall
    assert abs(conv.to_seconds(joints[-1].header.stamp) - conv.to_seconds(clock[-1].clock)) < 1.0

    def q_now() -> np.ndarray:
        return conv.joint_positions_in_order(joints[-1], NAMES)

    # a valid trajectory moving joint 1 by +0.2 rad is followed
    assert probe.wait_for(lambda: pub.get_subscription_count() > 0, 10)
    q0 = q_now()
    target = q0.copy()
    target[0] += 0.2
    pub.publish(conv.joint_trajectory(NAMES, [0.5], target[None, :]))
    assert probe.wait_for(lambda: abs(q_now()[0] - target[0]) < 0.02, 10), proc.output()

    # unknown joint and NaN: rejected, logged, the arm keeps holding the last good target
    bad_names = conv.joint_trajectory(["r_joint1", "elbow"], [0.5], np.zeros((1, 2)))
    nan = conv.joint_trajectory(NAMES, [0.5], np.full((1, len(NAMES)), np.nan))
    pub.publish(bad_names)
    pub.publish(nan)
    probe.spin(1.0)
    assert abs(q_now()[0] - target[0]) < 0.02
    log = proc.output()
    assert "unknown joint(s) ['elbow']" in log and "non-finite" in log
    assert proc.alive()

    # reset: bad task refused (node stays up), good one starts episode 1
    res = probe.call(ResetEpisode, "/sim_node/reset", ResetEpisode.Request(task="juggle", variant="", seed=1))
    assert not res.success and "juggle" in res.message
    res = probe.call(ResetEpisode, "/sim_node/reset", ResetEpisode.Request(task="push", variant="", seed=-1))
    assert res.success and res.task_info.name == "push" and res.task_info.episode == 1
    assert probe.wait_for(lambda: np.allclose(q_now()[:8], PROFILE.arm.home, atol=0.05), 10)
    proc.stop_cleanly()
