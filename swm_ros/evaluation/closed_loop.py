"""`swm eval closed-loop`: success of the base policy against the SWM planner in the MuJoCo world.

    swm eval closed-loop --json                                   # every task, 50 seeds, both splits
    swm eval closed-loop --tasks push --methods base,swm-grad --seeds 10 --split id

Methods:
  scripted    the privileged scripted expert (an upper reference, it reads the true state)
  base        the learned base policy alone: its first proposal is executed
  swm-<opt>   the base policy proposes N chunks; the planner (config/planner/<opt>.yaml) improves
              them with the world model (grad, mppi, cem or rank) and the best one is executed
  oracle-rank the rank planner with the simulator as its world model (evaluation/oracle.py): each
              proposal is executed in a snapshot of the scene and labelled from the true state,
              so it is the most any world model gives ranking those proposals (NicoL only)

Every method runs receding horizon: execute `execute_steps` actions of the chunk, observe,
propose / plan again, until the task succeeds or its step budget is spent. Splits: `id` is
the nominal scene, `ood` cycles through the unseen-colour, unseen-table and distractor
variants by seed. Episode e of (task, split) uses env seed `first_seed` + e (default
SEED_BASE) for every method, so methods see the same scenes; another `--first-seed` gives
scenes the benchmark's figures were not read from, to check a choice made on them.

`--env ogbench-cube-single` (or `-double`) runs the SWM paper's OGBench reach task instead
(touch OGBench's target cube with a finger pad, 200 steps, OGBench's 64x64 front camera):
the base policy is `ogbench_misaligned` (OGBench's noisy oracle with a 6 cm error in where it
thinks the cube is), `scripted` is OGBench's own oracle, and the world model is the shipped
`tiny-ogbench` (trained on OGBench SAQA) unless `--checkpoint` names another. OGBench has no
OOD variants here: split `id` only.

`--planner-config swm-grad=my_grad.yaml` runs a method with another planner config than
config/planner/<opt>.yaml (to try planner settings on the benchmark's scenes), and
`--task-config push=my_push.yaml` plans push (and lets oracle-rank rank) with another task
objective than config/tasks/push.yaml; the task's success check is the env's either way.

Each finished episode is appended to <out>/episodes.jsonl at once: an interrupted run
resumes where it stopped. <out>/settings.json records what the episodes depend on (env, world
model, base policy, proposals, execute steps, image size, step budget, each planner's full
config (oracle-rank's rank.yaml too), each planned task's full objective); a run in the same
<out> with other settings is refused rather than mixed in. Tasks, methods, splits and seeds may
change: they only pick which episodes run. The summary (JSON with a `results` list, Markdown,
bar chart) is rebuilt from all episodes on disk that match the requested grid.
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

SEED_BASE = 100_000          # evaluation scenes: far from the collection seeds' typical range
TASKS = ("reach", "push", "separate", "pick", "stack")
METHODS = ("base", "swm-grad", "swm-mppi", "swm-cem", "swm-rank", "oracle-rank", "scripted")
SPLITS = {"id": ("nominal",), "ood": ("ood_colors", "ood_table", "ood_distractor")}
NICOL_ENV = "nicol_tabletop"
OGBENCH_WORLD_MODEL = "tiny-ogbench"   # the shipped tiny model trained on OGBench cube-single SAQA
OGBENCH_TASKS = ("reach",)       # the OGBench task with a semantic goal (its task1..5 goals are not in the image)


@dataclass(frozen=True)
class EnvSetup:
    """What differs between the worlds the benchmark runs in."""

    tasks: tuple[str, ...]
    splits: tuple[str, ...]
    camera: str
    render_size: tuple[int, int]
    base_policy: str
    expert: str
    world_model: str          # the default checkpoint (a directory or a backend's shipped weights)


def env_setup(env: str) -> EnvSetup:
    if env in (NICOL_ENV, "nicol"):
        return EnvSetup(TASKS, tuple(SPLITS), "overhead", (240, 320), "learned", "scripted", "tiny")
    if env.startswith("ogbench"):
        from swm_ros.envs.ogbench_cube import cube_count

        cube_count(env)           # a clear error for an unknown OGBench env
        return EnvSetup(OGBENCH_TASKS, ("id",), "front_pixels", (64, 64), "ogbench_misaligned", "ogbench_oracle",
                        OGBENCH_WORLD_MODEL)
    raise ValueError(f"unknown env {env!r}; valid: {NICOL_ENV!r} or an OGBench cube env such as 'ogbench-cube-single'")
EPISODES_FILE = "episodes.jsonl"
SETTINGS_FILE = "settings.json"


@dataclass
class EpisodeResult:
    task: str
    split: str
    variant: str
    method: str
    seed: int
    success: bool
    steps: int
    plan_ms: list[float]          # per planned chunk (proposal + optimisation time)
    seconds: float
    # per planned chunk, the task stage the planner planned for (where a multi-step task
    # stalls); empty for methods without a planner
    stages: list[str] = field(default_factory=list)

    def key(self) -> tuple[str, str, str, int]:
        return self.task, self.split, self.method, self.seed


@dataclass
class ClosedLoopConfig:
    env: str = NICOL_ENV
    tasks: tuple[str, ...] | None = None         # None: all of the env's
    methods: tuple[str, ...] = METHODS
    splits: tuple[str, ...] | None = None        # None: all of the env's
    seeds: int = 50
    first_seed: int = SEED_BASE        # episode e runs on env seed first_seed + e
    num_proposals: int = 8
    execute_steps: int = 8
    render_size: tuple[int, int] | None = None   # None: the env's (NicoL 240x320, OGBench 64x64)
    world_model: str | None = None     # checkpoint directory or shipped weights; None: the env's
    base_policy: str | None = None     # None: the env's (NicoL learned, OGBench ogbench_misaligned)
    max_steps: int | None = None       # None: each task's own budget
    threads: int = 2
    out: str = "runs/closed_loop"
    planners: dict[str, str] = field(default_factory=dict)   # "swm-grad" -> planner YAML; else config/planner/grad.yaml
    objectives: dict[str, str] = field(default_factory=dict)  # "push" -> task objective YAML; else config/tasks/push.yaml

    def __post_init__(self) -> None:
        setup = env_setup(self.env)
        self.tasks = setup.tasks if self.tasks is None else self.tasks
        self.splits = setup.splits if self.splits is None else self.splits
        for t in self.tasks:
            if t not in setup.tasks:
                raise ValueError(f"unknown task {t!r} for env {self.env!r}; tasks are {setup.tasks}")
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"unknown method {m!r}; methods are {METHODS}")
        for s in self.splits:
            if s not in setup.splits:
                raise ValueError(f"unknown split {s!r} for env {self.env!r}; splits are {setup.splits}")
        if self.render_size is None:
            self.render_size = setup.render_size
        if self.base_policy is None:
            self.base_policy = setup.base_policy
        if self.world_model is None:
            self.world_model = setup.world_model
        if self.seeds < 1 or self.num_proposals < 1 or self.execute_steps < 1:
            raise ValueError("seeds, num_proposals and execute_steps must be >= 1")
        for method in self.planners:
            if not method.startswith("swm-") or method not in METHODS:
                raise ValueError(f"a planner config is for a swm-* method, not {method!r}")
            planner = self.planner_config(method)      # a missing or malformed file fails here
            if planner.method != method[4:]:
                raise ValueError(f"{self.planners[method]} is a {planner.method!r} planner; {method} needs "
                                 f"method: {method[4:]}")
        for task, path in self.objectives.items():
            if task not in setup.tasks:
                raise ValueError(f"a task objective for {task!r}: not a task of env {self.env!r} ({setup.tasks})")
            objective = self.task_objective(task)      # a missing or malformed file fails here
            if objective.config.task != task:
                raise ValueError(f"{path} is an objective for task {objective.config.task!r}, not {task!r}")
        if self.first_seed < 0:
            raise ValueError(f"first_seed must be >= 0, got {self.first_seed}")

    def planner_config(self, method: str):
        """The planner config a swm-* method runs with: its override, else
        config/planner/<opt>.yaml; oracle-rank's is config/planner/rank.yaml."""
        from swm_ros.planning.planner import load_planner_config

        if method == "oracle-rank":
            return load_planner_config("rank")
        return load_planner_config(self.planners.get(method, method[4:]))

    def task_objective(self, task: str):
        """The objective a task is planned with: its override, else config/tasks/<task>.yaml."""
        return _load_task_objective(self.objectives.get(task, task))


