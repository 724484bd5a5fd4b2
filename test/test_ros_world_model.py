"""world_model_node over DDS, from another process, on a real (small, randomly initialised) checkpoint.

The node's answers must equal the in-process model's for the same frame, chunks and questions:
that proves the service path (image conversion, the checkpoint's crop + resize, batching by
horizon) is the model path. Malformed requests get an error response and the node keeps
answering; a third concurrent request is told "busy"; bad checkpoints stop it at start-up.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diagnostic_msgs.msg import DiagnosticArray

from swm_ros.envs.base import ACTION_NAMES
from swm_ros.models.checkpoint import load_checkpoint, save_checkpoint
from swm_ros.models.ensemble import write_ensemble
from swm_ros.models.registry import load_world_model
from swm_ros.models.tiny import TinyConfig, TinyWorldModel
from swm_ros.processing.image import ImageProcessor, ImageProcessorConfig
from swm_ros.robots.profile import load_robot_profile
from swm_ros.ros import conversions as conv
from swm_ros.ros import qos
from swm_ros.srv import QueryWorldModel

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CAM = load_robot_profile("nicol").cameras["overhead"]
MAX_STEPS = 24
QUESTIONS = ["Is the red block touching the blue block?", "Did the red block move?",
             "Is the gripper touching the red block?"]
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The in-test model on one thread: on a shared 2-core machine more threads only spin against the node's."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small_checkpoint(directory: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = TinyWorldModel(TinyConfig(conv_channels=[16, 32, 64], d_model=64, layers=2, heads=4, max_steps=MAX_STEPS))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.image_processor = ImageProcessor(ImageProcessorConfig(roi=(0.2, 0.25, 0.7, 0.9), size=64))
    return save_checkpoint(model, directory)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small tiny-backend checkpoint with a cropping image processor (weights perturbed so answers vary)."""
    return _small_checkpoint(tmp_path_factory.mktemp("wm") / "checkpoint", seed=0)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, checkpoint) -> Path:
    """An ensemble of that checkpoint and another seed's (`swm ensemble`'s format)."""
    root = tmp_path_factory.mktemp("ensemble")
    return write_ensemble([checkpoint, _small_checkpoint(root / "other", seed=1)], root / "ensemble")


def _chunk(actions: np.ndarray, names=ACTION_NAMES):
    return conv.action_chunk(actions, names, 0.1, "test", "push")


def _expected(model, frame: np.ndarray, chunks: list[np.ndarray], questions: list[str]) -> np.ndarray:
    """p(yes) of each chunk on its own, in this process: crop + resize, then the model."""
    image = model.process_frames(frame)
    with torch.no_grad():
        return np.stack([model.p_yes(image, torch.from_numpy(c)[None], questions)[0].numpy() for c in chunks])


def _answers(res) -> np.ndarray:
    assert res.success, res.message
    return np.asarray(res.p_yes, dtype=np.float64).reshape(res.num_chunks, res.num_questions)


def _request(image, chunks, questions) -> QueryWorldModel.Request:
    req = QueryWorldModel.Request(questions=list(questions), chunks=list(chunks))
    if image is not None:
        req.image = image
    return req


