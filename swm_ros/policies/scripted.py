"""Scripted experts (privileged, closed loop), a noisy expert and a random policy.

The experts read `Observation.state` (the simulator's ground truth), so they are for data
collection and as the base policy in simulation only. Each `propose` call plans a whole chunk
from the current state: a small waypoint state machine per task runs on a *virtual* copy of
the scene (the hand moves exactly as commanded, a held block moves with the hand, a pushed
block stays in front of the pusher), as if the chunk were executed open loop. Replanning at
every call closes the loop, so slips and missed grasps are retried.

Phases (all at the grasp point, tool pointing down):
* reach:    over the block at a safe height, then down to just above its centre, pads open.
* pick:     over the block, down, close, lift.  A closed hand with nothing inside reopens.
* stack:    pick the top block, carry it over the bottom block, lower, open, retreat upwards.
* push:     pads closed; go behind the source block on the line to the target, lower, push
            along the line until the source would touch the target.
* separate: pick one block with the pads across the shared face, put it down 14 cm from the
            other (towards the table centre when that would leave the spawn region).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from swm_ros.envs.base import ACTION_DIM, Observation, PrivilegedState, TaskSpec
from swm_ros.robots.kinematics import wrap_angle
from swm_ros.robots.profile import RobotProfile, load_robot_profile

SAFE_Z = 0.10         # grasp point above the table when moving over blocks (pad tips at 8.5 cm)
CARRY_Z = 0.13        # while carrying a block to stack it
LIFT_Z = 0.13         # pick: lift the block this high (bottom ~9 cm above the table)
PUSH_Z = 0.02         # grasp point above the table while pushing (pad tips 5 mm above it)
PUSH_SPEED = 0.7     # fraction of a full step while pushing: slower pushes rotate blocks less
PADDLE = 0.012        # closed pads' half depth along the push direction (scene.PAD_HALF[2])
XY_TOL = 0.008
Z_TOL = 0.008
YAW_TOL = 0.08
CLOSE_STEPS = 4       # closing steps before a block counts as held (the pads need ~0.35 s)
OPEN_STEPS = 3
SEPARATE_GAP = 0.115  # separate: centre distance that counts as done (task needs > 0.10)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.array([1.0, 0.0])


def _block_yaw(q: np.ndarray) -> float:
    return float(2.0 * np.arctan2(q[3], q[0]))


@dataclass
class _Virtual:
    """The expert's model of the scene while it rolls a chunk out."""

    pos: np.ndarray
    yaw: float
    opening: float
    held: str | None
    objs: dict[str, np.ndarray]
    obj_yaw: dict[str, float]
    half: dict[str, float]
    table: float
    closing: int = 0          # consecutive steps the pads were commanded closed
    opened: int = 0           # consecutive steps the pads were commanded open
    held_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @classmethod
    def from_state(cls, s: PrivilegedState) -> "_Virtual":
        v = cls(pos=s.effector_position.copy(), yaw=float(s.effector_yaw), opening=s.gripper_opening,
                held=s.grasped, objs={k: o.position.copy() for k, o in s.objects.items()},
                obj_yaw={k: _block_yaw(o.quaternion) for k, o in s.objects.items()},
                half={k: o.half_size for k, o in s.objects.items()}, table=s.table_height)
        if v.held:
            v.held_offset = v.objs[v.held] - v.pos
        # A hand already closed (or opened) counts as such for the phase logic.
        v.closing = CLOSE_STEPS if s.gripper_opening < 0.7 else 0
        v.opened = OPEN_STEPS if s.gripper_opening > 0.95 else 0
        return v