def variant_for(split: str, episode: int) -> str:
    variants = SPLITS[split]
    return variants[episode % len(variants)]


# ---------------------------------------------------------------------------------------
# one episode
# ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _load_task_objective(task_or_path: str):
    """A task objective, read from its YAML once per process, not once per episode (and once
    more for the oracle's labels)."""
    from swm_ros.planning.tasks import load_task_objective

    return load_task_objective(task_or_path)


class Controller:
    """What picks the next chunk for one method: a policy alone, or policy + planner."""

    def __init__(self, method: str, cfg: ClosedLoopConfig, model=None, env=None):
        from swm_ros.policies.scripted import make_policy

        self.method = method
        self.cfg = cfg
        setup = env_setup(cfg.env)
        self.camera = setup.camera
        self.policy = make_policy(setup.expert if method == "scripted" else cfg.base_policy)
        self.planner = None
        if method.startswith("swm-"):
            from swm_ros.planning.planner import Planner

            self.planner = Planner(cfg.planner_config(method), model=model,
                                   image_processor=lambda frame: model.process_frames(frame)[0],
                                   task_objectives=cfg.task_objective)
        self.oracle = None
        if method == "oracle-rank":
            from swm_ros.evaluation.oracle import SimulatorOracle
            from swm_ros.planning.planner import Planner

            self.oracle = SimulatorOracle(env)
            self.planner = Planner(cfg.planner_config(method), query=self.oracle,
                                   task_objectives=cfg.task_objective)

    def reset(self, spec, seed: int) -> None:
        self.policy.reset(spec, seed=seed)
        if self.planner is not None:
            if self.oracle is not None:
                self.oracle.set_task(spec, self.cfg.task_objective(spec.name))
            self.planner.set_task(spec)

    def next_chunk(self, obs) -> np.ndarray:
        if self.planner is None:
            return np.asarray(self.policy.propose(obs, 1))[0]
        proposals = np.asarray(self.policy.propose(obs, self.cfg.num_proposals))
        report = self.planner.plan(obs.images[self.camera], proposals, obs.proprio)
        self.planned(obs, proposals, report)
        return report.chunk

    def planned(self, obs, proposals: np.ndarray, report) -> None:
        """Called after each plan, before any of its chunk is executed (the scene is still the
        one planned on): for subclasses that look at what was planned. Does nothing here."""


