"""Forward and inverse kinematics of the arm, on the same MJCF the simulator uses.

`ArmKinematics` compiles the profile's chain standalone (arm only, no scene) and solves
position + palm-down orientation with damped least squares on `mujoco.mj_jacSite`:

* the tool frame's z axis is the approach direction (palm pointing down means tool z = world
  -z); its x axis is the pads' closing axis, and the effector yaw is the heading of that x
  axis about world z;
* every iterate is clipped to the joint limits, and joints pinned at a limit that the step
  would push further out are taken out of that step, so the solver slides along the limits;
* the redundancy (8 joints, 6 constraints) is spent on a null-space pull towards home, which
  keeps solutions near the lab's usual arm posture;
* if the seed does not converge, it restarts from home and from a few fixed perturbations of
  home (seeded, so results are deterministic).

From a nearby seed a solve takes a few iterations (well under 2 ms), cheap enough for the
controller node to call once per action of a chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from swm_ros.robots.profile import RobotProfile

# Orientation residuals are weighted into metres: 0.2 m per rad makes a 0.025 rad tilt
# weigh like 5 mm of position error.
_ORI_WEIGHT = 0.2
_DAMPING = 0.02
_NULL_GAIN = 0.1
_MAX_STEP = 0.25          # rad per iteration, keeps DLS steps inside its linear regime
_RESTARTS = 4


class IKError(ValueError):
    """No joint configuration reaches the requested effector pose."""


@dataclass(frozen=True)
class EffectorPose:
    position: np.ndarray      # (3,) grasp point, world frame
    rotation: np.ndarray      # (3, 3) tool frame in world: columns x (closing), y, z (approach)
    yaw: float                # heading of the tool x axis about world z, rad


@dataclass(frozen=True)
class IKResult:
    q: np.ndarray             # arm joints, profile order, always inside the limits
    success: bool
    position_error: float     # m
    yaw_error: float          # rad (wrapped)
    iterations: int           # total over restarts
    message: str
    tilt_error: float = 0.0   # rad between the tool z axis and world -z


def palm_down_rotation(yaw: float) -> np.ndarray:
    """Tool frame with z pointing down and x heading `yaw`."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def wrap_angle(a: float, period: float = 2 * np.pi) -> float:
    """`a` into [-period/2, period/2): period pi or pi/2 for symmetric grippers and cubes."""
    return float((a + period / 2) % period - period / 2)


def yaw_of(rotation: np.ndarray) -> float:
    return float(np.arctan2(rotation[1, 0], rotation[0, 0]))


