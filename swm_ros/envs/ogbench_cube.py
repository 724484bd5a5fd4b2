"""OGBench's cube worlds (`visual-cube-single-v0`, `visual-cube-double-v0`, ...) behind `envs.base.Env`.

OGBench (the SWM paper's own benchmark) is a UR5e + Robotiq 2F-85 arm over a floor with 1-4
4 cm cubes, simulated in MuJoCo. This adapter creates OGBench's own gymnasium env (no dataset
download) and translates at the boundary:

* **Actions.** OGBench's 5-D action is ours component for component: (dx, dy, dz, dyaw,
  gripper) in [-1, 1]; OGBench scales them by (5 cm, 5 cm, 5 cm, 0.3 rad) per 0.05 s step
  relative to the current pinch-site pose, and adds the gripper value to its current
  *closure* (0 open .. 1 closed), clipped to [0, 1]. So gripper +1 closes and -1 opens,
  as in `envs.base.ACTION_NAMES`; values in between move the fingers part of the way.
  Actions are passed through unchanged (validated first).
* **Tasks.** `task1` .. `task5` are OGBench's evaluation tasks (mode 'task', fixed start and
  goal layouts, success = every cube within 4 cm of its goal, OGBench's own check). `play`
  is OGBench's data-collection mode (random layout, one target cube with a random goal):
  once the target cube has been put on its goal and the hand has left it, or after
  `PLAY_TARGET_STEPS` steps, the env draws a new target (`set_new_target`), as OGBench's
  dataset script does when its oracle finishes a sub-task. `play` has no end goal, so
  `success()` is always False there; `subtasks_completed` counts the goals reached.
  `reach` is the SWM paper's OGBench reach task on the same random layouts: touch OGBench's
  target cube with a finger pad (the paper's success check); the target never changes.
* **Privileged state.** Cubes become `ObjectState`s named `red_block`, `blue_block`, ...
  (kind "block", OGBench's colours, half size 2 cm, positions and quaternions from the
  free joints, exactly what OGBench's `info['privileged/block_i_pos|quat']` holds). The
  effector is OGBench's pinch site; `gripper_opening` is 1 - OGBench's closure; a cube
  touched by both finger pads is `grasped`; contacts are labelled with block names,
  `gripper` (any robot geom) and `table` (the floor, z = 0). The robot stands at the
  origin facing +x, so the SAQA families' table frame (forward = +x, left = +y) holds
  unchanged. `OGBenchCubeState` adds the goals, the play target and the MuJoCo physics
  state (what the oracle policy needs to look ahead; it is never stored in episode files).
* **Images.** Cameras `front_pixels` (OGBench's pixel-observation camera) and `front`.
  With any camera requested the visual env (`visual-cube-*`: purple gripper, transparent
  arm) is built and `front_pixels` at `image_size` is OGBench's own observation; with
  `cameras=()` the state env (`cube-*`) is used and nothing is rendered per step.
  Shadows and anti-aliasing are off: the software rasteriser spends most of its time on
  the arm's 193k mesh triangles anyway, and a 4096^2 shadow map would cost 5x more.

Seeding: `reset(seed)` seeds OGBench's generator; the solver warm start, time and controls
that OGBench's reset leaves behind after its two unseeded random "settling" steps are
cleared, so the same seed gives the same episode for the same actions.
"""
from __future__ import annotations

import types
import warnings
from dataclasses import dataclass, field

import gymnasium
import mujoco
import numpy as np
from ogbench.manipspace import lie

from swm_ros.envs.base import (ACTION_NAMES, GRIPPER, TABLE, Observation, ObjectState, PrivilegedState,
                               TaskSpec, checked_action, proprio_vector)
from swm_ros.envs.mujoco_util import RendererCache, is_descendant

