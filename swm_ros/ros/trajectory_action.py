"""FollowJointTrajectory backend of controller_node: trajectories as action goals.

ros2_control's joint_trajectory_controller (JTC) takes commands two ways: its
`~/joint_trajectory` topic (fire and forget) and its `~/follow_joint_trajectory` action,
which also says whether a goal was accepted and how it ended (invalid joints, path or goal
tolerance violated, ...). This is the action side, a thin layer over rclpy's ActionClient:

* `send` sends each (already safe) trajectory as a goal; as in JTC, a new goal preempts
  the running one, so nothing here waits for a result before sending the next;
* `stop_and_hold` (e-stop, watchdog) cancels every goal still running (or still waiting
  for its acceptance) and then sends a one-point hold goal;
* rejected and aborted goals are logged and kept for /diagnostics (`last_error`), since a
  goal the arm refused means the arm is not doing what the controller believes.

control_msgs has no PyPI wheel, so it is imported only when this backend is asked for; on a
ROS 2 install it comes with ros2_control (`ros-jazzy-control-msgs`).
"""
from __future__ import annotations

import itertools
import queue
import threading
from typing import Any, Callable

from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory

from swm_ros.ros.node_utils import StartupError

_STATUS_NAMES = {GoalStatus.STATUS_SUCCEEDED: "succeeded", GoalStatus.STATUS_CANCELED: "canceled",
                 GoalStatus.STATUS_ABORTED: "aborted", GoalStatus.STATUS_UNKNOWN: "unknown"}


def import_follow_joint_trajectory() -> Any:
    """control_msgs.action.FollowJointTrajectory, or a StartupError that says how to get it."""
    try:
        from control_msgs.action import FollowJointTrajectory
    except ImportError as e:
        raise StartupError(
            "use_action_interface:=true needs the ROS package control_msgs "
            "(control_msgs/action/FollowJointTrajectory), which is not importable here: "
            f"{e}. It has no PyPI wheel; on a ROS 2 install: apt install ros-$ROS_DISTRO-control-msgs "
            "(it comes with ros2_control), or run with use_action_interface:=false (topic interface)") from e
    return FollowJointTrajectory


def _error_code_name(action_type: Any, code: int) -> str:
    names = {getattr(action_type.Result, n): n for n in ("SUCCESSFUL", "INVALID_GOAL", "INVALID_JOINTS",
             "OLD_HEADER_TIMESTAMP", "PATH_TOLERANCE_VIOLATED", "GOAL_TOLERANCE_VIOLATED")}
    return names.get(code, str(code))


