"""controller_node: action chunks in, safe joint trajectories out. The last line of defence.

  subscribes action_chunk                          swm_ros/ActionChunk (reliable)
             /joint_states                         sensor_msgs/JointState
  publishes  <arm_controller>/joint_trajectory     trajectory_msgs/JointTrajectory (JTC topic), or
  action     <arm_controller>/follow_joint_trajectory  control_msgs FollowJointTrajectory goals
                                                   (use_action_interface; see trajectory_action.py)
             ~/shadow_trajectory                   the same, in dry_run (nothing goes to the arm)
             controller_ready                      std_msgs/Bool: true when a trajectory finished,
                                                   repeated on wall time while no chunk answers it
             /diagnostics
  services   ~/estop                               std_srvs/SetBool: true engages, false releases

Every chunk is checked before anything is computed from it (names, shape, finiteness,
bounds, dt, stamp age) and the joint state it would start from must be fresh; a rejected
chunk is logged and counted and *nothing* is published for it. A silent command stream
(`command_timeout`) and the e-stop both make the arm hold where it is. The node is
independent of whatever produced the chunk: a bad model cannot make it forward a bad command.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from swm_ros.envs.base import ACTION_NAMES
from swm_ros.msg import ActionChunk
from swm_ros.robots import safety
from swm_ros.ros import conversions as conv
from swm_ros.ros import qos
from swm_ros.ros.node_utils import (Diagnostics, Param, StartupError, declare_parameters, load_profile,
                                    non_negative, positive, run_node)
from swm_ros.ros.trajectory import PlanError, chunk_to_waypoints
from swm_ros.ros.trajectory_action import TrajectoryActionClient

HOLD_DURATION = 0.1   # s: time_from_start of the single hold point (reach "here" in one control period)

PARAMETERS: dict[str, Param] = {
    "robot": Param("nicol", "robot profile name (config/robots) or path to a profile YAML"),
    "yaw_limit": Param(1.5707963267948966, "rad: |effector yaw| target limit (as the env)", positive, "> 0"),
    "simulated": Param(True, "use the profile's simulation velocity limits (false: the real robot's)"),
    "execute_steps": Param(0, "how many of a chunk's actions to execute; 0 = all", non_negative, ">= 0"),
    "dry_run": Param(False, "compute and log, but publish to ~/shadow_trajectory instead of the arm"),
    "command_timeout": Param(3.0, "s without a valid chunk before the arm is told to hold", positive, "> 0"),
    "joint_state_timeout": Param(0.5, "s: older /joint_states -> refuse to command", positive, "> 0"),
    "max_chunk_age": Param(1.0, "s: chunks stamped earlier are stale and rejected", positive, "> 0"),
    "action_bound": Param(1.0, "|action| above this is rejected (actions are normalised to [-1, 1])",
                          positive, "> 0"),
    "min_dt": Param(0.02, "s: smallest accepted chunk dt", positive, "> 0"),
    "max_dt": Param(1.0, "s: largest accepted chunk dt", positive, "> 0"),
    "ik_tolerance": Param(0.03, "m: an IK step missing by more ends the chunk there", positive, "> 0"),
    "ready_repeat": Param(2.0, "wall s between repeats of controller_ready while the arm is idle and no chunk "
                          "was accepted (a ready lost before DDS matched the policy, or answered by a "
                          "rejected chunk, would otherwise stall a policy that plans only on ready); 0 = once",
                          non_negative, ">= 0"),
    "control_rate_hz": Param(20.0, "watchdog / readiness check rate", positive, "> 0"),
    "diagnostics_period": Param(1.0, "s between /diagnostics messages", positive, "> 0"),
    "use_action_interface": Param(False, "send control_msgs/FollowJointTrajectory goals to "
                                  "<arm_controller>/follow_joint_trajectory instead of publishing on the "
                                  "JTC topic (needs control_msgs)"),
}


class ControllerNode(Node):
    def __init__(self) -> None:
        super().__init__("controller_node")
        self.p = declare_parameters(self, PARAMETERS)
        if self.p.min_dt > self.p.max_dt:
            raise StartupError(f"min_dt {self.p.min_dt} > max_dt {self.p.max_dt}")
        from swm_ros.robots.kinematics import ArmKinematics

        self.profile = load_profile(self.p.robot)
        self.kin = ArmKinematics(self.profile)
        self.joint_names = self.profile.joint_names
        self.lower, self.upper = self.profile.position_limits()
        self.vmax = self.profile.velocity_limits(simulated=self.p.simulated)
        self.limits = safety.ChunkLimits(ACTION_NAMES, self.p.action_bound, self.p.min_dt, self.p.max_dt)

        clock = self._now
        self.watchdog = safety.CommandWatchdog(self.p.command_timeout, clock)
        self.js_guard = safety.FreshnessGuard(self.p.joint_state_timeout, clock)
        self.estop = safety.EStopLatch()
        self._lock = threading.Lock()     # one command decision at a time (chunk, estop, watchdog)
        self._q: np.ndarray | None = None
        self._ready_at: float | None = None   # when the current trajectory ends
        self._ready_sent = False
        self._ready_sent_wall = 0.0           # time.monotonic() of the last controller_ready
        self.accepted = self.rejected = self.ready_repeats = 0
        self.last_rejection = ""

        # Chunks (IK: the slow part) in one group, everything safety-critical in another,
        # so an e-stop is served while a chunk is being solved.
        work, urgent = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        topic = f"{self.profile.controller.arm_controller}/joint_trajectory"
        self.action: TrajectoryActionClient | None = None
        if self.p.use_action_interface:   # StartupError if control_msgs is missing
            self.action = TrajectoryActionClient(self, self.profile.controller.arm_controller,
                                                 callback_group=MutuallyExclusiveCallbackGroup())
            target = f"{self.action.action_name} (FollowJointTrajectory goals)"
        else:
            target = self.resolve_topic_name(topic)
        self.pub_traj = self.create_publisher(JointTrajectory, topic, qos.COMMAND)
        self.pub_shadow = self.create_publisher(JointTrajectory, "~/shadow_trajectory", qos.COMMAND)
        self.pub_ready = self.create_publisher(Bool, "controller_ready", qos.COMMAND)
        self.create_subscription(ActionChunk, "action_chunk", self._on_chunk, qos.COMMAND, callback_group=work)
        self.create_subscription(JointState, self.profile.controller.joint_states_topic, self._on_joint_state,
                                 qos.STATE, callback_group=urgent)
        self.create_service(SetBool, "~/estop", self._on_estop, callback_group=urgent)
        self.create_timer(1.0 / self.p.control_rate_hz, self._on_tick, callback_group=urgent)
        if self.p.ready_repeat > 0:
            # wall time: in lockstep, sim time stands still exactly while the controller waits for a chunk.
            # Checked 4 times a period, so a repeat comes 1-1.25 periods after the last ready.
            self.create_timer(self.p.ready_repeat / 4, self._on_ready_repeat, callback_group=urgent,
                              clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._diag = Diagnostics(self, "safety", self.profile.name, self._diagnostics, self.p.diagnostics_period,
                                 callback_group=urgent)
        self.get_logger().info(
            f"commanding {target}{' (DRY RUN: shadow topic only)' if self.p.dry_run else ''}; "
            f"{'sim' if self.p.simulated else 'REAL'} velocity limits {np.round(self.vmax, 3).tolist()}")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ inputs

    def _on_joint_state(self, msg: JointState) -> None:
        q = conv.joint_positions_in_order(msg, self.joint_names)
        if q is None or not np.all(np.isfinite(q)):
            self.get_logger().warning("/joint_states lacks this robot's joints or has NaN; ignored",
                                      throttle_duration_sec=5.0)
            return
        stamp = conv.to_seconds(msg.header.stamp)
        self._q = q
        self.js_guard.update(stamp if stamp > 0 else None)

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        self.last_rejection = reason
        self.get_logger().error(f"action chunk rejected, nothing published: {reason}")

    def _on_chunk(self, msg: ActionChunk) -> None:
        if self.estop.engaged:
            return self._reject("e-stop engaged")
        check = safety.validate_chunk(msg.actions, msg.action_names, msg.horizon, msg.dt, self.limits)
        if not check.ok:
            return self._reject(check.reason)
        stamp = conv.to_seconds(msg.header.stamp)
        if stamp <= 0:
            return self._reject("unstamped chunk: its age cannot be checked")
        ok, why = safety.stamp_age_ok(stamp, self._now(), self.p.max_chunk_age)
        if not ok:
            return self._reject(why)
        if not self.js_guard.fresh() or self._q is None:
            return self._reject(f"no fresh /joint_states (age {self.js_guard.age():.2f} s)")
        if not self._arm_reachable():
            return self._reject(f"no FollowJointTrajectory server at {self.action.action_name}")
        q0 = self._q.copy()
        steps = check.actions if self.p.execute_steps == 0 else check.actions[: self.p.execute_steps]
        try:
            plan = chunk_to_waypoints(
                steps, float(msg.dt), q0, self.kin,
                max_step_xyz=self.profile.effector.max_step_xyz, max_step_yaw=self.profile.effector.max_step_yaw,
                workspace_lower=self.profile.workspace.lower, workspace_upper=self.profile.workspace.upper,
                gripper=self.profile.gripper,
                lower=self.lower, upper=self.upper, velocity_limits=self.vmax,
                yaw_limit=self.p.yaw_limit, ik_tolerance=self.p.ik_tolerance)
        except (PlanError, ValueError) as e:
            return self._reject(f"cannot plan: {e}")
        for note in plan.notes:
            self.get_logger().info(note, throttle_duration_sec=2.0)
        with self._lock:
            if self.estop.engaged:   # engaged while we were solving IK
                return self._reject("e-stop engaged")
            self._send(conv.joint_trajectory(self.joint_names, plan.times, plan.positions))
            self.accepted += 1
            self.watchdog.feed()
            self._ready_at, self._ready_sent = self._now() + float(plan.times[-1]), False

    # ------------------------------------------------------------------ outputs

    def _arm_reachable(self) -> bool:
        """Topic: always (fire and forget). Action: only while the action server is up."""
        return self.action is None or self.p.dry_run or self.action.server_ready()

    def _send(self, traj: JointTrajectory) -> None:
        """Stamp 0 = start now: the trajectory starts from the current state whatever the clock skew."""
        if self.p.dry_run:
            self.pub_shadow.publish(traj)
        elif self.action is not None:
            self.action.send(traj)     # a new goal preempts the running one, as on JTC's topic
        else:
            self.pub_traj.publish(traj)

    def _hold(self, why: str) -> bool:
        """Hold at the measured position (always called under the lock)."""
        if self._q is None:
            self.get_logger().error(f"cannot hold ({why}): no joint state ever received")
            return False
        hold = conv.joint_trajectory(self.joint_names, [HOLD_DURATION], self._q[None, :])
        if self.action is not None and not self.p.dry_run:
            if not self.action.server_ready():
                self.get_logger().error(f"cannot hold ({why}): no FollowJointTrajectory server at "
                                        f"{self.action.action_name}")
                return False
            self.action.stop_and_hold(hold)   # cancel the running goal, then command the hold
        else:
            self._send(hold)
        self._ready_at = None
        self.get_logger().warning(f"holding position: {why}")
        return True

    def _on_estop(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        with self._lock:
            if req.data:
                self.estop.engage("service")
                res.success = self._hold("e-stop engaged")
                res.message = "e-stop engaged: holding, commands refused until released"
            else:
                changed = self.estop.release()
                res.success, res.message = True, "e-stop released" if changed else "e-stop was not engaged"
                self._ready_sent = False
                self._ready_at = self._now()
        self.get_logger().warning(res.message)
        return res

    def _on_tick(self) -> None:
        with self._lock:
            if self.watchdog.check() and not self.estop.engaged:
                self._hold(f"no valid action chunk for {self.p.command_timeout:g} s")
            if self.estop.engaged or not self.js_guard.fresh() or not self._arm_reachable():
                return
            if self._ready_at is None and not self._ready_sent:
                self._ready_at = self._now()        # first fresh joint state: ready for a first chunk
            if not self._ready_sent and self._ready_at is not None and self._now() >= self._ready_at:
                self._publish_ready()

    def _on_ready_repeat(self) -> None:
        with self._lock:
            if (self._ready_sent and not self.estop.engaged and self.js_guard.fresh() and self._arm_reachable()
                    and time.monotonic() - self._ready_sent_wall >= self.p.ready_repeat):
                self.ready_repeats += 1
                self._publish_ready()

    def _publish_ready(self) -> None:
        self.pub_ready.publish(Bool(data=True))
        self._ready_sent, self._ready_sent_wall = True, time.monotonic()

    def _diagnostics(self):
        values = {"accepted": self.accepted, "rejected": self.rejected, "last_rejection": self.last_rejection,
                  "ready_repeats": self.ready_repeats,
                  "estop": self.estop.engaged, "dry_run": self.p.dry_run,
                  "joint_state_age": f"{self.js_guard.age():.3f}",
                  "command_age": f"{self.watchdog.age():.3f}"}
        if self.action is not None:
            values.update(self.action.diagnostics())
        if self.estop.engaged:
            return Diagnostics.ERROR, "e-stop engaged", values
        if self.action is not None and not self.p.dry_run:
            if not values["server_ready"]:
                return Diagnostics.ERROR, f"no FollowJointTrajectory server at {self.action.action_name}", values
            if self.action.last_error:
                return Diagnostics.ERROR, f"trajectory goal failed: {self.action.last_error}", values
        if not self.js_guard.fresh():
            return Diagnostics.WARN, "joint states stale: not commanding", values
        if self.last_rejection:
            return Diagnostics.WARN, f"last chunk rejection: {self.last_rejection}", values
        return Diagnostics.OK, "dry run" if self.p.dry_run else "commanding", values


def main(args: list[str] | None = None) -> int:
    return run_node(ControllerNode, args, threads=2)


if __name__ == "__main__":
    raise SystemExit(main())
