"""numpy / core <-> ROS message conversions (no DDS traffic: messages built and read in process)."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

from swm_ros.envs.base import ObjectState, PrivilegedState, TaskSpec
from swm_ros.msg import WorldState
from swm_ros.ros import conversions as conv

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("encoding, channels", [("rgb8", 3), ("bgr8", 3), ("rgba8", 4), ("bgra8", 4), ("mono8", 1)])
def test_image_round_trip(encoding: str, channels: int) -> None:
    arr = RNG.integers(0, 255, (12, 17, channels), dtype=np.uint8)
    msg = conv.numpy_to_image(arr, encoding, conv.to_time(1.5), "cam")
    assert isinstance(msg.data, (bytes, bytearray, memoryview)) or len(msg.data) == arr.size
    assert msg.step == 17 * channels and msg.header.frame_id == "cam"
    back = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(conv.image_to_numpy(back), arr)


def test_image_to_rgb_from_every_encoding() -> None:
    rgb = RNG.integers(0, 255, (4, 5, 3), dtype=np.uint8)
    cases = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.dstack([rgb, np.full((4, 5), 9, np.uint8)]),
             "bgra8": np.dstack([rgb[..., ::-1], np.full((4, 5), 9, np.uint8)])}
    for enc, arr in cases.items():
        np.testing.assert_array_equal(conv.image_to_rgb(conv.numpy_to_image(arr, enc)), rgb, err_msg=enc)
    mono = conv.image_to_rgb(conv.numpy_to_image(rgb[..., 0], "mono8"))
    assert mono.shape == (4, 5, 3) and np.all(mono[..., 2] == rgb[..., 0])


def test_step_padding_honoured() -> None:
    arr = RNG.integers(0, 255, (3, 4, 3), dtype=np.uint8)
    padded = np.zeros((3, 16), np.uint8)              # 12 bytes of pixels + 4 of padding per row
    padded[:, :12] = arr.reshape(3, 12)
    msg = Image(height=3, width=4, encoding="rgb8", step=16, data=padded.tobytes())
    np.testing.assert_array_equal(conv.image_to_numpy(msg), arr)


@pytest.mark.parametrize("msg, match", [
    (Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(16)), "unsupported encoding"),
    (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(10)), "expected step x height"),
    (Image(height=2, width=2, encoding="rgb8", step=4, data=bytes(8)), "step 4"),
    (Image(height=0, width=2, encoding="rgb8", step=6, data=b""), "empty"),
])
def test_bad_images_raise_clearly(msg: Image, match: str) -> None:
    with pytest.raises(conv.ImageError, match=match):
        conv.image_to_numpy(msg)


def test_numpy_to_image_checks_shape() -> None:
    with pytest.raises(conv.ImageError):
        conv.numpy_to_image(np.zeros((4, 4, 3), np.uint8), "mono8")
    with pytest.raises(conv.ImageError):
        conv.numpy_to_image(np.zeros((4, 4, 3), np.float32), "rgb8")


def test_camera_info_pinhole() -> None:
    info = conv.camera_info(64, 48, 90.0, "cam")
    assert info.k[0] == pytest.approx(24.0) and info.k[2] == 32.0 and info.k[5] == 24.0
    assert all(v == 0 for v in conv.camera_info(64, 48, 0.0).k)


def test_time_and_duration() -> None:
    for s in (0.0, 1.25, 12345.999999999):
        assert conv.to_seconds(conv.to_time(s)) == pytest.approx(s, abs=1e-9)
        assert conv.to_seconds(conv.to_duration(s)) == pytest.approx(s, abs=1e-9)


def test_trajectory_round_trip_and_checks() -> None:
    names = ["a", "b"]
    msg = conv.joint_trajectory(names, np.array([0.1, 0.2]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    n, t, q = conv.trajectory_arrays(msg)
    assert n == names
    np.testing.assert_allclose(t, [0.1, 0.2])
    np.testing.assert_allclose(q, [[1, 2], [3, 4]])
    msg.points[1].positions = [float("nan"), 0.0]
    with pytest.raises(ValueError, match="non-finite"):
        conv.trajectory_arrays(msg)
    msg.points[1].positions = [1.0]
    with pytest.raises(ValueError, match="positions"):
        conv.trajectory_arrays(msg)


def test_joint_positions_in_order() -> None:
    js = conv.joint_state(["b", "a", "extra"], np.array([2.0, 1.0, 9.0]))
    np.testing.assert_allclose(conv.joint_positions_in_order(js, ["a", "b"]), [1.0, 2.0])
    assert conv.joint_positions_in_order(js, ["a", "c"]) is None


def test_action_chunk() -> None:
    a = RNG.uniform(-1, 1, (6, 5))
    msg = conv.action_chunk(a, ["dx", "dy", "dz", "dyaw", "gripper"], 0.1, "scripted", "push")
    assert msg.horizon == 6 and len(msg.actions) == 30
    np.testing.assert_allclose(np.array(msg.actions).reshape(6, 5), a, atol=1e-6)


def test_chunk_actions_reads_and_refuses() -> None:
    names = ["dx", "dy", "dz", "dyaw", "gripper"]
    a = RNG.uniform(-1, 1, (6, 5)).astype(np.float32)
    np.testing.assert_array_equal(conv.chunk_actions(conv.action_chunk(a, names, 0.1, "s", "t"), names, 8), a)
    assert conv.chunk_actions(conv.action_chunk(np.zeros((0, 5)), names, 0.1, "s", "t"), names).shape == (0, 5)
    bad_values = a.copy()
    bad_values[2, 1] = np.nan
    short = conv.action_chunk(a, names, 0.1, "s", "t")
    short.actions = short.actions[:-1]
    cases = {"action names": conv.action_chunk(a, names[::-1], 0.1, "s", "t"),
             "horizon 6 > 4": conv.action_chunk(a, names, 0.1, "s", "t"),
             "29 values, expected horizon x actions = 6 x 5": short,
             "NaN or inf": conv.action_chunk(bad_values, names, 0.1, "s", "t")}
    for match, msg in cases.items():
        with pytest.raises(conv.ChunkError, match=match):
            conv.chunk_actions(msg, names, max_horizon=4 if match.startswith("horizon") else None)


def test_world_state_round_trip() -> None:
    obj = ObjectState("red_block", "block", "red", np.array([0.5, -0.2, 0.82]), np.array([1.0, 0, 0, 0]), 0.0225)
    state = PrivilegedState(step=7, time=0.7, objects={"red_block": obj},
                            effector_position=np.array([0.45, -0.25, 1.0]), effector_yaw=0.3,
                            gripper_opening=0.8, grasped=None,
                            contacts=frozenset({("red_block", "table")}), joint_positions=np.zeros(9),
                            table_height=0.8)
    msg = deserialize_message(serialize_message(conv.world_state(state, True)), WorldState)
    assert msg.success and msg.contacts == ["red_block|table"]
    back = conv.privileged_state(msg, np.zeros(9), 0.8, time=0.7)
    o = back.objects["red_block"]
    assert o.kind == "block" and o.color == "red" and o.half_size == pytest.approx(0.0225)
    np.testing.assert_allclose(o.position, obj.position, atol=1e-9)
    assert back.effector_yaw == pytest.approx(0.3)
    assert back.touching("table", "red_block") and back.grasped is None and back.step == 7


def test_task_info_round_trip() -> None:
    spec = TaskSpec("push", ("red_block", "blue_block"), "push the red block to the blue block", "ood_colors")
    back = conv.task_spec(conv.task_info(spec, seed=3, episode=1))
    assert back.name == spec.name and back.objects == spec.objects and back.variant == "ood_colors"


@pytest.mark.parametrize("seconds", [2.9999999999, 0.9999999996, 3.0, 1e-10, 12345.5])
def test_time_conversion_never_steps_back_a_second(seconds):
    t, d = conv.to_time(seconds), conv.to_duration(seconds)
    for msg in (t, d):
        assert 0 <= msg.nanosec < 1_000_000_000
        assert abs(msg.sec + msg.nanosec * 1e-9 - seconds) < 1e-9
