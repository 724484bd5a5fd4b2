"""ros2 launch swm_ros swm.launch.py [task:=push planner:=grad world_model:=runs/wm ...]

The graph itself is config/graphs/swm.yaml, interpreted by swm_ros.graph -- the same code
`swm up swm` uses -- so this file only maps its result onto launch_ros actions.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from swm_ros.graph import load_arguments, resolve_graph

GRAPH = "swm"


def _nodes(context, *args, **kwargs):
    arguments, _ = load_arguments(GRAPH)
    values = {name: LaunchConfiguration(name).perform(context) for name in arguments}
    graph = resolve_graph(GRAPH, values)
    actions = []
    for spec in graph.nodes:
        params = ([str(spec.parameters_file)] if spec.parameters_file else []) + [spec.parameters]
        actions.append(Node(
            package="swm_ros", executable=spec.executable, name=spec.name,
            namespace=spec.namespace or None, parameters=params,
            remappings=list(spec.remappings.items()), output="screen", emulate_tty=True))
    return actions


def generate_launch_description() -> LaunchDescription:
    arguments, _ = load_arguments(GRAPH)
    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                for a in arguments.values()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
