"""Bag reading, writing, conversion and evaluation without ROS: real bags and real files.

The golden bags were written by the real rosbag2 test suite (metadata versions 4, 7, 8);
the project's reader must see every message their metadata.yaml counts.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import Reader as RosbagsReader

from swm_ros.bags.episodes import episodes_to_bag, read_bag_episodes
from swm_ros.bags.images import ImageEncodingError
from swm_ros.bags.reader import (BagCorruptError, BagCountError, BagMetadataError, BagReader, BagTopicsError)
from swm_ros.bags.typestore import PROJECT_TYPES, UnknownMessageType, jazzy_typestore
from swm_ros.bags.writer import BagWriter
from swm_ros.data.episodes import EpisodeMeta, EpisodeReader, StateArrays, write_episode
from swm_ros.envs.base import ObjectState, PrivilegedState, proprio_vector

GOLDEN = Path("/work/shared/golden-bags")
if not GOLDEN.is_dir():
    GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden-bags"
GOLDEN_BAGS = sorted(p for p in GOLDEN.iterdir() if p.is_dir()) if GOLDEN.is_dir() else []


def _metadata_counts(bag: Path) -> dict[str, int]:
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return {t["topic_metadata"]["name"]: t["message_count"] for t in info["topics_with_message_count"]}


# ------------------------------------------------------------------------------ golden bags

@pytest.mark.skipif(not GOLDEN_BAGS, reason="shared/golden-bags not present")
@pytest.mark.parametrize("bag", GOLDEN_BAGS, ids=lambda p: p.name)
def test_golden_bags_every_counted_message_is_read(bag):
    reader = BagReader(bag)
    expected = _metadata_counts(bag)
    report = reader.count_messages()
    assert {t: report.counts.get(t, 0) for t in expected} == expected
    assert report.total == sum(expected.values()) > 0
    assert not reader.problems
    # every type is listed; types outside the Jazzy store decode from the bag's own schemas
    info = reader.describe()
    assert {t["name"] for t in info["topics"]} == set(expected)
    for m in reader.messages():
        assert reader.decode(m) is not None


def test_rosbags_directory_reader_misses_the_talker_bag_that_ours_reads():
    """Why messages are not read through rosbags' Reader: it drops a bag whose QoS copies differ."""
    bag = GOLDEN / "talker"
    if not bag.is_dir():
        pytest.skip("golden talker bag not present")
    with RosbagsReader(bag) as r:
        rosbags_count = sum(1 for _ in r.messages())
    assert rosbags_count < 20                       # the library's silent loss (0 when written)
    assert BagReader(bag).count_messages().total == 20


def test_golden_topic_decodes_to_the_recorded_values():
    bag = BagReader(GOLDEN / "talker")
    texts = [bag.decode(m).data for m in bag.messages(["/topic"])]
    assert texts == [f"Hello, world! {i}" for i in range(10)]


# ------------------------------------------------------------------------------ writer + compatibility

def _write_sample_bag(path: Path, n: int = 5, side: int = 3) -> tuple[list[tuple[str, int, bytes]], object]:
    store = jazzy_typestore()
    sent = []
    T = store.types
    with BagWriter(path) as w:
        qos = [{"history": "keep_last", "depth": 5, "reliability": "best_effort", "durability": "volatile"}]
        w.add_topic("/img", "sensor_msgs/msg/Image", qos)
        w.add_topic("/chunk", "swm_ros/msg/ActionChunk",
                    [{"history": "keep_last", "depth": 5, "reliability": "reliable", "durability": "volatile"}])
        w.add_topic("/world_state", "swm_ros/msg/WorldState", [])
        for i in range(n):
            t = 1_000_000_000 + i * 100_000_000
            hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=i), frame_id="cam")
            img = T["sensor_msgs/msg/Image"](header=hdr, height=4, width=side, encoding="rgb8", is_bigendian=0,
                                             step=3 * side, data=(np.arange(12 * side) + i).astype(np.uint8))
            chunk = T["swm_ros/msg/ActionChunk"](header=hdr, action_names=["dx", "dy", "dz", "dyaw", "gripper"],
                                                dt=0.1, horizon=2, actions=np.linspace(-1, 1, 10, dtype=np.float32),
                                                source="test", task="push")
            for topic, msg, typ in (("/img", img, "sensor_msgs/msg/Image"),
                                    ("/chunk", chunk, "swm_ros/msg/ActionChunk")):
                data = store.serialize_cdr(msg, typ)
                w.write(topic, t, data)
                sent.append((topic, t, bytes(data)))
    return sent, store


