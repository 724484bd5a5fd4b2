"""ros2 launch swm_ros gazebo.launch.py [headless:=true policy:=random camera:=overhead dry_run:=false]

NICOL in Gazebo Harmonic (ROS 2 Jazzy: ros_gz_sim, ros_gz_bridge, gz_ros2_control):

1. Gazebo with the tabletop world (table comes with the robot, blocks with the world);
2. robot_state_publisher with the URDF expanded from the xacro (use_gazebo:=true), and the
   robot spawned from /robot_description;
3. once spawned, the controllers of config/ros2_control/nicol_controllers.yaml (loaded by
   gz_ros2_control) are activated by the spawner;
4. ros_gz_bridge for /clock and the camera (config/gazebo/ros_gz_bridge.yaml);
5. once the controllers are up, the SWM graph of config/graphs/gazebo.yaml with use_sim_time.

Every file is named once below (relative to the package share directory); the static
tests (test/test_gazebo_static.py) check that each exists and is installed.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from swm_ros.graph import launch_arguments, launch_nodes, launch_values, resolve_graph
from swm_ros.resources import share_dir

GRAPH = "gazebo"
XACRO = "description/urdf/nicol.urdf.xacro"
WORLD = "config/gazebo/nicol_tabletop.sdf"
BRIDGE_CONFIG = "config/gazebo/ros_gz_bridge.yaml"
CONTROLLERS = "config/ros2_control/nicol_controllers.yaml"
SPAWNED_CONTROLLERS = ["joint_state_broadcaster", "r_arm_controller", "l_arm_controller", "head_controller"]
ROBOT_NAME = "nicol"
# Arguments of this launch file on top of the graph's own.
GAZEBO_ARGUMENTS = {
    "headless": ("false", "run the Gazebo server only, no GUI"),
    "world": ("", "SDF world (empty: config/gazebo/nicol_tabletop.sdf)"),
}


def robot_description() -> str:
    """The xacro expanded for Gazebo (xacro's Python API, as gz_ros2_control's demos do)."""
    import xacro

    root = share_dir()
    doc = xacro.process_file(str(root / XACRO), mappings={"use_gazebo": "true",
                                                          "controllers": str(root / CONTROLLERS)})
    return doc.toxml()


def _actions(context, *args, **kwargs):
    root = share_dir()
    graph = resolve_graph(GRAPH, launch_values(GRAPH, context))
    headless = LaunchConfiguration("headless").perform(context).lower() == "true"
    world = LaunchConfiguration("world").perform(context) or str(root / WORLD)
    use_sim_time = bool(graph.values["use_sim_time"])
    description = robot_description()

    from ament_index_python.packages import get_package_share_directory

    gazebo = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(f"{get_package_share_directory('ros_gz_sim')}/launch/gz_sim.launch.py"),
        launch_arguments=[("gz_args", f"-r {'-s ' if headless else ''}{world}"), ("on_exit_shutdown", "true")])
    state_publisher = Node(package="robot_state_publisher", executable="robot_state_publisher", output="screen",
                           parameters=[{"robot_description": description, "use_sim_time": use_sim_time}])
    spawn = Node(package="ros_gz_sim", executable="create", output="screen",
                 arguments=["-topic", "robot_description", "-name", ROBOT_NAME])
    bridge = Node(package="ros_gz_bridge", executable="parameter_bridge", output="screen",
                  parameters=[{"config_file": str(root / BRIDGE_CONFIG), "use_sim_time": use_sim_time}])
    controllers = Node(package="controller_manager", executable="spawner", output="screen",
                       arguments=[*SPAWNED_CONTROLLERS, "--controller-manager", "/controller_manager"],
                       parameters=[{"use_sim_time": use_sim_time}])
    swm_nodes = launch_nodes(graph)
    return [
        gazebo, state_publisher, spawn, bridge,
        RegisterEventHandler(OnProcessExit(target_action=spawn, on_exit=[controllers])),
        RegisterEventHandler(OnProcessExit(target_action=controllers, on_exit=swm_nodes)),
    ]


def generate_launch_description() -> LaunchDescription:
    declared = launch_arguments(GRAPH)
    declared += [DeclareLaunchArgument(name, default_value=default, description=text)
                 for name, (default, text) in GAZEBO_ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_actions)])
