"""bag_player_node: publish a rosbag2 bag (MCAP) into the graph, raw CDR pass-through.

  publishes  every selected topic of the bag, with the bag's types and (adapted) offered QoS
             /clock  rosgraph_msgs/Clock from the bag's timestamps (publish_clock), for use_sim_time

The pip-venv stand-in for `ros2 bag play`, and the node behind `swm bag replay`. Messages are
published as the recorded bytes (nothing is deserialised), paced at `rate` x the bag's
timing (0 = as fast as possible). Topic remapping is ROS remapping (`-r /from:=/to`), which
applies to the publishers this node creates.

Handshake: before the first message the node waits until every selected topic has
`min_subscribers` matched subscriptions, or the count `topic_subscribers` names for it (a graph
whose nodes share a topic: each must have matched, or it misses the first messages), up to
`wait_timeout`, then `settle` seconds more, so the first messages are not dropped while
discovery completes. The publisher sees a subscription before the subscription has seen the
publisher; a reliable message sent in between reaches that subscriber only when the writer
next repairs (Fast DDS: a heartbeat up to 3 s later), and every later message on the topic waits
behind it. So with `ack_first` the node waits, after each topic's first message, until every
subscriber acknowledged it (bounded by `ack_timeout`), and shifts the playback clock by the
wait: every subscriber has the start of the bag before the bag goes on. Every message the bag
counts is published, or the node says loudly which were not (a damaged bag, exit code 1).
"""
from __future__ import annotations

import threading
import time

from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from rosgraph_msgs.msg import Clock

from swm_ros.ros import qos
from swm_ros.ros.bag_recorder_node import message_class
from swm_ros.ros.node_utils import Param, StartupError, declare_parameters, non_negative, positive, run_node

PARAMETERS: dict[str, Param] = {
    "bag": Param("", "rosbag2 directory (or .mcap file) to play"),
    "topics": Param([""], "topics to publish; [''] = all the bag's topics"),
    "rate": Param(1.0, "playback speed factor; 0 = as fast as possible", non_negative, ">= 0"),
    "publish_clock": Param(True, "publish /clock from bag time (for use_sim_time consumers)"),
    "clock_period": Param(0.01, "s of bag time between /clock messages", positive, "> 0"),
    "min_subscribers": Param(1, "handshake: subscriptions each topic needs before playback starts", non_negative,
                             ">= 0"),
    "topic_subscribers": Param([""], "handshake per topic, 'TOPIC:COUNT' entries overriding min_subscribers; "
                                     "topics not played are ignored"),
    "wait_timeout": Param(10.0, "s to wait for the handshake, then start anyway (with a warning)", non_negative,
                          ">= 0"),
    "settle": Param(0.3, "s to wait after the handshake (DDS matching completes both ways)", non_negative, ">= 0"),
    "queue_depth": Param(1000, "publisher history depth (reliable topics block instead of dropping)", positive,
                         "> 0"),
    "allow_partial": Param(False, "play what a damaged bag holds (exit 0) instead of failing at the damage"),
    "ack_first": Param(True, "after each topic's first message, wait until reliable subscribers acknowledged it "
                             "(at most ack_timeout), then go on at the bag's pace"),
    "ack_timeout": Param(5.0, "s to wait at the end until reliable subscribers acknowledged every message "
                              "(as `ros2 bag play --wait-for-all-acked`), and for each first message with "
                              "ack_first", non_negative, ">= 0"),
}


def replay_qos(offers: list[dict], depth: int) -> QoSProfile:
    """rosbag2's adapt_offer_to_recorded_offers, with a deep history so a fast replay never drops."""
    reliable = not offers or all(q.get("reliability") == "reliable" for q in offers)
    latched = bool(offers) and all(q.get("durability") == "transient_local" for q in offers)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def parse_topic_subscribers(entries: list[str]) -> dict[str, int]:
    """['/joint_states:2', ...] -> {'/joint_states': 2}; empty entries are skipped."""
    out: dict[str, int] = {}
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        topic, sep, count = entry.rpartition(":")
        if not sep or not topic.startswith("/") or not count.isdigit():
            raise StartupError(f"topic_subscribers entry {entry!r}: expected '/topic:count' with count >= 0")
        out[topic] = int(count)
    return out