def drive(env, controller: Controller, obs, budget: int, execute_steps: int
          ) -> tuple[int, bool, list[float], list[str]]:
    """Receding horizon from `obs` until success or `budget` steps: a chunk from the controller,
    its first `execute_steps` actions executed, observe, again. Returns the steps taken, success,
    and per chunk the planning time (ms) and the task stage planned for (planners only)."""
    steps, plan_ms, stages, success = 0, [], [], env.success()
    while steps < budget and not success:
        tp = time.perf_counter()
        chunk = np.clip(controller.next_chunk(obs), -1.0, 1.0)
        plan_ms.append((time.perf_counter() - tp) * 1e3)
        if controller.planner is not None:
            stages.append(controller.planner.stage.name)
        for action in chunk[:execute_steps]:
            obs = env.step(action.astype(np.float32))
            steps += 1
            success = env.success()
            if success or steps >= budget:
                break
    return steps, bool(success), plan_ms, stages


def run_episode(env, controller: Controller, task: str, split: str, episode: int, cfg: ClosedLoopConfig
                ) -> EpisodeResult:
    t0 = time.perf_counter()
    seed = cfg.first_seed + episode
    variant = variant_for(split, episode)
    obs = env.reset(seed=seed, task=task, variant=variant)
    spec = env.task
    controller.reset(spec, seed)
    steps, success, plan_ms, stages = drive(env, controller, obs, cfg.max_steps or spec.max_steps, cfg.execute_steps)
    return EpisodeResult(task=task, split=split, variant=variant, method=controller.method, seed=seed,
                         success=bool(success), steps=steps, plan_ms=[round(x, 3) for x in plan_ms],
                         seconds=round(time.perf_counter() - t0, 3), stages=stages)


# ---------------------------------------------------------------------------------------
# the grid, resumable
# ---------------------------------------------------------------------------------------

