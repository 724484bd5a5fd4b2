"""ros2 launch swm_ros replay.launch.py bag:=runs/episode_bag [planner:=grad rate:=1.0 ...]

The graph itself is config/graphs/replay.yaml, interpreted by swm_ros.graph -- the same code
`swm up replay` uses -- so this file only maps its result onto launch_ros actions.
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from swm_ros.graph import launch_arguments, launch_nodes, launch_values, resolve_graph

GRAPH = "replay"


def _nodes(context, *args, **kwargs):
    return launch_nodes(resolve_graph(GRAPH, launch_values(GRAPH, context)))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*launch_arguments(GRAPH), OpaqueFunction(function=_nodes)])
