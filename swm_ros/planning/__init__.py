"""SWM planning: task objectives (tasks.py), the early-reward objective (objective.py), the
optimisers grad / mppi / cem / rank (optimisers.py) and the planner that ties them to a world
model (planner.py). ROS-free; swm_ros/ros/planner_node.py wraps the planner."""