OGBENCH_ENVS: dict[str, int] = {    # our env name -> number of cubes
    "ogbench-cube-single": 1,
    "ogbench-cube-double": 2,
    "ogbench-cube-triple": 3,
    "ogbench-cube-quadruple": 4,
}
_OGBENCH_TYPE = {1: "single", 2: "double", 3: "triple", 4: "quadruple"}
# OGBench's cube colours, in cube order (CubeEnv._cube_colors)
CUBE_COLORS: tuple[str, ...] = ("red", "blue", "orange", "green")
CUBE_HALF_SIZE = 0.02
SUCCESS_RADIUS = 0.04          # OGBench: a cube within 4 cm of its goal
EVAL_TASKS: tuple[str, ...] = ("task1", "task2", "task3", "task4", "task5")
TASKS: tuple[str, ...] = (*EVAL_TASKS, "play", "reach")
RANDOM_LAYOUT_TASKS: tuple[str, ...] = ("play", "reach")   # built on OGBench's data-collection mode
REACH_MAX_STEPS = 200          # reach: as OGBench's single-cube evaluation episodes
CAMERAS: tuple[str, ...] = ("front_pixels", "front")
EVAL_MAX_STEPS = {1: 200, 2: 500, 3: 1000, 4: 1000}   # OGBench's registered episode lengths
PLAY_MAX_STEPS = 1000          # OGBench's datasets use 1001-step episodes
PLAY_TARGET_STEPS = 200        # play: new target after this many steps (OGBench's oracle max_step)
PLAY_LEAVE_DISTANCE = 0.10     # play: the hand is this far from the placed cube: sub-task over
GRIPPER_CLOSED_Q = 0.8         # rad of the driver joint when closed (OGBench's opening scale)
ARM_JOINTS: tuple[str, ...] = ("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint",
                               "wrist_1_joint", "wrist_2_joint", "wrist_3_joint")
GRIPPER_JOINT = "right_driver_joint"
STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION   # everything mj_step reads


@dataclass(frozen=True)
class OGBenchCubeState(PrivilegedState):
    """`PrivilegedState` plus what only OGBench has: goals, the play target, the physics state."""

    # block -> goal centre: every block in the evaluation tasks, the target in play
    goal_positions: dict[str, np.ndarray] = field(default_factory=dict)
    target_block: str | None = None          # play: OGBench's current target cube; tasks: None
    physics_state: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mj_getState(STATE_SPEC)
    num_cubes: int = 1


def cube_count(name: str) -> int:
    """Number of cubes of an OGBench env name (`ogbench-cube-double` -> 2)."""
    try:
        return OGBENCH_ENVS[name]
    except KeyError:
        raise ValueError(f"unknown OGBench env {name!r}; valid: {sorted(OGBENCH_ENVS)}") from None


def block_names(num_cubes: int) -> tuple[str, ...]:
    return tuple(f"{c}_block" for c in CUBE_COLORS[:num_cubes])


def _fast_renderer(self) -> None:
    """Replaces `CustomMuJoCoEnv._initialize_renderer` on one instance: no shadows, no MSAA."""
    self._model.vis.quality.shadowsize = 0
    self._model.vis.quality.offsamples = 0
    self._renderer = mujoco.Renderer(model=self._model, height=self._render_height, width=self._render_width)
    mujoco.mjv_defaultFreeCamera(self._model, self._camera)


def make_ogbench_gym(num_cubes: int, visual: bool, play: bool, image_size: tuple[int, int] = (64, 64)):
    """OGBench's own gymnasium env, without dataset download, time limit or goal termination."""
    import ogbench.manipspace  # noqa: F401  (registers the envs)

    env_id = f"{'visual-' if visual else ''}cube-{_OGBENCH_TYPE[num_cubes]}-v0"
    env = gymnasium.make(env_id, terminate_at_goal=False, mode="data_collection" if play else "task",
                         height=int(image_size[0]), width=int(image_size[1]),
                         max_episode_steps=-1, disable_env_checker=True)
    env.unwrapped._initialize_renderer = types.MethodType(_fast_renderer, env.unwrapped)
    return env


def reset_ogbench_gym(env, seed: int, options: dict | None):
    """`env.reset`, without the warning OGBench's `action_space` gives on every call (float64 bounds)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")
        return env.reset(seed=seed, options=options)


def settle_reset_state(u) -> None:
    """Clear what OGBench's reset leaves from its unseeded settling steps (see module docstring)."""
    d = u._data
    d.qacc_warmstart[:] = 0.0
    d.time = 0.0
    d.ctrl[:] = 0.0
    d.ctrl[u._arm_actuator_ids] = d.qpos[u._arm_joint_ids]
    mujoco.mj_forward(u._model, d)
    mujoco.mj_rnePostConstraint(u._model, d)
    u.pre_step()


