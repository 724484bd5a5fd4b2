"""OGBench's own scripted cube oracles as project `Policy`s, with OGBench's data-collection noise.

Policies (names for `make_policy` and `swm collect --policies`):

* `ogbench_oracle`: `CubeMarkovOracle` (closed loop, min_norm 0.4), no noise.
* `ogbench_noisy`:  the same plus OGBench's "noisy" dataset noise (its generate_manipspace.py
  settings): per episode a level xi ~ U(0, 0.1), per step Gaussian noise with std
  (xi, xi, xi, 3 xi, 10 xi) on (dx, dy, dz, dyaw, gripper), and a uniform random action
  with probability 0.1 (`--p_random_action=0.1` of OGBench's noisy datasets).
* `ogbench_noisy_high`: noise level up to 0.3 (the project's OGBench spike), no random
  actions: more failed grasps and dropped cubes, so more varied outcomes.
* `ogbench_misaligned`: `ogbench_noisy` that believes its target cube is somewhere else: per
  episode an xy error of 6 cm in a uniformly random direction (`target_error`). It heads the
  right way and then misses by centimetres, as an imprecise learned policy does; the closed-loop
  benchmark's OGBench base policy (the planner has to find the cube in the image).
* `ogbench_play`:   `CubePlanOracle` (open-loop keyframe plan with smoothed noise 0.1 /
  smoothing 0.5, OGBench's "play" datasets), re-planned when its target changes or its
  plan has run out with the cube not yet placed.

Chunks. OGBench's oracles choose one action from the current state. `propose` turns that
into a chunk by *looking ahead in the simulator*: a state-only copy of the same OGBench
scene (one per cube count and process, never rendered) is set to the observation's MuJoCo
physics state (`OGBenchCubeState.physics_state`), and the oracle, with its noise, is rolled
forward `chunk_length` steps there. The first action is exactly what the closed-loop
oracle does now; the rest is what it would do if the world follows the simulator, so a
chunk executed open loop tracks the closed-loop oracle closely, and replanning every call
(or `swm collect --replan-every 1`) reproduces it exactly. n > 1 proposals differ only by
noise. These are privileged experts for data collection and simulation, never for a robot.

Targets. In `play` the env names the target cube and goal (as OGBench's data collection
does). In the evaluation tasks every cube has a goal; a small sequencer hands the oracle
one cube at a time: the pending cube with the lowest goal first (a stack's base before its
top), skipping a cube whose goal another pending cube occupies; when every pending goal is
occupied (task4 "swap"), the occupying cube is first put down on the free spot of the
table farthest from all cubes and goals. A target stays until its cube is within OGBench's
4 cm of the goal, released, and the hand is clear of it (risen, as OGBench's oracle does
after a release, or away sideways): heading for the next cube earlier drags it off its goal.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import mujoco
import numpy as np

from swm_ros.envs.base import ACTION_DIM, Observation, TaskSpec
from swm_ros.envs.ogbench_cube import STATE_SPEC, SUCCESS_RADIUS, OGBenchCubeState, make_ogbench_gym, reset_ogbench_gym

RELEASED_CONTACT = 0.1        # OGBench's oracle: gripper_contact below this = gripper open
CLEAR_HEIGHT = 0.16           # OGBench's oracle: the hand above this height is "in the air"
CLEAR_XY = 0.06               # ... or this far (xy) from the cube it placed
OCCUPIED_XY = 0.06            # a pending cube this close (xy) to a goal occupies it
_SPOT_GRID = np.stack(np.meshgrid(np.linspace(0.32, 0.53, 8), np.linspace(-0.28, 0.28, 15)), -1).reshape(-1, 2)

POLICY_SETTINGS: dict[str, dict[str, Any]] = {
    "ogbench_oracle": dict(oracle="markov", noise=0.0),
    "ogbench_noisy": dict(oracle="markov", noise=0.1, p_random_action=0.1),
    "ogbench_noisy_high": dict(oracle="markov", noise=0.3),
    "ogbench_play": dict(oracle="plan", noise=0.1),
    "ogbench_misaligned": dict(oracle="markov", noise=0.1, p_random_action=0.1, target_error=0.06),
}

_SHADOWS: dict[int, Any] = {}


def shadow_env(num_cubes: int):
    """The process's state-only OGBench scene with `num_cubes` cubes, used for look-ahead."""
    env = _SHADOWS.get(num_cubes)
    if env is None:
        env = make_ogbench_gym(num_cubes, visual=False, play=False)
        reset_ogbench_gym(env, 0, {"task_id": 1})      # compiles the model
        _SHADOWS[num_cubes] = env
    return env


