"""Bridges to robot stacks outside this ROS 2 graph (NICOL's ROS 1 NIAS-API).

ROS-free cores live here (`nias`); the ROS 1 side (`nias_ros1`, rospy) is imported only on a
ROS 1 machine, and the ROS 2 side is `swm_ros.ros.nias_bridge_node`.
"""
