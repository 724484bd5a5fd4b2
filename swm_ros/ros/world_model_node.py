"""world_model_node: the semantic world model as a ROS 2 service (p(yes) for questions about the future).

  subscribes <camera.topic>   sensor_msgs/Image (sensor QoS): the latest frame, for requests without an image
  services   ~/query          swm_ros/QueryWorldModel: image (or the latest frame) + chunks + questions -> p(yes)
  publishes  ~/answers        diagnostic_msgs/DiagnosticArray: the `standing_questions` on the latest frame,
                              every `answers_period` s (key = question, value = p(yes)); only when configured
             /diagnostics     requests, refusals, latency

The model is a checkpoint directory (`checkpoint`) or a backend's shipped weights (`backend`),
loaded from safetensors (swm_ros/models/checkpoint.py; never pickle). Raw frames go through the
checkpoint's image processor (`model.process_frames`: the crop + resize of the training data)
before the model sees them, so a client sends camera frames as they are.

One request is one batched forward: the image is encoded once and every chunk is scored
against those features (`answer_logits_from_features`), in batches of `batch_size` chunks.
Chunks of different horizons may share a request (the planner asks about every prefix of its
candidates): they are grouped by horizon, one forward per horizon, no padding, so the answers
equal the in-process model's. No chunks means one "now" question (horizon 0): one row.

Inference runs on one worker thread, never on the executor. Up to `max_pending` requests are
admitted at a time (one runs, the others wait their turn); a request beyond that is answered at
once with success false and a message starting "busy", so a client is never left hanging. A
malformed request (shape, action names, NaN, horizon, encoding, unknown words, no frame) is
answered with success false and the reason; nothing else changes and the node keeps serving.
"""
from __future__ import annotations

import array
import concurrent.futures
import gc
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image

from swm_ros.envs.base import ACTION_NAMES
from swm_ros.ros import conversions as conv
from swm_ros.ros import qos
from swm_ros.ros.node_utils import (Diagnostics, Param, StartupError, declare_parameters, load_profile,
                                    non_negative, positive, run_node)
from swm_ros.srv import QueryWorldModel

# Every admitted request holds one executor thread while it waits for the worker; two more
# threads keep the camera subscription and the timers running meanwhile.
EXECUTOR_THREADS = 5
MAX_PENDING_LIMIT = EXECUTOR_THREADS - 2
IMAGE_ENCODINGS = ("rgb8", "bgr8")           # colour frames only: a mono frame is not what the model saw

PARAMETERS: dict[str, Param] = {
    "checkpoint": Param("", "world-model checkpoint directory; empty = the shipped weights of `backend`"),
    "backend": Param("tiny", "world-model backend: whose shipped weights to load when checkpoint is empty; "
                             "otherwise the checkpoint must be of this backend (empty = any)"),
    "device": Param("cpu", "torch device: cpu, cuda, cuda:1, ..."),
    "num_threads": Param(2, "torch CPU threads for inference", positive, "> 0"),
    "robot": Param("nicol", "robot profile name (config/robots) or path to a profile YAML"),
    "camera": Param("overhead", "profile camera whose latest frame answers requests without an image"),
    "max_frame_age": Param(1.0, "s: an older latest frame is refused (0 = any age)", non_negative, ">= 0"),
    "max_chunks": Param(1024, "chunks per request", positive, "> 0"),
    "max_questions": Param(32, "questions per request", positive, "> 0"),
    "batch_size": Param(256, "chunks per forward pass (bounds memory)", positive, "> 0"),
    "max_pending": Param(2, "requests admitted at once (one runs, the rest wait); more are answered 'busy'",
                         lambda x: 1 <= x <= MAX_PENDING_LIMIT, f"between 1 and {MAX_PENDING_LIMIT}"),
    # [""] and not []: node_utils declares an empty list default as a byte array, which then refuses strings
    "standing_questions": Param([""], "questions answered on the latest frame and published on ~/answers "
                                      "(blank entries ignored; none: no topic)"),
    "answers_period": Param(1.0, "s between ~/answers messages", positive, "> 0"),
    "diagnostics_period": Param(1.0, "s between /diagnostics messages", positive, "> 0"),
}


class RequestError(ValueError):
    """A query that cannot be answered as asked (the reason goes back in the response)."""


