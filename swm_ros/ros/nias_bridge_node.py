"""nias_bridge_node: this graph's arm trajectories -> NICOL's NIAS goals; NICOL's state -> /joint_states.

  subscribes <arm_controller>/joint_trajectory   trajectory_msgs/JointTrajectory (from controller_node)
             nias_joint_states                   sensor_msgs/JointState, NIAS actuator names
                                                 (remap to /right/open_manipulator_p/joint_states)
  publishes  nias_goals                          trajectory_msgs/JointTrajectory: one point per NIAS goal,
                                                 actuator names in goal order, time_from_start cumulative
                                                 path_time (ros1_bridge carries it to swm_ros.bridges.nias_ros1)
             ~/shadow_goals                      the same, in dry_run (nothing reaches the robot)
             /joint_states                       sensor_msgs/JointState with the profile's joint names
             /diagnostics

NICOL runs ROS 1; its goal service (`goal_joint_space_path`, a custom type) cannot cross
ros1_bridge, standard messages can. So this node does the checking and timing here, where it
is tested over DDS (swm_ros.bridges.nias), and a thin rospy relay on the ROS 1 side re-checks
each plan with the same code and calls the service. A bad trajectory (unknown or missing
joints, NaN, limits, non-increasing times, a start far from the measured state) is refused
whole: nothing is published for it.
"""
from __future__ import annotations

import threading

from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from swm_ros.ros import conversions as conv
from swm_ros.ros import qos
from swm_ros.ros.node_utils import Diagnostics, Param, StartupError, declare_parameters, positive, run_node

PARAMETERS: dict[str, Param] = {
    "robot": Param("nicol", "robot profile name (config/robots) or path to a profile YAML"),
    "nias_config": Param("nias", "NIAS mapping: name in config/bridges or path to a YAML"),
    "dry_run": Param(True, "convert and check, but publish goals only on ~/shadow_goals"),
    "joint_state_timeout": Param(0.5, "s: an older NIAS joint state cannot start a trajectory", positive, "> 0"),
    "diagnostics_period": Param(1.0, "s between /diagnostics messages", positive, "> 0"),
}


def goals_message(actuators, goals) -> JointTrajectory:
    """NIAS goals as one JointTrajectory: point k reaches goal k at the sum of path_times."""
    msg = JointTrajectory(joint_names=list(actuators))
    t = 0.0
    for g in goals:
        t += g.path_time
        msg.points.append(JointTrajectoryPoint(positions=list(g.positions), time_from_start=conv.to_duration(t)))
    return msg


class NiasBridgeNode(Node):
    def __init__(self) -> None:
        super().__init__("nias_bridge_node")
        self.p = declare_parameters(self, PARAMETERS)
        from swm_ros.bridges.nias import NiasMapping, load_nias_config
        from swm_ros.resources import config_path
        from swm_ros.robots.profile import load_robot_profile

        path = self.p.nias_config if self.p.nias_config.endswith((".yaml", ".yml")) else \
            config_path("bridges", f"{self.p.nias_config}.yaml")
        try:
            self.profile = load_robot_profile(self.p.robot)
            self.mapping = NiasMapping(self.profile, load_nias_config(path))
        except Exception as e:  # noqa: BLE001 - any bad config ends the node with its reason
            raise StartupError(f"NIAS bridge config: {e}") from e
        self._lock = threading.Lock()
        self._state: tuple[float, list[float]] | None = None     # (receive time, actuator values)
        self.accepted = self.rejected = 0
        self.last_rejection = ""

        topic = f"{self.profile.controller.arm_controller}/joint_trajectory"
        self.create_subscription(JointTrajectory, topic, self._on_trajectory, qos.COMMAND)
        self.create_subscription(JointState, "nias_joint_states", self._on_nias_state, qos.STATE)
        self.pub_goals = self.create_publisher(JointTrajectory, "nias_goals", qos.COMMAND)
        self.pub_shadow = self.create_publisher(JointTrajectory, "~/shadow_goals", qos.COMMAND)
        self.pub_joints = self.create_publisher(JointState, self.profile.controller.joint_states_topic, qos.STATE)
        self._diag = Diagnostics(self, "nias bridge", self.profile.name, self._diagnostics, self.p.diagnostics_period)
        self.get_logger().info(
            f"{self.resolve_topic_name(topic)} -> {self.resolve_topic_name('nias_goals')} "
            f"(service {self.mapping.config.arm.service} on the ROS 1 side)"
            f"{'; DRY RUN: goals only on ~/shadow_goals' if self.p.dry_run else ''}")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_nias_state(self, msg: JointState) -> None:
        from swm_ros.bridges.nias import nias_state_to_profile, nias_state_values

        values = nias_state_values(list(msg.name), list(msg.position), self.mapping)
        if values is None:
            self.get_logger().warning(f"NIAS joint state lacks actuators {list(self.mapping.actuators)} or has NaN; "
                                      "ignored", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._state = (self._now(), values)
        names, q = nias_state_to_profile(values, self.mapping)
        out = conv.joint_state(names, q)
        out.header.stamp = msg.header.stamp if conv.to_seconds(msg.header.stamp) > 0 else self.get_clock().now().to_msg()
        self.pub_joints.publish(out)

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        self.last_rejection = reason
        self.get_logger().error(f"trajectory refused, nothing sent to NICOL: {reason}")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        from swm_ros.bridges.nias import TrajectoryRejected, trajectory_to_goals

        with self._lock:
            state = self._state
        if state is None or self._now() - state[0] > self.p.joint_state_timeout:
            return self._reject("no fresh NIAS joint state: the first goal's speed cannot be checked")
        try:
            names, times, positions = conv.trajectory_arrays(msg)
            goals = trajectory_to_goals(names, list(times), positions.tolist(), state[1], self.mapping)
        except (TrajectoryRejected, ValueError) as e:
            return self._reject(str(e))
        out = goals_message(self.mapping.actuators, goals)
        (self.pub_shadow if self.p.dry_run else self.pub_goals).publish(out)
        self.accepted += 1
        self.get_logger().info(f"{len(msg.points)} points -> {len(goals)} NIAS goal(s), "
                               f"{sum(g.path_time for g in goals):.2f} s", throttle_duration_sec=2.0)

    def _diagnostics(self):
        with self._lock:
            age = self._now() - self._state[0] if self._state else float("inf")
        values = {"accepted": self.accepted, "rejected": self.rejected, "last_rejection": self.last_rejection,
                  "dry_run": self.p.dry_run, "nias_state_age": f"{age:.3f}"}
        if age > self.p.joint_state_timeout:
            return Diagnostics.WARN, "no fresh NIAS joint state", values
        if self.last_rejection:
            return Diagnostics.WARN, f"last refusal: {self.last_rejection}", values
        return Diagnostics.OK, "dry run" if self.p.dry_run else "forwarding", values


def main(args: list[str] | None = None) -> int:
    return run_node(NiasBridgeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
