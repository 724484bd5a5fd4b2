"""numpy / core dataclasses <-> ROS messages. No node logic here.

Images: our own converter instead of cv_bridge (its PyPI build is broken with NumPy 2).
`msg.data` is always assigned `bytes` -- assigning an ndarray costs ~8 ms per 224x224 frame
against ~0.01 ms -- and `step` padding is honoured when reading.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Pose
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from swm_ros.envs.base import ObjectState, PrivilegedState, TaskSpec
from swm_ros.msg import ActionChunk, TaskInfo, WorldState

# encoding -> (channels, dtype)
ENCODINGS: dict[str, tuple[int, str]] = {
    "rgb8": (3, "u1"), "bgr8": (3, "u1"), "rgba8": (4, "u1"), "bgra8": (4, "u1"), "mono8": (1, "u1"),
}


class ImageError(ValueError):
    """An Image message that cannot be converted (unknown encoding, inconsistent size)."""


# ---------------------------------------------------------------------------- time

def to_seconds(t: Time | Duration) -> float:
    return t.sec + t.nanosec * 1e-9


def _split_ns(seconds: float) -> tuple[int, int]:
    # round to whole nanoseconds first: splitting 2.9999999999 s into floor + fraction and
    # rounding the fraction alone would give (2 s, 1e9 -> 0 ns), a second back in time
    ns = int(round(seconds * 1e9))
    return ns // 1_000_000_000, ns % 1_000_000_000


def to_time(seconds: float) -> Time:
    sec, nanosec = _split_ns(seconds)
    return Time(sec=sec, nanosec=nanosec)


def to_duration(seconds: float) -> Duration:
    sec, nanosec = _split_ns(seconds)
    return Duration(sec=sec, nanosec=nanosec)


# ---------------------------------------------------------------------------- images

def image_to_numpy(msg: Image) -> np.ndarray:
    """(H, W, C) uint8 view of an Image (C=1 kept for mono8), honouring `step` padding."""
    if msg.encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {msg.encoding!r}; supported: {sorted(ENCODINGS)}")
    ch, dt = ENCODINGS[msg.encoding]
    row_bytes = msg.width * ch * np.dtype(dt).itemsize
    if msg.height == 0 or msg.width == 0:
        raise ImageError(f"empty image {msg.width}x{msg.height}")
    if msg.step < row_bytes:
        raise ImageError(f"step {msg.step} < width x channels = {row_bytes} for {msg.encoding}")
    if len(msg.data) != msg.step * msg.height:
        raise ImageError(f"data has {len(msg.data)} bytes, expected step x height = {msg.step * msg.height}")
    rows = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray)) else msg.data,
                         np.uint8).reshape(msg.height, msg.step)
    return rows[:, :row_bytes].reshape(msg.height, msg.width, ch)


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any supported encoding (what policies and models take)."""
    a = image_to_numpy(msg)
    if msg.encoding == "rgb8":
        return np.ascontiguousarray(a)
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(a[..., ::-1])
    if msg.encoding == "rgba8":
        return np.ascontiguousarray(a[..., :3])
    if msg.encoding == "bgra8":
        return np.ascontiguousarray(a[..., 2::-1])
    return np.ascontiguousarray(np.repeat(a, 3, axis=2))   # mono8


def numpy_to_image(arr: np.ndarray, encoding: str = "rgb8", stamp: Time | None = None,
                   frame_id: str = "") -> Image:
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {sorted(ENCODINGS)}")
    ch, dt = ENCODINGS[encoding]
    arr = np.asarray(arr)
    if arr.ndim == 2 and ch == 1:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] != ch or arr.dtype != np.dtype(dt):
        raise ImageError(f"array {arr.shape} {arr.dtype} does not fit {encoding} ({ch} x {np.dtype(dt)})")
    arr = np.ascontiguousarray(arr)
    msg = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=0,
                step=arr.shape[1] * ch * arr.itemsize, data=arr.tobytes())
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def camera_info(width: int, height: int, fovy_deg: float | None, frame_id: str = "",
                stamp: Time | None = None) -> CameraInfo:
    """Pinhole CameraInfo from a vertical field of view (MuJoCo cameras have square pixels).

    fovy_deg None or <= 0 gives an all-zero K: "uncalibrated" by the message's convention.
    """
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5)
    info.header.frame_id = frame_id
    if stamp is not None:
        info.header.stamp = stamp
    if fovy_deg and fovy_deg > 0:
        f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
        cx, cy = width / 2.0, height / 2.0
        info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


# ---------------------------------------------------------------------------- joints

def joint_state(names: Sequence[str], q: np.ndarray, qd: np.ndarray | None = None,
                stamp: Time | None = None) -> JointState:
    msg = JointState(name=list(names), position=[float(x) for x in q])
    if qd is not None:
        msg.velocity = [float(x) for x in qd]
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def joint_positions_in_order(msg: JointState, names: Sequence[str]) -> np.ndarray | None:
    """Positions of `names` from a JointState (any order, extra joints ignored); None if one is missing."""
    index = {n: i for i, n in enumerate(msg.name)}
    if any(n not in index for n in names) or len(msg.position) != len(msg.name):
        return None
    return np.array([msg.position[index[n]] for n in names], dtype=np.float64)


def joint_trajectory(names: Sequence[str], times: np.ndarray, positions: np.ndarray,
                     stamp: Time | None = None) -> JointTrajectory:
    """stamp None (zero) means "start now", as in joint_trajectory_controller."""
    msg = JointTrajectory(joint_names=list(names))
    if stamp is not None:
        msg.header.stamp = stamp
    for t, q in zip(times, positions):
        msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in q], time_from_start=to_duration(float(t))))
    return msg