def test_written_bag_reads_back_equal_with_rosbags_and_mcap(tmp_path):
    bag = tmp_path / "b"
    sent, store = _write_sample_bag(bag)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    # the fields Jazzy's rosbag2 decodes for version 9 (rosbag2_storage yaml.hpp)
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
    for key in ("duration", "starting_time", "message_count", "topics_with_message_count", "compression_format",
                "compression_mode", "relative_file_paths", "files", "custom_data", "ros_distro"):
        assert key in meta, key
    topic = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    img_qos = topic["/img"]["topic_metadata"]["offered_qos_profiles"]
    assert isinstance(img_qos, list) and img_qos[0]["reliability"] == "best_effort"   # v9: a list, enum names
    assert img_qos[0]["history"] == "keep_last" and img_qos[0]["depth"] == 5
    assert topic["/chunk"]["topic_metadata"]["type_description_hash"] == store.hash_rihs01("swm_ros/msg/ActionChunk")
    assert topic["/world_state"]["message_count"] == 0

    # rosbags: message for message, byte for byte
    with RosbagsReader(bag) as r:
        got = [(c.topic, t, bytes(d)) for c, t, d in r.messages()]
    assert sorted(got) == sorted(sent)
    # mcap + mcap-ros2-support decode every message, from the definitions stored in the file
    with open(bag / "b.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        decoded = [(ch.topic, m.log_time, dm) for _s, ch, m, dm in reader.iter_decoded_messages()]
        channels = reader.get_summary().channels
    assert len(decoded) == len(sent)
    for (topic_, t, dm), (_, _, raw) in zip(decoded, sorted(sent, key=lambda x: (x[1], x[0] != "/img"))):
        ref = store.deserialize_cdr(raw, "sensor_msgs/msg/Image" if topic_ == "/img" else "swm_ros/msg/ActionChunk")
        if topic_ == "/img":
            assert bytes(dm.data) == bytes(ref.data) and dm.encoding == "rgb8" and dm.step == 9
        else:
            assert list(dm.actions) == pytest.approx(list(ref.actions)) and dm.source == "test"
    assert all("offered_qos_profiles" in ch.metadata for ch in channels.values())
    # and our reader
    ours = [(m.topic, m.log_time, m.data) for m in BagReader(bag).messages()]
    assert sorted(ours) == sorted(sent)


def test_project_types_carry_rosidl_hashes():
    import json
    import sys

    store = jazzy_typestore()
    for name in PROJECT_TYPES:
        f = Path(sys.prefix) / "share" / "swm_ros" / "msg" / f"{name}.json"
        if not f.is_file():
            pytest.skip("generated interface descriptions not installed")
        hashes = {h["type_name"]: h["hash_string"] for h in json.loads(f.read_text())["type_hashes"]}
        assert store.hash_rihs01(f"swm_ros/msg/{name}") == hashes[f"swm_ros/msg/{name}"]


# ------------------------------------------------------------------------------ damage

def test_truncated_mcap_gives_partial_results_or_a_clear_error(tmp_path):
    bag = tmp_path / "b"
    sent, _ = _write_sample_bag(bag, n=40, side=20_000)     # 240 kB images: several 1 MB chunks
    mcap = bag / "b.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagCorruptError, match="damaged|truncated"):
        list(BagReader(bag).messages())
    reader = BagReader(bag, allow_partial=True)
    got = list(reader.messages())
    assert reader.partial and reader.problems
    assert len(got) < len(sent)
    assert all(any(m.data == raw for _, _, raw in sent) for m in got)   # what came out is intact


def test_corrupt_bytes_are_detected(tmp_path):
    """A garbled chunk header (rosbags writes no chunk CRCs, so a flipped payload byte is not detectable)."""
    bag = tmp_path / "b"
    _write_sample_bag(bag)
    mcap = bag / "b.mcap"
    with open(mcap, "rb") as f:
        chunk = make_reader(f).get_summary().chunk_indexes[0].chunk_start_offset
    data = bytearray(mcap.read_bytes())
    records_length = chunk + 1 + 8 + 8 + 8 + 8 + 4 + 4     # opcode, length, times, size, crc, compression
    data[records_length: records_length + 8] = b"\xff" * 8
    mcap.write_bytes(bytes(data))
    with pytest.raises(BagCorruptError, match="damaged after 0 message"):
        list(BagReader(bag).messages())


def test_missing_metadata_is_a_clear_error_and_the_mcap_is_still_readable(tmp_path):
    bag = tmp_path / "b"
    sent, _ = _write_sample_bag(bag)
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagMetadataError, match="no metadata.yaml.*b.mcap"):
        BagReader(bag)
    reader = BagReader(bag / "b.mcap")
    assert len(list(reader.messages())) == len(sent)
    assert reader.notes and not reader.problems


