"""Replay evaluation through the ROS 2 graph, with the controller in shadow mode.

`swm bag eval --graph` plays a bag into config/graphs/replay.yaml, separate processes over DDS
exactly as on a robot: the bag's frames and joint states reach policy_node, the planner
chooses with the world model, and controller_node (dry_run, fixed in that graph) turns each
chosen chunk into a trajectory that it publishes only on its shadow topic. This module starts
the graph (the player last, once the other nodes have subscribed), listens, and scores:

  (b) every PlanResult's chunk against the actions the robot executed from the frame the
      plan was made at (the latest frame at or before the plan's stamp; everything runs on
      the bag's clock), next to the policy's first proposal for the same observation;
  (c) planning latency per plan (PlanResult.planning_ms: from the proposals' stamp to the
      chosen chunk, DDS hops included);
  and shadow mode itself: shadow trajectories published vs commands on the arm's topic,
  which must stay at zero.

Answer accuracy (a) needs the model's answers for the *recorded* actions, which the graph
never plans with, so it stays in bags/evaluate.py (the same model, in process).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from swm_ros.bags.episodes import BagTopics, read_bag_episodes
from swm_ros.bags.plan_agreement import chunk_agreement
from swm_ros.bags.reader import BagReader

NS = 1_000_000_000
GRAPH = "replay"
PLAYER = "bag_player_node"


@dataclass
class GraphEvalConfig:
    planner: str = "grad"              # config/planner/<name>.yaml
    policy: str = "learned"            # policy_node's base policy
    proposals: int = 4
    execute_steps: int = 8             # receding horizon: actions per plan
    rate: float = 1.0                  # playback speed (the graph must keep up: planning runs on bag time)
    world_model: str = "tiny"          # checkpoint directory or backend name, for planner_node
    startup_timeout: float = 120.0     # s for the nodes to load their models and subscribe
    drain: float = 3.0                 # s after the last message for the last plan to arrive
    log_dir: str | None = None         # each node's output to <log_dir>/<node>.log

    def __post_init__(self) -> None:
        if self.proposals < 1 or self.execute_steps < 1 or not self.rate > 0:
            raise ValueError("proposals and execute_steps must be >= 1 and rate > 0")


class _Listener:
    """The evaluator's own rclpy node (own context, spun on a thread): what the graph decides."""

    def __init__(self, arm_topic: str) -> None:
        from trajectory_msgs.msg import JointTrajectory

        from swm_ros.msg import ActionProposals, PlanResult
        from swm_ros.ros import qos
        from swm_ros.ros.node_utils import BackgroundNode

        self.ros = BackgroundNode("swm_bag_eval")
        self.node = self.ros.node
        self.results: list[Any] = []
        self.proposals: dict[int, Any] = {}
        self.shadow: list[Any] = []
        self.arm: list[Any] = []
        self.node.create_subscription(PlanResult, "plan_result", self.results.append, qos.COMMAND)
        self.node.create_subscription(ActionProposals, "action_proposals", self._on_proposals, qos.COMMAND)
        self.node.create_subscription(JointTrajectory, "controller_node/shadow_trajectory", self.shadow.append,
                                      qos.COMMAND)
        self.node.create_subscription(JointTrajectory, arm_topic, self.arm.append, qos.COMMAND)

    def _on_proposals(self, msg) -> None:
        self.proposals[_ns(msg.header.stamp)] = msg

    def subscribers(self, topic: str) -> int:
        return self.node.count_subscribers(topic)

    def close(self) -> None:
        self.ros.close()


def _ns(stamp) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


def _chunk(msg) -> np.ndarray:
    return np.asarray(msg.actions, np.float32).reshape(msg.horizon, len(msg.action_names))


def _log_tail(log_dir: Path | None, name: str, chars: int = 1500) -> str:
    path = None if log_dir is None else Path(log_dir) / f"{name}.log"
    return path.read_text(errors="replace")[-chars:] if path is not None and path.is_file() else ""


def replay_topics(reader: BagReader, topics: BagTopics) -> list[str]:
    """The bag topics the graph needs: the camera, joint states and task; privileged state when
    recorded. A bag without the first three gets an error listing what it has."""
    need = [topics.image, topics.joint_states, topics.task_info]
    missing = [t for t in need if t not in reader.topics]
    if missing:
        raise ValueError(f"the replay graph needs {missing}; the bag has {sorted(reader.topics)}")
    return need + ([topics.world_state] if topics.world_state in reader.topics else [])


