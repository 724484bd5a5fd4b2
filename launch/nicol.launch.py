"""ros2 launch swm_ros nicol.launch.py [dry_run:=false policy:=random camera:=head]

The graph itself is config/graphs/nicol.yaml, interpreted by swm_ros.graph -- the same code
`swm up nicol` uses -- so this file only maps its result onto launch_ros actions.

The physical NICOL: dry_run is true unless you say otherwise. On NICOL's ROS 1 side run
ros1_bridge (standard messages) and `python3 -m swm_ros.bridges.nias_ros1` (README,
"Real NicoL, Gazebo and several machines").
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from swm_ros.graph import launch_arguments, launch_nodes, launch_values, resolve_graph

GRAPH = "nicol"


def _nodes(context, *args, **kwargs):
    return launch_nodes(resolve_graph(GRAPH, launch_values(GRAPH, context)))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*launch_arguments(GRAPH), OpaqueFunction(function=_nodes)])