def read_episodes(path: Path) -> list[EpisodeResult]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(EpisodeResult(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue          # a line cut short by an interruption: that episode runs again
    return out


def run_closed_loop(cfg: ClosedLoopConfig, progress: bool = True) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from swm_ros.envs import make_env

    torch.set_num_threads(cfg.threads)
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, cfg)
    path = out / EPISODES_FILE
    done = {r.key() for r in read_episodes(path)}
    todo = [(t, s, m, e) for t in cfg.tasks for s in cfg.splits for m in cfg.methods for e in range(cfg.seeds)
            if (t, s, m, cfg.first_seed + e) not in done]
    model = None
    if any(m.startswith("swm-") for m in cfg.methods):
        from swm_ros.models.registry import load_world_model

        model = load_world_model(cfg.world_model, proprio=True)
    env = make_env(cfg.env, task=cfg.tasks[0], image_size=tuple(cfg.render_size),
                   cameras=(env_setup(cfg.env).camera,), seed=cfg.first_seed)
    controllers: dict[str, Controller] = {}
    try:
        with path.open("a") as f:
            for task, split, method, e in tqdm(todo, desc="closed loop", unit="ep", disable=not progress):
                if method not in controllers:
                    controllers[method] = Controller(method, cfg, model, env)
                r = run_episode(env, controllers[method], task, split, e, cfg)
                f.write(json.dumps(asdict(r)) + "\n")
                f.flush()
    finally:
        env.close()
    return summarise(cfg, read_episodes(path))


def episode_settings(cfg: ClosedLoopConfig) -> dict[str, Any]:
    """What this run's episodes depend on (None: not used by the methods run)."""
    proposing = [m for m in cfg.methods if m.startswith("swm-") or m == "oracle-rank"]
    planners = {m: asdict(cfg.planner_config(m)) for m in proposing}
    objectives = {t: asdict(cfg.task_objective(t).config) for t in cfg.tasks} if proposing else {}
    learned = any(m != "scripted" for m in cfg.methods)          # the expert is the env's, not --policy
    return {"env": cfg.env, "render_size": list(cfg.render_size), "max_steps": cfg.max_steps,
            "execute_steps": cfg.execute_steps, "base_policy": cfg.base_policy if learned else None,
            "world_model": cfg.world_model if any(m.startswith("swm-") for m in proposing) else None,
            "num_proposals": cfg.num_proposals if proposing else None, "planners": planners,
            "objectives": objectives}


def check_settings(out: Path, cfg: ClosedLoopConfig) -> None:
    """Refuse to add episodes to `out` that were run with other settings than those already
    there; record the union (methods and their planners, tasks and their objectives accumulate
    across runs)."""
    path = out / SETTINGS_FILE
    now = json.loads(json.dumps(episode_settings(cfg)))       # as it reads back (tuples -> lists)
    if not path.is_file():
        path.write_text(json.dumps(now, indent=2) + "\n")
        return
    before = json.loads(path.read_text())
    keyed = {"planners": "planner of", "objectives": "objective of"}      # per method / per task
    differ = [k for k in now if k not in keyed and None not in (now[k], before.get(k)) and now[k] != before.get(k)]
    for k, what in keyed.items():
        differ += [f"{what} {name}" for name, c in now[k].items() if name in before.get(k, {}) and c != before[k][name]]
    if differ:
        raise ValueError(f"{out} holds episodes run with other settings ({', '.join(differ)}; see {path}): "
                         f"give another --out, or the same settings to resume")
    merged = {k: before.get(k) if now[k] is None else now[k] for k in now}
    for k in keyed:
        merged[k] = {**before.get(k, {}), **now[k]}
    path.write_text(json.dumps(merged, indent=2) + "\n")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (sound at 0 % and 100 % with few episodes)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)      # exact: rounding left 0.999...
    return lo, hi


def summarise(cfg: ClosedLoopConfig, episodes: Iterable[EpisodeResult]) -> dict[str, Any]:
    wanted = {(t, s, m) for t in cfg.tasks for s in cfg.splits for m in cfg.methods}
    seeds = {cfg.first_seed + e for e in range(cfg.seeds)}
    groups: dict[tuple[str, str, str], list[EpisodeResult]] = {}
    for r in episodes:
        if (r.task, r.split, r.method) in wanted and r.seed in seeds:
            groups.setdefault((r.task, r.split, r.method), []).append(r)
    results = []
    for (task, split, method), rs in sorted(groups.items()):
        wins = sum(r.success for r in rs)
        ms = [x for r in rs for x in r.plan_ms]
        lo, hi = wilson_interval(wins, len(rs))
        results.append({
            "task": task, "split": split, "method": method, "episodes": len(rs),
            "success_rate": wins / len(rs), "ci95": [lo, hi],
            "steps_mean": float(np.mean([r.steps for r in rs])),
            "plan_ms_median": float(np.median(ms)) if ms else None,
            "plan_ms_p95": float(np.percentile(ms, 95)) if ms else None,
        })
    return {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
            "results": results}


# ---------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------