@dataclass
class _Sim:
    """One OGBench gym env (task or play mode) and the index tables the adapter reads."""

    gym: gymnasium.Env
    play: bool
    model: mujoco.MjModel | None = None
    data: mujoco.MjData | None = None
    obj_qadr: np.ndarray | None = None
    arm_qadr: np.ndarray | None = None
    grip_qadr: int = 0
    dadr: np.ndarray | None = None
    pinch: int = 0
    geom_label: list[str | None] = field(default_factory=list)
    pad_geoms: dict[int, int] = field(default_factory=dict)   # geom id -> pad (0 right, 1 left)

    def index(self, names: tuple[str, ...]) -> None:
        """After the first reset (OGBench compiles its model there)."""
        u = self.gym.unwrapped
        m = self.model = u._model
        self.data = u._data
        self.obj_qadr = np.array([m.joint(f"object_joint_{i}").qposadr[0] for i in range(len(names))])
        self.arm_qadr = np.array([m.joint(f"ur5e/{j}").qposadr[0] for j in ARM_JOINTS])
        self.grip_qadr = int(m.joint(f"ur5e/robotiq/{GRIPPER_JOINT}").qposadr[0])
        self.dadr = np.array([m.joint(f"ur5e/{j}").dofadr[0] for j in ARM_JOINTS]
                             + [m.joint(f"ur5e/robotiq/{GRIPPER_JOINT}").dofadr[0]])
        self.pinch = u._pinch_site_id
        robot_root = m.body("ur5e/").id
        label: list[str | None] = [None] * m.ngeom
        for g in range(m.ngeom):
            b = int(m.geom_bodyid[g])
            if is_descendant(m, b, robot_root) and (m.geom_contype[g] or m.geom_conaffinity[g]):
                label[g] = GRIPPER
        label[m.geom("floor").id] = TABLE
        for i, name in enumerate(names):
            for gid in u._cube_geom_ids_list[i]:
                label[gid] = name
        self.geom_label = label
        pads = (m.body("ur5e/robotiq/right_pad").id, m.body("ur5e/robotiq/left_pad").id)
        self.pad_geoms = {g: pads.index(int(m.geom_bodyid[g])) for g in range(m.ngeom) if int(m.geom_bodyid[g]) in pads}