def test_fewer_messages_than_metadata_promises_fails_loudly(tmp_path):
    bag = tmp_path / "b"
    _write_sample_bag(bag)
    meta = (bag / "metadata.yaml").read_text().replace("message_count: 5", "message_count: 7", 1)
    (bag / "metadata.yaml").write_text(meta)
    with pytest.raises(BagCountError, match="read 5, metadata says 7"):
        BagReader(bag).count_messages()


def test_unknown_type_and_unknown_topics_are_named(tmp_path):
    store = jazzy_typestore()
    with pytest.raises(UnknownMessageType, match="no_such_pkg/msg/Thing"):
        with BagWriter(tmp_path / "u") as w:
            w.add_topic("/x", "no_such_pkg/msg/Thing")
    bag = tmp_path / "b"
    _write_sample_bag(bag)
    with pytest.raises(BagTopicsError, match="/img \\[sensor_msgs/msg/Image\\]"):
        BagReader(bag).require_topics(["/camera/image"])
    assert store is not None


# ------------------------------------------------------------------------------ episodes

def _episode(path: Path, n: int = 12, encoding_ok: bool = True) -> Path:
    rng = np.random.default_rng(0)
    states = []
    for t in range(n):
        objs = {"red_block": ObjectState("red_block", "block", "red", np.array([0.5 + 0.01 * t, 0.0, 0.8225]),
                                         np.array([1.0, 0, 0, 0]), 0.0225),
                "blue_block": ObjectState("blue_block", "block", "blue", np.array([0.6, 0.1, 0.8225]),
                                          np.array([0.9, 0, 0, 0.435889894]), 0.0225)}
        contacts = frozenset({("blue_block", "table"), ("red_block", "table")} | ({("gripper", "red_block")} if t > 5 else set()))
        states.append(PrivilegedState(t, 0.1 * t, objs, np.array([0.4, 0.0, 0.9 - 0.01 * t]), 0.1 * t, 1.0 - 0.05 * t,
                                      "red_block" if t > 8 else None, contacts, rng.normal(size=9), 0.8))
    proprio = np.stack([proprio_vector(s.joint_positions, s.effector_position, s.effector_yaw, s.gripper_opening)
                        for s in states])
    meta = EpisodeMeta("ep_000000", task="push", task_objects=("red_block", "blue_block"), instruction="push it",
                       seed=3, policy="scripted", success=True, control_dt=0.1, max_steps=50,
                       extra={"success_step": 9})
    images = rng.integers(0, 255, size=(n, 16, 20, 3), dtype=np.uint8)
    return write_episode(path, meta, {"overhead": images}, rng.uniform(-1, 1, (n - 1, 5)).astype(np.float32),
                         proprio, states)


def test_episode_to_bag_to_episode_is_lossless(tmp_path):
    ep_path = _episode(tmp_path / "ep_000000.h5")
    episodes_to_bag([ep_path, ep_path], tmp_path / "bag")
    eps = read_bag_episodes(tmp_path / "bag")
    assert len(eps) == 2
    with EpisodeReader(ep_path) as ref:
        for e in eps:
            assert np.array_equal(e.images, ref.images())
            assert np.array_equal(e.actions, ref.actions)
            np.testing.assert_allclose(e.proprio, ref.proprio, atol=1e-6)
            s, r = e.states, ref.states
            for key in StateArrays.PER_FRAME:
                if key not in ("time", "step"):
                    np.testing.assert_allclose(getattr(s, key), getattr(r, key), atol=1e-6, err_msg=key)
            assert s.object_names == r.object_names and s.object_colors == r.object_colors
            assert e.meta.task == "push" and e.meta.seed == 3 and e.meta.success
            assert e.meta.extra["success_step"] == 9


