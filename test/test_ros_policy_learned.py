"""policy_node serves the learned policy (policy:=learned, shipped weights) over DDS from a
real MuJoCo camera frame and joint states, without privileged state; a task it cannot take
is logged and skipped; a missing checkpoint stops the node at start-up, naming the fix."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState

from swm_ros.envs.base import TaskSpec
from swm_ros.msg import ActionChunk, ActionProposals, TaskInfo
from swm_ros.robots.profile import load_robot_profile
from swm_ros.ros import conversions as conv
from swm_ros.ros import qos

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PROFILE = load_robot_profile("nicol")
CAM = PROFILE.cameras["overhead"]


def test_policy_node_serves_learned_policy(start_node, probe) -> None:
    from swm_ros.envs import make_env

    env = make_env(task="push", image_size=(240, 320), cameras=("overhead",))
    obs = env.reset(seed=4, task="push")
    frame, q = obs.images["overhead"], obs.state.joint_positions
    proc = start_node("policy_node", "-p", "policy:=learned", "-p", "use_privileged_state:=false",
                      "-p", "num_proposals:=4", "-p", "replan_period:=0.3")
    node = probe.node
    pub_img = node.create_publisher(Image, CAM.topic, qos.SENSOR)
    pub_js = node.create_publisher(JointState, "/joint_states", qos.STATE)
    pub_task = node.create_publisher(TaskInfo, "task_info", qos.LATCHED)
    chunks = probe.collect(ActionChunk, "action_chunk", qos.COMMAND)
    props = probe.collect(ActionProposals, "action_proposals", qos.COMMAND)

    def tick():
        stamp = node.get_clock().now().to_msg()
        pub_js.publish(conv.joint_state(PROFILE.joint_names, q, stamp=stamp))
        img = conv.numpy_to_image(frame, "rgb8")
        img.header.stamp = stamp
        pub_img.publish(img)

    node.create_timer(0.1, tick)
    pub_task.publish(conv.task_info(env.task, 0, 4))
    assert probe.wait_for(lambda: chunks and props, 60), proc.output()
    c, p = chunks[-1], props[-1]
    actions = np.asarray(c.actions).reshape(c.horizon, -1)
    assert c.source == "learned" and c.task == "push" and c.horizon == 16 and actions.shape == (16, 5)
    assert np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= 1.0)
    assert len(p.chunks) == 4
    all_props = np.stack([np.asarray(x.actions) for x in p.chunks])
    assert np.abs(all_props - all_props.mean(0)).max() > 1e-3            # diverse proposals

    # a block colour the policy never saw: an error, no chunks, the node stays up
    bad = TaskSpec("push", ("magenta_block", "red_block"), "push the magenta block")
    pub_task.publish(conv.task_info(bad, 1, 0))
    assert probe.wait_for(lambda: "colour 'magenta' unknown" in proc.output(), 15), proc.output()
    probe.spin(0.5)
    n = len(chunks)
    probe.spin(1.0)
    assert len(chunks) == n and proc.alive(), proc.output()
    assert proc.stop(timeout=30) == 0, proc.output()   # torch teardown under load can take a few seconds


def test_missing_checkpoint_stops_the_node(start_node, tmp_path) -> None:
    proc = start_node("policy_node", "-p", "policy:=learned", "-p", f"checkpoint:={tmp_path / 'none'}")
    assert proc.wait(60) != 0
    assert "swm train policy --config config/train/policy_flow.yaml" in proc.output(), proc.output()
