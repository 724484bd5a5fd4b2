"""The NICOL URDF/xacro (description/urdf) against the robot profile and the MuJoCo model.

The xacro takes the right arm, the cameras and the table from config/robots/nicol.yaml, the
numbers the MuJoCo scene is built from; these tests keep the two models in agreement:
the expanded URDF is compiled by MuJoCo's own URDF parser (independent of the MJCF that
swm_ros/envs/scene.py writes) and its forward kinematics compared with the simulator's at
random joint configurations.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest
import xacro

from swm_ros.envs.scene import _ROS_LINK_TO_MJ_CAMERA, SceneLook, scene_xml
from swm_ros.resources import share_dir
from swm_ros.robots.kinematics import ArmKinematics
from swm_ros.robots.profile import load_robot_profile

XACRO = share_dir() / "description" / "urdf" / "nicol.urdf.xacro"
PROFILE = load_robot_profile("nicol")
TOL_POS = 1e-3          # the bound: 1 mm
TOL_ROT = 1e-3          # rad
N_CONFIGS = 200


def expand(**args: str) -> ET.Element:
    """The xacro expanded with the xacro library (the real ros/xacro, from PyPI here)."""
    doc = xacro.process_file(str(XACRO), mappings={k: str(v) for k, v in args.items()})
    return ET.fromstring(doc.toxml())


@pytest.fixture(scope="module")
def urdf() -> ET.Element:
    return expand()


@pytest.fixture(scope="module")
def urdf_model(urdf) -> mujoco.MjModel:
    """MuJoCo's URDF compiler on the expanded description, every link kept as a body."""
    xml = ET.tostring(urdf, encoding="unicode")
    xml = xml.replace('<robot name="nicol">',
                      '<robot name="nicol"><mujoco><compiler fusestatic="false" discardvisual="true"/></mujoco>', 1)
    return mujoco.MjModel.from_xml_string(xml)


def _joints(root: ET.Element) -> dict[str, ET.Element]:
    return {j.get("name"): j for j in root.findall("joint")}


def test_xacro_expands_in_every_mode() -> None:
    for gazebo in (False, True):
        for control in (False, True):
            root = expand(use_gazebo=str(gazebo).lower(), ros2_control=str(control).lower())
            assert root.tag == "robot" and root.get("name") == "nicol"
            plugins = [p.text for p in root.iter("plugin") if p.text]
            assert (root.find("ros2_control") is not None) == control
            if control:
                assert plugins == ["gz_ros2_control/GazeboSimSystem" if gazebo else "mock_components/GenericSystem"]
            gz_plugins = [p.get("filename") for p in root.findall("gazebo/plugin")]
            assert gz_plugins == (["gz_ros2_control-system"] if gazebo else [])
            assert (len(root.findall("gazebo/sensor")) == 3) == gazebo
            # only primitives: no meshes, so nothing outside this repository is needed
            assert not list(root.iter("mesh"))


def test_every_link_and_joint_is_connected(urdf) -> None:
    links = {link.get("name") for link in urdf.findall("link")}
    children = set()
    for j in urdf.findall("joint"):
        parent, child = j.find("parent").get("link"), j.find("child").get("link")
        assert parent in links and child in links, j.get("name")
        assert child not in children, f"{child} has two parents"
        children.add(child)
    assert links - children == {"world"}, "one tree rooted at world"
    # Gazebo needs an inertial on every link that moves
    moving = {j.find("child").get("link") for j in urdf.findall("joint") if j.get("type") != "fixed"}
    for link in urdf.findall("link"):
        if link.get("name") in moving:
            assert link.find("inertial/mass") is not None, f"{link.get('name')} moves but has no inertial"


