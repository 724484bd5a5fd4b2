"""The NIAS bridge: trajectories in, ordered and speed-limited NIAS goals out; bad input refused.

Three levels: the ROS-free core (swm_ros.bridges.nias), the ROS 2 node over DDS, and the
ROS 1 relay against a real ROS 1 master (Debian's rosmaster/rospy) with a fake NIAS goal
service standing in for the physical NICOL -- the hardware boundary.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from swm_ros.bridges.nias import (NiasMapping, TrajectoryRejected, check_goal_plan, load_nias_config,
                                  nias_state_to_profile, nias_state_values, trajectory_to_goals)
from swm_ros.resources import config_path
from swm_ros.robots.profile import load_robot_profile

REPO = Path(__file__).resolve().parents[1]
PROFILE = load_robot_profile("nicol")
CONFIG = load_nias_config(config_path("bridges", "nias.yaml"))
MAPPING = NiasMapping(PROFILE, CONFIG)
HOME = [*PROFILE.arm.home, PROFILE.gripper.open]


def _trajectory(steps: list[tuple[float, list[float]]]) -> tuple[list[str], list[float], list[list[float]]]:
    """(time, joint offsets from HOME) -> names, times, positions in profile order."""
    names = list(PROFILE.joint_names)
    return names, [t for t, _ in steps], [[h + d for h, d in zip(HOME, dq)] for _, dq in steps]


def _offsets(**by_index: float) -> list[float]:
    d = [0.0] * len(HOME)
    for k, v in by_index.items():
        d[int(k[1:])] = v
    return d


CURRENT = MAPPING.to_actuators(HOME)

# ------------------------------------------------------------------------------ core


def test_goals_are_ordered_mapped_and_speed_limited() -> None:
    names, times, positions = _trajectory([
        (0.1, _offsets(j0=0.01)), (0.2, _offsets(j0=0.02)), (0.3, _offsets(j0=0.03)), (0.4, _offsets(j0=0.04)),
        (0.5, _offsets(j0=0.05, j3=-0.02)), (0.6, _offsets(j0=0.06, j3=-0.03)),
        (1.0, _offsets(j0=0.08, j3=-0.05, j8=PROFILE.gripper.closed)),
    ])
    # the controller's joint order is not the NIAS order: shuffle it, the goals must not change
    perm = [8, 3, 0, 7, 1, 6, 2, 5, 4]
    shuffled = ([names[i] for i in perm], times, [[p[i] for i in perm] for p in positions])
    goals = trajectory_to_goals(*shuffled, CURRENT, MAPPING)
    assert goals == trajectory_to_goals(names, times, positions, CURRENT, MAPPING)
    # points closer than min_path_time (0.5 s) are merged: goals at t = 0.5 and t = 1.0
    assert len(goals) == 2
    first, last = goals
    assert first.planning_group == "r_arm" and len(first.positions) == len(CONFIG.arm.actuators)
    assert first.positions[0] == pytest.approx(HOME[0] + 0.05) and first.positions[3] == pytest.approx(HOME[3] - 0.02)
    assert first.positions[8:] == pytest.approx(CONFIG.arm.hand_open)        # gripper open -> hand open
    assert last.positions[8:] == pytest.approx(CONFIG.arm.hand_closed)       # gripper closed -> hand closed
    # path_time: at least the commanded time, and slow enough that the *peak* speed of the
    # rest-to-rest path stays under the lab limit for every actuator
    prev = CURRENT
    for g, commanded in zip(goals, (0.5, 0.5)):
        assert g.path_time >= commanded
        for a, b, v in zip(prev, g.positions, MAPPING.actuator_vmax):
            assert CONFIG.peak_factor * abs(b - a) / g.path_time <= v + 1e-9
        prev = g.positions
    # the hand closes over ~3.8 rad at 1.225 rad/s peak: that dominates the last goal's time
    assert last.path_time == pytest.approx(CONFIG.peak_factor * 3.8 / CONFIG.hand_velocity_limit)
    check_goal_plan(CONFIG.arm.actuators, goals, CURRENT, MAPPING)     # the relay accepts what we produce


def test_a_slow_trajectory_keeps_its_timing() -> None:
    names, times, positions = _trajectory([(2.0, _offsets(j1=0.01)), (4.0, _offsets(j1=0.02))])
    goals = trajectory_to_goals(names, times, positions, CURRENT, MAPPING)
    assert [g.path_time for g in goals] == pytest.approx([2.0, 2.0])


@pytest.mark.parametrize("mutate, reason", [
    (lambda n, t, p: (n[:-1] + ["r_joint9"], t, p), "unknown joint"),
    (lambda n, t, p: (n[:-1], t, [q[:-1] for q in p]), "missing"),
    (lambda n, t, p: (n[:-1] + [n[0]], t, p), "duplicate"),
    (lambda n, t, p: (n, t, [[math.nan] + q[1:] for q in p]), "nan"),
    (lambda n, t, p: (n, t, [[math.inf] + q[1:] for q in p]), "inf"),
    (lambda n, t, p: (n, t, [[q[0]] + [PROFILE.arm.upper[1] + 0.01] + q[2:] for q in p]), "outside its limits"),
    (lambda n, t, p: (n, t, [q[:-1] + [PROFILE.gripper.closed + 0.01] for q in p]), "outside its limits"),
    (lambda n, t, p: (n, [t[1], t[0]], p), "not after"),
    (lambda n, t, p: (n, [0.0, t[1]], p), "not after"),
    (lambda n, t, p: (n, [], []), "empty"),
    (lambda n, t, p: (n, t, [p[0], p[1][:-1]]), "positions for"),
    (lambda n, t, p: (n, t, [[q[0] + 0.5] + q[1:] for q in p]), "in one goal"),
])
def test_bad_trajectories_are_refused_whole(mutate, reason: str) -> None:
    names, times, positions = mutate(*_trajectory([(0.5, _offsets(j0=0.01)), (1.0, _offsets(j0=0.02))]))
    with pytest.raises(TrajectoryRejected, match=reason):
        trajectory_to_goals(names, times, positions, CURRENT, MAPPING)


def test_a_bad_measured_state_refuses_the_trajectory() -> None:
    names, times, positions = _trajectory([(0.5, _offsets(j0=0.01))])
    with pytest.raises(TrajectoryRejected, match="measured state"):
        trajectory_to_goals(names, times, positions, [math.nan] * len(CURRENT), MAPPING)


def test_the_relay_check_refuses_fast_misordered_or_out_of_limit_plans() -> None:
    names, times, positions = _trajectory([(0.5, _offsets(j0=0.04)), (1.0, _offsets(j0=0.08))])
    goals = trajectory_to_goals(names, times, positions, CURRENT, MAPPING)
    from dataclasses import replace

    too_fast = [replace(g, path_time=g.path_time / 4) for g in goals]
    with pytest.raises(TrajectoryRejected, match="speed limits"):
        check_goal_plan(CONFIG.arm.actuators, too_fast, CURRENT, MAPPING)
    with pytest.raises(TrajectoryRejected, match="are not"):
        check_goal_plan(list(reversed(CONFIG.arm.actuators)), goals, CURRENT, MAPPING)
    outside = [replace(goals[0], positions=(9.0,) + goals[0].positions[1:])]
    with pytest.raises(TrajectoryRejected, match="outside"):
        check_goal_plan(CONFIG.arm.actuators, outside, CURRENT, MAPPING)
    with pytest.raises(TrajectoryRejected, match="planning group"):
        check_goal_plan(CONFIG.arm.actuators, [replace(goals[0], planning_group="l_arm")], CURRENT, MAPPING)


def test_nias_states_map_back_to_the_profile() -> None:
    acts = list(CONFIG.arm.actuators)
    q = [*PROFILE.arm.home, 0.75 * PROFILE.gripper.closed]
    values = list(MAPPING.to_actuators(q))
    # by name, in any order, with extra joints
    order = list(reversed(range(len(acts))))
    named = nias_state_values([acts[i] for i in order] + ["extra"], [values[i] for i in order] + [1.0], MAPPING)
    names, back = nias_state_to_profile(named, MAPPING)
    assert names == list(PROFILE.joint_names) and back == pytest.approx(q)
    # unnamed: goal order, as the lab reads them
    assert nias_state_values([], values, MAPPING) == pytest.approx(values)
    assert nias_state_values(acts[:-1], values[:-1], MAPPING) is None
    assert nias_state_values(acts, values[:-1] + [math.nan], MAPPING) is None


# ------------------------------------------------------------------------------ ROS 2 node

@pytest.mark.ros
def test_node_turns_trajectories_into_goals_over_dds(start_node, probe) -> None:
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from swm_ros.ros import conversions as conv
    from swm_ros.ros import qos

    node = start_node("nias_bridge_node", "-p", "dry_run:=false")
    goals = probe.collect(JointTrajectory, "nias_goals", qos.COMMAND)
    shadow = probe.collect(JointTrajectory, "nias_bridge_node/shadow_goals", qos.COMMAND)
    joints = probe.collect(JointState, "/joint_states", qos.STATE)
    pub_state = probe.node.create_publisher(JointState, "nias_joint_states", qos.STATE)
    pub_traj = probe.node.create_publisher(JointTrajectory, "r_arm_controller/joint_trajectory", qos.COMMAND)
    acts = list(CONFIG.arm.actuators)
    probe.node.create_timer(0.05, lambda: pub_state.publish(conv.joint_state(acts, np.array(CURRENT))))
    assert probe.wait_for(lambda: len(joints) > 2, 20.0), node.output()
    # NICOL's state comes out under the profile's joint names, gripper from the hand
    assert list(joints[-1].name) == list(PROFILE.joint_names)
    assert list(joints[-1].position) == pytest.approx(HOME)
    assert probe.wait_for(lambda: pub_traj.get_subscription_count() > 0, 10.0)

    names, times, positions = _trajectory([(0.5, _offsets(j0=0.02)), (1.0, _offsets(j0=0.04, j8=0.01))])
    pub_traj.publish(conv.joint_trajectory(names, np.array(times), np.array(positions)))
    assert probe.wait_for(lambda: len(goals) == 1, 10.0), node.output()
    expected = trajectory_to_goals(names, times, positions, CURRENT, MAPPING)
    msg = goals[0]
    assert list(msg.joint_names) == acts
    assert np.allclose([list(p.positions) for p in msg.points], [list(g.positions) for g in expected])
    cumulative = np.cumsum([g.path_time for g in expected])
    assert [conv.to_seconds(p.time_from_start) for p in msg.points] == pytest.approx(cumulative.tolist())

    # refused: unknown joint, NaN, limits -> nothing more is published, the node keeps running
    bad = [conv.joint_trajectory(names[:-1] + ["r_joint9"], np.array(times), np.array(positions)),
           conv.joint_trajectory(names, np.array(times), np.array(positions) * np.nan),
           conv.joint_trajectory(names, np.array(times), np.array(positions) + 5.0)]
    for m in bad:
        pub_traj.publish(m)
    assert probe.wait_for(lambda: node.output().count("trajectory refused") >= 3, 10.0), node.output()
    probe.spin(0.5)
    assert len(goals) == 1 and not shadow and node.alive()


@pytest.mark.ros
def test_dry_run_publishes_only_shadow_goals(start_node, probe) -> None:
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from swm_ros.ros import conversions as conv
    from swm_ros.ros import qos

    node = start_node("nias_bridge_node")            # dry_run is true by default
    goals = probe.collect(JointTrajectory, "nias_goals", qos.COMMAND)
    shadow = probe.collect(JointTrajectory, "nias_bridge_node/shadow_goals", qos.COMMAND)
    pub_state = probe.node.create_publisher(JointState, "nias_joint_states", qos.STATE)
    pub_traj = probe.node.create_publisher(JointTrajectory, "r_arm_controller/joint_trajectory", qos.COMMAND)
    probe.node.create_timer(0.05, lambda: pub_state.publish(
        conv.joint_state(list(CONFIG.arm.actuators), np.array(CURRENT))))
    assert probe.wait_for(lambda: pub_traj.get_subscription_count() > 0, 20.0), node.output()
    probe.spin(0.5)
    names, times, positions = _trajectory([(0.5, _offsets(j0=0.02))])
    pub_traj.publish(conv.joint_trajectory(names, np.array(times), np.array(positions)))
    assert probe.wait_for(lambda: len(shadow) == 1, 10.0), node.output()
    probe.spin(0.3)
    assert not goals


# ------------------------------------------------------------------------------ ROS 1 relay

ROS1_PYTHON = "/usr/bin/python3"

FAKE_NIAS = r'''
"""Stands in for NICOL's NIAS goal service: logs each goal, moves its state there linearly."""
import json, sys, threading
import rospy
from open_manipulator_msgs.srv import SetJointPosition, SetJointPositionResponse
from sensor_msgs.msg import JointState

