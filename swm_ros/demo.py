"""`swm demo` (`make demo`): the base policy against the SWM planner, in simulation, with a report.

Each method is a graph of separate processes over DDS, started as `swm up` would:
  - `base`: config/graphs/sim.yaml: sim_node -> policy_node -> controller_node, the base
    policy's own chunk executed;
  - `swm`:  config/graphs/swm.yaml: the same, with planner_node between policy and controller,
    choosing and refining the policy's proposals with the shipped world model.
A supervisor node in this process resets the simulator through its `~/reset` service, watches
`world_state` for success, records the overhead camera, counts chunks and trajectories and
keeps every PlanResult (planning latency, the task questions' p(yes) for the chosen chunk).
It writes runs/demo/report.md, summary.json, a success bar chart, the answer probabilities
over time, a contact sheet and one GIF per episode.
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


# method -> (graph, what the method means): every graph gets the same base policy
METHODS = {"base": ("sim", "the base policy's own chunk"),
           "swm": ("swm", "the SWM planner's choice among and refinement of the base policy's proposals")}


@dataclass
class EpisodeReport:
    method: str
    seed: int
    instruction: str
    success: bool
    steps: int                 # control periods until success (or the limit)
    wall_s: float
    chunks: int                # action chunks the policy published
    trajectories: int          # joint trajectories the controller sent to the arm
    replan_hz: float           # chunks per second: the closed control loop's rate
    plan_ms: list = field(default_factory=list)        # planner_node's latency per plan (swm)
    questions: list = field(default_factory=list)      # the task objective's questions (swm)
    p_yes: list = field(default_factory=list)          # per plan: (step, [p(yes) per question], chosen score)
    frames: list = field(default_factory=list, repr=False)


class _Supervisor:
    """Test-harness node: resets episodes and records what the graph does."""

    def __init__(self, robot: str, camera: str = "overhead") -> None:
        from sensor_msgs.msg import Image
        from trajectory_msgs.msg import JointTrajectory

        from swm_ros.msg import ActionChunk, PlanResult, WorldState
        from swm_ros.ros import qos
        from swm_ros.ros.conversions import image_to_rgb
        from swm_ros.ros.node_utils import BackgroundNode
        from swm_ros.srv import ResetEpisode

        profile = load_robot_profile(robot)
        self._image_to_rgb = image_to_rgb
        self._reset_type = ResetEpisode
        self.ros = BackgroundNode("demo_supervisor", threads=2)
        self.node = self.ros.node
        self.lock = threading.Lock()
        self.state = None
        self.frames: list[np.ndarray] = []
        self.chunks = 0
        self.trajectories = 0
        self.plans: list = []
        self.node.create_subscription(PlanResult, "plan_result", self._on_plan, qos.COMMAND)
        self.node.create_subscription(WorldState, "world_state", self._on_state, qos.STATE)
        self.node.create_subscription(Image, profile.cameras[camera].topic, self._on_image, qos.SENSOR)
        self.node.create_subscription(ActionChunk, "action_chunk", self._count("chunks"), qos.COMMAND)
        self.node.create_subscription(JointTrajectory, f"{profile.controller.arm_controller}/joint_trajectory",
                                      self._count("trajectories"), qos.COMMAND)
        self.reset_client = self.node.create_client(ResetEpisode, "sim_node/reset")

    def _on_state(self, msg) -> None:
        with self.lock:
            self.state = msg

    def _on_plan(self, msg) -> None:
        with self.lock:
            step = int(self.state.step) if self.state is not None else 0
            self.plans.append((step, float(msg.planning_ms), list(msg.questions), [float(p) for p in msg.p_yes],
                               float(msg.chosen_score)))

    def _on_image(self, msg) -> None:
        frame = self._image_to_rgb(msg)
        with self.lock:
            self.frames.append(frame)

    def _count(self, name: str):
        def callback(_msg) -> None:
            with self.lock:
                setattr(self, name, getattr(self, name) + 1)
        return callback

    def wait_for_subscribers(self, topics: dict[str, int], timeout: float = 120.0) -> None:
        """Until each topic has that many subscribers (the nodes behind them have loaded their
        models): an episode started earlier would run its first seconds without them."""
        t_end = time.monotonic() + timeout
        while any(self.node.count_subscribers(t) < n for t, n in topics.items()):
            if time.monotonic() > t_end:
                counts = {t: self.node.count_subscribers(t) for t in topics}
                raise RuntimeError(f"the graph did not come up in {timeout:.0f} s: subscribers {counts}")
            time.sleep(0.1)

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
            self.state, self.frames, self.chunks, self.trajectories, self.plans = None, [], 0, 0, []
        return res.task_info.instruction

    def run_episode(self, method: str, task: str, seed: int, max_steps: int, control_dt: float) -> EpisodeReport:
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
            frames, chunks, trajs, plans = list(self.frames), self.chunks, self.trajectories, list(self.plans)
        return EpisodeReport(method=method, seed=seed, instruction=instruction, success=success, steps=steps,
                             wall_s=wall, chunks=chunks, trajectories=trajs, replan_hz=chunks / max(wall, 1e-6),
                             plan_ms=[p[1] for p in plans], questions=plans[0][2] if plans else [],
                             p_yes=[(p[0], p[3], p[4]) for p in plans], frames=frames)

    def close(self) -> None:
        self.ros.close()


def run_demo(task: str = "reach", episodes: int = 3, out: str | Path = "runs/demo", robot: str = "nicol",
             first_seed: int = 0, methods: tuple[str, ...] = ("base", "swm"), policy: str = "learned",
             planner: str = "grad", max_steps: int = 100) -> list[EpisodeReport]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    from swm_ros.envs.tasks import get_task

    get_task(task)                                   # an unknown task fails before any process starts
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    profile = load_robot_profile(robot)
    reports: list[EpisodeReport] = []
    for method in methods:
        graph_name = METHODS[method][0]
        args = {"robot": robot, "task": task, "seed": str(first_seed), "headless": "true", "policy": policy}
        if graph_name == "swm":
            args["planner"] = planner
        procs = start_graph(resolve_graph(graph_name, args), log_dir=out / "logs" / method)
        print(f"[demo] {method}: graph {graph_name} up: {', '.join(procs)} (separate processes over DDS)",
              flush=True)
        supervisor = None
        try:
            supervisor = _Supervisor(robot)
            # the controller takes chunks; in the swm graph the planner takes the proposals
            supervisor.wait_for_subscribers({"/action_chunk": 1} | ({"/action_proposals": 1}
                                                                    if graph_name == "swm" else {}))
            for i in range(episodes):
                seed = first_seed + i
                r = supervisor.run_episode(method, task, seed, max_steps=max_steps, control_dt=profile.control_dt)
                reports.append(r)
                plan = f", planning p50 {np.median(r.plan_ms):.0f} ms over {len(r.plan_ms)} plans" if r.plan_ms else ""
                print(f"[demo] {method} seed {seed}: {'SUCCESS' if r.success else 'failure'} in {r.steps} steps, "
                      f"{r.wall_s:.1f} s{plan} - {r.instruction}", flush=True)
                dead = [n for n, p in procs.items() if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"node(s) {dead} exited during the demo")
        finally:
            if supervisor is not None:
                supervisor.close()
            stop_graph(procs)
    _write_report(out, task, policy, planner, reports)
    return reports


def _write_report(out: Path, task: str, policy: str, planner: str, reports: list[EpisodeReport]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r.frames for r in reports if r.frames]
    if rows:
        save_png(contact_sheet(rows, columns=10), out / "contact_sheet.png")
    for r in reports:
        if r.frames:
            save_gif(r.frames, out / f"{r.method}_seed{r.seed}.gif", fps=10, scale=3)
    methods = list(dict.fromkeys(r.method for r in reports))
    per_method = {}
    for m in methods:
        rs = [r for r in reports if r.method == m]
        ms = [x for r in rs for x in r.plan_ms]
        per_method[m] = {"episodes": len(rs), "successes": int(sum(r.success for r in rs)),
                         "success_rate": float(np.mean([r.success for r in rs])),
                         "mean_steps_to_success": (float(np.mean([r.steps for r in rs if r.success]))
                                                   if any(r.success for r in rs) else None),
                         "plan_ms_median": float(np.median(ms)) if ms else None,
                         "plan_ms_p95": float(np.percentile(ms, 95)) if ms else None}
    summary = {"task": task, "policy": policy, "planner": planner, "methods": per_method,
               "results": [{k: v for k, v in asdict(r).items() if k != "frames"} for r in reports]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(methods), 3))
    ax.bar(methods, [per_method[m]["success_rate"] for m in methods], color=["#888", "#2a7"][:len(methods)])
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title(f"{task}: {len(reports) // max(len(methods), 1)} seeds")
    fig.tight_layout()
    fig.savefig(out / "success.png", dpi=100)
    plt.close(fig)
    planned = [r for r in reports if r.p_yes]
    if planned:
        fig, axes = plt.subplots(len(planned), 1, figsize=(7, 2.2 * len(planned)), squeeze=False)
        for ax, r in zip(axes[:, 0], planned):
            steps = [p[0] for p in r.p_yes]
            probs = np.array([p[1] for p in r.p_yes])
            for j, q in enumerate(r.questions):
                ax.plot(steps, probs[:, j], marker=".", label=q)
            ax.plot(steps, [p[2] for p in r.p_yes], "k--", lw=1, label="objective (chosen chunk)")
            ax.set_ylim(0, 1)
            ax.set_ylabel("p(yes)")
            ax.set_title(f"seed {r.seed}: {'success' if r.success else 'failure'} at step {r.steps}", fontsize=9)
        axes[-1, 0].set_xlabel("step (plan made)")
        axes[0, 0].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "answers_over_time.png", dpi=100)
        plt.close(fig)

    lines = [
        f"# swm_ros demo: {task}",
        "",
        f"Base policy `{policy}`; planner `{planner}` with the shipped tiny world model. Each method is a graph",
        "of separate processes over DDS (sim_node, policy_node, [planner_node,] controller_node), produced by",
        "`make demo` (`swm demo`).",
        "",
    ]
    lines += [f"- `{m}`: {METHODS[m][1]} (config/graphs/{METHODS[m][0]}.yaml)" for m in methods]
    lines += ["", "| method | episodes | successes | mean steps to success | planning ms p50 / p95 |",
              "|---|---|---|---|---|"]
    for m, v in per_method.items():
        steps = f"{v['mean_steps_to_success']:.0f}" if v["mean_steps_to_success"] is not None else "-"
        plan = f"{v['plan_ms_median']:.0f} / {v['plan_ms_p95']:.0f}" if v["plan_ms_median"] is not None else "-"
        lines.append(f"| {m} | {v['episodes']} | {v['successes']} | {steps} | {plan} |")
    lines += ["", "| method | seed | instruction | success | steps | wall s | chunks/s | trajectories |",
              "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        lines.append(f"| {r.method} | {r.seed} | {r.instruction} | {'yes' if r.success else 'no'} | {r.steps} | "
                     f"{r.wall_s:.1f} | {r.replan_hz:.1f} | {r.trajectories} |")
    lines += ["", "![success rate per method](success.png)", ""]
    if planned:
        lines += ["![the task questions' p(yes) for each chosen chunk, over the episode](answers_over_time.png)", ""]
    lines += ["![overhead camera, one row per episode](contact_sheet.png)", ""]
    lines += [f"- [{r.method}, seed {r.seed} (GIF)]({r.method}_seed{r.seed}.gif)" for r in reports if r.frames]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def cli_demo(args) -> int:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    reports = run_demo(task=args.task, episodes=args.episodes, out=args.out, methods=methods, policy=args.policy,
                       planner=args.planner)
    for m in methods:
        rs = [r for r in reports if r.method == m]
        print(f"[demo] {m}: {sum(r.success for r in rs)}/{len(rs)} episodes succeeded")
    print(f"[demo] report: {Path(args.out) / 'report.md'}")
    return 0 if reports else 1