def test_answers_equal_the_model_and_bad_requests_are_refused(start_node, probe, checkpoint, tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "checkpoint": str(checkpoint), "num_threads": 1, "max_questions": 4, "max_pending": 2, "max_frame_age": 1.0,
        "standing_questions": QUESTIONS[:2], "answers_period": 0.3, "diagnostics_period": 0.3}}}))
    proc = start_node("world_model_node", "--params-file", str(params))
    model = load_checkpoint(checkpoint)
    node = probe.node
    client = node.create_client(QueryWorldModel, "/world_model_node/query")
    assert probe.wait_for(lambda: client.service_is_ready() or not proc.alive(), 60), proc.output()
    assert proc.alive(), proc.output()

    seen = {"answered": 0, "refused": 0}

    def call(req, timeout: float = 20.0):
        future = client.call_async(req)
        assert probe.wait_for(future.done, timeout), f"no answer\n{proc.output()}"
        assert proc.alive(), proc.output()
        seen["answered" if future.result().success else "refused"] += 1
        return future.result()

    # no image and no camera frame yet: refused, with the topic named
    res = call(_request(None, [], QUESTIONS))
    assert not res.success and "no camera frame received yet on /" + CAM.topic in res.message

    # an explicit image, chunks of several horizons (the planner's prefixes), 0..MAX_STEPS
    frame = RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    chunks = [RNG.uniform(-1, 1, (h, len(ACTION_NAMES))).astype(np.float32) for h in (8, 0, 8, MAX_STEPS, 3, 8)]
    expected = _expected(model, frame, chunks, QUESTIONS)
    assert np.ptp(expected) > 0.05, "answers do not depend on the inputs: the comparison would prove little"
    stamp = conv.to_time(12.5)
    res = call(_request(conv.numpy_to_image(frame, "rgb8", stamp), [_chunk(c) for c in chunks], QUESTIONS))
    assert (res.num_chunks, res.num_questions) == (len(chunks), len(QUESTIONS))
    np.testing.assert_allclose(_answers(res), expected, atol=1e-5)
    assert (res.image_stamp.sec, res.image_stamp.nanosec) == (12, 500_000_000) and res.latency_ms > 0
    # the crop matters: without it the answers differ (so the equality above checks it)
    with torch.no_grad():
        uncropped = model.p_yes(frame[None], torch.from_numpy(chunks[0])[None], QUESTIONS)[0].numpy()
    assert np.abs(uncropped - expected[0]).max() > 1e-3
    # bgr8 is the same picture
    res = call(_request(conv.numpy_to_image(np.ascontiguousarray(frame[..., ::-1]), "bgr8"),
                        [_chunk(c) for c in chunks[:2]], QUESTIONS))
    np.testing.assert_allclose(_answers(res), expected[:2], atol=1e-5)

    # the latest camera frame (image height 0); no chunks = one "now" row
    camera = RNG.integers(0, 256, (120, 160, 3), dtype=np.uint8)   # small: best-effort frames arrive whole
    camera_msg = conv.numpy_to_image(camera, "rgb8", frame_id=CAM.frame_id)
    pub = node.create_publisher(type(camera_msg), CAM.topic, qos.SENSOR)
    sent_stamps = set()

    def publish_frame():
        camera_msg.header.stamp = node.get_clock().now().to_msg()
        sent_stamps.add((camera_msg.header.stamp.sec, camera_msg.header.stamp.nanosec))
        pub.publish(camera_msg)

    timer = node.create_timer(0.1, publish_frame)
    answers = probe.collect(DiagnosticArray, "/world_model_node/answers", qos.STATE)
    assert probe.wait_for(lambda: pub.get_subscription_count() > 0, 10)
    now_expected = _expected(model, camera, [np.zeros((0, 5), np.float32)], QUESTIONS)
    deadline = time.monotonic() + 20
    while True:   # until the first camera frame has reached the node
        res = call(_request(None, [], QUESTIONS))
        if res.success or "no camera frame" not in res.message or time.monotonic() > deadline:
            break
        probe.spin(0.1)
    np.testing.assert_allclose(_answers(res), now_expected, atol=1e-5)
    assert (res.num_chunks, res.num_questions) == (1, 3)
    assert res.image_stamp.sec > 0 and (res.image_stamp.sec, res.image_stamp.nanosec) in sent_stamps
    res = call(_request(None, [_chunk(c) for c in chunks], QUESTIONS[1:]))
    np.testing.assert_allclose(_answers(res), _expected(model, camera, chunks, QUESTIONS[1:]), atol=1e-5)

    # the standing questions on the latest frame, published on ~/answers
    assert probe.wait_for(lambda: answers, 10), proc.output()
    values = {kv.key: kv.value for kv in answers[-1].status[0].values}
    np.testing.assert_allclose([float(values[q]) for q in QUESTIONS[:2]], now_expected[0, :2], atol=1e-5)

    # six equal requests at once (~0.1-1 s of model time each, arriving milliseconds apart): two are
    # admitted (max_pending 2: one runs, one waits) and answered, the others are told "busy" at once
    heavy = [RNG.uniform(-1, 1, (MAX_STEPS, 5)).astype(np.float32) for _ in range(96)]
    futures = [client.call_async(_request(conv.numpy_to_image(frame, "rgb8"), [_chunk(c) for c in heavy], QUESTIONS))
               for _ in range(6)]
    assert probe.wait_for(lambda: all(f.done() for f in futures), 60), proc.output()
    results = [f.result() for f in futures]
    sample = list(range(0, len(heavy), 24))
    heavy_expected = _expected(model, frame, [heavy[i] for i in sample], QUESTIONS)
    for res in results:
        if res.success:
            np.testing.assert_allclose(_answers(res)[sample], heavy_expected, atol=1e-5)
        else:
            assert res.message.startswith("busy: 2 request(s) already running or waiting"), res.message
    busy = sum(not res.success for res in results)
    assert 1 <= busy <= 4, [r.message for r in results]

    # malformed requests: each refused with the reason; the node answers on
    good = [_chunk(c) for c in chunks[:2]]
    image = conv.numpy_to_image(frame, "rgb8")
    nan = chunks[0].copy()
    nan[3, 2] = np.nan
    bad = {
        "NaN or inf": _request(image, [good[0], _chunk(nan)], QUESTIONS),
        "action names": _request(image, [_chunk(chunks[0], ["x", "y", "z", "yaw", "grip"])], QUESTIONS),
        f"horizon {MAX_STEPS + 1} > {MAX_STEPS}": _request(image, [_chunk(np.zeros((MAX_STEPS + 1, 5)))], QUESTIONS),
        "no questions": _request(image, good, []),
        "has no words": _request(image, good, ["  "]),
        "does not know the word(s) ['teleport']": _request(image, good, ["Did the red block teleport?"]),
        "5 questions > max_questions 4": _request(image, good, QUESTIONS + QUESTIONS[:2]),
        "image encoding 'mono8'": _request(conv.numpy_to_image(frame[..., 0], "mono8"), good, QUESTIONS),
        "expected step x height": _request(conv.numpy_to_image(frame, "rgb8"), good, QUESTIONS),
    }
    bad["expected step x height"].image.data = bytes(100)
    for why, req in bad.items():
        res = call(req)
        assert not res.success and why in res.message, (why, res.message)
        assert len(res.p_yes) == 0
    # the camera stops: the latest frame goes stale and is refused, not used
    node.destroy_timer(timer)
    probe.spin(1.3)
    res = call(_request(None, [], QUESTIONS))
    assert not res.success and "s old (max_frame_age 1 s)" in res.message, res.message
    # and after all that, a good request is answered exactly
    np.testing.assert_allclose(_answers(call(_request(image, good, QUESTIONS))), expected[:2], atol=1e-5)

    diag = probe.collect(DiagnosticArray, "/diagnostics", qos.DIAGNOSTICS)
    assert probe.wait_for(lambda: diag, 5)
    values = {kv.key: kv.value for kv in diag[-1].status[0].values}
    assert seen["refused"] >= len(bad) + 2 and seen["answered"] == 5
    assert values["busy"] == str(busy) and values["refused"] == str(seen["refused"]) and values["failed"] == "0"
    assert values["answered"] == str(seen["answered"] + len(results) - busy) and float(values["mean_latency_ms"]) > 0
    proc.stop_cleanly()


