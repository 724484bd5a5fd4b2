"""The environment contract every simulated (or recorded) world implements.

Two layers, so the ROS graph and offline data collection drive the same physics:

* joint level (`set_joint_targets`, `advance`): what `sim_node` uses; a controller in front
  of it turns action chunks into joint trajectories, as on the real robot.
* action level (`reset`, `step`): end-effector deltas turned into joint targets by the
  robot's IK inside the env, for data collection, scripted experts and benchmarks.

`privileged_state()` is the simulator's ground truth. It labels SAQA questions and checks
task success; it is never an input to a learned policy or the world model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# End-effector delta actions, each in [-1, 1]; the robot profile scales them to metres /
# radians per step. gripper: -1 = open, +1 = closed (a target, not a rate).
ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "dyaw", "gripper")
ACTION_DIM = len(ACTION_NAMES)

# Names the scene uses for non-object bodies in contact pairs.
GRIPPER = "gripper"
TABLE = "table"


@dataclass(frozen=True)
class ObjectState:
    """One movable object on the table."""

    name: str                 # unique, e.g. "red_block"
    kind: str                 # "block" or "distractor"
    color: str                # colour name as a question would say it, e.g. "red"
    position: np.ndarray      # (3,) centre, world frame, metres
    quaternion: np.ndarray    # (4,) w, x, y, z
    half_size: float          # half edge length (blocks are cubes), metres


@dataclass(frozen=True)
class PrivilegedState:
    """Ground truth of one simulator instant."""

    step: int
    time: float
    objects: dict[str, ObjectState]
    effector_position: np.ndarray   # (3,) grasp point between the fingers, world frame
    effector_yaw: float             # rad, about world z
    gripper_opening: float          # 1 fully open .. 0 closed
    grasped: str | None             # object held between both fingers, if any
    contacts: frozenset[tuple[str, str]]  # sorted name pairs: objects, GRIPPER, TABLE
    joint_positions: np.ndarray     # arm joints then gripper, profile order
    table_height: float             # z of the table surface

    def touching(self, a: str, b: str) -> bool:
        return tuple(sorted((a, b))) in self.contacts

    def blocks(self) -> list[ObjectState]:
        return [o for o in self.objects.values() if o.kind == "block"]


@dataclass
class Observation:
    """What a policy or the world model may see."""

    images: dict[str, np.ndarray]   # camera name -> (H, W, 3) uint8 RGB
    proprio: np.ndarray             # float32: arm joints, gripper joint, effector xyz, yaw, opening
    step: int
    time: float
    # Filled by simulators only; scripted experts need it, learned models must not use it.
    state: PrivilegedState | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A task instance: which family and which objects play which role."""

    name: str                        # reach | push | separate | pick | stack
    objects: tuple[str, ...]         # role order, e.g. (source, target) for push
    instruction: str                 # "push the red block to the blue block"
    variant: str = "nominal"         # scene variant (nominal, ood_colors, ood_table, ood_distractor)
    max_steps: int = 100


def proprio_vector(joint_positions: np.ndarray, effector_position: np.ndarray, effector_yaw: float,
                   gripper_opening: float) -> np.ndarray:
    """The `Observation.proprio` layout: arm joints, gripper joint, effector xyz, yaw, opening."""
    return np.concatenate([np.asarray(joint_positions, dtype=float), np.asarray(effector_position, dtype=float),
                           [effector_yaw, gripper_opening]]).astype(np.float32)


def checked_action(action: np.ndarray) -> np.ndarray:
    """`action` as a float array, or a ValueError that says what is wrong with it: an env never
    steps on a wrong shape, a NaN or a component outside [-1, 1]."""
    a = np.asarray(action, dtype=float)
    if a.shape != (ACTION_DIM,):
        raise ValueError(f"action must have shape ({ACTION_DIM},) {ACTION_NAMES}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN or inf: {a}")
    if np.any(np.abs(a) > 1.0 + 1e-6):
        raise ValueError(f"action components must lie in [-1, 1], got {a}")
    return a


@runtime_checkable
class Env(Protocol):
    """A seeded tabletop world. Implementations: `envs.nicol_tabletop.NicolTabletopEnv`."""

    action_names: tuple[str, ...]
    control_dt: float                 # seconds per `step`
    camera_names: tuple[str, ...]

    def reset(self, seed: int | None = None, task: str | None = None,
              variant: str | None = None) -> Observation: ...
    def step(self, action: np.ndarray) -> Observation: ...
    def render(self, camera: str, width: int | None = None, height: int | None = None) -> np.ndarray: ...
    def privileged_state(self) -> PrivilegedState: ...
    @property
    def task(self) -> TaskSpec: ...
    def success(self) -> bool: ...

    # joint level, for sim_node
    @property
    def joint_names(self) -> tuple[str, ...]: ...
    def joint_positions(self) -> np.ndarray: ...
    def joint_velocities(self) -> np.ndarray: ...
    def set_joint_targets(self, q: np.ndarray) -> None: ...
    def advance(self, seconds: float) -> None: ...
    def observe(self) -> Observation: ...


@runtime_checkable
class Policy(Protocol):
    """LeRobot-style uniform policy: reset per episode, propose n chunks per observation."""

    chunk_length: int

    def reset(self, task: TaskSpec, seed: int | None = None) -> None: ...
    def propose(self, observation: Observation, n: int = 1) -> np.ndarray:
        """(n, chunk_length, ACTION_DIM) actions in [-1, 1]."""
        ...
