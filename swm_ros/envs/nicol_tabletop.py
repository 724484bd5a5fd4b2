"""NicoL tabletop in MuJoCo: the right arm, a simplified hand, coloured blocks.

Implements `envs.base.Env`. Two layers drive the same physics:

* `step(action)`: an end-effector delta integrates a commanded grasp-point target (clipped to
  the profile's workspace) and a yaw; `ArmKinematics.ik` turns it into arm joints from the
  current joints; the gripper value is a target; then `set_joint_targets` + `advance`.
* `set_joint_targets(q)` / `advance(seconds)`: what `sim_node` uses. Targets are clipped to
  the position limits, and the servo set-points move towards them no faster than the
  profile's simulated velocity limits, as a trajectory controller would.

Everything is deterministic for a given seed: layouts come from `np.random.default_rng(seed)`
and MuJoCo's stepping is deterministic on one thread.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from swm_ros.envs.base import (ACTION_NAMES, GRIPPER, TABLE, Observation, ObjectState, PrivilegedState,
                               TaskSpec, checked_action, proprio_vector)
from swm_ros.envs.mujoco_util import RendererCache, is_descendant
from swm_ros.envs.scene import PAD_BODIES, TABLE_GEOM, TOOL_SITE, MIRROR_JOINT_SUFFIX, scene_xml
from swm_ros.envs.tasks import Layout, sample_task, task_success
from swm_ros.envs.variants import Variant, get_variant
from swm_ros.robots.kinematics import ArmKinematics, yaw_of
from swm_ros.robots.profile import RobotProfile, load_robot_profile

# Commanded yaw stays in [-pi/2, pi/2]: the pads are symmetric under a half turn, so this
# covers every grasp and push direction, and the palm-down IK reaches it across the table.
YAW_LIMIT = np.pi / 2
_SERVO_DT = 0.01          # s between set-point updates inside `advance`
_SETTLE_S = 0.3           # s of physics after placing the objects on reset
# qpos, qvel, act, warm start, ctrl, time...: what mj_step needs to repeat itself bit for bit
_SNAPSHOT_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


@dataclass(frozen=True)
class EnvSnapshot:
    variant: str
    physics: np.ndarray
    target: np.ndarray
    setpoint: np.ndarray
    cmd_pos: np.ndarray
    cmd_yaw: float
    step: int


@dataclass
class _Sim:
    """One compiled variant: model, data and the index tables the env reads every step."""

    variant: Variant
    model: mujoco.MjModel
    data: mujoco.MjData
    qadr: np.ndarray          # qpos addresses of profile.joint_names
    dadr: np.ndarray          # dof addresses of the same
    mirror_qadr: int
    act: np.ndarray           # actuator ids in profile.joint_names order
    site: int
    obj_body: np.ndarray      # body id per variant object
    obj_qadr: np.ndarray      # free-joint qpos address per variant object
    geom_label: list[str | None]
    pad_geoms: tuple[int, int]


class NicolTabletopEnv:
    """Seeded NicoL tabletop world (see module docstring)."""

    action_names: tuple[str, ...] = ACTION_NAMES

    def __init__(self, robot: str | RobotProfile = "nicol", task: str = "push", variant: str = "nominal",
                 image_size: tuple[int, int] = (64, 64), cameras: tuple[str, ...] = ("overhead",),
                 seed: int = 0, max_steps: int | None = None) -> None:
        self.profile = robot if isinstance(robot, RobotProfile) else load_robot_profile(robot)
        unknown = [c for c in cameras if c not in self.profile.cameras]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; the profile has {sorted(self.profile.cameras)}")
        self.camera_names = tuple(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))   # (height, width)
        self.control_dt = float(self.profile.control_dt)
        self.max_steps = max_steps
        self.kinematics = ArmKinematics(self.profile)
        self._lower, self._upper = self.profile.position_limits()
        self._vel = self.profile.velocity_limits(simulated=True)
        self._ws_lo = np.asarray(self.profile.workspace.lower)
        self._ws_hi = np.asarray(self.profile.workspace.upper)
        self._sims: dict[str, _Sim] = {}
        self._renderers = RendererCache()
        self._task_name, self._variant_name = task, variant
        self._next_seed = int(seed)
        self.reset(seed, task, variant)

    # -- building --------------------------------------------------------------------

    def _sim_for(self, variant: str) -> _Sim:
        if variant in self._sims:
            return self._sims[variant]
        v = get_variant(variant)
        m = mujoco.MjModel.from_xml_string(scene_xml(self.profile, v.objects, v.look))
        d = mujoco.MjData(m)
        names = self.profile.joint_names
        label: list[str | None] = [None] * m.ngeom
        robot_bodies = self._robot_bodies(m)
        for gid in range(m.ngeom):
            if m.geom_bodyid[gid] in robot_bodies and m.geom_contype[gid]:
                label[gid] = GRIPPER
        label[m.geom(TABLE_GEOM).id] = TABLE
        for o in v.objects:
            label[m.geom(o.name).id] = o.name
        sim = _Sim(
            variant=v, model=m, data=d,
            qadr=np.array([m.joint(j).qposadr[0] for j in names]),
            dadr=np.array([m.joint(j).dofadr[0] for j in names]),
            mirror_qadr=int(m.joint(self.profile.gripper.joint + MIRROR_JOINT_SUFFIX).qposadr[0]),
            act=np.array([m.actuator(j).id for j in names]),
            site=m.site(TOOL_SITE).id,
            obj_body=np.array([m.body(o.name).id for o in v.objects]),
            obj_qadr=np.array([m.joint(o.name).qposadr[0] for o in v.objects]),
            geom_label=label,
            pad_geoms=(m.geom(PAD_BODIES[0]).id, m.geom(PAD_BODIES[1]).id),
        )
        self._sims[variant] = sim
        return sim

    @staticmethod
    def _robot_bodies(m: mujoco.MjModel) -> set[int]:
        root = m.body("r_mount").id
        return {b for b in range(m.nbody) if is_descendant(m, b, root)}

    # -- episode -----------------------------------------------------------------------

    def reset(self, seed: int | None = None, task: str | None = None,
              variant: str | None = None) -> Observation:
        if seed is None:
            seed = self._next_seed
        self._next_seed = int(seed) + 1
        self._task_name = task or self._task_name
        self._variant_name = variant or self._variant_name
        self._sim = sim = self._sim_for(self._variant_name)
        rng = np.random.default_rng(int(seed))
        self._spec, layout = sample_task(self._task_name, sim.variant, self.profile, rng, self.max_steps)
        m, d = sim.model, sim.data
        mujoco.mj_resetData(m, d)
        home = np.array([*self.profile.arm.home, self.profile.gripper.open])
        d.qpos[sim.qadr] = home
        d.qpos[sim.mirror_qadr] = self.profile.gripper.open
        self._place_objects(layout)
        self._target = home.copy()
        self._setpoint = home.copy()
        d.ctrl[sim.act] = home
        mujoco.mj_forward(m, d)
        self.advance(_SETTLE_S)
        d.time = 0.0
        self._step = 0
        pose = self.kinematics.fk(home[:-1])
        self._cmd_pos = np.clip(pose.position, self._ws_lo, self._ws_hi)
        self._cmd_yaw = float(np.clip(pose.yaw, -YAW_LIMIT, YAW_LIMIT))
        return self.observe()

    def _place_objects(self, layout: Layout) -> None:
        sim = self._sim
        z0 = self.profile.table.height
        for obj, adr in zip(sim.variant.objects, sim.obj_qadr):
            x, y, yaw = layout[obj.name]
            sim.data.qpos[adr:adr + 3] = (x, y, z0 + obj.half_size + 0.0005)
            sim.data.qpos[adr + 3:adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))

    def step(self, action: np.ndarray) -> Observation:
        self.step_physics(action)
        return self.observe()

    def step_physics(self, action: np.ndarray) -> None:
        """`step` without the observation (no rendering): for look-ahead rollouts from a snapshot."""
        a = checked_action(action)
        eff = self.profile.effector
        self._cmd_pos = np.clip(self._cmd_pos + a[:3] * eff.max_step_xyz, self._ws_lo, self._ws_hi)
        self._cmd_yaw = float(np.clip(self._cmd_yaw + a[3] * eff.max_step_yaw, -YAW_LIMIT, YAW_LIMIT))
        q_now = self.joint_positions()[:-1]
        res = self.kinematics.ik(self._cmd_pos, self._cmd_yaw, q_now)
        if not res.success:
            # Pull the command back to what the arm reaches, so it never winds up far away.
            pose = self.kinematics.fk(res.q)
            self._cmd_pos = np.clip(pose.position, self._ws_lo, self._ws_hi)
            self._cmd_yaw = float(np.clip(pose.yaw, -YAW_LIMIT, YAW_LIMIT))
        grip = self.profile.gripper.joint_target(a[4])
        self.set_joint_targets(np.array([*res.q, grip]))
        self.advance(self.control_dt)
        self._step += 1

    def snapshot(self) -> EnvSnapshot:
        """Everything `step` reads: the physics state and the command the actions integrate."""
        sim = self._sim
        physics = np.empty(mujoco.mj_stateSize(sim.model, _SNAPSHOT_STATE))
        mujoco.mj_getState(sim.model, sim.data, physics, _SNAPSHOT_STATE)
        return EnvSnapshot(variant=self._variant_name, physics=physics, target=self._target.copy(),
                           setpoint=self._setpoint.copy(), cmd_pos=self._cmd_pos.copy(), cmd_yaw=self._cmd_yaw,
                           step=self._step)

    def restore(self, snap: EnvSnapshot) -> None:
        """Return to `snap` (taken in this episode's scene): stepping from here repeats what followed it."""
        if snap.variant != self._variant_name:
            raise ValueError(f"snapshot of variant {snap.variant!r}, the env is in {self._variant_name!r}")
        sim = self._sim
        mujoco.mj_setState(sim.model, sim.data, snap.physics, _SNAPSHOT_STATE)
        mujoco.mj_forward(sim.model, sim.data)
        self._target, self._setpoint = snap.target.copy(), snap.setpoint.copy()
        self._cmd_pos, self._cmd_yaw, self._step = snap.cmd_pos.copy(), snap.cmd_yaw, snap.step

    @property
    def task(self) -> TaskSpec:
        return self._spec

    @property
    def variant(self) -> str:
        return self._variant_name

    @property
    def step_count(self) -> int:
        return self._step

    def success(self) -> bool:
        return task_success(self._spec, self.privileged_state())

    def commanded_effector(self) -> tuple[np.ndarray, float]:
        """The integrated action target (grasp point, yaw) that `step` tracks."""
        return self._cmd_pos.copy(), self._cmd_yaw

    # -- joint level -------------------------------------------------------------------

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.profile.joint_names

    def joint_positions(self) -> np.ndarray:
        return self._sim.data.qpos[self._sim.qadr].copy()

    def joint_velocities(self) -> np.ndarray:
        return self._sim.data.qvel[self._sim.dadr].copy()

    def set_joint_targets(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=float)
        if q.shape != (len(self.joint_names),) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint targets must be {len(self.joint_names)} finite values "
                             f"({', '.join(self.joint_names)}), got {q!r}")
        self._target = np.clip(q, self._lower, self._upper)

    def advance(self, seconds: float) -> None:
        if seconds < 0 or not np.isfinite(seconds):
            raise ValueError(f"cannot advance by {seconds!r} s")
        m, d = self._sim.model, self._sim.data
        n_total = int(round(seconds / m.opt.timestep))
        per = max(1, int(round(_SERVO_DT / m.opt.timestep)))
        max_dq = self._vel * per * m.opt.timestep
        done = 0
        while done < n_total:
            k = min(per, n_total - done)
            self._setpoint += np.clip(self._target - self._setpoint, -max_dq, max_dq)
            d.ctrl[self._sim.act] = self._setpoint
            mujoco.mj_step(m, d, nstep=k)
            done += k

    def set_joint_positions(self, q: np.ndarray) -> None:
        """Teleport the arm and gripper to `q` (profile order) at rest, and hold it there."""
        self.set_joint_targets(q)
        sim = self._sim
        sim.data.qpos[sim.qadr] = self._target
        sim.data.qpos[sim.mirror_qadr] = self._target[-1]
        sim.data.qvel[sim.dadr] = 0.0
        self._setpoint = self._target.copy()
        sim.data.ctrl[sim.act] = self._setpoint
        mujoco.mj_forward(sim.model, sim.data)
        pose = self.kinematics.fk(self._target[:-1])
        self._cmd_pos = np.clip(pose.position, self._ws_lo, self._ws_hi)
        self._cmd_yaw = float(np.clip(pose.yaw, -YAW_LIMIT, YAW_LIMIT))

    def place_object(self, name: str, position: np.ndarray, yaw: float = 0.0) -> None:
        """Put object `name` at `position` (its centre, world frame) with heading `yaw`, at rest."""
        sim = self._sim
        names = [o.name for o in sim.variant.objects]
        if name not in names:
            raise ValueError(f"no object {name!r} in variant {sim.variant.name!r}; objects: {names}")
        i = names.index(name)
        adr = sim.obj_qadr[i]
        sim.data.qpos[adr:adr + 3] = position
        sim.data.qpos[adr + 3:adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        dof = sim.model.jnt_dofadr[sim.model.body_jntadr[sim.obj_body[i]]]
        sim.data.qvel[dof:dof + 6] = 0.0
        mujoco.mj_forward(sim.model, sim.data)

    def shift_object(self, name: str, dxy: np.ndarray) -> None:
        """Move object `name` by (dx, dy) in the table plane, its heading and velocity kept
        (a start a camera would hardly tell from this one: `swm eval label-floor`)."""
        sim = self._sim
        names = [o.name for o in sim.variant.objects]
        if name not in names:
            raise ValueError(f"no object {name!r} in variant {sim.variant.name!r}; objects: {names}")
        adr = sim.obj_qadr[names.index(name)]
        sim.data.qpos[adr:adr + 2] += np.asarray(dxy, dtype=float)
        mujoco.mj_forward(sim.model, sim.data)

    def set_command(self, position: np.ndarray) -> None:
        """Set the grasp point the next actions integrate from (clipped to the workspace). It
        lags behind or runs ahead of the hand, which a frame does not show; the arm's joint
        targets stay until the next step."""
        self._cmd_pos = np.clip(np.asarray(position, dtype=float), self._ws_lo, self._ws_hi)

    # -- observation -------------------------------------------------------------------

    def privileged_state(self) -> PrivilegedState:
        sim = self._sim
        d = sim.data
        objects = {}
        for o, b in zip(sim.variant.objects, sim.obj_body):
            objects[o.name] = ObjectState(name=o.name, kind=o.kind, color=o.color, position=d.xpos[b].copy(),
                                          quaternion=d.xquat[b].copy(), half_size=o.half_size)
        contacts: set[tuple[str, str]] = set()
        touching_pads: dict[str, set[int]] = {}
        ncon = d.ncon
        if ncon:
            geoms = d.contact.geom[:ncon]
            for g1, g2 in geoms:
                l1, l2 = sim.geom_label[g1], sim.geom_label[g2]
                if l1 is None or l2 is None or l1 == l2:
                    continue
                contacts.add((l1, l2) if l1 < l2 else (l2, l1))
                for pad, other in ((g1, l2), (g2, l1)):
                    if pad in sim.pad_geoms:
                        touching_pads.setdefault(other, set()).add(int(pad))
        grasped = next((o for o, pads in touching_pads.items() if len(pads) == 2 and o in objects), None)
        q = d.qpos[sim.qadr].copy()
        R = d.site_xmat[sim.site].reshape(3, 3)
        return PrivilegedState(
            step=self._step, time=float(d.time), objects=objects,
            effector_position=d.site_xpos[sim.site].copy(), effector_yaw=yaw_of(R),
            gripper_opening=self.profile.gripper.opening(q[-1]), grasped=grasped, contacts=frozenset(contacts),
            joint_positions=q, table_height=float(self.profile.table.height))

    def observe(self) -> Observation:
        state = self.privileged_state()
        images = {c: self.render(c) for c in self.camera_names}
        proprio = proprio_vector(state.joint_positions, state.effector_position, state.effector_yaw,
                                 state.gripper_opening)
        return Observation(images=images, proprio=proprio, step=self._step, time=state.time, state=state)

    def project_to_image(self, camera: str, points: np.ndarray, height: int, width: int) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2) (u right, v down) in a height x width
        render of `camera` (pinhole with the camera's vertical field of view, as MuJoCo renders)."""
        if camera not in self.profile.cameras:
            raise ValueError(f"unknown camera {camera!r}; the profile has {sorted(self.profile.cameras)}")
        m, d = self._sim.model, self._sim.data
        mujoco.mj_kinematics(m, d)
        cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        rot = d.cam_xmat[cid].reshape(3, 3)
        f = 0.5 * height / np.tan(np.deg2rad(m.cam_fovy[cid]) / 2)
        c = (np.atleast_2d(points) - d.cam_xpos[cid]) @ rot        # camera frame: x right, y up, looks along -z
        depth = -c[:, 2]
        if np.any(depth <= 0):
            raise ValueError("a point lies behind the camera")
        return np.stack([width / 2 + f * c[:, 0] / depth, height / 2 - f * c[:, 1] / depth], axis=1)

    def render(self, camera: str, width: int | None = None, height: int | None = None) -> np.ndarray:
        if camera not in self.profile.cameras:
            raise ValueError(f"unknown camera {camera!r}; the profile has {sorted(self.profile.cameras)}")
        h = int(height or self.image_size[0])
        w = int(width or self.image_size[1])
        r = self._renderers.get(self._sim.model, h, w)
        r.update_scene(self._sim.data, camera=camera)
        return r.render()

    def close(self) -> None:
        self._renderers.close()

    def __enter__(self) -> "NicolTabletopEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
