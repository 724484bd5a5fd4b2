"""Joint trajectories of this stack -> timed goals for NICOL's NIAS-API, without any ROS.

NICOL's own stack (ROS 1) moves an arm with one blocking, timed goal at a time:
`/right/open_manipulator_p/goal_joint_space_path` (`open_manipulator_msgs/SetJointPosition`:
`planning_group`, `joint_position.position[13]`, scaling factors, `path_time`), each run as
a rest-to-rest path. The controller node publishes `trajectory_msgs/JointTrajectory` over
the profile's joints (`r_joint1..8`, `r_gripper`). This module turns one into the other:

* `trajectory_to_goals` checks the trajectory (known joints, all of them, finite values,
  inside the limits, increasing times) and refuses it whole if anything is wrong; then it
  keeps points at least `min_path_time` apart (every goal is a stop, so fewer is smoother),
  maps the gripper onto the RH8D hand actuators and stretches each goal's `path_time` until
  no joint's *peak* speed exceeds the lab's limits;
* `check_goal_plan` re-checks a plan where it is executed (the ROS 1 relay), so a goal that
  breaks a limit is refused there too;
* `nias_state_to_profile` maps NIAS joint states back onto the profile's joint names.

Pure Python (plus the profile's dataclasses), so the same code runs in the ROS 2 node and in
the rospy relay on NICOL's ROS 1 machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from swm_ros.config import ConfigError, load_config
from swm_ros.robots.profile import RobotProfile

N_ARM = 8          # NIAS goal: 8 arm joints, then the hand actuators
LIMIT_TOL = 1e-6   # rad: rounding slack on the limits


class TrajectoryRejected(ValueError):
    """The trajectory (or goal plan) is unsafe or malformed; nothing of it may be sent."""


@dataclass(frozen=True)
class NiasArmSpec:
    side: str                          # right | left
    planning_group: str                # r_arm | l_arm
    service: str                       # goal_joint_space_path service
    joint_states_topic: str            # NIAS actuator states
    actuators: tuple[str, ...]         # goal order: 8 arm joints, then the hand actuators
    hand_open: tuple[float, ...]       # hand actuator values, goal order, for gripper open
    hand_closed: tuple[float, ...]     # ... and closed

    def __post_init__(self) -> None:
        n_hand = len(self.actuators) - N_ARM
        if n_hand < 0 or len(self.hand_open) != n_hand or len(self.hand_closed) != n_hand:
            raise ConfigError(f"arm.actuators must be {N_ARM} arm joints plus the hand actuators; "
                              f"hand_open/hand_closed need one value per hand actuator ({n_hand})")
        if any(abs(v) > math.pi for v in (*self.hand_open, *self.hand_closed)):
            raise ConfigError("hand actuator values must lie in [-pi, pi]")


@dataclass(frozen=True)
class NiasConfig:
    arm: NiasArmSpec
    arm_velocity_limit: float          # rad/s, peak, every arm joint
    hand_velocity_limit: float         # rad/s, peak, hand actuators
    peak_factor: float                 # peak / average speed of one goal's path (>= 1)
    min_path_time: float               # s
    max_goal_step: float               # rad: largest move of an arm joint in one goal
    max_velocity_scaling_factor: float = 1.0
    max_accelerations_scaling_factor: float = 1.0

    def __post_init__(self) -> None:
        if min(self.arm_velocity_limit, self.hand_velocity_limit, self.min_path_time, self.max_goal_step) <= 0:
            raise ConfigError("velocity limits, min_path_time and max_goal_step must be positive")
        if self.peak_factor < 1.0:
            raise ConfigError("peak_factor must be >= 1 (peak speed is never below the average)")


def load_nias_config(path: str | Path) -> NiasConfig:
    return load_config(NiasConfig, path)


@dataclass(frozen=True)
class NiasGoal:
    """One goal_joint_space_path request."""

    planning_group: str
    positions: tuple[float, ...]       # NiasArmSpec.actuators order
    path_time: float                   # s
    max_velocity_scaling_factor: float = 1.0
    max_accelerations_scaling_factor: float = 1.0


class NiasMapping:
    """The profile's joints <-> NIAS actuators, limits in actuator space, timing rules."""

    def __init__(self, profile: RobotProfile, config: NiasConfig) -> None:
        if len(profile.arm.joints) != N_ARM:
            raise ConfigError(f"the NIAS goal has {N_ARM} arm joints, profile {profile.name} has "
                              f"{len(profile.arm.joints)}")
        self.profile, self.config = profile, config
        self.joint_names = profile.joint_names            # arm joints, then the gripper
        self.actuators = config.arm.actuators
        g = profile.gripper
        self._g_open, self._g_closed = g.open, g.closed
        self._hand_open, self._hand_closed = config.arm.hand_open, config.arm.hand_closed
        lo_g, hi_g = sorted((g.open, g.closed))
        self.lower = (*profile.arm.lower, lo_g)
        self.upper = (*profile.arm.upper, hi_g)
        hand_lo = [min(a, b) for a, b in zip(self._hand_open, self._hand_closed)]
        hand_hi = [max(a, b) for a, b in zip(self._hand_open, self._hand_closed)]
        self.actuator_lower = (*profile.arm.lower, *hand_lo)
        self.actuator_upper = (*profile.arm.upper, *hand_hi)
        self.actuator_vmax = (config.arm_velocity_limit,) * N_ARM + \
                             (config.hand_velocity_limit,) * (len(self.actuators) - N_ARM)

    # -- joint space <-> actuator space -----------------------------------------------

    def closure(self, gripper: float) -> float:
        """0 = open .. 1 = closed."""
        return min(1.0, max(0.0, (gripper - self._g_open) / (self._g_closed - self._g_open)))

    def to_actuators(self, q: Sequence[float]) -> tuple[float, ...]:
        """Profile joint positions (arm, gripper) -> one NIAS command vector."""
        c = self.closure(q[N_ARM])
        hand = tuple(o + c * (k - o) for o, k in zip(self._hand_open, self._hand_closed))
        return (*(float(v) for v in q[:N_ARM]), *hand)

    def gripper_from_hand(self, hand: Sequence[float]) -> float:
        """Mean closure of the hand actuators that move between open and closed -> gripper joint."""
        fractions = [(h - o) / (k - o) for h, o, k in zip(hand, self._hand_open, self._hand_closed) if k != o]
        c = min(1.0, max(0.0, sum(fractions) / len(fractions))) if fractions else 0.0
        return self._g_open + c * (self._g_closed - self._g_open)

    def path_time(self, start: Sequence[float], goal: Sequence[float], commanded: float) -> float:
        """The commanded time, stretched so no actuator's peak speed exceeds its limit."""
        needed = max(self.config.peak_factor * abs(b - a) / v for a, b, v in zip(start, goal, self.actuator_vmax))
        return max(commanded, needed, self.config.min_path_time)

    def goal(self, positions: Sequence[float], path_time: float) -> NiasGoal:
        c = self.config
        return NiasGoal(c.arm.planning_group, tuple(positions), float(path_time),
                        c.max_velocity_scaling_factor, c.max_accelerations_scaling_factor)

    # -- checks -------------------------------------------------------------------------

    def _check_actuators(self, a: Sequence[float], where: str) -> None:
        if len(a) != len(self.actuators):
            raise TrajectoryRejected(f"{where}: {len(a)} values for {len(self.actuators)} actuators")
        for name, v, lo, hi in zip(self.actuators, a, self.actuator_lower, self.actuator_upper):
            if not math.isfinite(v):
                raise TrajectoryRejected(f"{where}: {name} is {v}")
            if v < lo - LIMIT_TOL or v > hi + LIMIT_TOL:
                raise TrajectoryRejected(f"{where}: {name}={v:.4f} outside [{lo:.4f}, {hi:.4f}]")

    def _check_step(self, start: Sequence[float], goal: Sequence[float], where: str) -> None:
        step = max(abs(b - a) for a, b in zip(start[:N_ARM], goal[:N_ARM]))
        if step > self.config.max_goal_step + LIMIT_TOL:
            raise TrajectoryRejected(f"{where}: an arm joint would move {step:.3f} rad in one goal "
                                     f"(max_goal_step {self.config.max_goal_step:g})")


