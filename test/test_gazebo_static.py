"""Gazebo and hardware bring-up, checked without Gazebo (it cannot be installed here).

launch/gazebo.launch.py and launch/nicol.launch.py need `launch`, which is not on PyPI: they
are parsed, and every file they name is checked to exist and to be installed. The
ros2_control YAML is checked against the URDF's ros2_control tags, the robot profile and the
joint_trajectory_controller (Jazzy) parameter names; the ros_gz_bridge YAML against the
description's sensors and the graph's consumers.
"""
from __future__ import annotations

import ast
import importlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xacro
import yaml

from swm_ros.bridges.nias import load_nias_config
from swm_ros.graph import resolve_graph
from swm_ros.resources import config_path, share_dir
from swm_ros.robots.profile import load_robot_profile

ROOT = share_dir()
PROFILE = load_robot_profile("nicol")
CONTROLLERS = yaml.safe_load((ROOT / "config/ros2_control/nicol_controllers.yaml").read_text())
BRIDGE = yaml.safe_load((ROOT / "config/gazebo/ros_gz_bridge.yaml").read_text())
# joint_trajectory_controller parameters that exist in Jazzy (ros2_controllers 4.x)
JTC_KEYS = {"joints", "command_joints", "command_interfaces", "state_interfaces", "allow_partial_joints_goal",
            "open_loop_control", "interpolate_from_desired_state", "allow_integration_in_goal_trajectories",
            "action_monitor_rate", "interpolation_method", "allow_nonzero_velocity_at_trajectory_end",
            "cmd_timeout", "gains", "constraints", "update_rate"}
BRIDGE_TYPES = {("rosgraph_msgs/msg/Clock", "gz.msgs.Clock"), ("sensor_msgs/msg/Image", "gz.msgs.Image"),
                ("sensor_msgs/msg/CameraInfo", "gz.msgs.CameraInfo")}