log_path, names, state = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
lock = threading.Lock()
motion = {"start": list(state), "goal": list(state), "t0": 0.0, "T": 1e-9}

def handle(req):
    now = rospy.get_time()
    with lock, open(log_path, "a") as f:
        f.write(json.dumps({"t": now, "group": req.planning_group, "positions": list(req.joint_position.position),
                            "path_time": req.path_time}) + "\n")
        ok = len(req.joint_position.position) == len(names)
        if ok:
            motion.update(start=current(now), goal=list(req.joint_position.position), t0=now, T=max(req.path_time, 1e-9))
    return SetJointPositionResponse(is_planned=ok)

def current(now):
    s = min(1.0, (now - motion["t0"]) / motion["T"])
    return [a + s * (b - a) for a, b in zip(motion["start"], motion["goal"])]

rospy.init_node("fake_nias")
rospy.Service("/right/open_manipulator_p/goal_joint_space_path", SetJointPosition, handle)
pub = rospy.Publisher("/right/open_manipulator_p/joint_states", JointState, queue_size=1)
rate = rospy.Rate(50)
while not rospy.is_shutdown():
    with lock:
        q = current(rospy.get_time())
    pub.publish(JointState(name=names, position=q))
    rate.sleep()
'''

PUBLISH_PLAN = r'''
"""Publishes one goal plan on /nias_goals, as ros1_bridge would deliver it from ROS 2."""
import json, sys
import rospy
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

