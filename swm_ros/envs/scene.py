"""MJCF for the NicoL tabletop, generated from a `RobotProfile` with primitive shapes only.

The arm is the profile's `arm.chain` (URDF-style joint origins) turned into nested bodies, so
the simulator and `robots.kinematics.ArmKinematics` (which builds the same arm standalone)
agree to the last digit. Links are capsules between consecutive joint origins; the RH8D hand
is reduced to a palm box and two opposing finger pads on one actuated slide joint (the second
pad is coupled by an equality constraint).

Rendering is set up for speed on a software GL: no shadow map and no multisampling
(`shadowsize="0" offsamples="0"`), which is worth 20-30x in frames/s on llvmpipe.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from swm_ros.robots.profile import RobotProfile

# Names shared with the env and the IK.
TOOL_SITE = "tool"                     # grasp point between the pads (profile.arm.tool_xyz)
PALM_BODY = "r_palm"
PAD_BODIES = ("r_pad_a", "r_pad_b")   # pad a slides on the gripper joint, pad b mirrors it
MIRROR_JOINT_SUFFIX = "_mirror"
TABLE_GEOM = "table"
HAND_COLLIDES_FROM = 5                 # chain index (r_joint6 -> r_forearm): the RH8D unit collides

# Hand geometry in the palm frame (fingers point along palm +y, pads close along palm x).
PALM_HALF = (0.04, 0.03, 0.02)         # palm box spans y 0..0.06
PAD_HALF = (0.005, 0.025, 0.012)       # pads span y 0.06..0.11
PAD_CENTER_Y = 0.085
PAD_OPEN_INNER = 0.045                 # inner face |x| when the gripper joint is 0 (open)

# Tool frame in the palm frame: z = approach (palm +y), x = closing axis (palm x).
TOOL_QUAT_IN_PALM = (0.7071067811865476, -0.7071067811865476, 0.0, 0.0)  # Rx(-pi/2)

# Contact filtering: robot geoms (contype 2) touch the world and objects (conaffinity 1) but
# never each other, so no self-collision bookkeeping is needed for a chain of primitives.
ROBOT_CONTACT = 'contype="2" conaffinity="1"'
WORLD_CONTACT = 'contype="1" conaffinity="1"'
NO_CONTACT = 'contype="0" conaffinity="0"'
# Objects report contacts up to 1 mm apart (margin) without any force there (gap = margin):
# blocks placed face to face count as touching although the solver leaves a hair of space.
TOUCH_MARGIN = 0.001


@dataclass(frozen=True)
class ObjectSpec:
    """One movable object of the scene."""

    name: str
    kind: str                          # "block" or "distractor"
    color: str
    rgba: tuple[float, float, float, float]
    half_size: float                   # cube half edge, or cylinder radius (half height equal)
    shape: str = "box"                 # MuJoCo geom type


@dataclass(frozen=True)
class SceneLook:
    """Appearance of everything that is not an object (variants change it)."""

    table_rgba: tuple[float, float, float, float] = (0.62, 0.62, 0.58, 1.0)
    floor_rgba: tuple[float, float, float, float] = (0.25, 0.27, 0.3, 1.0)


def rpy_to_matrix(rpy: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """URDF roll-pitch-yaw (fixed axes X, then Y, then Z): R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z)."""
    import mujoco

    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R, dtype=float).reshape(9))
    return q


def _f(v) -> str:
    return " ".join(f"{float(x):.9g}" for x in v)


def _quat_attr(rpy) -> str:
    return f'quat="{_f(matrix_to_quat(rpy_to_matrix(rpy)))}"'


# ROS body frame (x forward, y left, z up) -> MuJoCo camera frame (x right, y up, looks along -z).
_ROS_LINK_TO_MJ_CAMERA = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def camera_quat(rpy) -> np.ndarray:
    """MuJoCo camera quaternion for a camera link whose pose is given ROS-style (x forward)."""
    return matrix_to_quat(rpy_to_matrix(rpy) @ _ROS_LINK_TO_MJ_CAMERA)


def _link_radius(i: int) -> float:
    # Rough OpenManipulator-P / RH8D link thicknesses (PH54 actuators ~5.4 cm, PH42 ~4.2 cm,
    # RH8D forearm ~7 cm wide): a capsule radius per chain index.
    return (0.045, 0.045, 0.04, 0.035, 0.03, 0.033, 0.028, 0.025)[min(i, 7)]


def arm_xml(profile: RobotProfile, *, hand: bool, actuated: bool = True) -> str:
    """The arm as nested bodies, starting at the mount. `hand` adds the pads and their joints."""
    arm = profile.arm
    lo, hi = arm.lower, arm.upper
    out: list[str] = [f'<body name="r_mount" pos="{_f(arm.mount_xyz)}" {_quat_attr(arm.mount_rpy)} gravcomp="1">']
    out.append(f'<geom type="cylinder" size="0.05 0.03" pos="0 0 0.03" rgba="0.2 0.2 0.22 1" {NO_CONTACT}/>')
    n = len(arm.chain)
    for i, cj in enumerate(arm.chain):
        body = PALM_BODY if i == n - 1 else f"{cj.name}_link"
        out.append(f'<body name="{body}" pos="{_f(cj.xyz)}" {_quat_attr(cj.rpy)} gravcomp="1">')
        out.append(f'<joint name="{cj.name}" axis="{_f(cj.axis)}" range="{lo[i]:.9g} {hi[i]:.9g}" '
                   f'armature="0.02" damping="2"/>')
        contact = ROBOT_CONTACT if i >= HAND_COLLIDES_FROM else NO_CONTACT
        rgba = "0.22 0.22 0.24 1" if i < HAND_COLLIDES_FROM else "0.75 0.75 0.75 1"
        if i < n - 1:
            seg = np.asarray(arm.chain[i + 1].xyz, dtype=float)
            if np.linalg.norm(seg) > 0.01:
                out.append(f'<geom type="capsule" fromto="0 0 0 {_f(seg)}" size="{_link_radius(i)}" '
                           f'rgba="{rgba}" mass="0.8" {contact}/>')
            else:
                out.append(f'<geom type="sphere" size="{_link_radius(i)}" rgba="{rgba}" mass="0.1" {contact}/>')
        else:
            out.extend(_hand_xml(profile, hand=hand))
    out.append("</body>" * n)
    out.append("</body>")
    return "\n".join(out)


def _hand_xml(profile: RobotProfile, *, hand: bool) -> list[str]:
    tool = profile.arm.tool_xyz
    out = [
        f'<geom name="palm" type="box" pos="0 {PALM_HALF[1]} 0" size="{_f(PALM_HALF)}" '
        f'rgba="0.8 0.8 0.8 1" mass="0.3" {ROBOT_CONTACT} friction="1 0.01 0.001"/>',
        f'<site name="{TOOL_SITE}" pos="{_f(tool)}" quat="{_f(TOOL_QUAT_IN_PALM)}" size="0.005" rgba="1 0 1 0"/>',
    ]
    if not hand:
        return out
    g = profile.gripper
    stroke = abs(g.closed - g.open)
    cx = PAD_OPEN_INNER + PAD_HALF[0]
    for name, sign in zip(PAD_BODIES, (1.0, -1.0)):
        joint = g.joint if sign > 0 else g.joint + MIRROR_JOINT_SUFFIX
        # Positive joint values move the pad towards the other one (closing).
        out.append(f'<body name="{name}" pos="{sign * cx:.9g} {PAD_CENTER_Y} 0" gravcomp="1">'
                   f'<joint name="{joint}" type="slide" axis="{-sign} 0 0" range="0 {stroke:.9g}" '
                   f'armature="0.01" damping="5"/>'
                   f'<geom name="{name}" type="box" size="{_f(PAD_HALF)}" rgba="0.25 0.25 0.28 1" mass="0.05" '
                   f'{ROBOT_CONTACT} condim="4" friction="1.5 0.02 0.001" solref="0.01 1"/></body>')
    return out


def arm_model_xml(profile: RobotProfile) -> str:
    """A standalone arm (no scene, no hand joints, no actuators) for the IK."""
    return f"""<mujoco model="{profile.name}_arm">
  <compiler angle="radian" autolimits="true"/>
  <option gravity="0 0 0"/>
  <worldbody>
{arm_xml(profile, hand=False)}
  </worldbody>
