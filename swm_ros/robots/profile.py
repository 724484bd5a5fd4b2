"""Robot profiles: everything robot-specific that nodes and the simulator need, from YAML.

Nodes never hard-code a robot: they load `config/robots/<robot>.yaml` into a `RobotProfile`
(unknown keys are rejected) and take joint names, limits, topics and the kinematic chain
from it. The MuJoCo model and the IK are built from `arm.chain`, so the simulator, the
controller's IK and (later) the URDF all share one description.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swm_ros.config import ConfigError, load_config
from swm_ros.resources import robot_profile_path


@dataclass(frozen=True)
class ChainJoint:
    """One revolute joint: its origin relative to the parent link, and its axis (URDF style)."""

    name: str
    xyz: tuple[float, ...]
    rpy: tuple[float, ...]
    axis: tuple[float, ...]


@dataclass(frozen=True)
class ArmSpec:
    joints: tuple[str, ...]                   # command order, e.g. r_joint1..r_joint8
    lower: tuple[float, ...]                  # operational position limits, rad
    upper: tuple[float, ...]
    velocity_limit_real: tuple[float, ...]    # rad/s on hardware (conservative)
    velocity_limit_sim: tuple[float, ...]     # rad/s in simulation
    home: tuple[float, ...]                   # rad
    mount_xyz: tuple[float, ...]              # arm base in the world frame
    mount_rpy: tuple[float, ...]
    chain: tuple[ChainJoint, ...]             # one entry per joint, same order as `joints`
    tool_xyz: tuple[float, ...]               # grasp point in the last link's frame

    def __post_init__(self) -> None:
        n = len(self.joints)
        for key in ("lower", "upper", "velocity_limit_real", "velocity_limit_sim", "home", "chain"):
            if len(getattr(self, key)) != n:
                raise ConfigError(f"arm.{key} has {len(getattr(self, key))} entries, arm.joints has {n}")
        if [c.name for c in self.chain] != list(self.joints):
            raise ConfigError("arm.chain joint names must match arm.joints in order")
        lo, hi, home = map(np.asarray, (self.lower, self.upper, self.home))
        if np.any(lo >= hi):
            raise ConfigError("arm.lower must be below arm.upper for every joint")
        if np.any(home < lo) or np.any(home > hi):
            raise ConfigError("arm.home lies outside the joint limits")
        if min(self.velocity_limit_real) <= 0 or min(self.velocity_limit_sim) <= 0:
            raise ConfigError("velocity limits must be positive")


@dataclass(frozen=True)
class GripperSpec:
    joint: str            # the one commanded gripper joint (fingers are coupled)
    open: float           # joint position when open
    closed: float         # joint position when closed
    velocity_limit: float  # joint units per second

    def joint_target(self, command: float) -> float:
        """The gripper action (-1 open .. +1 closed) as a joint position target."""
        c = float(np.clip(command, -1.0, 1.0))
        return self.open + (c + 1.0) / 2.0 * (self.closed - self.open)

    def opening(self, position: float) -> float:
        """A gripper joint position as an opening: 1 fully open .. 0 closed."""
        return float(np.clip((self.closed - position) / (self.closed - self.open), 0.0, 1.0))


@dataclass(frozen=True)
class CameraSpec:
    topic: str            # relative image topic, e.g. realsense/color/image_raw
    info_topic: str
    frame_id: str
    width: int
    height: int
    fovy_deg: float
    # pose in the world frame (simulation placement; on hardware the camera is where it is)
    xyz: tuple[float, ...] = (0.0, 0.0, 0.0)
    rpy: tuple[float, ...] = (0.0, 0.0, 0.0)
    parent: str = "world"  # body the camera is fixed to (e.g. the head's face link)
    # region of interest for the world model, fractions (u0, v0, u1, v1) of the frame
    # (swm_ros/processing/image.py); None: the whole frame
    roi: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ControllerSpec:
    arm_controller: str       # ros2_control controller: /<name>/joint_trajectory
    hand_controller: str
    joint_states_topic: str = "/joint_states"


@dataclass(frozen=True)
class WorkspaceSpec:
    """Box the end effector may be commanded into, world frame, metres."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]

    def clip(self, p: np.ndarray) -> np.ndarray:
        return np.clip(p, self.lower, self.upper)

    def contains(self, p: np.ndarray, tol: float = 1e-6) -> bool:
        return bool(np.all(p >= np.asarray(self.lower) - tol) and np.all(p <= np.asarray(self.upper) + tol))


@dataclass(frozen=True)
class EffectorSpec:
    """Scale of one action step: an action of 1.0 moves this far."""

    max_step_xyz: float   # metres per step
    max_step_yaw: float   # radians per step


@dataclass(frozen=True)
class TableSpec:
    height: float                     # z of the surface
    center_xy: tuple[float, ...]
    half_size_xy: tuple[float, ...]
    spawn_lower_xy: tuple[float, ...]  # region where blocks are placed
    spawn_upper_xy: tuple[float, ...]


@dataclass(frozen=True)
class RobotProfile:
    name: str
    description: str
    arm: ArmSpec
    gripper: GripperSpec
    controller: ControllerSpec
    cameras: dict[str, CameraSpec]
    workspace: WorkspaceSpec
    effector: EffectorSpec
    table: TableSpec
    control_dt: float = 0.1                  # seconds per action step
    head_joints: tuple[str, ...] = ()
    head_pose: tuple[float, ...] = ()
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Arm joints then the gripper joint: the order of /joint_states and trajectories."""
        return (*self.arm.joints, self.gripper.joint)

    def velocity_limits(self, simulated: bool) -> np.ndarray:
        arm = self.arm.velocity_limit_sim if simulated else self.arm.velocity_limit_real
        return np.array([*arm, self.gripper.velocity_limit])

    def position_limits(self) -> tuple[np.ndarray, np.ndarray]:
        g = sorted((self.gripper.open, self.gripper.closed))
        return np.array([*self.arm.lower, g[0]]), np.array([*self.arm.upper, g[1]])


def load_robot_profile(robot: str | Path = "nicol") -> RobotProfile:
    """Load `config/robots/<robot>.yaml`, or a profile YAML given by path."""
    path = robot_profile_path(str(robot))
    if not path.is_file():
        raise ConfigError(f"no robot profile {robot!r} (looked for {path})")
    return load_config(RobotProfile, path)