def trajectory_to_goals(names: Sequence[str], times: Sequence[float], positions: Sequence[Sequence[float]],
                        current: Sequence[float], mapping: NiasMapping) -> list[NiasGoal]:
    """A JointTrajectory (names, time_from_start per point, positions per point) -> NIAS goals.

    `current` is the measured state in NIAS actuator order: the first goal's speed is
    judged from there. Raises TrajectoryRejected (and returns nothing) if any part is bad.
    """
    names = list(names)
    expected = list(mapping.joint_names)
    if len(set(names)) != len(names):
        raise TrajectoryRejected(f"duplicate joint names {names}")
    unknown = sorted(set(names) - set(expected))
    if unknown:
        raise TrajectoryRejected(f"unknown joint(s) {unknown}; this arm has {expected}")
    missing = [n for n in expected if n not in names]
    if missing:
        raise TrajectoryRejected(f"joint(s) {missing} missing: partial trajectories are not executed")
    if not positions:
        raise TrajectoryRejected("empty trajectory")
    if len(times) != len(positions):
        raise TrajectoryRejected(f"{len(times)} times for {len(positions)} points")
    order = [names.index(n) for n in expected]
    rows: list[list[float]] = []
    prev_t = 0.0
    for k, (t, p) in enumerate(zip(times, positions)):
        if len(p) != len(names):
            raise TrajectoryRejected(f"point {k}: {len(p)} positions for {len(names)} joints")
        if not math.isfinite(t) or t <= prev_t:
            raise TrajectoryRejected(f"point {k}: time_from_start {t} is not after {prev_t} (times must increase from 0)")
        q = [float(p[i]) for i in order]
        for name, v, lo, hi in zip(expected, q, mapping.lower, mapping.upper):
            if not math.isfinite(v):
                raise TrajectoryRejected(f"point {k}: {name} is {v}")
            if v < lo - LIMIT_TOL or v > hi + LIMIT_TOL:
                raise TrajectoryRejected(f"point {k}: {name}={v:.4f} outside its limits [{lo:.4f}, {hi:.4f}]")
        rows.append(q)
        prev_t = float(t)
    start = [float(v) for v in current]
    mapping._check_actuators(start, "measured state")

    # Keep points at least min_path_time apart (and always the last): straight joint-space
    # segments between in-limit points stay inside the (box) limits.
    kept, t_last = [], 0.0
    for k, t in enumerate(times):
        if t - t_last >= mapping.config.min_path_time or k == len(times) - 1:
            kept.append(k)
            t_last = float(t)
    goals: list[NiasGoal] = []
    t_prev, a_prev = 0.0, start
    for k in kept:
        a = mapping.to_actuators(rows[k])
        mapping._check_step(a_prev, a, f"point {k}")
        goals.append(mapping.goal(a, mapping.path_time(a_prev, a, float(times[k]) - t_prev)))
        t_prev, a_prev = float(times[k]), a
    return goals


