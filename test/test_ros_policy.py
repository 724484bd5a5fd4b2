"""policy_node over DDS: malformed images are dropped with an error and the node keeps
planning from good ones; stale or missing inputs make it skip, not guess."""
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


def test_bad_images_dropped_node_stays_up(start_node, probe) -> None:
    proc = start_node("policy_node", "-p", "policy:=random", "-p", "use_privileged_state:=false",
                      "-p", "image_width:=64", "-p", "image_height:=64", "-p", "num_proposals:=3",
                      "-p", "replan_period:=0.2", "-p", "chunk_length:=6")
    node = probe.node
    pub_img = node.create_publisher(Image, CAM.topic, qos.SENSOR)
    pub_js = node.create_publisher(JointState, "/joint_states", qos.STATE)
    pub_task = node.create_publisher(TaskInfo, "task_info", qos.LATCHED)
    chunks = probe.collect(ActionChunk, "action_chunk", qos.COMMAND)
    props = probe.collect(ActionProposals, "action_proposals", qos.COMMAND)
    q = np.array([*PROFILE.arm.home, 0.0])
    good = np.zeros((64, 64, 3), np.uint8)
    state = {"image": None}

    def tick():
        stamp = node.get_clock().now().to_msg()
        pub_js.publish(conv.joint_state(PROFILE.joint_names, q, stamp=stamp))
        if state["image"] is not None:
            msg = state["image"]()
            msg.header.stamp = stamp
            pub_img.publish(msg)

    node.create_timer(0.05, tick)
    pub_task.publish(conv.task_info(TaskSpec("push", ("red_block", "blue_block"), "push red to blue"), 0, 0))
    assert probe.wait_for(lambda: pub_img.get_subscription_count() > 0, 30), proc.output()

    probe.spin(1.0)
    assert not chunks                                           # skips without its inputs
    assert probe.wait_for(lambda: "no image yet" in proc.output(), 5), proc.output()   # logs can lag

    bad = {   # case -> (image, what the node's error says)
        "wrong encoding": (lambda: Image(height=64, width=64, encoding="32FC1", step=256, data=bytes(64 * 256)),
                           "unsupported encoding '32FC1'"),
        "size mismatch": (lambda: Image(height=64, width=64, encoding="rgb8", step=192, data=bytes(100)),
                          "expected step x height"),
        "wrong size": (lambda: conv.numpy_to_image(np.zeros((32, 48, 3), np.uint8), "rgb8"), "expects 64x64"),
    }
    for case, (make, error) in bad.items():
        state["image"] = make
        # the node throttles this error to one per 2 s: wait for it rather than for a fixed time
        assert probe.wait_for(lambda: error in proc.output(), 15), f"{case}: no error logged\n{proc.output()}"
        assert not chunks, f"planned from a bad image ({case})"
        assert proc.alive(), proc.output()

    state["image"] = lambda: conv.numpy_to_image(good, "bgr8")
    assert probe.wait_for(lambda: chunks and props, 10), proc.output()
    c = chunks[-1]
    assert c.horizon == 6 and len(c.actions) == 30 and c.dt == pytest.approx(PROFILE.control_dt)
    assert c.source == "random" and c.task == "push" and len(props[-1].chunks) == 3

    # inputs go stale: no more images -> planning stops
    state["image"] = None
    probe.spin(1.5)
    n = len(chunks)
    probe.spin(1.0)
    assert len(chunks) == n
    assert probe.wait_for(lambda: "image is" in proc.output(), 5), proc.output()
    proc.stop_cleanly()


def test_ready_before_the_first_image_is_not_lost_without_a_timer(start_node, probe) -> None:
    """replan_period 0 (lockstep): plans come only from controller_ready and a new episode. A
    ready that arrives before the inputs is retried on wall time until a chunk goes out, and
    then nothing is sent until the next ready."""
    from std_msgs.msg import Bool

    proc = start_node("policy_node", "-p", "policy:=random", "-p", "use_privileged_state:=false",
                      "-p", "replan_period:=0.0", "-p", "chunk_length:=6")
    node = probe.node
    pub_img = node.create_publisher(Image, CAM.topic, qos.SENSOR)
    pub_js = node.create_publisher(JointState, "/joint_states", qos.STATE)
    pub_task = node.create_publisher(TaskInfo, "task_info", qos.LATCHED)
    pub_ready = node.create_publisher(Bool, "controller_ready", qos.COMMAND)
    chunks = probe.collect(ActionChunk, "action_chunk", qos.COMMAND)
    pub_task.publish(conv.task_info(TaskSpec("push", ("red_block", "blue_block"), "push red to blue"), 0, 0))
    assert probe.wait_for(lambda: pub_ready.get_subscription_count() > 0, 30), proc.output()
    pub_ready.publish(Bool(data=True))                        # the arm is idle; the policy has no image yet
    assert probe.wait_for(lambda: "no image yet" in proc.output(), 10), proc.output()
    assert not chunks

    q = np.array([*PROFILE.arm.home, 0.0])
    image = np.zeros((48, 64, 3), np.uint8)

    def tick():
        stamp = node.get_clock().now().to_msg()
        pub_js.publish(conv.joint_state(PROFILE.joint_names, q, stamp=stamp))
        msg = conv.numpy_to_image(image, "rgb8")
        msg.header.stamp = stamp
        pub_img.publish(msg)

    node.create_timer(0.05, tick)
    assert probe.wait_for(lambda: chunks, 10), f"the early ready was lost\n{proc.output()}"
    probe.spin(1.5)                                           # no timer: one ready, one chunk
    assert len(chunks) == 1, len(chunks)
    pub_ready.publish(Bool(data=True))
    assert probe.wait_for(lambda: len(chunks) == 2, 10), proc.output()
    proc.stop_cleanly()