def trajectory_arrays(msg: JointTrajectory) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(joint names, times (N,), positions (N, J)); raises ValueError on a malformed message."""
    names = list(msg.joint_names)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate joint names {names}")
    if not msg.points:
        raise ValueError("no points")
    for i, p in enumerate(msg.points):
        if len(p.positions) != len(names):
            raise ValueError(f"point {i} has {len(p.positions)} positions for {len(names)} joints")
    times = np.array([to_seconds(p.time_from_start) for p in msg.points])
    positions = np.array([list(p.positions) for p in msg.points], dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        raise ValueError("non-finite position(s)")
    return names, times, positions


# ---------------------------------------------------------------------------- chunks

def action_chunk(actions: np.ndarray, action_names: Sequence[str], dt: float, source: str, task: str,
                 stamp: Time | None = None, frame_id: str = "") -> ActionChunk:
    a = np.asarray(actions, dtype=np.float32)
    msg = ActionChunk(action_names=list(action_names), dt=float(dt), horizon=int(a.shape[0]),
                      actions=a.reshape(-1).tolist(), source=source, task=task)
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


class ChunkError(ValueError):
    """An ActionChunk that cannot be read as an (H, A) array (names, sizes, non-finite values)."""


def chunk_actions(msg: ActionChunk, action_names: Sequence[str], max_horizon: int | None = None) -> np.ndarray:
    """(horizon, len(action_names)) float32 actions of a chunk; ChunkError on anything malformed.

    Horizon 0 (no actions) is a valid chunk here: "is it true now?" for a world model. Safety
    limits (action bound, dt) are not checked: that is the controller's job (robots/safety.py).
    """
    if list(msg.action_names) != list(action_names):
        raise ChunkError(f"action names {list(msg.action_names)} != expected {list(action_names)}")
    if max_horizon is not None and msg.horizon > max_horizon:
        raise ChunkError(f"horizon {msg.horizon} > {max_horizon}, the longest chunk allowed")
    d = len(action_names)
    if len(msg.actions) != msg.horizon * d:
        raise ChunkError(f"{len(msg.actions)} values, expected horizon x actions = {msg.horizon} x {d}")
    a = np.asarray(msg.actions, dtype=np.float32).reshape(msg.horizon, d)
    if not np.all(np.isfinite(a)):
        raise ChunkError("NaN or inf in the actions")
    return a


# ---------------------------------------------------------------------------- task / world

def task_info(spec: TaskSpec, seed: int, episode: int, stamp: Time | None = None) -> TaskInfo:
    msg = TaskInfo(name=spec.name, variant=spec.variant, instruction=spec.instruction,
                   objects=list(spec.objects), seed=int(seed), episode=int(episode))
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def task_spec(msg: TaskInfo) -> TaskSpec:
    return TaskSpec(name=msg.name, objects=tuple(msg.objects), instruction=msg.instruction,
                    variant=msg.variant or "nominal")


def _pose(position: Sequence[float], quat_wxyz: Sequence[float]) -> Pose:
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in position)
    p.orientation.w, p.orientation.x, p.orientation.y, p.orientation.z = (float(v) for v in quat_wxyz)
    return p


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """w, x, y, z of a rotation about world z."""
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


def quaternion_yaw(w: float, x: float, y: float, z: float) -> float:
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def world_state(state: PrivilegedState, success: bool, stamp: Time | None = None,
                frame_id: str = "world") -> WorldState:
    msg = WorldState(step=int(state.step), gripper_opening=float(state.gripper_opening),
                     grasped=state.grasped or "", success=bool(success))
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    for name, o in state.objects.items():
        msg.object_names.append(name)
        msg.object_colors.append(o.color)
        msg.object_poses.append(_pose(o.position, o.quaternion))
        msg.object_kinds.append(o.kind)
        msg.object_half_sizes.append(float(o.half_size))
    msg.effector_pose = _pose(state.effector_position, yaw_quaternion(state.effector_yaw))
    msg.contacts = ["|".join(pair) for pair in sorted(state.contacts)]
    return msg


def privileged_state(msg: WorldState, joint_positions: np.ndarray, table_height: float,
                     time: float = 0.0) -> PrivilegedState:
    """Rebuild the simulator's ground truth from a WorldState (scripted experts need it)."""
    objects = {}
    for i, name in enumerate(msg.object_names):
        pose = msg.object_poses[i]
        objects[name] = ObjectState(
            name=name, kind=msg.object_kinds[i], color=msg.object_colors[i],
            position=np.array([pose.position.x, pose.position.y, pose.position.z]),
            quaternion=np.array([pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z]),
            half_size=float(msg.object_half_sizes[i]))
    e = msg.effector_pose
    contacts = frozenset(tuple(sorted(c.split("|", 1))) for c in msg.contacts if "|" in c)
    return PrivilegedState(
        step=int(msg.step), time=time, objects=objects,
        effector_position=np.array([e.position.x, e.position.y, e.position.z]),
        effector_yaw=quaternion_yaw(e.orientation.w, e.orientation.x, e.orientation.y, e.orientation.z),
        gripper_opening=float(msg.gripper_opening), grasped=msg.grasped or None,
        contacts=contacts, joint_positions=np.asarray(joint_positions, dtype=np.float64),
        table_height=float(table_height))
