"""`swm collect-branches`: counterfactual episodes, every candidate chunk from one planner state.

    swm collect-branches --out data/nicol_branches --episodes 200 --tasks reach,push,separate,pick,stack \
                         --workers 2

Episodes from `swm collect` show the world model one future per state, the one the collecting
policy took. The planner asks something else: of the chunks proposed from *one* state, which
does what the task wants (`swm eval ranking` measures how often the model gets that right).
This runs the closed-loop planner as the benchmark does (swm-grad: the learned base policy
proposes, the planner refines with the world model) and at every `branch_every`-th replan
executes each candidate from a snapshot of the scene for `branch_steps` steps: the planner's
chosen chunk (where gradient steps went, so where the model is most likely fooled) and the
base policy's raw proposals. Each candidate is recorded as a short episode, the scene is
restored, and the source episode goes on with the chosen chunk.

The output is an ordinary collection (docs/data-format.md): <out>/episodes/ep_SSSSSS_RRR_B.h5
(source episode, replan, candidate; candidate 0 is the planner's) and manifest.json, with every
branch of a source episode in that episode's split. `swm saqa --config config/saqa/branches.yaml`
(start frame 0 only: siblings share that frame) and a training mix (data.mix) take it unchanged.
Source episode i is fixed by (--seed, i) as in `swm collect`; a re-run skips source episodes
whose branches are all listed in the manifest.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swm_ros.data.collect import (EPISODE_DIR, CollectConfig, CollectError, EpisodePlan, _WORKER, _csv, _env,
                                  _frame, _processed, parse_size, plan_episodes, run_jobs)
from swm_ros.data.episodes import EpisodeMeta, EpisodeRecorder
from swm_ros.data.manifest import DEFAULT_FRACTIONS, read_manifest, write_manifest

PLANNER_CANDIDATE = "planner"      # the `policy` of candidate 0; the raw proposals are "proposal"


@dataclass
class BranchConfig:
    out: str
    episodes: int = 10                    # source episodes
    tasks: tuple[str, ...] = ("push",)
    variants: tuple[str, ...] = ("nominal",)
    method: str = "swm-grad"              # the closed-loop method that drives the source episodes
    world_model: str | None = None        # None: the shipped model
    num_proposals: int = 8
    execute_steps: int = 8                # actions of the chosen chunk executed per replan
    branch_every: int = 1                 # branch at replans 0, k, 2k, ...
    branch_steps: int = 16                # actions per branch (the chunk length)
    max_steps: int | None = None          # source episode budget; None: the task's own
    workers: int = 1
    image_size: tuple[int, int] = (64, 64)
    seed: int = 0
    compression: str = "lzf"
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS

    def __post_init__(self) -> None:
        if not self.method.startswith("swm-"):
            raise ValueError(f"branches need a planner method (swm-grad, swm-mppi, ...), got {self.method!r}")
        for name in ("episodes", "num_proposals", "execute_steps", "branch_every", "branch_steps", "workers"):
            if getattr(self, name) < (0 if name == "episodes" else 1):
                raise ValueError(f"{name} must be >= 1 (episodes >= 0), got {getattr(self, name)}")

    def collect_config(self) -> CollectConfig:
        """The `swm collect` settings the source episodes and stored frames follow."""
        return CollectConfig(out=self.out, episodes=self.episodes, tasks=self.tasks, variants=self.variants,
                             policies={self.method: 1.0}, image_size=self.image_size, seed=self.seed,
                             compression=self.compression, fractions=self.fractions)

    def manifest_config(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("workers")
        return {"kind": "branches", **d}


def _controller(cfg: BranchConfig, env: Any):
    """The closed-loop controller of `cfg.method`, one per worker; `on_replan(obs, candidates,
    stage)`, set per source episode, runs after each plan, before any of its chunk is executed."""
    from swm_ros.evaluation.closed_loop import NICOL_ENV, ClosedLoopConfig, Controller

    class BranchingController(Controller):
        on_replan: Callable[[Any, np.ndarray, str], None]

        def planned(self, obs, proposals: np.ndarray, report) -> None:
            self.on_replan(obs, np.concatenate([report.chunk[None], proposals]).astype(np.float32), report.stage)

    key = (cfg.method, cfg.world_model, cfg.num_proposals, cfg.execute_steps)
    if _WORKER.get("controller_key") != key:
        import torch

        from swm_ros.models.registry import load_world_model

        torch.set_num_threads(1)
        loop = ClosedLoopConfig(env=NICOL_ENV, methods=(cfg.method,), num_proposals=cfg.num_proposals,
                                execute_steps=cfg.execute_steps, world_model=cfg.world_model, threads=1)
        model = load_world_model(loop.world_model, proprio=True)
        _WORKER["controller"], _WORKER["controller_key"] = BranchingController(cfg.method, loop, model, env), key
    return _WORKER["controller"]


def _record_branch(cfg: BranchConfig, env: Any, obs: Any, chunk: np.ndarray, meta: EpisodeMeta, path: Path) -> int:
    """Execute `chunk` from the current scene, recording it; the caller restores the scene."""
    processors = _WORKER["processors"]
    rec = EpisodeRecorder(path, meta, cameras=("overhead",), compression=cfg.compression,
                          image_processing={c: p.config.to_dict() for c, p in processors.items()})
    obs, state = _frame(env, obs, ("overhead",))
    rec.add(_processed(obs, processors), state=state)
    for action in chunk[:cfg.branch_steps]:
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        obs, state = _frame(env, env.step(action), ("overhead",))
        rec.add(_processed(obs, processors), action, state=state)
    rec.finish(success=bool(env.success()))
    return len(rec)


def run_source_episode(cfg: BranchConfig, plan: EpisodePlan) -> list[dict[str, Any]]:
    """Drive one source episode with the planner, branching at its replans; the branches' manifest entries."""
    from swm_ros.evaluation.closed_loop import drive

    env = _env(cfg.collect_config(), plan)
    controller = _controller(cfg, env)
    obs = env.reset(seed=plan.seed, task=plan.task, variant=plan.variant)
    spec = env.task
    entries: list[dict[str, Any]] = []
    replans = itertools.count()

    def branch(obs: Any, candidates: np.ndarray, stage: str) -> None:
        replan = next(replans)
        if replan % cfg.branch_every:
            return
        snap = env.snapshot()
        for b, candidate in enumerate(candidates):
            eid = f"{plan.episode_id}_{replan:03d}_{b}"
            policy = PLANNER_CANDIDATE if b == 0 else "proposal"
            meta = EpisodeMeta(episode_id=eid, robot="nicol", task=spec.name, task_objects=tuple(spec.objects),
                               instruction=spec.instruction, variant=spec.variant, seed=plan.seed, policy=policy,
                               control_dt=float(env.control_dt), max_steps=cfg.branch_steps,
                               extra={"index": plan.index, "split": plan.split, "source": plan.episode_id,
                                      "replan": replan, "step": int(snap.step), "candidate": b, "stage": stage})
            file = f"{EPISODE_DIR}/{eid}.h5"
            try:
                n = _record_branch(cfg, env, obs, candidate, meta, Path(cfg.out) / file)
            finally:
                env.restore(snap)
            entries.append({"episode_id": eid, "index": plan.index, "file": file, "task": spec.name,
                            "variant": spec.variant, "policy": policy, "seed": plan.seed, "split": plan.split,
                            "success": bool(meta.success), "num_frames": n, "source": plan.episode_id,
                            "replan": replan})

    controller.on_replan = branch
    controller.reset(spec, plan.seed)
    drive(env, controller, obs, cfg.max_steps if cfg.max_steps is not None else spec.max_steps, cfg.execute_steps)
    return entries