</mujoco>"""


def _camera_xml(name: str, profile: RobotProfile, parent: str) -> str:
    cam = profile.cameras[name]
    if cam.parent != parent:
        return ""
    return (f'<camera name="{name}" pos="{_f(cam.xyz)}" quat="{_f(camera_quat(cam.rpy))}" '
            f'fovy="{cam.fovy_deg:.6g}"/>')


def _head_xml(profile: RobotProfile) -> str:
    # NICOL's head [URDF]: neck 0.425 above base_link, joint_head_z (yaw) at (0.187, -0.001,
    # 0.1415) on the neck, joint_head_y (pitch, +y axis, positive looks down) at (0.007, 0,
    # 0.0605). The sim holds the head still at `head_pose`, so it is built as fixed bodies.
    yaw, pitch = profile.head_pose if len(profile.head_pose) == 2 else (0.0, 0.0)
    base_z = profile.table.height
    cams = "".join(_camera_xml(n, profile, "face_link") for n in profile.cameras)
    return f"""
    <body name="neck_link" pos="0 0 {base_z + 0.425:.9g}">
      <geom type="cylinder" size="0.038 0.07" pos="0.09 0 0.07" euler="0 0.785 0" rgba="0.2 0.2 0.2 1" {NO_CONTACT}/>
      <body name="tilt_link" pos="0.187 -0.001 0.1415" {_quat_attr((0, 0, yaw))}>
        <geom type="box" size="0.02 0.021 0.04" rgba="0.2 0.2 0.2 1" {NO_CONTACT}/>
        <body name="face_link" pos="0.007 0 0.0605" {_quat_attr((0, pitch, 0))}>
          <geom type="cylinder" size="0.12 0.1" pos="0.0 0 0.115" rgba="0.95 0.95 0.95 1" {NO_CONTACT}/>
          {cams}
        </body>
      </body>
    </body>"""


def _frame_xml(profile: RobotProfile) -> str:
    # Torso column and NICOL's aluminium frame [URDF collision boxes: posts at x 0.0225 /
    # 0.9775, y +-0.9775, 1 m tall; top bars 0.92 above base_link]. Visual only.
    z0 = profile.table.height
    posts = "".join(
        f'<geom type="box" size="0.0225 0.0225 0.5" pos="{x} {y} {z0 + 0.5}" rgba="0.6 0.6 0.62 1" {NO_CONTACT}/>'
        for x in (0.0225, 0.9775) for y in (-0.9775, 0.9775))
    return (f'<geom name="torso" type="box" size="0.08 0.12 0.28" pos="-0.09 0 {z0 + 0.3}" '
            f'rgba="0.3 0.3 0.33 1" {NO_CONTACT}/>' + posts +
            f'<geom type="box" size="0.0225 0.955 0.0225" pos="0.9775 0 {z0 + 0.92}" rgba="0.6 0.6 0.62 1" {NO_CONTACT}/>')


def _object_xml(obj: ObjectSpec) -> str:
    h = obj.half_size
    size = f"{h} {h} {h}" if obj.shape == "box" else f"{h} {h}"
    return (f'<body name="{obj.name}" pos="0 0 -1"><freejoint name="{obj.name}"/>'
            f'<geom name="{obj.name}" type="{obj.shape}" size="{size}" rgba="{_f(obj.rgba)}" mass="0.05" '
            f'{WORLD_CONTACT} condim="4" friction="1 0.01 0.001" margin="{TOUCH_MARGIN}" gap="{TOUCH_MARGIN}"/></body>')


def scene_xml(profile: RobotProfile, objects: tuple[ObjectSpec, ...], look: SceneLook,
              timestep: float = 0.002) -> str:
    """The full tabletop: world, table, frame, head, arm with hand, objects, cameras."""
    t = profile.table
    g = profile.gripper
    stroke = abs(g.closed - g.open)
    actuators = "\n".join(
        f'<position name="{j}" joint="{j}" kp="{kp}" kv="{kp / 10:.6g}" ctrlrange="{lo:.9g} {hi:.9g}"/>'
        for j, lo, hi, kp in zip(profile.arm.joints, profile.arm.lower, profile.arm.upper,
                                 (600, 600, 400, 200, 150, 100, 60, 60)))
    world_cams = "".join(_camera_xml(n, profile, "world") for n in profile.cameras)
    objs = "\n".join(_object_xml(o) for o in objects)
    return f"""<mujoco model="{profile.name}_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="640" offheight="480"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
  </visual>
  <worldbody>
    <light name="sun" directional="true" pos="0.5 0 3" dir="-0.2 0.1 -1" diffuse="0.35 0.35 0.35" castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.1" rgba="{_f(look.floor_rgba)}" {NO_CONTACT}/>
    <geom name="{TABLE_GEOM}" type="box" size="{t.half_size_xy[0]} {t.half_size_xy[1]} 0.02"
          pos="{t.center_xy[0]} {t.center_xy[1]} {t.height - 0.02}" rgba="{_f(look.table_rgba)}"
          {WORLD_CONTACT} friction="0.6 0.005 0.0001"/>
    {_frame_xml(profile)}
    {_head_xml(profile)}
    {world_cams}
{arm_xml(profile, hand=True)}
{objs}
  </worldbody>
  <equality>
    <joint joint1="{g.joint}{MIRROR_JOINT_SUFFIX}" joint2="{g.joint}" polycoef="0 1 0 0 0" solref="0.005 1"/>
  </equality>
  <actuator>
{actuators}
    <position name="{g.joint}" joint="{g.joint}" kp="300" kv="10" ctrlrange="0 {stroke:.9g}" forcerange="-12 12"/>
  </actuator>
</mujoco>"""
