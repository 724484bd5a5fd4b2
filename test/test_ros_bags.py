"""bag_recorder_node and bag_player_node as real processes over DDS.

* record -> replay -> record gives the same bytes, message for message;
* SIGINT while recording leaves a finalised bag holding every message received before it;
* a bag written by the real rosbag2 (golden `talker`) replays bit-exact, with /clock.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from swm_ros.bags.reader import BagReader
from swm_ros.msg import ActionChunk, TaskInfo
from swm_ros.ros import conversions as conv
from swm_ros.ros import qos

pytestmark = pytest.mark.ros

GOLDEN = Path("/work/shared/golden-bags")
if not GOLDEN.is_dir():
    GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden-bags"


def _wait_log(node, pattern: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, node.output()):
            return True
        if not node.alive():
            break
        time.sleep(0.05)
    return bool(re.search(pattern, node.output()))


def _by_topic(bag: Path) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for m in BagReader(bag).messages():
        out.setdefault(m.topic, []).append(m.data)
    return out


def test_record_replay_record_is_bit_exact(start_node, probe, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    rec = start_node("bag_recorder_node", "-p", f"output:={first}", "-p", "topics:=[/cam/image,/chunk,/task]",
                     name="rec1")
    img_pub = probe.node.create_publisher(Image, "/cam/image", qos.STATE)
    chunk_pub = probe.node.create_publisher(ActionChunk, "/chunk", qos.COMMAND)
    task_pub = probe.node.create_publisher(TaskInfo, "/task", qos.LATCHED)
    task_pub.publish(TaskInfo(name="push", variant="nominal", objects=["red_block", "blue_block"], seed=4))
    assert probe.wait_for(lambda: img_pub.get_subscription_count() and chunk_pub.get_subscription_count(), 30), \
        rec.output()
    assert _wait_log(rec, r"recording /task"), rec.output()
    probe.spin(0.5)
    rng = np.random.default_rng(1)
    for i in range(20):
        img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        img_pub.publish(conv.numpy_to_image(img, "rgb8", conv.to_time(10 + 0.1 * i), "cam"))
        chunk_pub.publish(conv.action_chunk(rng.uniform(-1, 1, (8, 5)), ["dx", "dy", "dz", "dyaw", "gripper"], 0.1,
                                            "test", "push", conv.to_time(10 + 0.1 * i)))
        probe.spin(0.03)
    probe.spin(1.0)
    rec.stop_cleanly()
    recorded = _by_topic(first)
    assert [len(recorded.get(t, [])) for t in ("/cam/image", "/chunk", "/task")] == [20, 20, 1], rec.output()
    for pub in (img_pub, chunk_pub, task_pub):     # the latched task must come from the replay only
        probe.node.destroy_publisher(pub)

    rec2 = start_node("bag_recorder_node", "-p", f"output:={second}", "-p", "topics:=[/cam/image,/chunk,/task]",
                      name="rec2")
    player = start_node("bag_player_node", "-p", f"bag:={first}", "-p", "rate:=4.0", "-p", "wait_timeout:=30.0",
                        "-p", "settle:=3.0", name="play")
    assert player.wait(timeout=60) == 0, player.output()
    assert "published 41 message(s)" in player.output()
    time.sleep(1.0)
    rec2.stop_cleanly()
    replayed = _by_topic(second)
    assert replayed == recorded          # same bytes, same order, on every topic


def test_sigint_finalises_the_bag_with_everything_received(start_node, probe, tmp_path):
    out = tmp_path / "interrupted"
    rec = start_node("bag_recorder_node", "-p", f"output:={out}", "-p", "topics:=[/counter]", name="rec")
    pub = probe.node.create_publisher(String, "/counter", qos.STATE)
    assert probe.wait_for(lambda: pub.get_subscription_count() > 0, 30), rec.output()
    probe.spin(0.5)
    sent = 0
    stopped = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pub.publish(String(data=str(sent)))
        sent += 1
        probe.spin(0.005)
        if sent == 300 and not stopped:
            rec.proc.send_signal(2)      # SIGINT while messages keep coming
            stopped = True
        if stopped and rec.proc.poll() is not None:
            break
    assert rec.proc.wait(timeout=20) == 0, rec.output()
    log = rec.output()
    bag = BagReader(out)                 # finalised: metadata.yaml present, counts agree
    values = [int(bag.decode(m).data) for m in bag.messages()]
    assert len(values) >= 250, log
    assert values == list(range(len(values)))      # a gap-free prefix: nothing received was lost
    m = re.search(r"finalised: (\d+) messages", log)
    assert m and int(m.group(1)) == len(values)


@pytest.mark.skipif(not (GOLDEN / "talker").is_dir(), reason="golden bags not present")
def test_golden_rosbag2_bag_replays_bit_exact_with_clock(start_node, probe):
    bag = BagReader(GOLDEN / "talker")
    expected = [m.data for m in bag.messages(["/topic"])]
    times = [m.log_time for m in bag.messages(["/topic"])]
    got: list[bytes] = []
    clocks: list[int] = []
    sub = probe.node.create_subscription(String, "/topic", got.append, qos.STATE, raw=True)
    probe.node.create_subscription(Clock, "/clock", lambda c: clocks.append(c.clock.sec * 10**9 + c.clock.nanosec),
                                   qos.CLOCK)
    # The player's handshake sees the publisher's side of the match; a volatile reader that
    # matches later misses what came before, so the test checks that the reader matched.
    # (9 of 10 messages once arrived even with a 10 s settle and a matched reader: the player
    # exited before its last message was acknowledged; it now waits for that, `ack_timeout`.)
    player = start_node("bag_player_node", "-p", f"bag:={GOLDEN / 'talker'}", "-p", "topics:=[/topic]",
                        "-p", "rate:=10.0", "-p", "wait_timeout:=30.0", "-p", "settle:=10.0", name="play")
    assert probe.wait_for(lambda: sub.get_publisher_count() >= 1, 30), f"the probe's reader never matched\n{player.output()}"
    # the player may exit before the last message reaches us under load: wait for all of them
    assert probe.wait_for(lambda: len(got) >= len(expected), 60), (len(got), player.output())
    probe.spin(0.5)
    assert player.wait(timeout=30) == 0, player.output()
    assert got == expected
    assert clocks and times[0] <= clocks[0] and clocks[-1] <= times[-1]


def test_player_refuses_types_it_cannot_publish(start_node):
    if not (GOLDEN / "cdr_test").is_dir():
        pytest.skip("golden bags not present")
    player = start_node("bag_player_node", "-p", f"bag:={GOLDEN / 'cdr_test'}", name="play")
    assert player.wait(timeout=30) == 2
    assert "test_msgs/msg/Arrays" in player.output() and "not installed" in player.output()


def test_player_waits_for_every_subscriber_topic_subscribers_names(start_node, probe):
    """A graph where two nodes read a topic: playback starts only when both have matched, so
    neither misses the first messages (the replay graph's policy once started mid-bag)."""
    expected = [m.data for m in BagReader(GOLDEN / "talker").messages(["/topic"])]
    first: list[bytes] = []
    probe.node.create_subscription(String, "/topic", first.append, qos.STATE, raw=True)
    player = start_node("bag_player_node", "-p", f"bag:={GOLDEN / 'talker'}", "-p", "topics:=[/topic]",
                        "-p", "rate:=10.0", "-p", "wait_timeout:=60.0", "-p", "settle:=1.0",
                        "-p", "topic_subscribers:=['/topic:2', '/not_played:5']", name="play")
    probe.spin(3.0)
    assert first == [], f"played with one of two subscribers matched\n{player.output()}"
    second: list[bytes] = []
    probe.node.create_subscription(String, "/topic", second.append, qos.STATE, raw=True)
    assert probe.wait_for(lambda: len(first) >= len(expected) and len(second) >= len(expected), 60), \
        (len(first), len(second), player.output())
    assert player.wait(timeout=30) == 0, player.output()
    assert first == expected and second == expected


def test_player_rejects_a_malformed_topic_subscribers_entry(start_node):
    player = start_node("bag_player_node", "-p", f"bag:={GOLDEN / 'talker'}",
                        "-p", "topic_subscribers:=[/topic]", name="play")
    assert player.wait(timeout=30) == 2
    assert "topic_subscribers entry '/topic'" in player.output(), player.output()
