"""bag_recorder_node: record graph topics into a rosbag2 bag (MCAP, metadata version 9).

  subscribes  every topic in `topics` (raw CDR, any type), as soon as a publisher appears
  writes      <output>/metadata.yaml + <output>/<name>.mcap           (swm_ros.bags.BagWriter)

The pip-venv stand-in for `ros2 bag record` (rosbag2 is not on PyPI), and the node behind
`swm bag record`. Like rosbag2 it waits for each topic to be published, stores the type and
the publishers' real offered QoS profiles, and subscribes with a QoS that matches all of
them (reliable only if every publisher is, transient-local only if every publisher is).
Timestamps are receive times on the node's clock, so `use_sim_time:=true` records sim time.

Messages go from the subscription callbacks into an unbounded queue that a writer thread
drains, so disk I/O never holds up the executor. SIGINT / SIGTERM (or `max_duration`) stop
the subscriptions, drain the queue and finalise the bag: nothing already received is lost.
Messages the middleware reports lost before they reached us (best-effort overflow) are
counted per topic from the `message_lost` event and logged at the end.
"""
from __future__ import annotations

import importlib
import queue
import sys
import threading
from datetime import datetime
from pathlib import Path

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from swm_ros.ros.node_utils import Param, StartupError, declare_parameters, non_negative, positive, run_node

PARAMETERS: dict[str, Param] = {
    "output": Param("", "bag directory to create (must not exist); empty = runs/bags/<date-time>"),
    "robot": Param("nicol", "robot profile: its camera and controller topics are in the default topic list"),
    "topics": Param([""], "topics to record; [''] = the graph's default list (see default_topics())"),
    "all_topics": Param(False, "record every topic that appears (except /rosout and /parameter_events)"),
    "exclude": Param([""], "topics never recorded (with all_topics)"),
    "discovery_period": Param(0.2, "s between graph checks for new publishers", positive, "> 0"),
    "queue_depth": Param(1000, "subscription history depth (the DDS reader cache)", positive, "> 0"),
    "max_duration": Param(0.0, "s of node-clock time to record, then stop and finalise; 0 = until stopped",
                          non_negative, ">= 0"),
    "max_messages": Param(0, "stop after this many messages in total; 0 = no limit", non_negative, ">= 0"),
}

# Topic names (relative ones resolve in the node's namespace) the graph publishes.
GRAPH_TOPICS = ("/joint_states", "task_info", "world_state", "action_chunk", "action_proposals", "plan_result",
                "controller_node/shadow_trajectory")
NEVER = ("/rosout", "/parameter_events")


def default_topics(robot: str = "nicol") -> list[str]:
    """Images, camera info, joint states, action chunks, plan results, task and privileged state."""
    from swm_ros.robots.profile import load_robot_profile

    profile = load_robot_profile(robot)
    cams = [t for c in profile.cameras.values() for t in (c.topic, c.info_topic)]
    return [*cams, *GRAPH_TOPICS, f"{profile.controller.arm_controller}/joint_trajectory"]