def check_goal_plan(actuators: Sequence[str], goals: Sequence[NiasGoal], current: Sequence[float],
                    mapping: NiasMapping) -> None:
    """Where goals are executed: same actuator order, inside the limits, slow enough. Raises."""
    if list(actuators) != list(mapping.actuators):
        raise TrajectoryRejected(f"goal actuators {list(actuators)} are not {list(mapping.actuators)}")
    if not goals:
        raise TrajectoryRejected("empty goal plan")
    prev = [float(v) for v in current]
    mapping._check_actuators(prev, "measured state")
    for k, g in enumerate(goals):
        mapping._check_actuators(g.positions, f"goal {k}")
        mapping._check_step(prev, g.positions, f"goal {k}")
        if g.planning_group != mapping.config.arm.planning_group:
            raise TrajectoryRejected(f"goal {k}: planning group {g.planning_group!r}, "
                                     f"expected {mapping.config.arm.planning_group!r}")
        needed = mapping.path_time(prev, g.positions, 0.0)
        if not math.isfinite(g.path_time) or g.path_time < needed - 1e-9:
            raise TrajectoryRejected(f"goal {k}: path_time {g.path_time:.3f} s is below the {needed:.3f} s "
                                     "the speed limits need")
        prev = list(g.positions)


def goals_from_plan(times: Sequence[float], positions: Sequence[Sequence[float]], mapping: NiasMapping) -> list[NiasGoal]:
    """A goal plan sent as a trajectory (cumulative time_from_start per goal) -> goals."""
    goals, t_prev = [], 0.0
    for t, p in zip(times, positions):
        goals.append(mapping.goal([float(v) for v in p], float(t) - t_prev))
        t_prev = float(t)
    return goals


def nias_state_values(names: Sequence[str], positions: Sequence[float], mapping: NiasMapping) -> list[float] | None:
    """NIAS actuator states in goal order; None if an actuator is missing or not finite.

    Named states are matched by name; states without names are taken in goal order (as the
    lab's own code reads them).
    """
    if names:
        index = {n: i for i, n in enumerate(names)}
        if any(a not in index or index[a] >= len(positions) for a in mapping.actuators):
            return None
        values = [float(positions[index[a]]) for a in mapping.actuators]
    else:
        if len(positions) < len(mapping.actuators):
            return None
        values = [float(v) for v in positions[:len(mapping.actuators)]]
    return values if all(math.isfinite(v) for v in values) else None


def nias_state_to_profile(values: Sequence[float], mapping: NiasMapping) -> tuple[list[str], list[float]]:
    """Actuator values (goal order) -> the profile's joint names and positions (gripper from the hand)."""
    q = [float(v) for v in values[:N_ARM]] + [mapping.gripper_from_hand(values[N_ARM:])]
    return list(mapping.joint_names), q


def actuators_from_profile(q: Sequence[float], mapping: NiasMapping) -> tuple[float, ...]:
    """Profile joint positions -> actuator vector (for tests and for a measured start)."""
    return mapping.to_actuators(q)