def test_joint_names_and_limits_match_the_profile(urdf) -> None:
    joints = _joints(urdf)
    arm = PROFILE.arm
    for name, lo, hi, cj in zip(arm.joints, arm.lower, arm.upper, arm.chain):
        j = joints[name]
        assert j.get("type") == "revolute"
        limit = j.find("limit")
        assert float(limit.get("lower")) == pytest.approx(lo) and float(limit.get("upper")) == pytest.approx(hi)
        assert [float(v) for v in j.find("axis").get("xyz").split()] == pytest.approx(list(cj.axis))
    g = PROFILE.gripper
    grip = joints[g.joint]
    assert grip.get("type") == "prismatic"
    assert float(grip.find("limit").get("upper")) == pytest.approx(abs(g.closed - g.open))
    assert joints[g.joint + "_mirror"].find("mimic").get("joint") == g.joint
    # every joint a trajectory of the controller names exists in the description
    assert set(PROFILE.joint_names) <= set(joints)
    # head: the profile's joint names, its pose inside the operational limits
    for name, pose in zip(PROFILE.head_joints, PROFILE.head_pose):
        limit = joints[name].find("limit")
        assert float(limit.get("lower")) <= pose <= float(limit.get("upper"))
    # left arm: NICOL's operational left limits, i.e. the right ones with joints 1, 4, 6, 7 mirrored
    l1 = joints["l_joint1"].find("limit")
    assert (float(l1.get("lower")), float(l1.get("upper"))) == (-2.5, 0.0)
    for i in range(1, 9):
        assert joints[f"l_joint{i}"].get("type") == "revolute"


def test_ros2_control_tags_cover_every_actuated_joint(urdf) -> None:
    joints = _joints(urdf)
    control = urdf.find("ros2_control")
    declared = {j.get("name"): j for j in control.findall("joint")}
    actuated = {n for n, j in joints.items() if j.get("type") != "fixed" and j.find("mimic") is None}
    mimic = {n for n, j in joints.items() if j.find("mimic") is not None}
    assert set(declared) == actuated | mimic
    for name in actuated:
        j = declared[name]
        assert [c.get("name") for c in j.findall("command_interface")] == ["position"], name
        assert [s.get("name") for s in j.findall("state_interface")] == ["position", "velocity"], name
        limit = joints[name].find("limit")
        params = {p.get("name"): float(p.text) for p in j.findall("command_interface/param")}
        assert params["min"] == pytest.approx(float(limit.get("lower")))
        assert params["max"] == pytest.approx(float(limit.get("upper")))
        init = float(j.find("state_interface/param[@name='initial_value']").text)
        assert params["min"] <= init <= params["max"], f"{name}: initial value outside its limits"
    for name in mimic:
        assert not declared[name].findall("command_interface"), f"mimic joint {name} must not be commanded"
    # the right arm starts at the profile's home pose
    for name, home in zip(PROFILE.arm.joints, PROFILE.arm.home):
        assert float(declared[name].find("state_interface/param").text) == pytest.approx(home)


def _pose(model, data, body: str) -> tuple[np.ndarray, np.ndarray]:
    b = model.body(body).id
    return data.xpos[b].copy(), data.xmat[b].reshape(3, 3).copy()


def _rot_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1.0, 1.0)))