class WorldModelNode(Node):
    def __init__(self) -> None:
        super().__init__("world_model_node")
        self.p = declare_parameters(self, PARAMETERS)
        self.profile = load_profile(self.p.robot, self.p.camera)
        self.model, self.source = self._load_model()
        # the longest chunk the model takes (step-position embeddings); None: no limit known
        self.max_horizon = getattr(getattr(self.model, "config", None), "max_steps", None)
        self.standing = [q for q in self.p.standing_questions if q.strip()]
        if self.standing:
            try:
                self._check_questions(self.standing)
            except RequestError as e:
                raise StartupError(f"standing_questions: {e}") from e

        self._lock = threading.Lock()
        self._frame: tuple[float, Time, np.ndarray] | None = None  # (seconds, stamp, raw rgb) of the camera
        self._in_flight = 0                                         # admitted requests (running + waiting)
        self._answering = False                                     # a standing-questions job is queued
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.counts = {"requests": 0, "answered": 0, "refused": 0, "busy": 0, "failed": 0,
                       "frames": 0, "bad_frames": 0}
        self.last_ms = 0.0
        self.total_ms = 0.0
        self.last_problem = ""
        self.last_failed = False

        cam = self.profile.cameras[self.p.camera]
        self.camera_topic = self.resolve_topic_name(cam.topic)
        inputs, queries, timers = (MutuallyExclusiveCallbackGroup(), ReentrantCallbackGroup(),
                                   MutuallyExclusiveCallbackGroup())
        self.create_subscription(Image, cam.topic, self._on_image, qos.SENSOR, callback_group=inputs)
        self.create_service(QueryWorldModel, "~/query", self._on_query, callback_group=queries)
        if self.standing:
            self.pub_answers = self.create_publisher(DiagnosticArray, "~/answers", qos.STATE)
            self.create_timer(self.p.answers_period, self._answer_standing, callback_group=timers)
        self._diag = Diagnostics(self, "world model", self.source, self._diagnostics, self.p.diagnostics_period,
                                 callback_group=timers)
        # torch and the model are ~200k long-lived objects: keep them out of the cyclic GC, so it
        # neither pauses inference scanning them nor holds up the exit for seconds
        gc.freeze()
        self.get_logger().info(
            f"world model {self.source} ({self.model.num_parameters() / 1e6:.2f} M parameters, {self.p.device}, "
            f"processor {self.model.image_processor}); service {self.resolve_service_name('~/query')}, "
            f"latest frame from {self.camera_topic}" + (f", {len(self.standing)} standing question(s)"
                                                         if self.standing else ""))

    # ------------------------------------------------------------------ model

    def _load_model(self):
        """(model, description) from the parameters; StartupError with the reason otherwise."""
        from swm_ros.models.checkpoint import CheckpointError
        from swm_ros.models.registry import UnknownBackendError, checkpoint_backends, get_backend, load_world_model

        if not self.p.checkpoint and not self.p.backend:
            raise StartupError("set checkpoint (a directory) or backend (its shipped weights)")
        try:
            if self.p.backend:
                get_backend(self.p.backend)
            if self.p.checkpoint:
                found = sorted(set(checkpoint_backends(self.p.checkpoint)))    # an ensemble's members may differ
                if self.p.backend and found != [self.p.backend]:
                    raise StartupError(f"checkpoint {self.p.checkpoint} holds {'/'.join(found)} weights, but backend "
                                       f"is {self.p.backend!r} (set backend:={found[0]} or backend:='')")
            import torch

            device = torch.device(self.p.device)
            if device.type == "cuda" and not torch.cuda.is_available():
                raise StartupError(f"device {self.p.device!r}: CUDA is not available on this machine")
            if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
                raise StartupError(f"device {self.p.device!r}: this machine has {torch.cuda.device_count()} "
                                   f"CUDA device(s)")
            torch.set_num_threads(self.p.num_threads)
            model = load_world_model(self.p.checkpoint or self.p.backend, device=self.p.device)
        except StartupError:
            raise
        except (UnknownBackendError, FileNotFoundError, CheckpointError) as e:
            raise StartupError(f"world model: {e}") from e
        except (RuntimeError, ValueError) as e:          # a bad device string, a model that cannot be built
            raise StartupError(f"world model {self.p.checkpoint or self.p.backend!r}: {e}") from e
        if model.action_dim != len(ACTION_NAMES):
            raise StartupError(f"the model takes {model.action_dim} action dims; chunks here carry "
                               f"{len(ACTION_NAMES)} {list(ACTION_NAMES)}")
        if self.p.checkpoint:
            return model, f"{Path(self.p.checkpoint).resolve()} ({model.backend})"
        return model, f"shipped {model.backend} weights"

    def _check_questions(self, questions: list[str]) -> None:
        from swm_ros.models.text import words

        if not questions:
            raise RequestError("no questions")
        if len(questions) > self.p.max_questions:
            raise RequestError(f"{len(questions)} questions > max_questions {self.p.max_questions}")
        known = set(self.model.vocabulary)
        for i, q in enumerate(questions):
            ws = words(q)
            if not ws:
                raise RequestError(f"question {i} {q!r} has no words")
            if len(ws) > self.model.max_question_len:
                raise RequestError(f"question {i} has {len(ws)} words > {self.model.max_question_len}, the "
                                   f"longest this model reads")
            unknown = sorted({w for w in ws if w not in known})
            if unknown:
                raise RequestError(f"question {i} {q!r}: the model does not know the word(s) {unknown}")

    def _score(self, frame: np.ndarray, chunks: list[np.ndarray], questions: list[str]) -> tuple[np.ndarray, float]:
        """(len(chunks), Q) p(yes) and the model time in ms; runs on the inference thread."""
        import torch

        from swm_ros.models.base import YES_INDEX

        t0 = time.perf_counter()
        m = self.model
        try:
            image = m.process_frames(frame)                                         # the checkpoint's crop + resize
        except ValueError as e:
            raise RequestError(f"image: {e}") from e
        with torch.inference_mode():
            features = m.encode_image(image)                                        # (1, N, D), once
            tokens = m.prepare_questions(features, m.tokenize(questions))      # once for every chunk
            p = np.empty((len(chunks), len(questions)), dtype=np.float32)
            by_horizon: dict[int, list[int]] = defaultdict(list)
            for i, c in enumerate(chunks):
                by_horizon[c.shape[0]].append(i)
            for rows in by_horizon.values():
                for s in range(0, len(rows), self.p.batch_size):
                    batch = rows[s:s + self.p.batch_size]
                    actions = torch.from_numpy(np.stack([chunks[i] for i in batch])).to(features.device)
                    logits = m.answer_logits_from_features(features, actions, tokens)
                    p[batch] = logits.softmax(-1)[..., YES_INDEX].float().cpu().numpy()
        return p, (time.perf_counter() - t0) * 1e3

    # ------------------------------------------------------------------ inputs

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, msg: Image) -> None:
        try:
            if msg.encoding not in IMAGE_ENCODINGS:
                raise conv.ImageError(f"encoding {msg.encoding!r}; this node takes {list(IMAGE_ENCODINGS)}")
            rgb = conv.image_to_rgb(msg)
        except conv.ImageError as e:
            self.counts["bad_frames"] += 1
            self.get_logger().error(f"camera frame dropped: {e}", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._frame = (conv.to_seconds(msg.header.stamp), msg.header.stamp, rgb)
            self.counts["frames"] += 1

    def _latest_frame(self) -> tuple[float, Time, np.ndarray]:
        with self._lock:
            frame = self._frame
        if frame is None:
            raise RequestError(f"no image in the request and no camera frame received yet on {self.camera_topic}")
        age = self._now() - frame[0]
        if self.p.max_frame_age > 0 and age > self.p.max_frame_age:
            raise RequestError(f"the latest camera frame on {self.camera_topic} is {age:.2f} s old "
                               f"(max_frame_age {self.p.max_frame_age:g} s)")
        return frame

    def _parse(self, req: QueryWorldModel.Request) -> tuple[np.ndarray, Time, list[np.ndarray], list[str]]:
        """(raw rgb frame, its stamp, chunks, questions) of a request; RequestError if it is malformed."""
        questions = list(req.questions)
        self._check_questions(questions)
        if len(req.chunks) > self.p.max_chunks:
            raise RequestError(f"{len(req.chunks)} chunks > max_chunks {self.p.max_chunks}")
        chunks = []
        for i, c in enumerate(req.chunks):
            try:
                chunks.append(conv.chunk_actions(c, ACTION_NAMES, self.max_horizon))
            except conv.ChunkError as e:
                raise RequestError(f"chunk {i}: {e}") from e
        if not chunks:
            chunks = [np.zeros((0, len(ACTION_NAMES)), np.float32)]   # one "now" question
        if req.image.height == 0:
            _, stamp, rgb = self._latest_frame()
        else:
            if req.image.encoding not in IMAGE_ENCODINGS:
                raise RequestError(f"image encoding {req.image.encoding!r}: send one of {list(IMAGE_ENCODINGS)}")
            try:
                rgb = conv.image_to_rgb(req.image)
            except conv.ImageError as e:
                raise RequestError(f"image: {e}") from e
            stamp = req.image.header.stamp
        return rgb, stamp, chunks, questions

    # ------------------------------------------------------------------ the service

    def _on_query(self, req: QueryWorldModel.Request, res: QueryWorldModel.Response) -> QueryWorldModel.Response:
        with self._lock:
            self.counts["requests"] += 1
            busy = self._in_flight >= self.p.max_pending
            if not busy:
                self._in_flight += 1
        if busy:
            return self._refuse(res, f"busy: {self.p.max_pending} request(s) already running or waiting "
                                     f"(max_pending); try again", "busy")
        try:
            try:
                frame, stamp, chunks, questions = self._parse(req)
            except RequestError as e:
                return self._refuse(res, str(e), "refused")
            future = self._worker.submit(self._score, frame, chunks, questions)
            try:
                p, ms = future.result()          # this executor thread waits; the executor does not
            except RequestError as e:
                return self._refuse(res, str(e), "refused")
            except Exception as e:  # noqa: BLE001 - a model failure is answered, never fatal
                self.get_logger().error(f"inference failed: {type(e).__name__}: {e}")
                return self._refuse(res, f"inference failed: {type(e).__name__}: {e}", "failed")
        finally:
            with self._lock:
                self._in_flight -= 1
        res.success = True
        res.message = ""
        res.num_chunks, res.num_questions = int(p.shape[0]), int(p.shape[1])
        res.p_yes = array.array("f", p.ravel().tobytes())
        res.latency_ms = float(ms)
        res.image_stamp = stamp
        with self._lock:
            self.counts["answered"] += 1
            self.last_ms = ms
            self.total_ms += ms
            self.last_failed = False
        return res

    def _refuse(self, res: QueryWorldModel.Response, why: str, kind: str) -> QueryWorldModel.Response:
        with self._lock:
            self.counts[kind] += 1
            self.last_problem = why
            self.last_failed = kind == "failed" or self.last_failed
        if kind != "failed":
            self.get_logger().warning(f"query refused: {why}", throttle_duration_sec=1.0)
        res.success = False
        res.message = why
        return res

    # ------------------------------------------------------------------ standing questions

    def _answer_standing(self) -> None:
        """Queue the standing questions on the latest frame, when the worker has nothing else to do."""
        with self._lock:
            if self._answering or self._in_flight > 0 or self._frame is None:
                return                         # requests first; never stack up monitoring work
            self._answering = True
        try:
            stamp, _, frame = self._latest_frame()
        except RequestError as e:
            with self._lock:
                self._answering = False
            self.get_logger().warning(f"no answers published: {e}", throttle_duration_sec=5.0)
            return
        none = [np.zeros((0, len(ACTION_NAMES)), np.float32)]
        self._worker.submit(self._score, frame, none, self.standing).add_done_callback(
            lambda f: self._publish_answers(f, stamp))

    def _publish_answers(self, future: concurrent.futures.Future, stamp: float) -> None:
        with self._lock:
            self._answering = False
        if future.cancelled():
            return
        if future.exception() is not None:
            self.get_logger().error(f"standing questions failed: {future.exception()}", throttle_duration_sec=5.0)
            return
        p, ms = future.result()
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{self.get_name()}: answers",
                                  message=f"p(yes) now, on the frame of {stamp:.3f} s", hardware_id=self.source,
                                  values=[KeyValue(key=q, value=f"{v:.6f}") for q, v in zip(self.standing, p[0])])
        status.values.append(KeyValue(key="latency_ms", value=f"{ms:.1f}"))
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = conv.to_time(stamp)
        self.pub_answers.publish(msg)

    # ------------------------------------------------------------------ housekeeping

    def _diagnostics(self):
        with self._lock:
            values = dict(self.counts)
            answered = self.counts["answered"]
            frame = self._frame
            values.update(in_flight=self._in_flight, last_latency_ms=f"{self.last_ms:.1f}",
                          mean_latency_ms=f"{self.total_ms / answered:.1f}" if answered else "",
                          last_problem=self.last_problem, device=self.p.device)
            failed, problem = self.last_failed, self.last_problem
        values["frame_age_s"] = f"{self._now() - frame[0]:.2f}" if frame is not None else "no frame yet"
        if failed:
            return Diagnostics.ERROR, f"inference failed: {problem}", values
        if problem and answered == 0:
            return Diagnostics.WARN, problem, values
        return Diagnostics.OK, "serving", values

    def destroy_node(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(WorldModelNode, args, threads=EXECUTOR_THREADS)


if __name__ == "__main__":
    raise SystemExit(main())