def to_markdown(summary: dict[str, Any]) -> str:
    c = summary["config"]
    first = c.get("first_seed", SEED_BASE)
    lines = ["# Closed-loop evaluation", "",
             f"Env `{c.get('env', NICOL_ENV)}`, world model `{c['world_model']}`, base policy `{c['base_policy']}`, {c['num_proposals']} proposals, "
             f"execute {c['execute_steps']} actions then replan; seeds {first}..{first + c['seeds'] - 1}"
             + "".join(f"; {m} planner `{path}`" for m, path in sorted(c.get("planners", {}).items()))
             + "".join(f"; {t} objective `{path}`" for t, path in sorted(c.get("objectives", {}).items())) + ".", "",
             "| task | split | method | success | 95 % CI | episodes | steps | plan ms median | plan ms p95 |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda x: "-" if x is None else f"{x:.1f}"
    for r in summary["results"]:
        lines.append(f"| {r['task']} | {r['split']} | {r['method']} | {100 * r['success_rate']:.1f} % | "
                     f"{100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f} % | {r['episodes']} | {r['steps_mean']:.0f} | "
                     f"{fmt(r['plan_ms_median'])} | {fmt(r['plan_ms_p95'])} |")
    return "\n".join(lines) + "\n"


def plot_results(summary: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = summary["results"]
    if not results:
        return
    groups = sorted({(r["task"], r["split"]) for r in results})
    methods = [m for m in METHODS if any(r["method"] == m for r in results)]
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    for i, m in enumerate(methods):
        xs, ys, err = [], [], [[], []]
        for g, (task, split) in enumerate(groups):
            r = next((r for r in results if (r["task"], r["split"], r["method"]) == (task, split, m)), None)
            if r is None:
                continue
            xs.append(g + (i - (len(methods) - 1) / 2) * width)
            ys.append(100 * r["success_rate"])
            err[0].append(100 * (r["success_rate"] - r["ci95"][0]))
            err[1].append(100 * (r["ci95"][1] - r["success_rate"]))
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=m)
    ax.set_xticks(range(len(groups)), [f"{t}\n{s}" for t, s in groups])
    ax.set(ylabel="success rate (%)", ylim=(0, 105), title="closed loop: base policy vs SWM planner")
    ax.legend(fontsize=8, ncol=min(len(methods), 3))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(summary: dict[str, Any], out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(to_markdown(summary))
    plot_results(summary, out / "success.png")


def _overrides(flag: str, metavar: str, example: str, pairs: list[str]) -> dict[str, str]:
    """`NAME=YAML` pairs of a repeatable flag -> {NAME: YAML}."""
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} takes {metavar} (e.g. {example}), got {pair!r}")
        out[name] = path
    return out


def planner_config_overrides(pairs: list[str]) -> dict[str, str]:
    """--planner-config METHOD=YAML pairs -> {method: YAML}."""
    return _overrides("--planner-config", "METHOD=YAML", "swm-grad=my_grad.yaml", pairs)


def task_objective_overrides(pairs: list[str]) -> dict[str, str]:
    """--task-config TASK=YAML pairs -> {task: YAML}."""
    return _overrides("--task-config", "TASK=YAML", "push=my_push.yaml", pairs)


def cli_eval_closed_loop(args: Any) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")     # before the env check below imports MuJoCo (OGBench)
    csv = lambda s: tuple(x for x in s.split(",") if x)
    try:
        cfg = ClosedLoopConfig(env=args.env, tasks=None if args.tasks is None else csv(args.tasks),
                               methods=csv(args.methods), splits=None if args.split == "both" else (args.split,),
                               seeds=args.seeds, num_proposals=args.num_proposals, execute_steps=args.execute_steps,
                               first_seed=SEED_BASE if args.first_seed is None else args.first_seed,
                               world_model=args.checkpoint, base_policy=args.policy,
                               max_steps=args.max_steps, threads=args.threads, out=args.out,
                               planners=planner_config_overrides(args.planner_config or []),
                               objectives=task_objective_overrides(args.task_config or []))
        summary = run_closed_loop(cfg, progress=not args.json)
    except (ValueError, FileNotFoundError) as e:
        print(f"swm eval closed-loop: {e}")
        return 2
    write_reports(summary, Path(cfg.out))
    if args.json:
        print(json.dumps(summary))
    else:
        print(to_markdown(summary))
        print(f"-> {cfg.out}/summary.json, report.md, success.png, episodes.jsonl")
    return 0
