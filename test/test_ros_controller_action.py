"""controller_node's FollowJointTrajectory backend over DDS: controller_node
(use_action_interface:=true) and a joint trajectory controller stand-in
(test/fixtures/fake_joint_trajectory_controller.py, the hardware boundary) run as separate
processes with control_msgs built from test/fixtures/control_msgs (it has no PyPI wheel)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from swm_ros.envs.base import ACTION_NAMES
from swm_ros.msg import ActionChunk
from swm_ros.robots.profile import load_robot_profile
from swm_ros.ros import conversions as conv
from swm_ros.ros import qos

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PROFILE = load_robot_profile("nicol")
FAKE_JTC = Path(__file__).parent / "fixtures" / "fake_joint_trajectory_controller.py"
HOME = np.array([*PROFILE.arm.home, PROFILE.gripper.open])


class Arm:
    """What the test sees: goals the fake controller accepted, its events, the controller's
    diagnostics; sends chunks like a policy would."""

    def __init__(self, probe) -> None:
        self.probe = probe
        record = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)   # as the fake arm publishes them
        self.goals = probe.collect(JointTrajectory, "/fake_joint_trajectory_controller/accepted_goals", record)
        self.events = probe.collect(String, "/fake_joint_trajectory_controller/events", record)
        self.diags = probe.collect(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
        self.pub_chunk = probe.node.create_publisher(ActionChunk, "action_chunk", qos.COMMAND)

    def event_names(self) -> list[str]:
        return [e.data.split()[0] for e in self.events]

    def chunk(self, actions: np.ndarray, dt: float = 0.1) -> ActionChunk:
        msg = ActionChunk(action_names=list(ACTION_NAMES), dt=float(dt), source="test", task="push",
                          horizon=int(actions.shape[0]), actions=[float(x) for x in actions.reshape(-1)])
        msg.header.stamp = self.probe.node.get_clock().now().to_msg()
        return msg

    def controller_status(self) -> tuple[int, str, dict[str, str]] | None:
        for arr in reversed(self.diags):
            for st in arr.status:
                if st.name.startswith("controller_node"):
                    return st.level, st.message, {kv.key: kv.value for kv in st.values}
        return None

    def wait_connected(self, proc, jtc) -> None:
        # controller_ready is sent once and may precede the probe: wait for a healthy status instead
        def up() -> bool:
            s = self.controller_status()
            return (self.pub_chunk.get_subscription_count() > 0 and s is not None
                    and s[2].get("server_ready") == "True" and s[1] == "commanding")
        ok = self.probe.wait_for(up, 30)
        assert ok, f"controller_node never became ready: {self.controller_status()}\n{proc.output()}\n{jtc.output()}"


def _move(n: int = 8, dx: float = 0.5, dz: float = -0.3) -> np.ndarray:
    a = np.zeros((n, 5))
    a[:, 0], a[:, 2], a[:, 4] = dx, dz, 1.0
    return a


@pytest.fixture
def action_graph(control_msgs_env, start_script):
    """start(fault="none") -> (controller process, fake controller process)."""
    def start(fault: str = "none"):
        jtc = start_script(FAKE_JTC, control_msgs_env, "-p", f"fault:={fault}")
        ctl = start_script("swm_ros.ros.controller_node", control_msgs_env, "-p", "use_action_interface:=true",
                           "-p", "command_timeout:=30.0", "-p", "diagnostics_period:=0.1",
                           "-p", "max_chunk_age:=3.0", "-p", "joint_state_timeout:=3.0")
        # under CI load delivery can take over 1 s, and the fake controller's 50 Hz joint states
        # have arrived 1.64 s apart (a valid chunk then refused): 3 s limits, not the robot's
        # (staleness itself is tested in test_ros_controller.py)
        return ctl, jtc
    return start


def test_goals_follow_chunks_nan_sends_nothing_estop_cancels(action_graph, probe) -> None:
    ctl, jtc = action_graph()
    arm = Arm(probe)
    arm.wait_connected(ctl, jtc)
    # a valid chunk (8 steps of 0.5 s: the goal is still running when the e-stop comes)
    arm.pub_chunk.publish(arm.chunk(_move(), dt=0.5))
    assert probe.wait_for(lambda: len(arm.goals) == 1 and "accepted" in arm.event_names(), 10), \
        f"{ctl.output()}\n{jtc.output()}"
    names, times, positions = conv.trajectory_arrays(arm.goals[0])
    assert names == list(PROFILE.joint_names)
    assert len(times) == 8 and np.all(np.diff(times) > 0) and times[0] >= 0.5 - 1e-9
    lo, hi = PROFILE.position_limits()
    assert np.all(positions >= lo - 1e-9) and np.all(positions <= hi + 1e-9)
    assert not np.allclose(positions[-1], HOME) and positions[-1, -1] == pytest.approx(PROFILE.gripper.closed)
    assert conv.to_seconds(arm.goals[0].header.stamp) == 0.0          # JTC: start now

    # a NaN chunk: rejected by the safety layer, no goal reaches the arm
    bad = _move()
    bad[2, 1] = np.nan
    arm.pub_chunk.publish(arm.chunk(bad, dt=0.5))
    assert probe.wait_for(lambda: "non-finite" in ctl.output(), 5), ctl.output()
    probe.spin(0.5)
    assert len(arm.goals) == 1, "a rejected chunk became a goal"

    # e-stop: the running goal is cancelled and a one-point hold goal follows
    assert probe.call(SetBool, "/controller_node/estop", SetBool.Request(data=True)).success
    # (then, once the cancel is answered, the hold goal)
    # (goals and events are two topics: wait for the hold's own "accepted" event as well)
    assert probe.wait_for(lambda: len(arm.goals) == 2 and "canceled" in arm.event_names()
                          and arm.event_names().count("accepted") == 2, 5), \
        f"{arm.event_names()}\n{ctl.output()}\n{jtc.output()}"
    events = arm.event_names()
    assert events[:2] == ["accepted", "cancel_requested"], events
    assert events.index("cancel_requested") < events.index("accepted", 1), "the hold must follow the cancel"
    hold_names, hold_times, hold_q = conv.trajectory_arrays(arm.goals[1])
    assert hold_names == list(PROFILE.joint_names) and len(hold_times) == 1
    assert not np.allclose(hold_q[0], positions[-1], atol=1e-3), "hold must be where the arm is, not the goal end"
    # while e-stopped, chunks are refused
    arm.pub_chunk.publish(arm.chunk(_move()))
    probe.spin(1.0)
    assert len(arm.goals) == 2
    status = arm.controller_status()
    assert status is not None and status[1] == "e-stop engaged" and int(status[2]["goals_sent"]) == 2
    assert ctl.alive() and jtc.alive()
    ctl.stop_cleanly()


@pytest.mark.parametrize("fault, expect", [("reject", "REJECTED"), ("abort", "PATH_TOLERANCE_VIOLATED")])
def test_rejected_and_aborted_goals_are_reported(action_graph, probe, fault, expect) -> None:
    ctl, jtc = action_graph(fault)
    arm = Arm(probe)
    arm.wait_connected(ctl, jtc)
    arm.pub_chunk.publish(arm.chunk(_move()))

    def reported() -> bool:
        s = arm.controller_status()
        return s is not None and expect in s[1]

    assert probe.wait_for(reported, 10), f"{arm.controller_status()}\n{ctl.output()}\n{jtc.output()}"
    level, message, values = arm.controller_status()
    assert level == DiagnosticStatus.ERROR
    assert values[{"reject": "goals_rejected", "abort": "goals_aborted"}[fault]] == "1"
    # the child's log can lag its diagnostics under load
    assert probe.wait_for(lambda: expect in ctl.output(), 5), ctl.output()
    assert ctl.alive()


def test_missing_control_msgs_is_a_clear_startup_error(start_node) -> None:
    proc = start_node("controller_node", "-p", "use_action_interface:=true")
    assert proc.wait(30) != 0
    out = proc.output()
    assert "needs the ROS package control_msgs" in out and "use_action_interface:=false" in out, out