class BagPlayerNode(Node):
    def __init__(self) -> None:
        super().__init__("bag_player_node")
        self.p = declare_parameters(self, PARAMETERS)
        from swm_ros.bags.reader import BagError, BagReader

        if not self.p.bag:
            raise StartupError("parameter bag is required (a rosbag2 directory or .mcap file)")
        try:
            self.reader = BagReader(self.p.bag, allow_partial=self.p.allow_partial)
            selected = [t for t in self.p.topics if t] or list(self.reader.topics)
            self.reader.require_topics(selected, "replay")
        except BagError as e:
            raise StartupError(str(e)) from e
        self.publishers_: dict[str, object] = {}
        unpublishable = []
        for topic in selected:
            info = self.reader.topics[topic]
            try:
                cls = message_class(info.msgtype)
            except (ImportError, AttributeError, ValueError) as e:
                unpublishable.append(f"{topic} [{info.msgtype}]: {type(e).__name__}: {e}")
                continue
            self.publishers_[topic] = self.create_publisher(
                cls, topic, replay_qos(list(info.offered_qos_profiles), self.p.queue_depth))
        if unpublishable:
            raise StartupError("cannot publish these topics (message types not installed here): "
                               + "; ".join(unpublishable) + ". Select the others with topics:=[...]")
        self.selected = selected
        self.needed = {t: self.p.min_subscribers for t in self.publishers_}
        for topic, count in parse_topic_subscribers(self.p.topic_subscribers).items():
            if topic in self.needed:
                self.needed[topic] = count
        self.pub_clock = self.create_publisher(Clock, "/clock", qos.CLOCK) if self.p.publish_clock else None
        self.published: dict[str, int] = {t: 0 for t in selected}
        self.done = Future()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="bag_player", daemon=True)
        self._thread.start()

    def _handshake(self) -> None:
        if not any(self.needed.values()):
            return
        deadline = time.monotonic() + self.p.wait_timeout
        def waiting():
            return {t: n for t, n in self.needed.items() if self.publishers_[t].get_subscription_count() < n}
        while waiting() and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.02)
        missing = waiting()
        if missing:
            self.get_logger().warning(f"starting without the subscribers {missing} (topic: count) "
                                      f"after {self.p.wait_timeout:.1f} s")
        self._stop.wait(self.p.settle)

    def _play(self) -> None:
        from swm_ros.bags.reader import BagError

        rc = 0
        try:
            self._handshake()
            wall0 = bag0 = None
            last_clock = None
            self.get_logger().info(f"playing {self.p.bag}: {len(self.selected)} topic(s) at rate {self.p.rate}")
            for m in self.reader.messages(self.selected):
                if self._stop.is_set():
                    break
                if bag0 is None:
                    wall0, bag0 = time.monotonic(), m.log_time
                if self.p.rate > 0:
                    ahead = wall0 + (m.log_time - bag0) * 1e-9 / self.p.rate - time.monotonic()
                    if ahead > 0 and self._stop.wait(ahead):
                        break
                if self.pub_clock is not None and (last_clock is None or
                                                   m.log_time - last_clock >= self.p.clock_period * 1e9):
                    # integer ns: a float of seconds since 1970 loses the last few hundred ns
                    self.pub_clock.publish(Clock(clock=Time(sec=m.log_time // 1_000_000_000,
                                                            nanosec=m.log_time % 1_000_000_000)))
                    last_clock = m.log_time
                first = self.published[m.topic] == 0
                self._publish(m.topic, m.data)
                if first and self.p.ack_first:
                    t0 = time.monotonic()
                    if not self._acked(m.topic):
                        self.get_logger().warning(f"{m.topic}: first message not acknowledged within "
                                                  f"{self.p.ack_timeout:.1f} s")
                    wall0 += time.monotonic() - t0
        except BagError as e:
            self.get_logger().error(f"replay stopped: {e}")
            rc = 1
        except Exception as e:  # noqa: BLE001 - shutting down under us, or a publish failure
            if not self._stop.is_set():
                self.get_logger().error(f"replay failed: {e!r}")
                rc = 1
        # exiting right after the last publish can lose it: a reliable writer that is gone
        # cannot resend what a loaded subscriber has not acknowledged yet
        if self.p.ack_timeout > 0 and not self._stop.is_set():
            unacked = [t for t in self.publishers_ if not self._acked(t)]
            if unacked:
                self.get_logger().warning(f"not acknowledged within {self.p.ack_timeout:.1f} s: {unacked}")
        total = sum(self.published.values())
        self.get_logger().info(f"published {total} message(s): {self.published}"
                               + (f"; PARTIAL: {self.reader.problems}" if self.reader.partial else ""))
        if not self.done.done():
            self.done.set_result(rc)

    def _acked(self, topic: str) -> bool:
        """Wait (at most ack_timeout) until every subscriber acknowledged what `topic`'s writer sent."""
        return self.publishers_[topic].wait_for_all_acked(Duration(nanoseconds=int(self.p.ack_timeout * 1e9)))

    def _publish(self, topic: str, data: bytes) -> None:
        # A reliable writer whose history is full raises after Fast DDS's blocking time: retry
        # rather than drop (the subscriber is only behind, research/ros2-pip.md sect. 1).
        for attempt in range(50):
            try:
                self.publishers_[topic].publish(data)
                self.published[topic] += 1
                return
            except Exception:  # noqa: BLE001 - rclpy RCLError "cannot publish data"
                if attempt == 49 or self._stop.is_set():
                    raise
                time.sleep(0.02)

    def destroy_node(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
            self._thread.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(BagPlayerNode, args, threads=2)


if __name__ == "__main__":
    raise SystemExit(main())
