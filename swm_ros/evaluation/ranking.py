"""`swm eval ranking`: does the world model rank the base policy's proposals as the simulator would?

SAQA accuracy scores a model on random (state, actions, question) rows; a planner needs
something narrower: among the chunks proposed from *one* state, which is best for the task.
This runs planner episodes (swm-grad unless `--planner` says otherwise; the planner drives, as
in the closed-loop benchmark) and at every replan scores the same proposals twice with the
active stage's objective: with the world model, and with the `SimulatorOracle` (each chunk
executed from a snapshot of the scene and labelled from the true state). Per task it reports,
over the replans where the oracle's scores differ by more than `min_spread` (elsewhere any
choice is as good):

  top1_agrees     the model's best proposal is one of the oracle's best
  random_top1     the same for a proposal picked at random (the bar to beat)
  regret          oracle score of the best proposal - of the model's pick (mean)
  best_minus_mean oracle score of the best proposal - of the average one (what ranking can win)
  recovered       1 - regret / best_minus_mean: the share of that gain the model's ranking gets
  spearman        rank correlation of the two score vectors (mean over replans)
  planned_recovered  the same share for the chunk the planner executes (its pick, refined by
                  the gradient steps for swm-grad): above `recovered` when refining helps, above
                  1 when the refined chunk beats every raw proposal
  planned_beats_best share of replans where that chunk scores above the oracle's best proposal
  pick_overrated  the model's score of its pick - the oracle's (mean): how much the model
                  overrates the proposal it likes best
  planned_overrated the same for the executed chunk: above `pick_overrated` when the gradient
                  steps find what the model likes more than what the chunk does

`--planner` picks the planner config (config/planner/<name>.yaml or a YAML path) that drives the
episodes, so planner settings can be compared by what the simulator says of their chunks.

NicoL only (the oracle restores MuJoCo snapshots).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swm_ros.evaluation.closed_loop import (NICOL_ENV, SEED_BASE, ClosedLoopConfig, Controller,
                                           env_setup, run_episode, task_objective_overrides)


@dataclass
class RankingConfig:
    tasks: tuple[str, ...] = ("push", "separate")
    seeds: int = 20
    first_seed: int = SEED_BASE + 100_000      # not the benchmark's scenes
    num_proposals: int = 8
    execute_steps: int = 8
    world_model: str | None = None             # None: the shipped model
    planner: str = "grad"                      # config/planner/<name>.yaml or a YAML path
    objectives: dict[str, str] = field(default_factory=dict)   # task -> objective YAML; else config/tasks/<task>.yaml
    min_spread: float = 0.05                   # oracle best - worst below this: the replan is not counted
    threads: int = 1
    out: str = "runs/ranking"

    def __post_init__(self) -> None:
        if self.num_proposals < 2:
            raise ValueError(f"ranking needs at least 2 proposals, got {self.num_proposals}")
        if self.min_spread < 0:
            raise ValueError(f"min_spread must be >= 0, got {self.min_spread}")


def ranking_metrics(model_scores: list[np.ndarray], oracle_scores: list[np.ndarray], min_spread: float,
                    planned_scores: list[float] | None = None,
                    planned_model_scores: list[float] | None = None) -> dict[str, Any]:
    """The module docstring's figures from per-replan score vectors (same proposals, same order)
    and, when given, the oracle's and the model's scores of the chunk the planner chose at each
    replan."""
    from scipy.stats import spearmanr

    pairs = [(np.asarray(m, float), np.asarray(o, float)) for m, o in zip(model_scores, oracle_scores)]
    keep = [o.max() - o.min() > min_spread for _, o in pairs]
    used = [pair for pair, k in zip(pairs, keep) if k]
    out: dict[str, Any] = {"replans": len(pairs), "informative": len(used)}
    if not used:
        return out
    best = [o.max() - 1e-9 for _, o in used]
    regret = np.mean([o.max() - o[m.argmax()] for m, o in used])
    gain = np.mean([o.max() - o.mean() for _, o in used])
    rho = [spearmanr(m, o)[0] for m, o in used if np.ptp(m) > 0]
    out.update(top1_agrees=float(np.mean([o[m.argmax()] >= b for (m, o), b in zip(used, best)])),
               random_top1=float(np.mean([np.mean(o >= b) for (_, o), b in zip(used, best)])),
               regret=float(regret), best_minus_mean=float(gain),
               recovered=float(1.0 - regret / gain),      # gain > 0: the scores spread on every replan used
               spearman=float(np.nanmean(rho)) if rho else None,
               pick_overrated=float(np.mean([m.max() - o[m.argmax()] for m, o in used])))
    if planned_scores is not None:
        planned = np.asarray(planned_scores, float)[np.asarray(keep)]
        out.update(planned_recovered=float(np.mean([p - o.mean() for p, (_, o) in zip(planned, used)]) / gain),
                   planned_beats_best=float(np.mean([p > o.max() + 1e-9 for p, (_, o) in zip(planned, used)])))
        if planned_model_scores is not None:
            believed = np.asarray(planned_model_scores, float)[np.asarray(keep)]
            out["planned_overrated"] = float(np.mean(believed - planned))
    return out


class _ScoringController(Controller):
    """The config's first method run exactly as the benchmark runs it, which also scores every
    replan's proposals with the world model and with the simulator (the judge), on the stage the
    planner chose, and the chunk the planner chose with the judge."""

    def __init__(self, cfg: ClosedLoopConfig, model, env):
        from swm_ros.evaluation.oracle import SimulatorOracle

        super().__init__(cfg.methods[0], cfg, model, env)
        self.judge = SimulatorOracle(env)
        self.model_scores: list[np.ndarray] = []
        self.oracle_scores: list[np.ndarray] = []
        self.planned_scores: list[float] = []
        self.planned_model_scores: list[float] = []

    def reset(self, spec, seed: int) -> None:
        super().reset(spec, seed)
        self.judge.set_task(spec, self.cfg.task_objective(spec.name))

    def planned(self, obs, proposals: np.ndarray, report) -> None:
        import torch

        from swm_ros.planning.objective import RemoteScorer

        # the model's scores are the planner's own ranking of these proposals; the judge scores
        # them and the chosen chunk on the same stage's questions
        chunks = torch.from_numpy(np.asarray(proposals, dtype=np.float32))
        chosen = torch.from_numpy(np.asarray(report.chunk, dtype=np.float32)[None])
        o = RemoteScorer(self.judge, obs.images[self.camera]).objective(report.questions, self.planner.config.objective) \
            .score(torch.cat([chunks, chosen]))
        o = np.asarray(o, dtype=float)
        self.model_scores.append(report.outcome.proposal_scores)
        self.oracle_scores.append(o[:-1])
        self.planned_scores.append(float(o[-1]))
        self.planned_model_scores.append(float(report.outcome.best_score))


def rank_agreement(cfg: RankingConfig, progress: bool = True) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from swm_ros.envs import make_env
    from swm_ros.models.registry import load_world_model
    from swm_ros.planning.planner import load_planner_config

    method = f"swm-{load_planner_config(cfg.planner).method}"   # a missing or bad config fails before any work
    torch.set_num_threads(cfg.threads)
    os.environ.setdefault("MUJOCO_GL", "egl")
    loop_cfg = ClosedLoopConfig(env=NICOL_ENV, tasks=cfg.tasks, methods=(method,), splits=("id",),
                                seeds=cfg.seeds, first_seed=cfg.first_seed, num_proposals=cfg.num_proposals,
                                execute_steps=cfg.execute_steps, world_model=cfg.world_model, threads=cfg.threads,
                                planners={method: cfg.planner}, objectives=cfg.objectives)
    model = load_world_model(loop_cfg.world_model, proprio=True)
    env = make_env(NICOL_ENV, task=cfg.tasks[0], image_size=tuple(loop_cfg.render_size),
                   cameras=(env_setup(NICOL_ENV).camera,), seed=cfg.first_seed)
    results = []
    try:
        for task in cfg.tasks:
            controller = _ScoringController(loop_cfg, model, env)
            for e in tqdm(range(cfg.seeds), desc=f"ranking {task}", unit="ep", disable=not progress):
                run_episode(env, controller, task, "id", e, loop_cfg)
            results.append({"task": task, **ranking_metrics(controller.model_scores, controller.oracle_scores,
                                                            cfg.min_spread, controller.planned_scores,
                                                            controller.planned_model_scores)})
    finally:
        env.close()
    summary = {"config": asdict(cfg), "world_model": str(loop_cfg.world_model), "results": results}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ranking.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def to_markdown(summary: dict[str, Any]) -> str:
    c = summary["config"]
    lines = [f"# Proposal ranking: world model `{summary['world_model']}` against the simulator", "",
             f"{c['num_proposals']} proposals per replan, seeds {c['first_seed']}..{c['first_seed'] + c['seeds'] - 1}, "
             f"replans counted where the oracle's scores spread > {c['min_spread']}; planner "
             f"`{c.get('planner', 'grad')}` drives"
             + "".join(f"; {t} objective `{path}`" for t, path in sorted(c.get("objectives", {}).items())) + ".", "",
             "| task | replans (counted) | top-1 agrees | random top-1 | regret | best - mean | recovered | spearman "
             "| planned: recovered | planned beats best | overrated: pick | overrated: planned |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda r, k: f"{r[k]:.2f}" if r.get(k) is not None else ""
    for r in summary["results"]:
        if "top1_agrees" not in r:
            lines.append(f"| {r['task']} | {r['replans']} (0) | | | | | | | | | | |")
            continue
        lines.append(f"| {r['task']} | {r['replans']} ({r['informative']}) | {r['top1_agrees']:.3f} | "
                     f"{r['random_top1']:.3f} | {r['regret']:.3f} | {r['best_minus_mean']:.3f} | "
                     f"{r['recovered']:.2f} | {fmt(r, 'spearman') or '-'} | {fmt(r, 'planned_recovered')} | "
                     f"{fmt(r, 'planned_beats_best')} | {fmt(r, 'pick_overrated')} | {fmt(r, 'planned_overrated')} |")
    return "\n".join(lines) + "\n"


def cli_eval_ranking(args: Any) -> int:
    try:
        cfg = RankingConfig(tasks=tuple(t for t in args.tasks.split(",") if t), seeds=args.seeds,
                            first_seed=args.first_seed, num_proposals=args.num_proposals,
                            world_model=args.checkpoint, planner=args.planner, min_spread=args.min_spread,
                            threads=args.threads, out=args.out,
                            objectives=task_objective_overrides(args.task_config or []))
        summary = rank_agreement(cfg, progress=not args.json)
    except (ValueError, FileNotFoundError) as e:
        print(f"swm eval ranking: {e}")
        return 2
    (Path(cfg.out) / "ranking.md").write_text(to_markdown(summary))
    print(json.dumps(summary) if args.json else to_markdown(summary))
    return 0