def evaluate_bag_in_graph(bag: str | Path, robot: str = "nicol", topics: BagTopics | None = None,
                          cfg: GraphEvalConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Play `bag` through the replay graph; (b), (c) and shadow-mode figures as a dict."""
    from tqdm import tqdm

    from swm_ros.graph import Graph, format_value, resolve_graph, start_graph, stop_graph
    from swm_ros.robots.profile import load_robot_profile

    cfg = cfg or GraphEvalConfig()
    topics = topics or BagTopics.for_robot(robot)
    reader = BagReader(bag)
    selected = replay_topics(reader, topics)
    episodes = read_bag_episodes(reader, robot, topics)
    frames = sorted((int(ft), e, t) for e, ep in enumerate(episodes) for t, ft in enumerate(ep.frame_times))
    if not frames:
        raise ValueError(f"{bag}: no frames with recorded actions to compare plans with")
    frame_ns = np.asarray([f[0] for f in frames], np.int64)
    bag_seconds = (frame_ns[-1] - frame_ns[0]) / NS

    graph = resolve_graph(GRAPH, {
        "bag": str(bag), "topics": format_value(selected), "rate": str(cfg.rate), "robot": robot,
        "policy": cfg.policy, "num_proposals": str(cfg.proposals), "planner": cfg.planner,
        "world_model": cfg.world_model, "execute_steps": str(cfg.execute_steps),
        "wait_timeout": str(cfg.startup_timeout)})
    player = [n for n in graph.nodes if n.name == PLAYER]
    others = replace(graph, nodes=[n for n in graph.nodes if n.name != PLAYER])
    arm_topic = f"/{load_robot_profile(robot).controller.arm_controller}/joint_trajectory"
    log_dir = Path(cfg.log_dir) if cfg.log_dir else None

    listener = _Listener(arm_topic)
    procs: dict = {}
    try:
        procs.update(start_graph(others, quiet=log_dir is None, log_dir=log_dir))
        # the player starts once the planner, policy and controller listen (models loaded)
        ready = {topics.image: 2, topics.joint_states: 2, "/action_proposals": 1, "/action_chunk": 1}
        deadline = time.monotonic() + cfg.startup_timeout
        while any(listener.subscribers(t) < n for t, n in ready.items()):
            dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            if dead or time.monotonic() > deadline:
                why = (f"exited {dead}" if dead else f"not subscribed after {cfg.startup_timeout:.0f} s: "
                       f"{ {t: listener.subscribers(t) for t in ready} }")
                tails = "".join(f"\n--- {n} ---\n{_log_tail(log_dir, n)}" for n in (dead or procs))
                raise RuntimeError(f"the replay graph did not come up ({why}){tails}")
            time.sleep(0.1)
        procs.update(start_graph(replace(graph, nodes=player), quiet=log_dir is None, log_dir=log_dir))
        play = procs[PLAYER]
        wall0 = time.monotonic()
        limit = bag_seconds / cfg.rate + cfg.startup_timeout
        bar = tqdm(total=round(bag_seconds, 1), desc="bag eval (graph)", unit="bag s", disable=not progress)
        while play.poll() is None and time.monotonic() - wall0 < limit:
            if listener.results:
                done = (_ns(listener.results[-1].header.stamp) - frame_ns[0]) / NS
                bar.update(max(0.0, round(min(done, bag_seconds) - bar.n, 1)))
            time.sleep(0.2)
        bar.close()
        play_wall = time.monotonic() - wall0
        time.sleep(cfg.drain)
        crashed = {n: p.returncode for n, p in procs.items() if p.poll() is not None and n != PLAYER}
    finally:
        stop_graph(procs)
        listener.close()
    player_rc = procs[PLAYER].returncode if PLAYER in procs else None

    rows, unmatched = [], 0
    for res in listener.results:
        stamp = _ns(res.header.stamp)
        i = int(np.searchsorted(frame_ns, stamp, side="right")) - 1
        if i < 0 or stamp - frame_ns[i] > NS:        # before the bag, or a second past any frame
            unmatched += 1
            continue
        _, e, t = frames[i]
        recorded = episodes[e].actions[t:]
        if not len(recorded):
            unmatched += 1
            continue
        l2, cos = chunk_agreement(_chunk(res.chunk), recorded)
        props = listener.proposals.get(stamp)
        l2_base, cos_base = chunk_agreement(_chunk(props.chunks[0]), recorded) if props is not None else (None, None)
        rows.append({"episode": e, "t": t, "l2": l2, "cos": cos, "l2_base": l2_base, "cos_base": cos_base,
                     "plan_ms": float(res.planning_ms), "base_score": float(res.base_score),
                     "chosen_score": float(res.chosen_score)})

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    ms = np.asarray([r["plan_ms"] for r in rows])
    return {
        "available": bool(rows), "graph": GRAPH, "config": asdict(cfg), "replayed_topics": selected,
        "bag_seconds": float(bag_seconds), "playback_wall_seconds": float(play_wall),
        "player_exit_code": player_rc, "nodes_exited_early": crashed,
        "plans": len(rows), "plans_unmatched": unmatched,
        "l2_per_step": {"planned": mean("l2"), "base_proposal": mean("l2_base")},
        "xy_cosine": {"planned": mean("cos"), "base_proposal": mean("cos_base")},
        "score": {"chosen": mean("chosen_score"), "base": mean("base_score")},
        "plan_ms": ({"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                     "max": float(ms.max())} if ms.size else {}),
        "shadow_trajectories": len(listener.shadow), "arm_commands": len(listener.arm),
        "means": "chosen chunk vs the actions executed from the frame the plan was made at, through DDS with the "
                 "controller in shadow mode; arm_commands counts messages on the arm's command topic (must be 0)",
        "rows": rows,
    }