def test_bag_to_episodes_cli_writes_a_collection_saqa_can_read(tmp_path):
    from swm_ros.bags.episodes import bag_to_episodes
    from swm_ros.saqa.build import build_saqa

    ep_path = _episode(tmp_path / "src" / "ep_000000.h5", n=20)
    episodes_to_bag([ep_path], tmp_path / "bag")
    result = bag_to_episodes(tmp_path / "bag", tmp_path / "coll")
    assert result["episodes"] == 1 and result["frames"] == 20
    report = build_saqa(tmp_path / "coll", tmp_path / "coll" / "saqa.h5")
    assert report.rows > 0


def test_bag_without_labels_lists_its_topics(tmp_path):
    bag = tmp_path / "b"
    _write_sample_bag(bag)
    with pytest.raises(BagTopicsError) as e:
        read_bag_episodes(bag)
    assert "/world_state" in str(e.value) and "/chunk [swm_ros/msg/ActionChunk]" in str(e.value)


def test_wrong_image_encoding_is_a_clear_error(tmp_path):
    ep_path = _episode(tmp_path / "ep_000000.h5")
    episodes_to_bag([ep_path], tmp_path / "bag")
    # re-write the bag with the images claiming a 16-bit encoding
    src = BagReader(tmp_path / "bag")
    with BagWriter(tmp_path / "bad") as w:
        for name, t in src.topics.items():
            w.add_topic(name, t.msgtype, t.offered_qos_profiles)
        for m in src.messages():
            if m.topic.endswith("image_raw"):
                img = src.decode(m)
                img.encoding = "16UC1"
                w.write_message(m.topic, m.log_time, img, m.msgtype)
            else:
                w.write(m.topic, m.log_time, m.data)
    with pytest.raises(ImageEncodingError, match="unsupported image encoding '16UC1'"):
        read_bag_episodes(tmp_path / "bad")


def test_bag_eval_reports_accuracy_latency_and_no_planner(tmp_path):
    from swm_ros.bags.evaluate import EvalConfig, evaluate_bag, write_report
    from swm_ros.models.registry import build_world_model
    from swm_ros.resources import config_path

    ep_path = _episode(tmp_path / "ep_000000.h5", n=15)
    episodes_to_bag([ep_path], tmp_path / "bag")
    model = build_world_model("tiny", yaml.safe_load(config_path("models", "tiny.yaml").read_text()))
    r = evaluate_bag(tmp_path / "bag", model=model, cfg=EvalConfig(max_horizon=4), progress=False)
    assert r["frames"] == 15 and r["questions"] > 15
    assert 0.0 <= r["accuracy"] <= 1.0 and r["majority_baseline"] >= 0.5
    assert len(r["latency_ms"]["per_frame"]) == 15 and r["latency_ms"]["p50"] > 0
    assert r["planner_agreement"]["available"] is False and r["planner_agreement"]["reason"]
    assert r["bag_seconds"] == pytest.approx(1.4) and r["speedup"] > 0
    paths = write_report(r, tmp_path / "report")
    assert "answer accuracy" in paths["md"].read_text() and paths["latency"].stat().st_size > 0


def test_bag_prefix_reads_only_its_seconds(tmp_path):
    """end_ns / max_seconds read a prefix of the bag: messages before the bound only (the rest
    unread, so the metadata's counts are not checked), episodes cut at the bound."""
    from swm_ros.bags.evaluate import EvalConfig, evaluate_bag
    from swm_ros.models.registry import build_world_model
    from swm_ros.resources import config_path

    sent, _ = _write_sample_bag(tmp_path / "small", n=5)
    r = BagReader(tmp_path / "small")
    assert r.start_ns == 1_000_000_000
    prefix = [(m.topic, m.log_time) for m in r.messages(end_ns=r.start_ns + 250_000_000)]
    assert prefix == [(t, ts) for t, ts, _ in sent if ts < 1_250_000_000] and len(prefix) == 6

    ep_path = _episode(tmp_path / "ep_000000.h5", n=15)
    episodes_to_bag([ep_path], tmp_path / "bag")
    eps = read_bag_episodes(tmp_path / "bag", max_seconds=0.75)
    assert len(eps) == 1 and 6 <= len(eps[0].images) <= 9 and len(eps[0].images) == len(eps[0].actions) + 1
    full = read_bag_episodes(tmp_path / "bag")[0]
    np.testing.assert_array_equal(eps[0].images, full.images[:len(eps[0].images)])
    model = build_world_model("tiny", yaml.safe_load(config_path("models", "tiny.yaml").read_text()))
    res = evaluate_bag(tmp_path / "bag", model=model, cfg=EvalConfig(max_horizon=4, max_seconds=0.75), progress=False)
    assert res["frames"] == len(eps[0].images) and res["bag_seconds"] <= 0.75 + 1e-9


