#!/bin/bash
# Source ROS 2 Jazzy and this workspace, then run the command (ros2 launch / ros2 run ...).
set -e
source /opt/ros/jazzy/setup.bash
source /ws/install/setup.bash
exec "$@"
