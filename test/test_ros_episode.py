"""The simulated graph end to end: sim_node, policy_node (scripted) and controller_node as
separate processes, started exactly as config/graphs/sim.yaml says, push a block to success."""
from __future__ import annotations

import time

import pytest

from swm_ros.graph import resolve_graph
from swm_ros.msg import ActionChunk, TaskInfo, WorldState
from swm_ros.ros import qos
from swm_ros.srv import ResetEpisode
from trajectory_msgs.msg import JointTrajectory

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_push_episode_succeeds_through_the_ros_graph(start_node, probe) -> None:
    graph = resolve_graph("sim", {"task": "push", "seed": "0"})
    procs = {n.name: start_node(n.executable, *n.ros_args()[1:], name=n.name) for n in graph.nodes}
    world = probe.collect(WorldState, "world_state", qos.STATE)
    tasks = probe.collect(TaskInfo, "task_info", qos.LATCHED)
    chunks = probe.collect(ActionChunk, "action_chunk", qos.COMMAND)
    trajs = probe.collect(JointTrajectory, "/r_arm_controller/joint_trajectory", qos.COMMAND)
    t0 = time.monotonic()
    ok = probe.wait_for(lambda: any(w.success for w in world), 90)
    elapsed = time.monotonic() - t0
    logs = "\n".join(f"--- {n}\n{p.output()[-3000:]}" for n, p in procs.items())
    assert ok, f"no success in 90 s: {len(chunks)} chunks, {len(trajs)} trajectories\n{logs}"
    assert tasks and tasks[-1].name == "push"
    assert chunks and chunks[0].source == "scripted" and chunks[0].action_names == ["dx", "dy", "dz", "dyaw", "gripper"]
    assert trajs, "success without the controller commanding the arm?"
    assert all(p.alive() for p in procs.values()), logs
    print(f"push success after {elapsed:.1f} s wall, {len(chunks)} chunks, {len(trajs)} trajectories")

    # a new episode through the service: task_info is re-latched with the next episode number
    res = probe.call(ResetEpisode, "/sim_node/reset", ResetEpisode.Request(task="", variant="", seed=5))
    assert res.success, res.message
    assert res.task_info.episode == 1 and res.task_info.seed == 5
    assert probe.wait_for(lambda: tasks[-1].episode == 1, 5)
    for p in procs.values():
        p.stop_cleanly()