def _worker(args: tuple[BranchConfig, EpisodePlan]) -> list[dict[str, Any]]:
    return run_source_episode(*args)


def collect_branches(cfg: BranchConfig, progress: bool = True) -> dict[str, Any]:
    """Collect (or complete) the branch collection; returns a summary."""
    out = Path(cfg.out)
    (out / EPISODE_DIR).mkdir(parents=True, exist_ok=True)
    for stale in (out / EPISODE_DIR).glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    manifest = read_manifest(out)
    if manifest is not None:
        # the same --out with other settings would mix two collections' branches (more episodes extend it)
        settings = json.loads(json.dumps(cfg.manifest_config()))      # as the manifest holds them (lists)
        held = manifest["config"]
        other = sorted(k for k in {*settings, *held} if k != "episodes" and held.get(k) != settings.get(k))
        if other:
            raise CollectError(f"{out} holds branches collected with other settings ({other}); use a new --out")
    listed = manifest["episodes"] if manifest else []
    done_sources = {e["source"] for e in listed if (out / e["file"]).is_file()}
    entries = [e for e in listed if e["source"] in done_sources]
    plans = plan_episodes(cfg.collect_config())
    pending = [p for p in plans if p.episode_id not in done_sources]
    write_manifest(out, cfg.manifest_config(), entries)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(pending), desc="branches", unit="ep")
    branches = 0
    try:
        for got in run_jobs(_worker, [(cfg, p) for p in pending], cfg.workers):
            entries.extend(got)
            branches += len(got)
            write_manifest(out, cfg.manifest_config(), entries)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(branches=branches)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    planner = [e for e in entries if e["policy"] == PLANNER_CANDIDATE]
    return {"out": str(out), "sources": len(plans), "collected": len(pending), "skipped": len(plans) - len(pending),
            "branches": len(entries), "new_branches": branches, "seconds": seconds,
            "planner_branch_success": float(np.mean([e["success"] for e in planner])) if planner else float("nan"),
            "splits": {s: sum(e["split"] == s for e in entries) for s in ("train", "val", "test", "ood")}}


def cli_collect_branches(args: Any) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        cfg = BranchConfig(out=args.out, episodes=args.episodes, tasks=_csv(args.tasks), variants=_csv(args.variants),
                           method=args.method, world_model=args.checkpoint, num_proposals=args.num_proposals,
                           execute_steps=args.execute_steps, branch_every=args.branch_every,
                           branch_steps=args.branch_steps, max_steps=args.max_steps, workers=args.workers,
                           image_size=parse_size(args.image_size), seed=args.seed)
        s = collect_branches(cfg)
    except (CollectError, ValueError, FileNotFoundError) as e:
        print(f"swm collect-branches: {e}")
        return 2
    print(f"{s['collected']} source episodes run, {s['skipped']} already on disk; {s['new_branches']} branches in "
          f"{s['seconds']:.1f} s ({s['branches']} in all); planner's branches ending in success "
          f"{s['planner_branch_success']:.2f}; splits {s['splits']} -> {s['out']}")
    return 0