def test_forward_kinematics_agrees_with_the_mujoco_model(urdf_model) -> None:
    """Grasp point, palm and both pads at random joint configurations: within 1 mm / 1 mrad."""
    kin = ArmKinematics(PROFILE)
    scene = mujoco.MjModel.from_xml_string(scene_xml(PROFILE, (), SceneLook()))
    ud, sd = mujoco.MjData(urdf_model), mujoco.MjData(scene)
    lo, hi = np.array(PROFILE.arm.lower), np.array(PROFILE.arm.upper)
    g = PROFILE.gripper
    rng = np.random.default_rng(0)
    worst_pos = worst_rot = 0.0
    for _ in range(N_CONFIGS):
        q = rng.uniform(lo, hi)
        grip = rng.uniform(0.0, abs(g.closed - g.open))
        for model, data in ((urdf_model, ud), (scene, sd)):
            for name, v in zip(PROFILE.arm.joints, q):
                data.qpos[model.joint(name).qposadr[0]] = v
            data.qpos[model.joint(g.joint).qposadr[0]] = grip
            data.qpos[model.joint(g.joint + "_mirror").qposadr[0]] = grip
            mujoco.mj_kinematics(model, data)
        tool = kin.fk(q)
        p, R = _pose(urdf_model, ud, "r_grasp_point")
        worst_pos = max(worst_pos, float(np.linalg.norm(p - tool.position)))
        worst_rot = max(worst_rot, _rot_err(R, tool.rotation))
        for urdf_body, scene_body in (("r_palm", "r_palm"), ("r_pad_a", "r_pad_a"), ("r_pad_b", "r_pad_b")):
            pu, Ru = _pose(urdf_model, ud, urdf_body)
            ps, Rs = _pose(scene, sd, scene_body)
            worst_pos = max(worst_pos, float(np.linalg.norm(pu - ps)))
            worst_rot = max(worst_rot, _rot_err(Ru, Rs))
    assert worst_pos < TOL_POS, f"worst position difference {worst_pos * 1000:.3f} mm"
    assert worst_rot < TOL_ROT, f"worst rotation difference {worst_rot:.5f} rad"


def test_camera_frames_agree_with_the_mujoco_cameras(urdf_model) -> None:
    """The overhead RealSense and the right eye (head at the profile's head pose)."""
    scene = mujoco.MjModel.from_xml_string(scene_xml(PROFILE, (), SceneLook()))
    sd, ud = mujoco.MjData(scene), mujoco.MjData(urdf_model)
    for name, v in zip(PROFILE.head_joints, PROFILE.head_pose):
        ud.qpos[urdf_model.joint(name).qposadr[0]] = v
    mujoco.mj_forward(scene, sd)          # camera poses need mj_camlight, which mj_forward runs
    mujoco.mj_kinematics(urdf_model, ud)
    for cam, link in (("overhead", "camera_link"), ("head", "right_eye_link")):
        c = scene.camera(cam).id
        R_link_mj = sd.cam_xmat[c].reshape(3, 3) @ _ROS_LINK_TO_MJ_CAMERA.T
        p, R = _pose(urdf_model, ud, link)
        assert np.linalg.norm(p - sd.cam_xpos[c]) < TOL_POS, cam
        assert _rot_err(R, R_link_mj) < TOL_ROT, cam
    # the optical frame named in the profile is the camera link turned to z-forward
    p, R = _pose(urdf_model, ud, PROFILE.cameras["overhead"].frame_id)
    _, R_link = _pose(urdf_model, ud, "camera_link")
    assert np.allclose(R_link.T @ R, [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-9)


def test_table_height_and_mounts_follow_the_profile(urdf_model) -> None:
    data = mujoco.MjData(urdf_model)
    mujoco.mj_kinematics(urdf_model, data)
    assert _pose(urdf_model, data, "base_link")[0][2] == pytest.approx(PROFILE.table.height)
    assert _pose(urdf_model, data, "r_link1")[0] == pytest.approx(np.array(PROFILE.arm.mount_xyz))
    left = _pose(urdf_model, data, "l_link1")[0]
    assert left == pytest.approx(np.array(PROFILE.arm.mount_xyz) * [1, -1, 1])


def test_a_profile_given_by_path_is_used(tmp_path: Path) -> None:
    """The xacro reads the profile: change a limit there and the URDF follows."""
    import yaml

    data = yaml.safe_load((share_dir() / "config" / "robots" / "nicol.yaml").read_text())
    data["arm"]["upper"][1] = 1.25
    path = tmp_path / "nicol_changed.yaml"
    path.write_text(yaml.safe_dump(data))
    joints = _joints(expand(profile=str(path)))
    assert float(joints["r_joint2"].find("limit").get("upper")) == 1.25
