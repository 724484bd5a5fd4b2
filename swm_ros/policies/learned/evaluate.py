"""`swm eval policy`: closed-loop success rate of a base policy per task in the MuJoCo env.

    swm eval policy --policy learned --tasks reach,push,separate,pick,stack --episodes 20

Receding horizon, as the planner will run it: propose a chunk, execute its first
`execute` actions, propose again from the new observation, until the task succeeds or its
step budget runs out. Frames are rendered at `render_size` (the RealSense's 4:3, as
`swm collect` renders them) and handed raw to the policy, which crops and resizes them
itself. A learned policy gets the observation without privileged state; the scripted ones
(`scripted`, `noisy`) need it and get it. Episode seeds start at `seed` (evaluation seeds,
not the collection's). `rollout_episode` is the one-episode loop other benchmarks can reuse.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

PRIVILEGED_POLICIES = ("scripted", "noisy")


def rollout_episode(env: Any, policy: Any, seed: int, task: str, variant: str = "nominal", execute: int = 8,
                    privileged: bool = False, max_steps: int | None = None) -> dict[str, Any]:
    """One episode; returns {seed, success, steps, proposals}."""
    obs = env.reset(seed=seed, task=task, variant=variant)
    policy.reset(env.task, seed=seed)
    budget = int(max_steps or env.task.max_steps)
    chunk, k, proposals = None, 0, 0
    for step in range(budget):
        if chunk is None or k >= min(execute, len(chunk)):
            seen = obs if privileged else dataclasses.replace(obs, state=None)
            chunk, k = np.asarray(policy.propose(seen, 1))[0], 0
            proposals += 1
        obs = env.step(np.clip(chunk[k], -1.0, 1.0))
        k += 1
        if env.success():
            return {"seed": seed, "success": True, "steps": step + 1, "proposals": proposals}
    return {"seed": seed, "success": False, "steps": budget, "proposals": proposals}


def evaluate_policy(policy: Any, tasks: Sequence[str], episodes: int, variant: str = "nominal", seed: int = 100_000,
                    execute: int = 8, privileged: bool = False, render_size: tuple[int, int] = (240, 320),
                    camera: str = "overhead", robot: str = "nicol", progress: bool = True) -> dict[str, Any]:
    """Success rate per task over `episodes` seeded episodes each (seeds seed .. seed + episodes - 1)."""
    from tqdm import tqdm

    from swm_ros.envs import make_env

    env = make_env(robot=robot, task=tasks[0], variant=variant, image_size=tuple(render_size), cameras=(camera,))
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=len(tasks) * episodes, desc="eval policy", disable=not progress, dynamic_ncols=True)
    for task in tasks:
        runs = []
        for i in range(episodes):
            runs.append(rollout_episode(env, policy, seed + i, task, variant, execute, privileged))
            bar.update(1)
            bar.set_postfix(task=task, success=f"{np.mean([r['success'] for r in runs]):.2f}")
        ok = [r for r in runs if r["success"]]
        results[task] = {"episodes": episodes, "successes": len(ok), "success_rate": len(ok) / max(episodes, 1),
                         "mean_steps_to_success": float(np.mean([r["steps"] for r in ok])) if ok else None,
                         "runs": runs}
    bar.close()
    rates = [r["success_rate"] for r in results.values()]
    return {"tasks": results, "mean_success_rate": float(np.mean(rates)) if rates else 0.0,
            "variant": variant, "seed": seed, "execute": execute, "render_size": list(render_size),
            "seconds": round(time.perf_counter() - t0, 1)}


def _build_policy(name: str, checkpoint: str | None, seed: int):
    if name == "learned":
        from swm_ros.policies.learned.policy import load_policy

        return load_policy(checkpoint, seed=seed)
    from swm_ros.policies.scripted import make_policy

    return make_policy(name)


def cli_eval_policy(args) -> int:
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")      # headless rendering, as `swm collect`
    import torch

    torch.set_num_threads(args.threads)
    tasks = [t for t in args.tasks.split(",") if t]
    policy = _build_policy(args.policy, args.checkpoint, args.seed)
    report = evaluate_policy(policy, tasks, args.episodes, variant=args.variant, seed=args.seed,
                             execute=args.execute, privileged=args.policy in PRIVILEGED_POLICIES,
                             progress=not args.no_progress)
    report.update(policy=args.policy, checkpoint=args.checkpoint or ("shipped" if args.policy == "learned" else None))
    out = Path(args.out or f"runs/eval_policy/{args.policy}_{args.variant}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    for task, r in report["tasks"].items():
        print(f"{task:9s} {r['successes']:3d}/{r['episodes']:<3d} = {100 * r['success_rate']:5.1f} %")
    print(f"mean      {100 * report['mean_success_rate']:5.1f} %   ({report['seconds']} s) -> {out}")
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "tasks"} |
                         {"tasks": {t: {k: v for k, v in r.items() if k != "runs"} for t, r in report["tasks"].items()}}))
    return 0