class TrajectoryActionClient:
    """Sends JointTrajectory goals to `<controller>/follow_joint_trajectory` and watches them.

    Thread-safe: `send` / `cancel_all` come from the node's callback threads, goal responses
    and results from the executor.
    """

    def __init__(self, node: Node, controller: str, callback_group=None) -> None:
        self._action_type = import_follow_joint_trajectory()
        self._node = node
        self._log = node.get_logger()
        group = callback_group or MutuallyExclusiveCallbackGroup()
        self._client = ActionClient(node, self._action_type, f"{controller}/follow_joint_trajectory",
                                    callback_group=group)
        # rclpy's ActionClient registers a goal or cancel request only after handing it to rcl,
        # so a response taken by another executor thread in between is dropped ("Ignoring
        # unexpected goal/cancel response"). Goals and cancels are therefore sent from a
        # guard-condition callback in the client's own mutually exclusive group, which the
        # executor never runs alongside the client's response callbacks.
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()    # callables to run in that group
        self._wake = node.create_guard_condition(self._send_queued, callback_group=group)
        self.action_name = node.resolve_topic_name(f"{controller}/follow_joint_trajectory")
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._latest = 0                     # id of the most recent goal sent
        self._running: dict[int, Any] = {}   # accepted, not finished: id -> ClientGoalHandle
        self._pending: set[int] = set()      # sent, acceptance not known yet
        self._cancel_on_accept: set[int] = set()
        self.sent = self.accepted = self.rejected = self.aborted = self.canceled = 0
        self.last_error = ""                 # why the most recent failed goal failed; '' once one succeeds

    def server_ready(self) -> bool:
        return self._client.server_is_ready()

    def send(self, trajectory: JointTrajectory) -> int:
        """Send one goal (it preempts the running one on the server). Returns its id."""
        with self._lock:
            goal_id = next(self._ids)
            self._latest = goal_id
            self._pending.add(goal_id)
            self.sent += 1
        goal = self._action_type.Goal(trajectory=trajectory)
        self._in_client_group(lambda: self._client.send_goal_async(goal).add_done_callback(
            lambda f: self._on_goal_response(goal_id, f)))
        return goal_id

    def _in_client_group(self, request: Callable[[], Any]) -> None:
        self._outbox.put(request)
        self._wake.trigger()

    def _send_queued(self) -> None:
        while True:
            try:
                request = self._outbox.get_nowait()
            except queue.Empty:
                return
            request()

    def cancel_all(self, then: Callable[[], None] | None = None) -> int:
        """Cancel every running goal; goals not yet accepted are cancelled on acceptance.
        `then` runs once the server has answered every cancel (at once when none runs).
        Returns how many cancels were requested."""
        with self._lock:
            handles = list(self._running.values())
            self._cancel_on_accept |= self._pending
        if not handles:
            if then is not None:
                then()
            return 0
        remaining = [len(handles)]

        def answered(_future) -> None:
            with self._lock:
                remaining[0] -= 1
                done = remaining[0] == 0
            if done and then is not None:
                then()

        def request() -> None:
            for handle in handles:
                handle.cancel_goal_async().add_done_callback(answered)
        self._in_client_group(request)
        return len(handles)

    def stop_and_hold(self, hold: JointTrajectory) -> None:
        """Cancel the running goal, then send `hold` once the server has answered the cancel.

        In that order, because the cancel and the new goal travel on different DDS channels:
        sent together, the hold goal could preempt the running goal before the cancel
        arrives. (On JTC a cancelled goal already holds position; the hold goal makes the
        hold explicit and independent of the server's cancel behaviour.) The hold is dropped
        if another goal was sent meanwhile: that goal is the newer command.
        """
        with self._lock:
            latest = self._latest

        def hold_unless_newer() -> None:
            with self._lock:
                go = self._latest == latest
            if go:
                self.send(hold)
        self.cancel_all(then=hold_unless_newer)

    # ------------------------------------------------------------------ callbacks

    def _fail(self, goal_id: int, what: str) -> None:
        self.last_error = f"goal {goal_id} {what}"
        self._log.error(f"{self.action_name}: goal {goal_id} {what}")

    def _on_goal_response(self, goal_id: int, future) -> None:
        with self._lock:
            self._pending.discard(goal_id)
            cancel = goal_id in self._cancel_on_accept
            self._cancel_on_accept.discard(goal_id)
        if future.exception() is not None:
            with self._lock:
                self.rejected += 1
            return self._fail(goal_id, f"could not be sent: {future.exception()!r}")
        handle = future.result()
        if not handle.accepted:
            with self._lock:
                self.rejected += 1
            return self._fail(goal_id, "REJECTED by the trajectory controller: the arm does not execute it")
        with self._lock:
            self.accepted += 1
            self._running[goal_id] = handle
            if goal_id == self._latest:
                self.last_error = ""
        if cancel:
            handle.cancel_goal_async()
        handle.get_result_async().add_done_callback(lambda f, i=goal_id: self._on_result(i, f))

    def _on_result(self, goal_id: int, future) -> None:
        with self._lock:
            self._running.pop(goal_id, None)
            superseded = goal_id != self._latest
        if future.exception() is not None:
            return self._fail(goal_id, f"result unavailable: {future.exception()!r}")
        response = future.result()
        status, result = response.status, response.result
        code = int(result.error_code)
        if status == GoalStatus.STATUS_SUCCEEDED and code == self._action_type.Result.SUCCESSFUL:
            return
        if status == GoalStatus.STATUS_CANCELED or (superseded and status == GoalStatus.STATUS_ABORTED):
            # cancelled by us (e-stop / watchdog) or preempted by our own newer goal: expected
            with self._lock:
                self.canceled += 1
            self._log.info(f"{self.action_name}: goal {goal_id} {_STATUS_NAMES.get(status, status)}"
                           f"{' (preempted by a newer goal)' if superseded else ''}")
            return
        with self._lock:
            self.aborted += 1
        self._fail(goal_id, f"{_STATUS_NAMES.get(status, f'status {status}').upper()}: error_code "
                            f"{_error_code_name(self._action_type, code)} {result.error_string!r}")

    def diagnostics(self) -> dict[str, Any]:
        return {"action": self.action_name, "server_ready": self.server_ready(), "goals_sent": self.sent,
                "goals_accepted": self.accepted, "goals_rejected": self.rejected, "goals_aborted": self.aborted,
                "goals_canceled": self.canceled, "last_goal_error": self.last_error}
