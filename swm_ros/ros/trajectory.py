"""Joint trajectories without ROS types: what the controller computes and the sim follows.

* `chunk_to_waypoints`: the controller's core -- end-effector delta actions integrated from
  the current effector pose, clipped to the workspace, solved by IK step by step (seeded by
  the previous solution), gripper mapped, clamped to joint limits, time-scaled to the
  velocity limits.
* `TimedTrajectory`: joint_trajectory_controller semantics for the simulator -- linear
  interpolation from where the joints were when the trajectory started, hold the last point.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from swm_ros.robots import safety
from swm_ros.robots.profile import GripperSpec


class Kinematics(Protocol):
    def fk(self, q_arm: np.ndarray): ...   # -> pose with .position (3,), .yaw
    def ik(self, position: np.ndarray, yaw: float, q_seed: np.ndarray): ...  # -> .q, .success, .position_error


@dataclass
class ChunkPlan:
    """Joint waypoints (N, J) over the profile's joints (arm then gripper) and their times (N,)."""

    positions: np.ndarray
    times: np.ndarray
    effector_targets: np.ndarray          # (N, 3) after workspace clipping
    notes: list[str] = field(default_factory=list)   # clipping / clamping / truncation events


class PlanError(ValueError):
    """The chunk cannot be executed safely (e.g. IK fails on its first step)."""


def chunk_to_waypoints(actions: np.ndarray, dt: float, q_current: np.ndarray, kin: Kinematics,
                       *, max_step_xyz: float, max_step_yaw: float,
                       workspace_lower: Sequence[float], workspace_upper: Sequence[float],
                       gripper: GripperSpec,
                       lower: np.ndarray, upper: np.ndarray, velocity_limits: np.ndarray,
                       yaw_limit: float = np.pi / 2, ik_tolerance: float = 0.03) -> ChunkPlan:
    """Turn an (H, 5) chunk [dx dy dz dyaw gripper] into a timed joint trajectory.

    The deltas accumulate from the *measured* effector pose (fk of `q_current`), so each new
    chunk starts from where the arm really is. Like the env's `step`, a step the IK cannot
    reach exactly is pulled back to what the arm does reach (so targets never wind up far
    away); a step missing by more than `ik_tolerance` metres ends the chunk there --
    executing a prefix is safe, guessing is not.
    """
    q_current = np.asarray(q_current, dtype=np.float64)
    n_arm = q_current.shape[0] - 1
    pose = kin.fk(q_current[:n_arm])
    p = np.asarray(pose.position, dtype=np.float64).copy()
    yaw = float(np.clip(pose.yaw, -yaw_limit, yaw_limit))
    q_seed = q_current[:n_arm].copy()
    rows, targets, notes = [], [], []
    for k, a in enumerate(actions):
        p_next, clipped = safety.clip_to_workspace(p + a[:3] * max_step_xyz, workspace_lower, workspace_upper)
        if clipped:
            notes.append(f"step {k}: effector target clipped to the workspace")
        yaw_next = float(np.clip(yaw + float(a[3]) * max_step_yaw, -yaw_limit, yaw_limit))
        res = kin.ik(p_next, yaw_next, q_seed)
        q_arm = np.asarray(res.q, dtype=np.float64)
        if not res.success:
            if float(res.position_error) > ik_tolerance:
                if k == 0:
                    raise PlanError(f"IK failed on the first step: {res.message}")
                notes.append(f"step {k}: IK {res.position_error:.3f} m off; chunk truncated to {k} steps")
                break
            reached = kin.fk(q_arm)
            p_next = np.asarray(reached.position, dtype=np.float64)
            yaw_next = float(np.clip(reached.yaw, -yaw_limit, yaw_limit))
        rows.append(np.append(q_arm, gripper.joint_target(a[4])))
        targets.append(p_next)
        p, yaw, q_seed = p_next, yaw_next, q_arm
    positions, clamped = safety.clamp_positions(np.array(rows), lower, upper)
    if clamped:
        notes.append("joint targets clamped to the position limits")
    nominal = dt * np.arange(1, len(rows) + 1)
    times = safety.time_scale(q_current, positions, nominal, velocity_limits)
    if times[-1] > nominal[-1] + 1e-9:
        notes.append(f"slowed to the velocity limits: {nominal[-1]:.2f} s -> {times[-1]:.2f} s")
    return ChunkPlan(positions, times, np.array(targets), notes)


class TimedTrajectory:
    """A joint trajectory being executed: JTC-style sampling over a fixed joint order.

    `start` is the absolute time (s) of the trajectory's t=0, `q_start` the joint positions
    at that moment (the interpolation origin for the first point). Joints the trajectory
    does not name keep `q_start`.
    """

    def __init__(self, start: float, q_start: np.ndarray, times: np.ndarray, positions: np.ndarray) -> None:
        times = np.asarray(times, dtype=np.float64)
        positions = np.asarray(positions, dtype=np.float64)
        if positions.ndim != 2 or positions.shape != (times.shape[0], q_start.shape[0]):
            raise ValueError(f"positions {positions.shape} do not match times {times.shape} x joints {q_start.shape}")
        if times.size == 0:
            raise ValueError("empty trajectory")
        if np.any(np.diff(times) <= 0) or times[0] < 0:
            raise ValueError("time_from_start must be non-negative and strictly increasing")
        self.start = float(start)
        self.times = times
        self.positions = positions
        self.q_start = np.asarray(q_start, dtype=np.float64)

    @property
    def end(self) -> float:
        return self.start + float(self.times[-1])

    def sample(self, t: float) -> np.ndarray:
        """Linear interpolation; before the start the origin, after the end the last point."""
        tau = t - self.start
        knots_t = np.concatenate([[0.0], self.times]) if self.times[0] > 0 else self.times
        knots_q = np.vstack([self.q_start, self.positions]) if self.times[0] > 0 else self.positions
        if tau <= knots_t[0]:
            return knots_q[0].copy()
        if tau >= knots_t[-1]:
            return knots_q[-1].copy()
        i = int(np.searchsorted(knots_t, tau, side="right"))
        w = (tau - knots_t[i - 1]) / (knots_t[i] - knots_t[i - 1])
        return (1 - w) * knots_q[i - 1] + w * knots_q[i]