def test_chunk_agreement_arithmetic():
    from swm_ros.bags.plan_agreement import chunk_agreement

    rec = np.zeros((4, 5), np.float32)
    rec[:, 0] = 1.0                                       # the robot moved +x
    same = rec.copy()
    opposite = -rec
    l2, cos = chunk_agreement(np.vstack([same, np.ones((4, 5))]), rec)    # only the overlap counts
    assert l2 == 0.0 and cos == pytest.approx(1.0)
    l2, cos = chunk_agreement(opposite, rec)
    assert l2 == pytest.approx(2.0) and cos == pytest.approx(-1.0)
    assert chunk_agreement(np.zeros((4, 5)), rec)[1] is None          # standing still has no direction
    with pytest.raises(ValueError):
        chunk_agreement(same, rec[:0])


def test_bag_eval_planner_agreement_tells_the_recorded_expert_from_random(saqa_file, tmp_path):
    """A scripted-expert episode from the simulator as a bag: scripted proposals agree with
    what was recorded, random ones do not, and the planner's choice is reported for each."""
    from swm_ros.bags.evaluate import EvalConfig, evaluate_bag, write_report
    from swm_ros.bags.plan_agreement import AgreementConfig
    from swm_ros.models.registry import build_world_model
    from swm_ros.resources import config_path

    manifest = json.loads((saqa_file.parent / "manifest.json").read_text())
    entry = next(e for e in manifest["episodes"] if e["policy"] == "scripted")
    episodes_to_bag([saqa_file.parent / entry["file"]], tmp_path / "bag")
    model = build_world_model("tiny", yaml.safe_load(config_path("models", "tiny.yaml").read_text()))
    results = {}
    for policy in ("scripted", "random"):
        agreement = AgreementConfig(planner="rank", policy=policy, proposals=4, plan_every=8)
        r = evaluate_bag(tmp_path / "bag", model=model, cfg=EvalConfig(max_horizon=4), progress=False,
                         agreement=agreement)
        results[policy] = a = r["planner_agreement"]
        assert a["available"] and a["plans"] == -(-(entry["num_frames"] - 1) // 8), a
        assert a["plan_ms"]["p50"] > 0 and a["l2_per_step"]["planned"] is not None
    scripted, rand = results["scripted"], results["random"]
    assert scripted["l2_per_step"]["base_proposal"] < 0.5 * rand["l2_per_step"]["base_proposal"], results
    assert scripted["xy_cosine"]["base_proposal"] > 0.8, results
    assert "planned vs" in write_report(r, tmp_path / "report")["md"].read_text()


def test_cli_info_and_from_episodes(tmp_path, capsys):
    from swm_ros.cli import main

    ep_path = _episode(tmp_path / "c" / "episodes" / "ep_000000.h5")
    assert main(["bag", "from-episodes", str(tmp_path / "c"), "--out", str(tmp_path / "bag")]) == 0
    capsys.readouterr()
    assert main(["bag", "info", str(tmp_path / "bag"), "--count"]) == 0
    out = capsys.readouterr().out
    assert "/world_state" in out and "swm_ros/msg/WorldState" in out and "read 12" in out
    shutil.rmtree(tmp_path / "bag")
    assert main(["bag", "info", str(tmp_path / "bag")]) == 1
    assert ep_path.is_file()


def test_json_output_keeps_native_writes_to_stdout_out_of_the_document():
    """`swm bag eval --graph --json`: what a C library in the process writes to fd 1 (Fast DDS's
    shared-memory errors) goes to stderr, and stdout holds the JSON document alone."""
    import subprocess
    import sys

    code = ("import json, os; from swm_ros.bags.cli import _json_stdout; out = _json_stdout(); "
            "os.write(1, b'[RTPS_TRANSPORT_SHM Error] port busy\\n'); print('also python'); "
            "print(json.dumps({'ok': 1}), file=out, flush=True)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": 1}
    assert "[RTPS_TRANSPORT_SHM Error]" in r.stderr and "also python" in r.stderr
