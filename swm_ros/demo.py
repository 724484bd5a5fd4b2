"""`swm demo` (`make demo`): the simulated graph on a few seeded episodes, with a report.

The graph is the one `swm up sim` starts (sim_node, policy_node, controller_node, each its
own process over DDS). A supervisor node in this process resets the simulator through its
`~/reset` service, watches `world_state` for success, records the overhead camera and
counts the chunks and trajectories that pass, then writes runs/demo/report.md, a contact
sheet, one GIF per episode and summary.json.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from swm_ros.evaluation.media import contact_sheet, save_gif, save_png
from swm_ros.graph import resolve_graph, start_graph, stop_graph
from swm_ros.robots.profile import load_robot_profile


@dataclass
class EpisodeReport:
    seed: int
    instruction: str
    success: bool
    steps: int                 # control periods until success (or the limit)
    wall_s: float
    chunks: int                # action chunks the policy published
    trajectories: int          # joint trajectories the controller sent to the arm
    replan_hz: float           # chunks per second: the closed control loop's rate
    frames: list = field(default_factory=list, repr=False)


class _Supervisor:
    """Test-harness node: resets episodes and records what the graph does."""

    def __init__(self, robot: str, camera: str = "overhead") -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from sensor_msgs.msg import Image
        from trajectory_msgs.msg import JointTrajectory

        from swm_ros.msg import ActionChunk, WorldState
        from swm_ros.ros import qos
        from swm_ros.ros.conversions import image_to_rgb
        from swm_ros.srv import ResetEpisode

        profile = load_robot_profile(robot)
        self._image_to_rgb = image_to_rgb
        self._reset_type = ResetEpisode
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("demo_supervisor", context=self.context)
        self.lock = threading.Lock()
        self.state = None
        self.frames: list[np.ndarray] = []
        self.chunks = 0
        self.trajectories = 0
        self.node.create_subscription(WorldState, "world_state", self._on_state, qos.STATE)
        self.node.create_subscription(Image, profile.cameras[camera].topic, self._on_image, qos.SENSOR)
        self.node.create_subscription(ActionChunk, "action_chunk", self._count("chunks"), qos.COMMAND)
        self.node.create_subscription(JointTrajectory, f"{profile.controller.arm_controller}/joint_trajectory",
                                      self._count("trajectories"), qos.COMMAND)
        self.reset_client = self.node.create_client(ResetEpisode, "sim_node/reset")
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_state(self, msg) -> None:
        with self.lock:
            self.state = msg

    def _on_image(self, msg) -> None:
        frame = self._image_to_rgb(msg)
        with self.lock:
            self.frames.append(frame)

    def _count(self, name: str):
        def callback(_msg) -> None:
            with self.lock:
                setattr(self, name, getattr(self, name) + 1)
        return callback

    def reset(self, task: str, seed: int, timeout: float = 30.0) -> str:
        if not self.reset_client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError("sim_node/reset did not appear: is the graph up?")
        future = self.reset_client.call_async(self._reset_type.Request(task=task, variant="", seed=seed))
        t_end = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > t_end:
                raise RuntimeError("sim_node/reset did not answer")
            time.sleep(0.01)
        res = future.result()
        if not res.success:
            raise RuntimeError(f"reset failed: {res.message}")
        with self.lock:
            self.state, self.frames, self.chunks, self.trajectories = None, [], 0, 0
        return res.task_info.instruction

    def run_episode(self, task: str, seed: int, max_steps: int, control_dt: float) -> EpisodeReport:
        instruction = self.reset(task, seed)
        t0 = time.monotonic()
        budget = max_steps * control_dt * 2.0 + 10.0   # real time, with room for start-up
        success, steps = False, 0
        while time.monotonic() - t0 < budget:
            with self.lock:
                state = self.state
            if state is not None:
                steps = int(state.step)
                if state.success:
                    success = True
                    break
                if steps >= max_steps:
                    break
            time.sleep(0.02)
        wall = time.monotonic() - t0
        time.sleep(0.3)   # a last frame or two after the end
        with self.lock:
            frames, chunks, trajs = list(self.frames), self.chunks, self.trajectories
        return EpisodeReport(seed=seed, instruction=instruction, success=success, steps=steps, wall_s=wall,
                             chunks=chunks, trajectories=trajs, replan_hz=chunks / max(wall, 1e-6), frames=frames)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def run_demo(task: str = "push", episodes: int = 3, out: str | Path = "runs/demo", robot: str = "nicol",
             first_seed: int = 0) -> list[EpisodeReport]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    profile = load_robot_profile(robot)
    graph = resolve_graph("sim", {"robot": robot, "task": task, "seed": str(first_seed), "headless": "true"})
    procs = start_graph(graph, quiet=True)
    print(f"[demo] graph up: {', '.join(procs)} (separate processes over DDS)", flush=True)
    supervisor = None
    reports: list[EpisodeReport] = []
    try:
        supervisor = _Supervisor(robot)
        from swm_ros.envs.tasks import get_task  # noqa: F401  (fails early if the task is unknown)

        for i in range(episodes):
            seed = first_seed + i
            r = supervisor.run_episode(task, seed, max_steps=100, control_dt=profile.control_dt)
            reports.append(r)
            print(f"[demo] episode {i + 1}/{episodes} seed {seed}: {'SUCCESS' if r.success else 'failure'} "
                  f"in {r.steps} steps, {r.wall_s:.1f} s, control loop {r.replan_hz:.1f} chunks/s "
                  f"({r.trajectories} trajectories) - {r.instruction}", flush=True)
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"node(s) {dead} exited during the demo")
    finally:
        if supervisor is not None:
            supervisor.close()
        stop_graph(procs)
    _write_report(out, task, reports)
    return reports


def _write_report(out: Path, task: str, reports: list[EpisodeReport]) -> None:
    rows = [r.frames for r in reports if r.frames]
    if rows:
        save_png(contact_sheet(rows, columns=10), out / "contact_sheet.png")
    for r in reports:
        if r.frames:
            save_gif(r.frames, out / f"episode_seed{r.seed}.gif", fps=10, scale=3)
    summary = {
        "task": task,
        "episodes": len(reports),
        "success_rate": float(np.mean([r.success for r in reports])) if reports else 0.0,
        "results": [{k: v for k, v in asdict(r).items() if k != "frames"} for r in reports],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# swm_ros demo: {task}",
        "",
        "The simulated NicoL graph (sim_node, policy_node with the scripted expert, controller_node),",
        "each node its own process over DDS. Produced by `make demo` (`swm demo`).",
        "",
        "| seed | instruction | success | steps | wall s | chunks/s | trajectories |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(f"| {r.seed} | {r.instruction} | {'yes' if r.success else 'no'} | {r.steps} | "
                     f"{r.wall_s:.1f} | {r.replan_hz:.1f} | {r.trajectories} |")
    lines += ["", f"Success rate: {summary['success_rate']:.0%}", "",
              "![overhead camera, one row per episode](contact_sheet.png)", ""]
    lines += [f"- [episode seed {r.seed} (GIF)](episode_seed{r.seed}.gif)" for r in reports if r.frames]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def cli_demo(args) -> int:
    reports = run_demo(task=args.task, episodes=args.episodes, out=args.out)
    ok = sum(r.success for r in reports)
    print(f"[demo] {ok}/{len(reports)} episodes succeeded; report: {Path(args.out) / 'report.md'}")
    return 0 if reports else 1