def test_an_ensemble_checkpoint_answers_as_in_process(start_node, probe, ensemble, tmp_path) -> None:
    proc = start_node("world_model_node", "-p", f"checkpoint:={ensemble}", "-p", "num_threads:=1")
    client = probe.node.create_client(QueryWorldModel, "/world_model_node/query")
    assert probe.wait_for(lambda: client.service_is_ready() or not proc.alive(), 60), proc.output()
    model = load_world_model(str(ensemble))
    frame = RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    chunks = [RNG.uniform(-1, 1, (h, len(ACTION_NAMES))).astype(np.float32) for h in (8, 0, 16)]
    future = client.call_async(_request(conv.numpy_to_image(frame, "rgb8"), [_chunk(c) for c in chunks], QUESTIONS))
    assert probe.wait_for(future.done, 30), proc.output()
    expected = _expected(model, frame, chunks, QUESTIONS)
    members = [_expected(m, frame, chunks, QUESTIONS) for m in model.members]
    assert np.abs(members[0] - members[1]).max() > 1e-3      # two members that differ were combined
    np.testing.assert_allclose(_answers(future.result()), expected, atol=1e-5)
    proc.stop_cleanly()


def test_bad_checkpoints_and_backends_stop_the_node_with_a_reason(start_node, checkpoint, ensemble, tmp_path) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.yaml").write_text((checkpoint / "config.yaml").read_text())
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a safetensors header")
    missing = tmp_path / "no_such_checkpoint"
    cases = {   # parameters -> what the error says
        ("checkpoint:=" + str(missing),): f"world-model checkpoint directory not found: {missing}",
        ("checkpoint:=" + str(corrupt),): f"{corrupt / 'model.safetensors'}: corrupt or not a safetensors file",
        ("backend:=paligemma_99b",): "unknown world-model backend 'paligemma_99b'; known backends: [",
        ("checkpoint:=" + str(checkpoint), "backend:=tiny", "device:=cuda:7"): "device 'cuda:7'",
        ("checkpoint:=" + str(ensemble), "backend:=effnet"): f"checkpoint {ensemble} holds tiny weights, but backend "
                                                              f"is 'effnet'",
    }
    procs = {}
    for args, error in cases.items():   # started together: each pays the torch import once, in parallel
        procs[error] = start_node("world_model_node", *[x for a in args for x in ("-p", a)])
    for error, proc in procs.items():
        assert proc.wait(60) == 2, proc.output()
        assert f"error: {error}" in proc.output() or f"error: world model: {error}" in proc.output(), proc.output()
