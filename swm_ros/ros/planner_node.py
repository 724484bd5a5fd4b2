"""planner_node: improve the base policy's proposals with the world model, send the best chunk.

  subscribes <camera.topic>        sensor_msgs/Image (sensor QoS): the observation planned from
             task_info             swm_ros/TaskInfo (latched): renders the task's questions
             action_proposals      swm_ros/ActionProposals (policy_node): the chunks to start from
  publishes  action_chunk          swm_ros/ActionChunk: the chosen chunk, to controller_node
             plan_result           swm_ros/PlanResult: scores per iteration, chosen score, latency
             /diagnostics
  calls      <world_model_service> swm_ros/QueryWorldModel, when the model runs elsewhere

The world model runs in this process (`world_model`: a checkpoint directory or a backend's
shipped weights) or behind a QueryWorldModel service (`world_model_service`, e.g. on a GPU
machine; gradients do not cross a service, so only mppi / cem / rank work there).

Each ActionProposals message is one planning request. Planning runs on its own worker thread,
never on the executor: while it plans, newer proposals replace older ones (only the latest
is planned next). Proposals, image or task that are malformed or stale are logged and
skipped; nothing is published for them. Receding horizon: the controller executes
`execute_steps` of the chunk, reports `controller_ready`, the policy proposes again.
"""
from __future__ import annotations

import threading

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image

from swm_ros.envs.base import ACTION_NAMES
from swm_ros.msg import ActionChunk, ActionProposals, PlanResult, TaskInfo
from swm_ros.ros import conversions as conv
from swm_ros.ros import qos
from swm_ros.ros.node_utils import (Diagnostics, Param, StartupError, declare_parameters, load_profile,
                                    positive, run_node)
from swm_ros.srv import QueryWorldModel

SOURCE = "swm_planner"

PARAMETERS: dict[str, Param] = {
    "robot": Param("nicol", "robot profile name (config/robots) or path to a profile YAML"),
    "camera": Param("overhead", "profile camera whose image the world model sees"),
    "planner": Param("grad", "planner config: a name in config/planner (grad, mppi, cem, rank) or a YAML path"),
    "world_model": Param("", "world-model checkpoint directory or backend name (in-process model)"),
    "world_model_service": Param("", "QueryWorldModel service name (remote model, wins over world_model); "
                                     "empty = in-process"),
    "service_timeout": Param(10.0, "s to wait for one QueryWorldModel answer", positive, "> 0"),
    "device": Param("cpu", "torch device of the in-process model"),
    "num_threads": Param(2, "torch CPU threads for the in-process model", positive, "> 0"),
    "tasks_dir": Param("", "directory of task objective YAMLs (<task>.yaml); empty = config/tasks"),
    "max_observation_age": Param(1.0, "s: an older image is stale and the plan is skipped", positive, "> 0"),
    "max_proposal_age": Param(1.0, "s: older proposals are stale and skipped", positive, "> 0"),
    "diagnostics_period": Param(1.0, "s between /diagnostics messages", positive, "> 0"),
}


class ProposalError(ValueError):
    """An ActionProposals message that cannot be planned from."""


def proposals_array(msg: ActionProposals) -> tuple[np.ndarray, float]:
    """(N, H, A) float32 array and the chunks' dt; raises ProposalError on anything malformed."""
    if not msg.chunks:
        raise ProposalError("no chunks")
    horizon, dt = msg.chunks[0].horizon, msg.chunks[0].dt
    out = []
    for i, c in enumerate(msg.chunks):
        if list(c.action_names) != list(ACTION_NAMES):
            raise ProposalError(f"chunk {i}: action names {list(c.action_names)} != {list(ACTION_NAMES)}")
        if c.horizon != horizon or c.horizon < 1:
            raise ProposalError(f"chunk {i}: horizon {c.horizon}, expected {horizon} (>= 1) like chunk 0")
        if len(c.actions) != c.horizon * len(ACTION_NAMES):
            raise ProposalError(f"chunk {i}: {len(c.actions)} values for horizon {c.horizon} x {len(ACTION_NAMES)}")
        if c.dt != dt or not dt > 0:
            raise ProposalError(f"chunk {i}: dt {c.dt}, expected {dt} (> 0) like chunk 0")
        out.append(np.asarray(c.actions, dtype=np.float32).reshape(c.horizon, len(ACTION_NAMES)))
    a = np.stack(out)
    if not np.all(np.isfinite(a)):
        raise ProposalError("NaN or inf in the actions")
    return a, float(dt)