def _launch_constants(name: str) -> dict[str, object]:
    """Module-level constants of a launch file, read without importing `launch`."""
    tree = ast.parse((ROOT / "launch" / name).read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _installed_dirs() -> set[str]:
    text = (ROOT / "CMakeLists.txt").read_text()
    dirs = set()
    for m in re.finditer(r"install\(DIRECTORY ([^)]*?) DESTINATION share/\$\{PROJECT_NAME\}\)", text):
        dirs.update(m.group(1).split())
    return dirs


def _declared(executable: str) -> set[str]:
    return set(importlib.import_module(f"swm_ros.ros.{executable}").PARAMETERS) | {"use_sim_time"}


@pytest.fixture(scope="module")
def gazebo_urdf() -> ET.Element:
    c = _launch_constants("gazebo.launch.py")
    doc = xacro.process_file(str(ROOT / c["XACRO"]), mappings={"use_gazebo": "true",
                                                               "controllers": str(ROOT / c["CONTROLLERS"])})
    return ET.fromstring(doc.toxml())


def test_launch_files_parse_and_name_only_installed_files() -> None:
    installed = _installed_dirs()
    assert {"launch", "config", "description"} <= installed
    for name in ("gazebo.launch.py", "nicol.launch.py"):
        text = (ROOT / "launch" / name).read_text()
        compile(text, name, "exec")
        assert "generate_launch_description" in text and "resolve_graph" in text
    c = _launch_constants("gazebo.launch.py")
    for key in ("XACRO", "WORLD", "BRIDGE_CONFIG", "CONTROLLERS"):
        path = Path(c[key])
        assert (ROOT / path).is_file(), f"{key}: {path} missing"
        assert path.parts[0] in installed, f"{key}: {path} is not installed by CMakeLists.txt"
    assert (ROOT / "config" / "graphs" / f"{c['GRAPH']}.yaml").is_file()
    assert _launch_constants("nicol.launch.py")["GRAPH"] == "nicol"


@pytest.mark.parametrize("graph", ["gazebo", "nicol"])
def test_graph_files_exist_and_every_override_is_declared(graph: str) -> None:
    g = resolve_graph(graph)
    for node in g.nodes:
        declared = _declared(node.executable)
        assert node.parameters_file is not None and node.parameters_file.is_file()
        from_file = set(yaml.safe_load(node.parameters_file.read_text())["/**"]["ros__parameters"])
        assert from_file <= declared, f"{node.name}: {from_file - declared}"
        assert set(node.parameters) <= declared, f"{node.name}: {set(node.parameters) - declared}"


def test_xacro_expands_for_gazebo_with_the_controller_file(gazebo_urdf) -> None:
    params = gazebo_urdf.find("gazebo/plugin/parameters").text
    assert Path(params).is_file() and Path(params).name == "nicol_controllers.yaml"
    assert gazebo_urdf.find("ros2_control/hardware/plugin").text == "gz_ros2_control/GazeboSimSystem"


def test_controllers_match_the_description_profile_and_controller_node(gazebo_urdf) -> None:
    cm = CONTROLLERS["controller_manager"]["ros__parameters"]
    declared = {k: v["type"] for k, v in cm.items() if isinstance(v, dict)}
    spawned = _launch_constants("gazebo.launch.py")["SPAWNED_CONTROLLERS"]
    assert set(spawned) == set(declared), "the launch file spawns exactly the declared controllers"
    assert declared["joint_state_broadcaster"] == "joint_state_broadcaster/JointStateBroadcaster"
    jsb_rate = CONTROLLERS["joint_state_broadcaster"]["ros__parameters"]["update_rate"]
    assert 0 < jsb_rate <= cm["update_rate"]
    commandable = {j.get("name") for j in gazebo_urdf.findall("ros2_control/joint")
                   if [c.get("name") for c in j.findall("command_interface")] == ["position"]}
    jtc = {n for n, t in declared.items() if t == "joint_trajectory_controller/JointTrajectoryController"}
    claimed: list[str] = []
    for name in jtc:
        p = CONTROLLERS[name]["ros__parameters"]
        assert set(p) <= JTC_KEYS, f"{name}: unknown parameter(s) {set(p) - JTC_KEYS}"
        assert p["command_interfaces"] == ["position"] and p["state_interfaces"] == ["position", "velocity"]
        assert set(p["joints"]) <= commandable, f"{name}: {set(p['joints']) - commandable} not in ros2_control"
        assert p["cmd_timeout"] > p["constraints"]["goal_time"] > 0, "cmd_timeout must exceed goal_time"
        claimed += p["joints"]
    assert len(claimed) == len(set(claimed)), "a joint is claimed by two controllers"
    assert set(claimed) == commandable, "every commandable joint has a controller"
    # controller_node publishes the profile's joints on <arm_controller>/joint_trajectory
    arm = PROFILE.controller.arm_controller
    assert arm in jtc and CONTROLLERS[arm]["ros__parameters"]["joints"] == list(PROFILE.joint_names)
    src = (ROOT / "swm_ros/ros/controller_node.py").read_text()
    assert 'f"{self.profile.controller.arm_controller}/joint_trajectory"' in src
    assert CONTROLLERS["head_controller"]["ros__parameters"]["joints"] == list(PROFILE.head_joints)


def test_every_bridged_topic_has_a_source_and_a_consumer(gazebo_urdf) -> None:
    sensors = {}
    for s in gazebo_urdf.iter("sensor"):
        sensors[s.findtext("topic")] = s
        sensors[s.findtext("camera/camera_info_topic")] = s
    graph = resolve_graph("gazebo")
    consumed_images = set()
    for node in graph.nodes:
        if "camera" in node.parameters:
            consumed_images.add(PROFILE.cameras[node.parameters["camera"]].topic)
    info_of = {c.info_topic: c.topic for c in PROFILE.cameras.values()}
    assert BRIDGE, "empty bridge config"
    for entry in BRIDGE:
        assert set(entry) <= {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction", "lazy"}
        assert (entry["ros_type_name"], entry["gz_type_name"]) in BRIDGE_TYPES
        assert entry["direction"] == "GZ_TO_ROS"
        ros, gz = entry["ros_topic_name"], entry["gz_topic_name"]
        if ros == "/clock":
            # the consumer of /clock: every SWM node runs on sim time
            assert all(n.parameters.get("use_sim_time") is True for n in graph.nodes)
            continue
        assert gz in sensors, f"no sensor in the description publishes {gz}"
        if entry["ros_type_name"] == "sensor_msgs/msg/Image":
            assert ros in consumed_images, f"nobody in the graph subscribes {ros}"
        else:   # camera_info travels with an image the graph consumes
            assert info_of.get(ros) in consumed_images, f"{ros} belongs to no consumed image"
    assert any(e["ros_topic_name"] == "/clock" for e in BRIDGE)


def test_world_loads_sensors_and_puts_blocks_on_the_table() -> None:
    world = ET.parse(ROOT / _launch_constants("gazebo.launch.py")["WORLD"]).getroot().find("world")
    plugins = {p.get("name") for p in world.findall("plugin")}
    assert {"gz::sim::systems::Physics", "gz::sim::systems::Sensors", "gz::sim::systems::SceneBroadcaster"} <= plugins
    blocks = [m for m in world.findall("model") if m.get("name").endswith("_block")]
    assert len(blocks) >= 2
    lo, hi = PROFILE.table.spawn_lower_xy, PROFILE.table.spawn_upper_xy
    for m in blocks:
        x, y, z = (float(v) for v in m.findtext("pose").split()[:3])
        size = float(m.findtext("link/collision/geometry/box/size").split()[2])
        assert lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1], m.get("name")
        assert z == pytest.approx(PROFILE.table.height + size / 2)


def test_hardware_graph_is_a_dry_run_by_default() -> None:
    g = resolve_graph("nicol")
    by = {n.name: n for n in g.nodes}
    assert g.values["dry_run"] is True
    assert by["controller_node"].parameters["dry_run"] is True and by["controller_node"].parameters["simulated"] is False
    assert by["nias_bridge_node"].parameters["dry_run"] is True
    nias = load_nias_config(config_path("bridges", "nias.yaml"))
    assert by["nias_bridge_node"].remappings["nias_joint_states"] == nias.arm.joint_states_topic
    # NICOL's eye camera topic is the profile's head camera
    assert PROFILE.cameras[by["policy_node"].parameters["camera"]].topic == "right_eye_cam/image_raw"
    armed = resolve_graph("nicol", {"dry_run": "true"})
    assert all(n.parameters.get("dry_run", True) for n in armed.nodes)