def load_physics_state(u, physics_state: np.ndarray) -> dict[str, np.ndarray]:
    """Put an OGBench env (unwrapped) into `physics_state`; returns OGBench's info for it."""
    m, d = u._model, u._data
    if physics_state.shape != (mujoco.mj_stateSize(m, STATE_SPEC),):
        raise ValueError(f"physics state of size {physics_state.shape} does not fit this OGBench scene "
                         f"({mujoco.mj_stateSize(m, STATE_SPEC)} values)")
    mujoco.mj_setState(m, d, physics_state, STATE_SPEC)
    mujoco.mj_forward(m, d)
    mujoco.mj_rnePostConstraint(m, d)     # contact forces: OGBench's gripper_contact reads them
    u.pre_step()
    return u.compute_ob_info()


@contextlib.contextmanager
def _numpy_global_seed(seed: int) -> Iterator[None]:
    """OGBench's oracles draw from numpy's global RNG; seed it for them and restore it after."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


@dataclass(frozen=True)
class _Target:
    block: int
    goal: np.ndarray          # (3,) where the cube goes now (its goal, or a free spot)
    final: bool = True        # False: a temporary spot that clears another cube's goal


class CubeSequencer:
    """Which cube the oracle works on, one at a time (see module docstring)."""

    def __init__(self) -> None:
        self.current: _Target | None = None

    def choose(self, positions: np.ndarray, goals: np.ndarray, effector: np.ndarray, released: bool) -> _Target:
        """positions, goals: (K, 3) cube centres and goals; released: the gripper has let go."""
        cur = self.current
        if cur is not None:
            cube = positions[cur.block]
            # done once the hand is clear of the placed cube: heading off earlier drags it along
            clear = effector[2] > CLEAR_HEIGHT or np.linalg.norm(effector[:2] - cube[:2]) > CLEAR_XY
            if not (np.linalg.norm(cube - cur.goal) <= SUCCESS_RADIUS and released and clear):
                return cur
        dist = np.linalg.norm(positions - goals, axis=1)
        pending = [i for i in range(len(goals)) if dist[i] > SUCCESS_RADIUS]
        if not pending:
            if cur is None:
                cur = self.current = _Target(0, goals[0])
            return cur
        order = sorted(pending, key=lambda i: (round(float(goals[i][2]), 3), i))

        def occupant(i: int) -> int | None:
            for j in pending:
                if j != i and np.linalg.norm(positions[j, :2] - goals[i, :2]) < OCCUPIED_XY:
                    return j
            return None

        for i in order:
            if occupant(i) is None:
                self.current = _Target(i, goals[i].copy())
                return self.current
        j = occupant(order[0])
        self.current = _Target(j, np.array([*_free_spot(positions, goals), positions[j, 2]]), final=False)
        return self.current


def _free_spot(positions: np.ndarray, goals: np.ndarray) -> np.ndarray:
    taken = np.concatenate([positions[:, :2], goals[:, :2]])
    clearance = np.min(np.linalg.norm(_SPOT_GRID[:, None] - taken[None], axis=-1), axis=1)
    return _SPOT_GRID[int(np.argmax(clearance))]


class OGBenchOraclePolicy:
    """OGBench's `CubeMarkovOracle` or `CubePlanOracle` behind the `Policy` protocol."""

    def __init__(self, oracle: str = "markov", noise: float = 0.0, noise_smoothing: float = 0.5,
                 min_norm: float = 0.4, p_random_action: float = 0.0, target_error: float = 0.0,
                 chunk_length: int = 16, seed: int = 0) -> None:
        if oracle not in ("markov", "plan"):
            raise ValueError(f"oracle must be 'markov' or 'plan', got {oracle!r}")
        if noise < 0 or target_error < 0 or not 0.0 <= p_random_action <= 1.0 or chunk_length < 1:
            raise ValueError("noise and target_error must be >= 0, p_random_action in [0, 1], chunk_length >= 1")
        self.oracle_kind = oracle
        self.noise = float(noise)
        self.noise_smoothing = float(noise_smoothing)
        self.min_norm = float(min_norm)
        self.p_random_action = float(p_random_action)
        self.target_error = float(target_error)
        self.chunk_length = int(chunk_length)
        self._rng = np.random.default_rng(seed)
        self._oracles: dict[int, Any] = {}
        self._task: TaskSpec | None = None
        self._episode_noise = 0.0
        self._believed_offset = np.zeros(3)
        self._sequencer = CubeSequencer()
        self._oracle_target: tuple | None = None

    def reset(self, task: TaskSpec, seed: int | None = None) -> None:
        self._task = task
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        # OGBench's noisy datasets draw the noise level per episode
        self._episode_noise = float(self._rng.uniform(0.0, self.noise)) if self.oracle_kind == "markov" else 0.0
        angle = self._rng.uniform(0.0, 2 * np.pi)
        self._believed_offset = self.target_error * np.array([np.cos(angle), np.sin(angle), 0.0])
        self._sequencer = CubeSequencer()
        self._oracle_target = None

    def _oracle(self, num_cubes: int):
        o = self._oracles.get(num_cubes)
        if o is None:
            env = shadow_env(num_cubes)
            if self.oracle_kind == "markov":
                from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
                o = CubeMarkovOracle(env=env, min_norm=self.min_norm)
            else:
                from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
                o = CubePlanOracle(env=env, noise=self.noise, noise_smoothing=self.noise_smoothing)
            self._oracles[num_cubes] = o
        return o

    # -- the Policy protocol -------------------------------------------------------------

    def propose(self, observation: Observation, n: int = 1) -> np.ndarray:
        state = observation.state
        if not isinstance(state, OGBenchCubeState):
            raise ValueError("the OGBench oracle needs the OGBench cube env's privileged state "
                             "(Observation.state from OGBenchCubeEnv)")
        if self._task is None:
            raise RuntimeError("call reset(task) before propose()")
        u = shadow_env(state.num_cubes).unwrapped
        oracle = self._oracle(state.num_cubes)
        # decisions on the real observation persist (target, oracle reset); look-ahead ones do not
        info = load_physics_state(u, state.physics_state)
        self._target_info(oracle, info, state)
        kept = self._snapshot(oracle)
        out = np.zeros((n, self.chunk_length, ACTION_DIM))
        for k in range(n):
            self._restore(oracle, kept)
            info = load_physics_state(u, state.physics_state)
            for t in range(self.chunk_length):
                info = self._target_info(oracle, info, state)
                out[k, t] = self._act(oracle, info)
                _, _, _, _, info = u.step(out[k, t])
        self._restore(oracle, kept)
        return out

    # -- internals -----------------------------------------------------------------------

    def _target_info(self, oracle, info: dict[str, Any], state: OGBenchCubeState) -> dict[str, Any]:
        """OGBench's info plus the target keys its oracles read; resets the oracle on a new target."""
        names = list(state.objects)
        if state.target_block is not None:          # play: the env's target
            target = _Target(names.index(state.target_block), state.goal_positions[state.target_block])
        else:
            positions = np.array([info[f"privileged/block_{i}_pos"] for i in range(len(names))])
            goals = np.array([state.goal_positions[nm] for nm in names])
            released = float(info["proprio/gripper_contact"][0]) < RELEASED_CONTACT
            target = self._sequencer.choose(positions, goals, info["proprio/effector_pos"], released)
        info = dict(info)
        if self.target_error:
            key_pos = f"privileged/block_{target.block}_pos"
            info[key_pos] = np.asarray(info[key_pos], dtype=float) + self._believed_offset
        info["privileged/target_block"] = target.block
        info["privileged/target_block_pos"] = np.asarray(target.goal, dtype=float)
        info["privileged/target_block_yaw"] = np.zeros(1)     # OGBench's evaluation goals are unrotated
        key = (target.block, tuple(np.round(target.goal, 4)))
        positions = info[f"privileged/block_{target.block}_pos"]
        unplaced = np.linalg.norm(positions - target.goal) > SUCCESS_RADIUS
        if key != self._oracle_target or (self.oracle_kind == "plan" and oracle.done and unplaced):
            with _numpy_global_seed(int(self._rng.integers(2**32))):
                oracle.reset(None, info)
            self._oracle_target = key
        return info

    def _act(self, oracle, info: dict[str, Any]) -> np.ndarray:
        if self.p_random_action and self._rng.random() < self.p_random_action:
            return self._rng.uniform(-1.0, 1.0, ACTION_DIM)
        a = np.asarray(oracle.select_action(None, info), dtype=float)
        if self.oracle_kind == "markov" and self._episode_noise > 0:
            xi = self._episode_noise
            a = a + self._rng.normal(0.0, [xi, xi, xi, 3 * xi, 10 * xi])
        return np.clip(a, -1.0, 1.0)

    def _snapshot(self, oracle) -> tuple:
        return dict(vars(oracle)), self._sequencer.current, self._oracle_target

    def _restore(self, oracle, snap: tuple) -> None:
        attrs, current, target = snap
        vars(oracle).update(attrs)
        self._sequencer.current = current
        self._oracle_target = target


def make_ogbench_policy(name: str, **kw: Any) -> OGBenchOraclePolicy:
    """`ogbench_oracle`, `ogbench_noisy`, `ogbench_noisy_high` or `ogbench_play`; keywords override settings."""
    try:
        settings = dict(POLICY_SETTINGS[name])
    except KeyError:
        raise ValueError(f"unknown OGBench policy {name!r}; valid: {sorted(POLICY_SETTINGS)}") from None
    settings.update(kw)
    return OGBenchOraclePolicy(**settings)