def message_class(msgtype: str):
    """The rclpy message class of `pkg/msg/Name` (generic subscription by type string)."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def offered_qos_dict(q: QoSProfile) -> dict:
    def t(d: Duration) -> dict:
        ns = d.nanoseconds
        if ns == 0 or ns >= 2**63 - 1:    # rmw reports "unspecified/infinite" as 0 or max
            return {"sec": 9223372036, "nsec": 854775807} if ns else {"sec": 0, "nsec": 0}
        return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}

    return {"history": q.history.name.lower(), "depth": int(q.depth),
            "reliability": q.reliability.name.lower(), "durability": q.durability.name.lower(),
            "deadline": t(q.deadline), "lifespan": t(q.lifespan), "liveliness": q.liveliness.name.lower(),
            "liveliness_lease_duration": t(q.liveliness_lease_duration),
            "avoid_ros_namespace_conventions": bool(q.avoid_ros_namespace_conventions)}


def request_qos(offers: list[QoSProfile], depth: int) -> QoSProfile:
    """rosbag2's adapt_request_to_offers: the strongest QoS every publisher is compatible with."""
    reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in offers)
    latched = all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offers)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class BagRecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("bag_recorder_node")
        self.p = declare_parameters(self, PARAMETERS)
        from swm_ros.bags.writer import BagWriter

        out = self.p.output or f"runs/bags/{datetime.now():%Y%m%d_%H%M%S}"
        self.output = Path(out)
        if self.output.exists():
            raise StartupError(f"output {self.output} exists already; a recording never overwrites a bag")
        listed = [t for t in self.p.topics if t]
        try:
            wanted = listed or ([] if self.p.all_topics else default_topics(self.p.robot))
        except Exception as e:  # noqa: BLE001 - a bad robot profile: say so and exit
            raise StartupError(f"robot profile: {e}") from e
        self.wanted = {self.resolve_topic_name(t) for t in wanted}
        self.exclude = {self.resolve_topic_name(t) for t in self.p.exclude if t}
        if self.p.all_topics:
            self.exclude |= set(NEVER) - self.wanted
        self.output.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.writer = BagWriter(self.output, custom_data={"recorded_by": "swm_ros bag_recorder_node"})
        except Exception as e:  # noqa: BLE001 - rosbags WriterError, permissions
            raise StartupError(f"cannot create bag {self.output}: {e}") from e

        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._subs: dict[str, object] = {}
        self._skipped: dict[str, str] = {}
        self.received: dict[str, int] = {}
        self.lost: dict[str, int] = {}
        self._total = 0
        self._stopping = threading.Event()
        self._write_error: Exception | None = None
        self._writer_thread = threading.Thread(target=self._write_loop, name="bag_writer", daemon=True)
        self._writer_thread.start()
        self.done = Future()       # run_node spins until this completes (max_duration / max_messages)
        self._t0: int | None = None
        self._cb = MutuallyExclusiveCallbackGroup()   # one at a time: the callbacks share counters
        # Discovery runs on the steady clock: with use_sim_time a ROS-clock timer would wait for
        # /clock, and a publisher may wait for this recorder before it starts the clock.
        self.create_timer(self.p.discovery_period, self._discover, callback_group=MutuallyExclusiveCallbackGroup(),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._discover()
        self.get_logger().info(f"recording to {self.output}: "
                               + ("all topics" if self.p.all_topics and not listed else ", ".join(sorted(self.wanted))))

    # ------------------------------------------------------------------ discovery

    def _discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self._subs or topic in self._skipped or topic in self.exclude:
                continue
            if not (topic in self.wanted or self.p.all_topics):
                continue
            pubs = self.get_publishers_info_by_topic(topic)
            if not pubs:
                continue        # only subscribers so far: wait for a publisher (and its QoS)
            if len(types) != 1:
                self._skip(topic, f"published with several types {types}")
                continue
            self._subscribe(topic, types[0], pubs)
        if self.p.max_duration > 0:
            now = self.get_clock().now().nanoseconds
            self._t0 = now if self._t0 is None else self._t0
            if now - self._t0 >= self.p.max_duration * 1e9:
                self._finish("max_duration reached")

    def _skip(self, topic: str, why: str) -> None:
        self._skipped[topic] = why
        self.get_logger().error(f"not recording {topic}: {why}")

    def _subscribe(self, topic: str, msgtype: str, pubs) -> None:
        try:
            cls = message_class(msgtype)
        except (ImportError, AttributeError, ValueError) as e:
            self._skip(topic, f"type {msgtype} is not importable here ({e})")
            return
        offers = [p.qos_profile for p in pubs]
        graph_hash = getattr(pubs[0], "topic_type_hash", None)
        try:
            self.writer.add_topic(topic, msgtype, [offered_qos_dict(q) for q in offers])
        except Exception as e:  # noqa: BLE001 - an unknown type: skip it loudly, keep recording the rest
            self._skip(topic, f"cannot store type {msgtype}: {e}")
            return
        store_hash = self.writer.store.hash_rihs01(msgtype)
        if graph_hash is not None and str(graph_hash).startswith("RIHS01_") and str(graph_hash) != store_hash:
            self.get_logger().warning(f"{topic}: publisher type hash {graph_hash} differs from the type store's "
                                      f"{store_hash} (a changed .msg?); recording with the store's definition")
        self.received[topic] = 0
        self.lost[topic] = 0

        def on_message(data: bytes, topic=topic) -> None:
            t = self.get_clock().now().nanoseconds
            if self._stopping.is_set():
                return
            self._queue.put((topic, t, data))
            self.received[topic] += 1
            self._total += 1
            if self.p.max_messages and self._total >= self.p.max_messages:
                self._finish("max_messages reached")

        def on_lost(status, topic=topic) -> None:
            self.lost[topic] += int(status.total_count_change)

        self._subs[topic] = self.create_subscription(
            cls, topic, on_message, request_qos(offers, self.p.queue_depth), raw=True, callback_group=self._cb,
            event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost, use_default_callbacks=False))
        self.get_logger().info(f"recording {topic} [{msgtype}] offered "
                               + ", ".join(f"{q.reliability.name.lower()}/{q.durability.name.lower()}" for q in offers))

    def _finish(self, why: str) -> None:
        if not self.done.done():
            self.get_logger().info(f"stopping: {why}")
            self.done.set_result(0)

    # ------------------------------------------------------------------ writing

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.writer.write(*item)
            except Exception as e:  # noqa: BLE001 - keep draining; report at the end
                self._write_error = e

    def finalise(self) -> dict:
        """Stop taking messages, write everything queued, close the bag. Returns the summary."""
        if self._stopping.is_set():
            return self.summary()
        self._stopping.set()
        for sub in self._subs.values():
            self.destroy_subscription(sub)
        self._queue.put(None)
        self._writer_thread.join()
        self.writer.close()
        s = self.summary()
        lost = {k: v for k, v in self.lost.items() if v}
        # print, not the ROS logger: after a signal the context (and /rosout) is already gone
        print(f"[bag_recorder_node] bag {self.output} finalised: {s['recorded']} messages on {len(s['topics'])} topics"
              + (f"; the middleware reported lost messages: {lost}" if lost else ""), file=sys.stderr, flush=True)
        if self._write_error is not None:
            print(f"[bag_recorder_node] ERROR: a write failed: {self._write_error!r}", file=sys.stderr, flush=True)
        return s

    def summary(self) -> dict:
        return {"output": str(self.output), "recorded": sum(self.writer.counts.values()),
                "received": sum(self.received.values()), "lost": sum(self.lost.values()),
                "topics": dict(self.writer.counts), "skipped": dict(self._skipped)}

    def destroy_node(self) -> None:
        # run_node calls this after spinning ends, for a signal as for max_duration
        if hasattr(self, "writer"):
            self.finalise()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    # One executor thread: the callbacks only enqueue, and rclpy's multi-threaded executor
    # costs more per message than it gains (the writer has its own thread).
    return run_node(BagRecorderNode, args, threads=1)


if __name__ == "__main__":
    raise SystemExit(main())