class OGBenchCubeEnv:
    """OGBench cube tasks as a seeded `Env` (see module docstring)."""

    action_names: tuple[str, ...] = ACTION_NAMES

    def __init__(self, robot: str = "ogbench-cube-single", task: str = "task1", variant: str = "nominal",
                 image_size: tuple[int, int] = (64, 64), cameras: tuple[str, ...] = ("front_pixels",),
                 seed: int = 0, max_steps: int | None = None) -> None:
        self.name = robot
        self.num_cubes = cube_count(robot)
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; OGBench cube envs have {list(CAMERAS)}")
        self.camera_names = tuple(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))   # (height, width)
        self.visual = bool(self.camera_names)
        self.max_steps = max_steps
        self.blocks = block_names(self.num_cubes)
        self._sims: dict[bool, _Sim] = {}
        self._renderers = RendererCache()
        self._task_name = self._check_task(task)
        self._check_variant(variant)
        self._next_seed = int(seed)
        self.reset(seed, task, variant)

    # -- building --------------------------------------------------------------------

    @staticmethod
    def _check_task(task: str) -> str:
        if task not in TASKS:
            raise ValueError(f"unknown OGBench cube task {task!r}; valid: {list(TASKS)}")
        return task

    @staticmethod
    def _check_variant(variant: str) -> str:
        if variant != "nominal":
            raise ValueError(f"OGBench cube envs have only the 'nominal' variant, got {variant!r}")
        return variant

    def _sim_for(self, play: bool) -> _Sim:
        sim = self._sims.get(play)
        if sim is None:
            sim = self._sims[play] = _Sim(make_ogbench_gym(self.num_cubes, self.visual, play, self.image_size), play)
        return sim

    # -- episode -----------------------------------------------------------------------

    def reset(self, seed: int | None = None, task: str | None = None, variant: str | None = None) -> Observation:
        task = self._check_task(task or self._task_name)
        self._check_variant(variant or "nominal")
        if seed is None:
            seed = self._next_seed
        self._next_seed = int(seed) + 1
        self._task_name = task
        play = self._task_name in RANDOM_LAYOUT_TASKS
        sim = self._sim = self._sim_for(play)
        options = None if play else {"task_id": EVAL_TASKS.index(self._task_name) + 1}
        ob, info = reset_ogbench_gym(sim.gym, int(seed), options)
        if sim.model is None:
            sim.index(self.blocks)
        u = sim.gym.unwrapped
        self.control_dt = float(u._control_timestep)      # 0.05 s: 25 physics steps of 2 ms
        settle_reset_state(u)
        self._goal_image = info.get("goal") if (self.visual and not play) else None
        self._ob = ob if self.visual else None
        self._step = 0
        self._subtasks = 0
        self._target_steps = 0
        # OGBench's dataset script draws the stacking probability per episode (0 for one cube)
        self._p_stack = 0.0 if self.num_cubes == 1 else float(u.np_random.uniform(0.0, 0.25))
        self._spec = self._make_spec(u)
        return self.observe()

    def _make_spec(self, u) -> TaskSpec:
        if self._task_name == "play":
            return TaskSpec(name="play", objects=self.blocks, instruction="move the target block to its goal",
                            max_steps=self.max_steps or PLAY_MAX_STEPS)
        if self._task_name == "reach":
            target = self.blocks[int(u._target_block)]
            others = tuple(b for b in self.blocks if b != target)
            return TaskSpec(name="reach", objects=(target, *others),
                            instruction=f"touch the {target.split('_')[0]} block with the gripper",
                            max_steps=self.max_steps or REACH_MAX_STEPS)
        colours = [n.split("_")[0] for n in self.blocks]
        what = f"the {colours[0]} block to its goal" if len(colours) == 1 else \
            f"the {', '.join(colours[:-1])} and {colours[-1]} blocks to their goals"
        return TaskSpec(name=self._task_name, objects=self.blocks,
                        instruction=f"move {what} ({u.cur_task_info['task_name']})",
                        max_steps=self.max_steps or EVAL_MAX_STEPS[self.num_cubes])

    def step(self, action: np.ndarray) -> Observation:
        a = checked_action(action)
        ob, _, _, _, _ = self._sim.gym.step(np.clip(a, -1.0, 1.0))
        self._ob = ob if self.visual else None
        self._step += 1
        if self._task_name == "play":
            self._play_bookkeeping()
        return self.observe()

    def _play_bookkeeping(self) -> None:
        """New target once the current one is placed and left, or after PLAY_TARGET_STEPS."""
        u = self._sim.gym.unwrapped
        self._target_steps += 1
        target = self.blocks[int(u._target_block)]
        s = self.privileged_state()
        placed = bool(u._success) and s.grasped != target and not s.touching(target, GRIPPER)
        left = np.linalg.norm(s.effector_position - s.objects[target].position) > PLAY_LEAVE_DISTANCE
        if (placed and left) or self._target_steps >= PLAY_TARGET_STEPS:
            self._subtasks += int(placed)
            u.set_new_target(return_info=False, p_stack=self._p_stack)
            mujoco.mj_forward(self._sim.model, self._sim.data)
            self._target_steps = 0

    @property
    def task(self) -> TaskSpec:
        return self._spec

    @property
    def variant(self) -> str:
        return "nominal"

    @property
    def step_count(self) -> int:
        return self._step

    @property
    def subtasks_completed(self) -> int:
        """play: goals reached (and left) so far in this episode."""
        return self._subtasks

    @property
    def ogbench_env(self) -> gymnasium.Env:
        """The wrapped OGBench gymnasium env of the current task mode."""
        return self._sim.gym

    def success(self) -> bool:
        """Evaluation tasks: OGBench's own check (every cube within 4 cm of its goal).
        reach: a finger pad touches the target cube. play: False."""
        if self._task_name == "reach":
            return self._spec.objects[0] in self._pad_contacts()[1]
        if self._sim.play:
            return False
        return bool(all(self._sim.gym.unwrapped._compute_successes()))

    def goal_image(self) -> np.ndarray | None:
        """OGBench's goal observation of the current evaluation task (visual envs), else None."""
        return None if self._goal_image is None else np.asarray(self._goal_image).copy()

    # -- joint level (UR5e joints, then the gripper driver joint in rad, 0 open .. 0.8 closed) ---------

    @property
    def joint_names(self) -> tuple[str, ...]:
        return (*ARM_JOINTS, GRIPPER_JOINT)

    def joint_positions(self) -> np.ndarray:
        d = self._sim.data
        return np.array([*d.qpos[self._sim.arm_qadr], d.qpos[self._sim.grip_qadr]])

    def joint_velocities(self) -> np.ndarray:
        return self._sim.data.qvel[self._sim.dadr].copy()

    def set_joint_targets(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=float)
        if q.shape != (len(self.joint_names),) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint targets must be {len(self.joint_names)} finite values "
                             f"({', '.join(self.joint_names)}), got {q!r}")
        u, m = self._sim.gym.unwrapped, self._sim.model
        lo, hi = m.actuator_ctrlrange[u._arm_actuator_ids].T
        self._sim.data.ctrl[u._arm_actuator_ids] = np.clip(q[:6], lo, hi)
        self._sim.data.ctrl[u._gripper_actuator_ids] = 255.0 * np.clip(q[6] / GRIPPER_CLOSED_Q, 0.0, 1.0)

    def advance(self, seconds: float) -> None:
        if seconds < 0 or not np.isfinite(seconds):
            raise ValueError(f"cannot advance by {seconds!r} s")
        m, d = self._sim.model, self._sim.data
        mujoco.mj_step(m, d, nstep=max(0, int(round(seconds / m.opt.timestep))))
        mujoco.mj_rnePostConstraint(m, d)
        self._sim.gym.unwrapped.post_step()
        self._ob = None        # OGBench's own observation is stale now

    # -- observation -------------------------------------------------------------------

    def privileged_state(self) -> OGBenchCubeState:
        sim = self._sim
        m, d, u = sim.model, sim.data, sim.gym.unwrapped
        objects = {}
        for i, (name, adr) in enumerate(zip(self.blocks, sim.obj_qadr)):
            objects[name] = ObjectState(name=name, kind="block", color=CUBE_COLORS[i],
                                        position=d.qpos[adr:adr + 3].copy(), quaternion=d.qpos[adr + 3:adr + 7].copy(),
                                        half_size=CUBE_HALF_SIZE)
        contacts, pads_on = self._pad_contacts()
        grasped = next((o for o, pads in pads_on.items() if len(pads) == 2 and o in objects), None)
        mocap = [d.mocap_pos[i].copy() for i in u._cube_target_mocap_ids]
        if sim.play:
            target = self.blocks[int(u._target_block)]
            goals = {target: mocap[int(u._target_block)]}
        else:
            target = None
            goals = dict(zip(self.blocks, mocap))
        q = self.joint_positions()
        yaw = lie.SO3.from_matrix(d.site_xmat[sim.pinch].reshape(3, 3)).compute_yaw_radians()   # as OGBench's info
        physics = np.empty(mujoco.mj_stateSize(m, STATE_SPEC))
        mujoco.mj_getState(m, d, physics, STATE_SPEC)
        return OGBenchCubeState(
            step=self._step, time=float(d.time), objects=objects,
            effector_position=d.site_xpos[sim.pinch].copy(), effector_yaw=float(yaw),
            gripper_opening=1.0 - float(np.clip(q[-1] / GRIPPER_CLOSED_Q, 0.0, 1.0)), grasped=grasped,
            contacts=frozenset(contacts), joint_positions=q, table_height=0.0,
            goal_positions=goals, target_block=target, physics_state=physics, num_cubes=self.num_cubes)

    def _pad_contacts(self) -> tuple[set[tuple[str, str]], dict[str, set[int]]]:
        """Labelled contact pairs, and for each label the finger pads (0 right, 1 left) touching it."""
        sim = self._sim
        contacts: set[tuple[str, str]] = set()
        pads_on: dict[str, set[int]] = {}
        for g1, g2 in sim.data.contact.geom[:sim.data.ncon]:
            l1, l2 = sim.geom_label[g1], sim.geom_label[g2]
            if l1 is None or l2 is None or l1 == l2:
                continue
            contacts.add((l1, l2) if l1 < l2 else (l2, l1))
            for g, other in ((g1, l2), (g2, l1)):
                if g in sim.pad_geoms:
                    pads_on.setdefault(other, set()).add(sim.pad_geoms[g])
        return contacts, pads_on

    def observe(self) -> Observation:
        state = self.privileged_state()
        images = {c: self._image(c) for c in self.camera_names}
        proprio = proprio_vector(state.joint_positions, state.effector_position, state.effector_yaw,
                                 state.gripper_opening)
        return Observation(images=images, proprio=proprio, step=self._step, time=state.time, state=state)

    def _image(self, camera: str) -> np.ndarray:
        if camera == "front_pixels" and self._ob is not None:
            return np.asarray(self._ob)          # OGBench's own pixel observation of this step
        return self.render(camera)

    def render(self, camera: str, width: int | None = None, height: int | None = None) -> np.ndarray:
        if camera not in CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; OGBench cube envs have {list(CAMERAS)}")
        h = int(height or self.image_size[0])
        w = int(width or self.image_size[1])
        m = self._sim.model

        def prepare(m: mujoco.MjModel) -> None:
            m.vis.quality.shadowsize = 0          # no shadows, no anti-aliasing: render speed
            m.vis.quality.offsamples = 0
            m.vis.global_.offwidth = max(m.vis.global_.offwidth, w)
            m.vis.global_.offheight = max(m.vis.global_.offheight, h)

        r = self._renderers.get(m, h, w, prepare)
        r.update_scene(self._sim.data, camera=camera, scene_option=self._sim.gym.unwrapped._scene_option)
        return r.render()

    def close(self) -> None:
        self._renderers.close()
        for sim in self._sims.values():
            sim.gym.close()
        self._sims.clear()

    def __enter__(self) -> "OGBenchCubeEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
