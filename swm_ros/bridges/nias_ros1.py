"""nias_relay: the ROS 1 end of the NIAS bridge, run on NICOL's ROS 1 machine (rospy).

    python3 -m swm_ros.bridges.nias_ros1 _nias_config:=/path/to/nias.yaml _robot:=nicol

  subscribes /nias_goals                      trajectory_msgs/JointTrajectory (from
                                              swm_ros.ros.nias_bridge_node via ros1_bridge)
             <arm.joint_states_topic>         sensor_msgs/JointState (NIAS actuator states)
  calls      <arm.service>                    open_manipulator_msgs/SetJointPosition, one goal at a
                                              time, waiting each goal's path_time

Every plan is checked again with the same code as the ROS 2 side (swm_ros.bridges.nias:
actuator order, limits, speed against the measured state) before its first goal is sent; a
refused plan sends nothing. A newer plan replaces the rest of the current one (the goal
already running finishes: NIAS has no cancel). An empty plan stops after the running goal.

Imports rospy and open_manipulator_msgs, so it is imported only on the ROS 1 side.
"""
from __future__ import annotations

import threading

import rospy
from open_manipulator_msgs.msg import JointPosition
from open_manipulator_msgs.srv import SetJointPosition, SetJointPositionRequest
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from swm_ros.bridges.nias import (NiasMapping, TrajectoryRejected, check_goal_plan, goals_from_plan,
                                  load_nias_config, nias_state_values)
from swm_ros.resources import config_path
from swm_ros.robots.profile import load_robot_profile


class NiasRelay:
    def __init__(self) -> None:
        robot = rospy.get_param("~robot", "nicol")
        cfg = rospy.get_param("~nias_config", "nias")
        path = cfg if cfg.endswith((".yaml", ".yml")) else config_path("bridges", f"{cfg}.yaml")
        self.mapping = NiasMapping(load_robot_profile(robot), load_nias_config(path))
        self.state_timeout = float(rospy.get_param("~joint_state_timeout", 0.5))
        arm = self.mapping.config.arm
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._plan: list | None = None          # goals not yet sent
        self._state: tuple[float, list[float]] | None = None
        self.call = rospy.ServiceProxy(arm.service, SetJointPosition)
        rospy.Subscriber(arm.joint_states_topic, JointState, self._on_state, queue_size=1)
        rospy.Subscriber(rospy.get_param("~goals_topic", "/nias_goals"), JointTrajectory, self._on_plan, queue_size=5)
        rospy.loginfo(f"nias_relay: goals -> {arm.service} (planning group {arm.planning_group})")

    def _on_state(self, msg: JointState) -> None:
        values = nias_state_values(list(msg.name), list(msg.position), self.mapping)
        if values is not None:
            with self._lock:
                self._state = (rospy.get_time(), values)

    def _on_plan(self, msg: JointTrajectory) -> None:
        times = [p.time_from_start.to_sec() for p in msg.points]
        goals = goals_from_plan(times, [list(p.positions) for p in msg.points], self.mapping)
        with self._lock:
            if not goals:
                self._plan = None
                self._wake.notify()
                rospy.logwarn("nias_relay: empty plan: stopping after the running goal")
                return
            state = self._state
            try:
                if state is None or rospy.get_time() - state[0] > self.state_timeout:
                    raise TrajectoryRejected("no fresh NIAS joint state")
                check_goal_plan(msg.joint_names, goals, state[1], self.mapping)
            except TrajectoryRejected as e:
                rospy.logerr(f"nias_relay: plan refused, nothing sent: {e}")
                return
            self._plan = goals
            self._wake.notify()

    def spin(self) -> None:
        """Send goals one at a time; sleep each one's path_time; pick up newer plans between goals."""
        while not rospy.is_shutdown():
            with self._lock:
                while not self._plan and not rospy.is_shutdown():
                    self._wake.wait(timeout=0.1)
                if rospy.is_shutdown():
                    return
                goal = self._plan.pop(0)
            req = SetJointPositionRequest(
                planning_group=goal.planning_group,
                joint_position=JointPosition(position=list(goal.positions),
                                             max_velocity_scaling_factor=goal.max_velocity_scaling_factor,
                                             max_accelerations_scaling_factor=goal.max_accelerations_scaling_factor),
                path_time=goal.path_time)
            try:
                planned = self.call(req).is_planned
            except (rospy.ServiceException, rospy.ROSException) as e:
                planned = False
                rospy.logerr(f"nias_relay: service call failed: {e}")
            if not planned:
                rospy.logerr("nias_relay: goal not planned by NIAS: dropping the rest of this plan")
                with self._lock:
                    self._plan = None
                continue
            rospy.sleep(goal.path_time)


def main() -> int:
    rospy.init_node("nias_relay")
    try:
        NiasRelay().spin()
    except rospy.ROSInterruptException:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
