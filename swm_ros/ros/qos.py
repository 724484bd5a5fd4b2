"""QoS profiles of the graph, one per kind of stream (see research/nicol-and-ros2.md §2.2).

* sensor streams (images, camera info): best effort, keep last 5 -- a late frame is
  worthless, and a best-effort subscriber also matches a reliable publisher;
* commands (action chunks, trajectories): reliable, small depth, volatile -- a command
  must arrive, but an old one must never be replayed to a late joiner;
* state (joint states, world state): reliable, keep last 10, like joint_state_broadcaster;
* latched (task info): reliable + transient local, depth 1 -- a node that starts later
  still gets the current task.
"""
from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

SENSOR = qos_profile_sensor_data

COMMAND = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                     reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

STATE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                   reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                     reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

# /clock: reliable publisher matches both reliable and best-effort (rclpy's TimeSource) readers.
CLOCK = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                   reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

DIAGNOSTICS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