class ArmKinematics:
    """FK / IK of `profile.arm` with the tool at `profile.arm.tool_xyz`."""

    def __init__(self, profile: RobotProfile) -> None:
        from swm_ros.envs.scene import TOOL_SITE, arm_model_xml

        self.profile = profile
        self.model = mujoco.MjModel.from_xml_string(arm_model_xml(profile))
        self.data = mujoco.MjData(self.model)
        self._site = self.model.site(TOOL_SITE).id
        self._qadr = np.array([self.model.joint(j).qposadr[0] for j in profile.arm.joints])
        self._dof = np.array([self.model.joint(j).dofadr[0] for j in profile.arm.joints])
        self._lower = np.asarray(profile.arm.lower, dtype=float)
        self._upper = np.asarray(profile.arm.upper, dtype=float)
        self.home = np.asarray(profile.arm.home, dtype=float)
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self._quat = np.zeros(4)
        self._rotvec = np.zeros(3)
        n = len(self._lower)
        # Fixed restart seeds: home, then home nudged by +-15 % of each joint's range.
        rng = np.random.default_rng(0)
        span = self._upper - self._lower
        self._restarts = [self.home] + [
            np.clip(self.home + rng.uniform(-0.15, 0.15, n) * span, self._lower, self._upper)
            for _ in range(_RESTARTS - 1)]

    @property
    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        return self._lower.copy(), self._upper.copy()

    # -- forward kinematics ------------------------------------------------------------

    def _forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self._site], self.data.site_xmat[self._site].reshape(3, 3)

    def fk(self, q_arm: np.ndarray) -> EffectorPose:
        q = np.asarray(q_arm, dtype=float)
        if q.shape != self._lower.shape:
            raise ValueError(f"expected {self._lower.size} arm joints, got shape {q.shape}")
        p, R = self._forward(q)
        return EffectorPose(position=p.copy(), rotation=R.copy(), yaw=yaw_of(R))

    # -- inverse kinematics ------------------------------------------------------------

    def ik(self, position: np.ndarray, yaw: float, q_seed: np.ndarray | None = None, *,
           max_iters: int = 60, tol: float = 0.005, yaw_tol: float = 0.03) -> IKResult:
        """Joints that put the grasp point at `position` with the palm down at heading `yaw`."""
        target = np.asarray(position, dtype=float)
        if target.shape != (3,) or not np.all(np.isfinite(target)) or not np.isfinite(yaw):
            raise ValueError(f"IK target must be a finite (3,) position and yaw, got {position!r}, {yaw!r}")
        R_d = palm_down_rotation(float(yaw))
        seeds = list(self._restarts)
        if q_seed is not None:
            seeds.insert(0, np.clip(np.asarray(q_seed, dtype=float), self._lower, self._upper))
        best: tuple[float, np.ndarray, float, float] | None = None
        total = 0
        for seed in seeds:
            q, perr, oerr, it = self._solve(seed, target, R_d, max_iters, tol, yaw_tol)
            total += it
            score = perr + _ORI_WEIGHT * oerr
            if best is None or score < best[0]:
                best = (score, q, perr, oerr)
            if perr <= tol and oerr <= yaw_tol:
                break
        _, q, perr, _ = best
        R = self._forward(q)[1]
        yerr = abs(wrap_angle(yaw - yaw_of(R)))
        tilt = float(np.arccos(np.clip(-R[2, 2], -1.0, 1.0)))
        ok = perr <= tol and yerr <= yaw_tol and tilt <= yaw_tol
        if ok:
            msg = "converged"
        else:
            msg = (f"target {np.round(target, 3).tolist()} yaw {yaw:.3f} not reached within the joint "
                   f"limits: best position error {perr * 1000:.1f} mm, yaw error {yerr:.3f} rad, "
                   f"tilt {tilt:.3f} rad after {total} iterations ({len(seeds)} starts)")
        return IKResult(q=q.copy(), success=ok, position_error=float(perr), yaw_error=float(yerr),
                        iterations=total, message=msg, tilt_error=tilt)

    def ik_or_raise(self, position: np.ndarray, yaw: float, q_seed: np.ndarray | None = None,
                    **kw) -> np.ndarray:
        res = self.ik(position, yaw, q_seed, **kw)
        if not res.success:
            raise IKError(res.message)
        return res.q

    def _solve(self, seed: np.ndarray, target: np.ndarray, R_d: np.ndarray, max_iters: int,
               tol: float, ori_tol: float) -> tuple[np.ndarray, float, float, int]:
        lo, hi = self._lower, self._upper
        q = seed.copy()
        n = q.size
        eye6 = np.eye(6) * _DAMPING ** 2
        e = np.empty(6)
        J = np.empty((6, n))
        prev = np.inf
        stall = 0
        perr = oerr = np.inf
        it = 0
        for it in range(1, max_iters + 1):
            p, R = self._forward(q)
            e[:3] = target - p
            mujoco.mju_mat2Quat(self._quat, (R_d @ R.T).reshape(9))
            mujoco.mju_quat2Vel(self._rotvec, self._quat, 1.0)
            e[3:] = _ORI_WEIGHT * self._rotvec
            perr = float(np.linalg.norm(e[:3]))
            oerr = float(np.linalg.norm(self._rotvec))
            # Converge well inside the tolerance, so callers see millimetre accuracy.
            if perr < 0.2 * tol and oerr < 0.2 * ori_tol:
                break
            score = perr + _ORI_WEIGHT * oerr
            stall = stall + 1 if score > prev - 1e-6 else 0
            prev = min(prev, score)
            if stall >= 8:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._site)
            J[:3] = self._jacp[:, self._dof]
            J[3:] = _ORI_WEIGHT * self._jacr[:, self._dof]
            null = _NULL_GAIN * (self.home - q)
            dq = self._dls(J, e, null, eye6)
            # Joints at a limit that the step pushes outwards are frozen for this step.
            pinned = ((q <= lo + 1e-9) & (dq < 0)) | ((q >= hi - 1e-9) & (dq > 0))
            if pinned.any():
                J[:, pinned] = 0.0
                null[pinned] = 0.0
                dq = self._dls(J, e, null, eye6)
                dq[pinned] = 0.0
            step = np.abs(dq).max()
            if step > _MAX_STEP:
                dq *= _MAX_STEP / step
            q = np.clip(q + dq, lo, hi)
        return q, perr, oerr, it

    @staticmethod
    def _dls(J: np.ndarray, e: np.ndarray, null: np.ndarray, damp: np.ndarray) -> np.ndarray:
        A = np.linalg.solve(J @ J.T + damp, np.column_stack((e, J @ null)))
        # dq = J+ e + (I - J+ J) null, with J+ the damped pseudo-inverse J^T (J J^T + l^2 I)^-1.
        return J.T @ A[:, 0] + null - J.T @ A[:, 1]