plan = json.loads(open(sys.argv[1]).read())
rospy.init_node("plan_publisher", anonymous=True)
pub = rospy.Publisher("/nias_goals", JointTrajectory, queue_size=1, latch=True)
deadline = rospy.get_time() + 20
while pub.get_num_connections() == 0 and rospy.get_time() < deadline:
    rospy.sleep(0.05)
msg = JointTrajectory(joint_names=plan["names"])
for t, p in zip(plan["times"], plan["positions"]):
    msg.points.append(JointTrajectoryPoint(positions=p, time_from_start=rospy.Duration.from_sec(t)))
pub.publish(msg)
rospy.sleep(1.0)
print("published", pub.get_num_connections())
'''


# the Debian packages, one list shared with .ci/run, which installs them where it can
ROS1_PACKAGES = (Path(__file__).parent / "fixtures" / "ros1-apt-packages.txt").read_text().strip()


def _ros1_available() -> str:
    if not Path(ROS1_PYTHON).is_file():
        return f"{ROS1_PYTHON} missing"
    # the relay (swm_ros.bridges, numpy) and the test's publisher import more than rospy brings
    out = subprocess.run([ROS1_PYTHON, "-c", "import rospy, rosmaster, genpy, numpy, sensor_msgs.msg, trajectory_msgs.msg"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return (f"ROS 1 ({ROS1_PACKAGES}) not installed: apt-get install {ROS1_PACKAGES}\n{out.stderr.strip()}")
    return ""


def _generate_open_manipulator_msgs(out: Path) -> None:
    """open_manipulator_msgs (ROBOTIS, ROS 1) with genpy, the real ROS 1 message generator."""
    src = out / "src"
    (src / "msg").mkdir(parents=True)
    (src / "srv").mkdir()
    (src / "msg" / "JointPosition.msg").write_text(
        "string[] joint_name\nfloat64[] position\nfloat64 max_accelerations_scaling_factor\n"
        "float64 max_velocity_scaling_factor\n")
    (src / "srv" / "SetJointPosition.srv").write_text(
        "string planning_group\nJointPosition joint_position\nfloat64 path_time\n---\nbool is_planned\n")
    pkg = out / "py" / "open_manipulator_msgs"
    inc = f"-Iopen_manipulator_msgs:{src / 'msg'}"
    for tool, kind, f in (("genmsg_py.py", "msg", "JointPosition.msg"), ("gensrv_py.py", "srv", "SetJointPosition.srv")):
        for args in ([inc, "-o", str(pkg / kind), str(src / kind / f)], ["--initpy", "-o", str(pkg / kind)]):
            subprocess.run([ROS1_PYTHON, f"/usr/lib/genpy/{tool}", "-p", "open_manipulator_msgs", *args],
                           check=True, capture_output=True)
    (pkg / "__init__.py").touch()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ros1(tmp_path):
    """A ROS 1 master on a free loopback port, generated NIAS messages, and a process starter."""
    why = _ros1_available()
    if why:
        pytest.skip(why)
    _generate_open_manipulator_msgs(tmp_path / "msgs")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROS_", "AMENT", "PYTHON", "_ROS"))}
    env.update(ROS_MASTER_URI=f"http://127.0.0.1:{port}", ROS_HOSTNAME="127.0.0.1", ROS_HOME=str(tmp_path / "ros_home"),
               PYTHONPATH=f"{tmp_path / 'msgs' / 'py'}{os.pathsep}{REPO}", PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(*args: str, name: str) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        logs.append(log)
        p = subprocess.Popen([ROS1_PYTHON, *args], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                             start_new_session=True, cwd=tmp_path)
        procs.append(p)
        return p

    start(shutil.which("rosmaster") or "/usr/bin/rosmaster", "--core", "-p", str(port), name="rosmaster")
    import xmlrpc.client

    master = xmlrpc.client.ServerProxy(env["ROS_MASTER_URI"])
    deadline = time.monotonic() + 20
    while True:
        try:
            master.getPid("/test")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield start, env, tmp_path, logs
    for p in reversed(procs):
        try:
            os.killpg(p.pid, 2)
            p.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(p.pid, 9)


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _plan_file(path: Path, goals, scale: float = 1.0, names=None) -> Path:
    times = np.cumsum([g.path_time * scale for g in goals]).tolist()
    path.write_text(json.dumps({"names": list(names or CONFIG.arm.actuators), "times": times,
                                "positions": [list(g.positions) for g in goals]}))
    return path


@pytest.mark.ros
@pytest.mark.slow
def test_ros1_relay_calls_the_nias_service_in_order_at_speed(ros1) -> None:
    start, env, tmp, logs = ros1
    goal_log = tmp / "goals.jsonl"
    (tmp / "fake_nias.py").write_text(FAKE_NIAS)
    (tmp / "publish_plan.py").write_text(PUBLISH_PLAN)
    start(str(tmp / "fake_nias.py"), str(goal_log), json.dumps(list(CONFIG.arm.actuators)), json.dumps(list(CURRENT)),
          name="fake_nias")
    relay = start("-m", "swm_ros.bridges.nias_ros1", name="relay")
    names, times, positions = _trajectory([(0.5, _offsets(j0=0.02)), (1.0, _offsets(j0=0.04, j4=0.02)),
                                           (1.5, _offsets(j0=0.06, j4=0.03))])
    goals = trajectory_to_goals(names, times, positions, CURRENT, MAPPING)

    def publish(plan: Path) -> None:
        out = subprocess.run([ROS1_PYTHON, str(tmp / "publish_plan.py"), str(plan)], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and "published 1" in out.stdout, out.stdout + out.stderr + logs[-1].read_text()

    # refused where executed: too fast, wrong actuator order -> the service is never called
    publish(_plan_file(tmp / "fast.json", goals, scale=0.25))
    publish(_plan_file(tmp / "order.json", goals, names=list(reversed(CONFIG.arm.actuators))))
    time.sleep(1.0)
    assert _read_log(goal_log) == [], "a refused plan reached the robot"
    relay_log = (tmp / "relay.log").read_text()
    assert relay_log.count("plan refused") == 2, relay_log

    publish(_plan_file(tmp / "good.json", goals))
    deadline = time.monotonic() + 30
    while len(_read_log(goal_log)) < len(goals) and time.monotonic() < deadline:
        time.sleep(0.1)
    calls = _read_log(goal_log)
    assert len(calls) == len(goals), (tmp / "relay.log").read_text()
    for call, goal in zip(calls, goals):
        assert call["group"] == "r_arm"
        assert call["positions"] == pytest.approx(list(goal.positions), abs=1e-9)
        assert call["path_time"] == pytest.approx(goal.path_time, abs=1e-6)
    # one goal at a time: the next goal is sent only after the previous one's path_time
    for a, b in zip(calls, calls[1:]):
        assert b["t"] - a["t"] >= a["path_time"] - 1e-3
    assert relay.poll() is None