class PlannerNode(Node):
    def __init__(self) -> None:
        super().__init__("planner_node")
        self.p = declare_parameters(self, PARAMETERS)
        self.profile = load_profile(self.p.robot, self.p.camera)
        if not self.p.world_model and not self.p.world_model_service:
            raise StartupError("no world model: set world_model (in-process) or world_model_service (remote)")

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._image: tuple[float, np.ndarray] | None = None
        self._task: TaskInfo | None = None
        self._pending: ActionProposals | None = None
        self._stopping = False
        self._task_key: tuple | None = None
        self.plans = self.skipped = 0
        self.last_ms = 0.0
        self.last_problem = ""
        self.client = None
        self._dt = self.profile.control_dt       # of the chunks sent to a remote model (the proposals')
        self.planner = self._make_planner()
        if not self.p.world_model_service:
            self._warm_up()

        cam = self.profile.cameras[self.p.camera]
        inputs, services = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, cam.topic, self._on_image, qos.SENSOR, callback_group=inputs)
        self.create_subscription(TaskInfo, "task_info", self._on_task, qos.LATCHED, callback_group=inputs)
        self.create_subscription(ActionProposals, "action_proposals", self._on_proposals, qos.COMMAND,
                                 callback_group=inputs)
        self.pub_chunk = self.create_publisher(ActionChunk, "action_chunk", qos.COMMAND)
        self.pub_result = self.create_publisher(PlanResult, "plan_result", qos.COMMAND)
        if self.p.world_model_service:
            self.client = self.create_client(QueryWorldModel, self.p.world_model_service, callback_group=services)
        self._diag = Diagnostics(self, "planner", self.profile.name, self._diagnostics, self.p.diagnostics_period,
                                 callback_group=services)
        self._worker = threading.Thread(target=self._work, name="planner", daemon=True)
        self._worker.start()
        where = (f"world model {self.p.world_model!r} in process" if not self.p.world_model_service
                 else f"remote world model at {self.resolve_service_name(self.p.world_model_service)}")
        self.get_logger().info(f"planner {self.planner.config.method!r}, {where}, image from "
                               f"{self.resolve_topic_name(cam.topic)}")

    def _make_planner(self):
        import torch

        from swm_ros.planning.planner import Planner, load_planner_config
        from swm_ros.planning.tasks import load_task_objective

        try:
            cfg = load_planner_config(self.p.planner)
        except Exception as e:  # noqa: BLE001
            raise StartupError(f"planner config {self.p.planner!r}: {e}") from e
        if self.p.tasks_dir:
            from pathlib import Path

            tasks = lambda name: load_task_objective(Path(self.p.tasks_dir) / f"{name}.yaml")  # noqa: E731
        else:
            tasks = load_task_objective
        if self.p.world_model_service:
            try:
                return Planner(cfg, query=self._remote_query, task_objectives=tasks)
            except ValueError as e:
                raise StartupError(str(e)) from e
        from swm_ros.models.registry import load_world_model

        torch.set_num_threads(self.p.num_threads)
        try:
            model = load_world_model(self.p.world_model, device=self.p.device)
        except Exception as e:  # noqa: BLE001
            raise StartupError(f"world model {self.p.world_model!r}: {e}") from e
        process = getattr(model, "process_frames", None)      # the checkpoint's crop + resize, if it has one
        return Planner(cfg, model=model, task_objectives=tasks,
                       image_processor=(lambda frame: process(frame)[0]) if process is not None else None)

    def _warm_up(self) -> None:
        """One plan on a blank frame before anything is subscribed: the first call pays torch's
        one-time costs (2.7 s in the demo, against ~0.3 s for the plans after it), which made the
        first real plan so late that the proposals after it were stale. The real task replaces
        this one when it arrives."""
        from swm_ros.envs.base import TaskSpec

        cam = self.profile.cameras[self.p.camera]
        blank = np.zeros((cam.height, cam.width, 3), np.uint8)
        try:
            self.planner.set_task(TaskSpec("reach", ("red_block",), "warm-up"))
            self.planner.plan(blank, np.zeros((1, 16, len(ACTION_NAMES)), np.float32))
        except (ValueError, KeyError, FileNotFoundError) as e:     # a custom tasks_dir without reach: skip
            self.get_logger().info(f"no warm-up plan ({e}); the first plan will be slower")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ inputs

    def _on_image(self, msg: Image) -> None:
        try:
            rgb = conv.image_to_rgb(msg)
        except conv.ImageError as e:
            self.get_logger().error(f"image dropped: {e}", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._image = (conv.to_seconds(msg.header.stamp), rgb)

    def _on_task(self, msg: TaskInfo) -> None:
        with self._lock:
            self._task = msg
        self.get_logger().info(f"task: {msg.instruction} (episode {msg.episode})")

    def _on_proposals(self, msg: ActionProposals) -> None:
        with self._wake:
            self._pending = msg                 # only the latest request is worth planning
            self._wake.notify()

    # ------------------------------------------------------------------ planning (worker thread)

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                props, self._pending = self._pending, None
                image, task = self._image, self._task
            try:
                self._plan(props, image, task)
            except Exception as e:  # noqa: BLE001 - one bad plan must not end the node
                self._skip(f"planning failed: {type(e).__name__}: {e}", error=True)

    def _skip(self, why: str, error: bool = False) -> None:
        self.skipped += 1
        self.last_problem = why
        # two call sites: rclpy refuses one site logging at two severities
        if error:
            self.get_logger().error(f"no plan, nothing published: {why}")
        else:
            self.get_logger().warning(f"no plan, nothing published: {why}")

    def _plan(self, msg: ActionProposals, image, task: TaskInfo | None) -> None:
        now = self._now()
        if task is None:
            return self._skip("no task_info yet")
        if image is None:
            return self._skip("no image yet")
        if now - image[0] > self.p.max_observation_age:
            return self._skip(f"image is {now - image[0]:.2f} s old (max {self.p.max_observation_age:g} s)")
        try:       # malformed before stale: a bad message is reported as bad however late it is read
            proposals, dt = proposals_array(msg)
        except ProposalError as e:
            return self._skip(f"bad proposals: {e}", error=True)
        age = now - conv.to_seconds(msg.header.stamp)
        if age > self.p.max_proposal_age:
            return self._skip(f"proposals are {age:.2f} s old (max {self.p.max_proposal_age:g} s)")
        key = (task.episode, task.name, tuple(task.objects), task.variant, task.seed)
        if key != self._task_key:
            try:
                stages = self.planner.set_task(conv.task_spec(task))
            except Exception as e:  # noqa: BLE001 - unknown task, unknown words, bad task file
                return self._skip(f"cannot plan task {task.name!r}: {e}", error=True)
            self._task_key = key
            self.get_logger().info(f"task {task.name!r}: stages {[s.name for s in stages]}; questions "
                                   f"{list(stages[0].objective.questions)}")
        self._dt = dt
        report = self.planner.plan(image[1], proposals)
        chunk = report.chunk
        bound = self.planner.config.action_bound
        if chunk.shape != proposals.shape[1:] or not np.all(np.isfinite(chunk)) or np.abs(chunk).max() > bound:
            return self._skip(f"planner returned an unusable chunk (shape {chunk.shape}, max |a| "
                              f"{np.abs(chunk).max() if chunk.size else 0:.3g})", error=True)
        for name in report.fell_back_to:
            self.get_logger().info(f"sub-goal of {name!r} lost: planning {name!r} again")
        for name in report.advanced_from:
            self.get_logger().info(f"sub-goal {name!r} met: now planning {report.stage!r}")
        stamp = self.get_clock().now().to_msg()
        out = conv.action_chunk(chunk, ACTION_NAMES, dt, SOURCE, task.name, stamp)
        self.pub_chunk.publish(out)
        self.pub_result.publish(self._result(msg, report, out, task.name))
        self.plans += 1
        self.last_ms = report.planning_ms

    def _result(self, props: ActionProposals, report, chunk: ActionChunk, task: str) -> PlanResult:
        o = report.outcome
        res = PlanResult(task=task, method=report.method, num_proposals=report.num_proposals,
                         iteration_scores=[float(s) for s in o.iteration_scores], base_score=float(o.base_score),
                         chosen_score=float(o.best_score), questions=list(report.questions.questions),
                         desired=[float(d) for d in report.questions.desired],
                         weights=[float(w) for w in report.questions.weights],
                         p_yes=[float(p) for p in report.p_yes], chunk=chunk)
        res.header = props.header
        # from the proposals' stamp (the observation they were made for) to the chosen chunk
        res.planning_ms = float(max(report.planning_ms,
                                    (self._now() - conv.to_seconds(props.header.stamp)) * 1e3))
        return res

    # ------------------------------------------------------------------ remote world model

    def _remote_query(self, image: np.ndarray, chunks, questions) -> np.ndarray:
        """p(yes) (len(chunks) or 1, Q) from the QueryWorldModel service (called on the worker thread)."""
        if not self.client.service_is_ready():
            raise RuntimeError(f"world-model service {self.client.srv_name} is not available")
        req = QueryWorldModel.Request(questions=list(questions))
        req.image = conv.numpy_to_image(np.ascontiguousarray(image), "rgb8", stamp=self.get_clock().now().to_msg())
        req.chunks = [] if chunks is None else [conv.action_chunk(c, ACTION_NAMES, self._dt, SOURCE, "")
                                                for c in chunks]
        done = threading.Event()
        future = self.client.call_async(req)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self.p.service_timeout):
            self.client.remove_pending_request(future)
            raise TimeoutError(f"no answer from {self.client.srv_name} in {self.p.service_timeout:g} s")
        res = future.result()
        if res is None or not res.success:
            raise RuntimeError(f"world model refused the query: {res.message if res else 'no response'}")
        rows = 1 if chunks is None else len(chunks)
        if (res.num_chunks, res.num_questions) != (rows, len(questions)) and not (chunks is None
                                                                                 and res.num_chunks == 0):
            raise RuntimeError(f"world model answered {res.num_chunks} x {res.num_questions}, "
                               f"expected {rows} x {len(questions)}")
        p = np.asarray(res.p_yes, dtype=np.float64)
        if p.size != rows * len(questions):
            raise RuntimeError(f"world model sent {p.size} probabilities, expected {rows * len(questions)}")
        return p.reshape(rows, len(questions))

    # ------------------------------------------------------------------ housekeeping

    def _diagnostics(self):
        values = {"plans": self.plans, "skipped": self.skipped, "last_planning_ms": f"{self.last_ms:.1f}",
                  "method": self.planner.config.method, "last_problem": self.last_problem}
        if self.planner.stages:
            values["stage"] = self.planner.stage.name
        if self.last_problem and self.plans == 0:
            return Diagnostics.WARN, self.last_problem, values
        return Diagnostics.OK, "planning", values

    def destroy_node(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=1.0)     # a plan in progress is abandoned: the thread is a daemon
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(PlannerNode, args, threads=2)


if __name__ == "__main__":
    raise SystemExit(main())