class ScriptedExpertPolicy:
    """Closed-loop scripted expert for reach, push, separate, pick and stack."""

    def __init__(self, profile: RobotProfile | str = "nicol", chunk_length: int = 16) -> None:
        self.profile = profile if isinstance(profile, RobotProfile) else load_robot_profile(profile)
        self.chunk_length = int(chunk_length)
        self._ws_lo = np.asarray(self.profile.workspace.lower)
        self._ws_hi = np.asarray(self.profile.workspace.upper)
        self._step_xyz = self.profile.effector.max_step_xyz
        self._step_yaw = self.profile.effector.max_step_yaw
        self._task: TaskSpec | None = None
        center = 0.5 * (np.asarray(self.profile.table.spawn_lower_xy) + np.asarray(self.profile.table.spawn_upper_xy))
        self._spawn_center = center

    def reset(self, task: TaskSpec, seed: int | None = None) -> None:
        self._task = task

    def propose(self, observation: Observation, n: int = 1) -> np.ndarray:
        if observation.state is None:
            raise ValueError("the scripted expert needs privileged state (Observation.state)")
        if self._task is None:
            raise RuntimeError("call reset(task) before propose()")
        chunk = self.plan(observation.state, self.chunk_length)
        return np.repeat(chunk[None], n, axis=0)

    # -- planning ------------------------------------------------------------------------

    def plan(self, state: PrivilegedState, horizon: int) -> np.ndarray:
        v = _Virtual.from_state(state)
        goal_fn = getattr(self, f"_goal_{self._task.name}")
        out = np.zeros((horizon, ACTION_DIM))
        for t in range(horizon):
            pos, yaw, grip = goal_fn(v, self._task.objects)
            out[t] = self._action_towards(v, pos, yaw, grip)
            self._advance(v, out[t])
        return out

    def _action_towards(self, v: _Virtual, pos: np.ndarray, yaw: float, grip: float) -> np.ndarray:
        pos = np.clip(pos, self._ws_lo, self._ws_hi)
        a = np.empty(ACTION_DIM)
        a[:3] = np.clip((pos - v.pos) / self._step_xyz, -1.0, 1.0)
        a[3] = np.clip(wrap_angle(yaw - v.yaw) / self._step_yaw, -1.0, 1.0)
        a[4] = grip
        return a

    def _advance(self, v: _Virtual, a: np.ndarray) -> None:
        v.pos = np.clip(v.pos + a[:3] * self._step_xyz, self._ws_lo, self._ws_hi)
        v.yaw = float(np.clip(v.yaw + a[3] * self._step_yaw, -np.pi / 2, np.pi / 2))
        if a[4] > 0:
            v.closing += 1
            v.opened = 0
            v.opening = max(0.0, v.opening - 0.3)
        else:
            v.opened += 1
            v.closing = 0
            v.opening = min(1.0, v.opening + 0.3)
            v.held = None
        if v.held:
            v.objs[v.held] = v.pos + v.held_offset

    # -- shared pieces ---------------------------------------------------------------------

    def _grasp_yaw(self, v: _Virtual, name: str) -> float:
        return wrap_angle(v.obj_yaw[name], np.pi / 2)  # cubes repeat every quarter turn

    def _over(self, v: _Virtual, xy: np.ndarray, z: float, yaw: float, grip: float,
              safe: float) -> tuple[np.ndarray, float, float] | None:
        """Waypoints to get over `xy` at height `safe` (rising first when low and far)."""
        dxy = float(np.linalg.norm(v.pos[:2] - xy))
        if dxy > XY_TOL:
            if v.pos[2] < safe - 0.015 and dxy > 0.02:
                return np.array([*v.pos[:2], safe]), yaw, grip
            return np.array([*xy, max(safe, z)]), yaw, grip
        return None

    def _pick_goal(self, v: _Virtual, name: str, lift_z: float,
                   yaw: float | None = None) -> tuple[np.ndarray, float, float]:
        block = v.objs[name]
        yaw = self._grasp_yaw(v, name) if yaw is None else yaw
        grasp_z = block[2] + 0.002
        if v.held == name:
            return np.array([*v.pos[:2], v.table + lift_z]), v.yaw, 1.0
        at_grasp = (np.linalg.norm(v.pos[:2] - block[:2]) < XY_TOL + 0.004
                    and abs(v.pos[2] - grasp_z) < Z_TOL and abs(wrap_angle(v.yaw - yaw)) < YAW_TOL)
        if v.closing > 0:
            if at_grasp and v.closing < CLOSE_STEPS:
                return v.pos.copy(), v.yaw, 1.0
            if at_grasp:
                v.held, v.held_offset = name, block - v.pos
                return v.pos.copy(), v.yaw, 1.0
            # closed on nothing: open and come back up
            return np.array([*v.pos[:2], v.table + SAFE_Z]), yaw, -1.0
        if v.opened < OPEN_STEPS and v.pos[2] < v.table + SAFE_Z - 0.015:
            return np.array([*v.pos[:2], v.table + SAFE_Z]), yaw, -1.0   # finish opening while rising
        if at_grasp:
            return v.pos.copy(), v.yaw, 1.0
        way = self._over(v, block[:2], grasp_z, yaw, -1.0, v.table + SAFE_Z)
        if way is not None:
            return way
        return np.array([*block[:2], grasp_z]), yaw, -1.0

    def _push_goal(self, v: _Virtual, name: str, goal_xy: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Push block `name` until its centre reaches `goal_xy`, pads closed."""
        block = v.objs[name]
        h = v.half[name]
        d = _unit(goal_xy - block[:2])
        yaw = wrap_angle(float(np.arctan2(d[1], d[0])) + np.pi / 2, np.pi)
        push_z = v.table + PUSH_Z
        rel = v.pos[:2] - block[:2]
        along = float(rel @ d)
        lateral = float(abs(rel @ np.array([-d[1], d[0]])))
        contact = h + PADDLE
        behind = (lateral < 0.03 and -contact - 0.05 < along < -contact + 0.012
                  and v.pos[2] < push_z + Z_TOL and abs(wrap_angle(v.yaw - yaw, np.pi)) < 2 * YAW_TOL)
        if behind:
            # Steer to the point right behind the block (removing lateral drift) and
            # advance along d, at most PUSH_SPEED of a full step.
            remaining = float((goal_xy - block[:2]) @ d)
            advance = min(PUSH_SPEED * self._step_xyz, max(remaining, 0.0))
            hand_goal = block[:2] - d * contact + d * advance
            # virtual block stays in front of the pusher
            v.objs[name] = np.array([*(block[:2] + d * advance), block[2]])
            return np.array([*hand_goal, push_z]), yaw, 1.0
        pre = block[:2] - d * (contact + 0.03)
        way = self._over(v, pre, push_z, yaw, 1.0, v.table + SAFE_Z)
        if way is not None:
            return way
        return np.array([*pre, push_z]), yaw, 1.0

    # -- tasks -----------------------------------------------------------------------------

    def _goal_reach(self, v: _Virtual, objs: tuple[str, ...]):
        block = v.objs[objs[0]]
        yaw = self._grasp_yaw(v, objs[0])
        way = self._over(v, block[:2], block[2], yaw, -1.0, v.table + SAFE_Z)
        if way is not None:
            return way
        return np.array([*block[:2], block[2] + 0.01]), yaw, -1.0

    def _goal_pick(self, v: _Virtual, objs: tuple[str, ...]):
        return self._pick_goal(v, objs[0], LIFT_Z)

    def _goal_push(self, v: _Virtual, objs: tuple[str, ...]):
        a, b = v.objs[objs[0]][:2], v.objs[objs[1]][:2]
        d = _unit(b - a)
        # aim 5 mm past touching, so contact is made despite tracking error
        goal = b - d * (v.half[objs[0]] + v.half[objs[1]] - 0.005)
        return self._push_goal(v, objs[0], goal)

    def _goal_separate(self, v: _Virtual, objs: tuple[str, ...]):
        # Pick the first block with the pads across the pair's shared face (they cannot fit
        # between touching blocks), carry it 14 cm away from the other one, put it down.
        a, b = v.objs[objs[0]], v.objs[objs[1]]
        u = _unit(a[:2] - b[:2])
        if v.held == objs[0]:
            away = b[:2] + 0.14 * u
            lo = np.asarray(self.profile.table.spawn_lower_xy)
            hi = np.asarray(self.profile.table.spawn_upper_xy)
            if np.any(away < lo) or np.any(away > hi):
                away = b[:2] + 0.14 * _unit(self._spawn_center - b[:2])
            return self._place_goal(v, away, v.table + v.half[objs[0]])
        if float(np.linalg.norm(a[:2] - b[:2])) > SEPARATE_GAP and v.pos[2] < v.table + SAFE_Z - 0.015:
            return np.array([*v.pos[:2], v.table + SAFE_Z]), v.yaw, -1.0   # placed: open and retreat
        if float(np.linalg.norm(a[:2] - b[:2])) > SEPARATE_GAP and not v.held:
            return v.pos.copy(), v.yaw, -1.0
        yaw = wrap_angle(float(np.arctan2(u[1], u[0])) + np.pi / 2, np.pi)  # tool x across u (pads symmetric under pi)
        return self._pick_goal(v, objs[0], CARRY_Z, yaw=yaw)

    def _place_goal(self, v: _Virtual, xy: np.ndarray, centre_z: float) -> tuple[np.ndarray, float, float]:
        """Carry the held block over `xy`, lower it until its centre is at `centre_z`, release."""
        place_z = centre_z + 0.004 - v.held_offset[2]
        way = self._over(v, xy, place_z, v.yaw, 1.0, v.table + CARRY_Z)
        if way is not None:
            return way
        if v.pos[2] > place_z + Z_TOL:
            return np.array([*xy, place_z]), v.yaw, 1.0
        return v.pos.copy(), v.yaw, -1.0          # release

    def _goal_stack(self, v: _Virtual, objs: tuple[str, ...]):
        top, bottom = objs[0], objs[1]
        tb, bb = v.objs[top], v.objs[bottom]
        h2 = v.half[top] + v.half[bottom]
        on_top = (np.linalg.norm(tb[:2] - bb[:2]) < v.half[bottom] and abs(tb[2] - bb[2] - h2) < 0.012)
        if v.held == top:
            return self._place_goal(v, bb[:2], bb[2] + h2)
        if on_top:
            # released on the bottom block: open fully, then rise clear of it
            if v.opened < OPEN_STEPS:
                return v.pos.copy(), v.yaw, -1.0
            return np.array([*v.pos[:2], v.table + SAFE_Z + 0.05]), v.yaw, -1.0
        return self._pick_goal(v, top, CARRY_Z)


class NoisyExpertPolicy:
    """The scripted expert plus temporally smoothed Gaussian noise (exponential smoothing).

    noise_scale: std of the smoothed noise in action units; smoothing in [0, 1): weight of
    the previous noise sample (0 = white noise). The gripper channel is left clean unless
    `gripper_noise` is set, so grasps still happen.
    """

    def __init__(self, profile: RobotProfile | str = "nicol", chunk_length: int = 16,
                 noise_scale: float = 0.3, smoothing: float = 0.8, gripper_noise: bool = False,
                 seed: int = 0) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
        self.expert = ScriptedExpertPolicy(profile, chunk_length)
        self.chunk_length = self.expert.chunk_length
        self.noise_scale = float(noise_scale)
        self.smoothing = float(smoothing)
        self.gripper_noise = gripper_noise
        self._rng = np.random.default_rng(seed)

    def reset(self, task: TaskSpec, seed: int | None = None) -> None:
        self.expert.reset(task, seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def propose(self, observation: Observation, n: int = 1) -> np.ndarray:
        base = self.expert.propose(observation, n)
        noise = _smoothed_noise(self._rng, base.shape, self.smoothing) * self.noise_scale
        if not self.gripper_noise:
            noise[..., 4] = 0.0
        return np.clip(base + noise, -1.0, 1.0)


class RandomPolicy:
    """Smoothed random actions in [-1, 1] (the gripper flips rarely, as a held target)."""

    def __init__(self, chunk_length: int = 16, smoothing: float = 0.8, scale: float = 0.7,
                 seed: int = 0) -> None:
        self.chunk_length = int(chunk_length)
        self.smoothing = float(smoothing)
        self.scale = float(scale)
        self._rng = np.random.default_rng(seed)

    def reset(self, task: TaskSpec, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def propose(self, observation: Observation, n: int = 1) -> np.ndarray:
        a = _smoothed_noise(self._rng, (n, self.chunk_length, ACTION_DIM), self.smoothing) * self.scale
        grip = np.where(self._rng.random((n, 1)) < 0.5, -1.0, 1.0)
        a[..., 4] = grip
        return np.clip(a, -1.0, 1.0)


def _smoothed_noise(rng: np.random.Generator, shape: tuple[int, ...], smoothing: float) -> np.ndarray:
    """Unit-variance AR(1) noise along axis -2 (time)."""
    white = rng.standard_normal(shape)
    out = np.empty(shape)
    gain = np.sqrt(1.0 - smoothing ** 2)
    out[..., 0, :] = white[..., 0, :]
    for t in range(1, shape[-2]):
        out[..., t, :] = smoothing * out[..., t - 1, :] + gain * white[..., t, :]
    return out


def learned_policy(checkpoint: str | None = None, chunk_length: int | None = None, seed: int = 0):
    """The learned flow-matching chunk policy (policies/learned): the shipped weights
    (policies/weights/flow), or `checkpoint`; a missing checkpoint names the train command."""
    from swm_ros.policies.learned.policy import load_policy

    return load_policy(checkpoint, seed=seed, chunk_length=chunk_length)


POLICIES = {"scripted": ScriptedExpertPolicy, "noisy": NoisyExpertPolicy, "random": RandomPolicy,
            "learned": learned_policy}


def make_policy(name: str, **kw):
    """`scripted`, `noisy`, `random`, `learned` (or `ogbench_*`, policies/ogbench_oracle.py); keyword arguments go to the constructor."""
    if name.startswith("ogbench"):
        from swm_ros.policies.ogbench_oracle import make_ogbench_policy

        return make_ogbench_policy(name, **kw)
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; valid: {sorted(POLICIES)}, and on OGBench envs "
                         f"ogbench_oracle, ogbench_noisy, ogbench_noisy_high, ogbench_misaligned, ogbench_play") from None
    return cls(**kw)
