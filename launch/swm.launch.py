"""ros2 launch swm_ros swm.launch.py [task:=push planner:=grad world_model:=runs/wm ...]

The graph itself is config/graphs/swm.yaml, interpreted by swm_ros.graph -- the same code
`swm up swm` uses -- so this file only maps its result onto launch_ros actions.
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from swm_ros.graph import launch_arguments, launch_nodes, launch_values, resolve_graph

GRAPH = "swm"


def _nodes(context, *args, **kwargs):
    return launch_nodes(resolve_graph(GRAPH, launch_values(GRAPH, context)))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*launch_arguments(GRAPH), OpaqueFunction(function=_nodes)])
