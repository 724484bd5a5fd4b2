"""`swm bench planner`: wall time to plan one chunk, per method, with a world model on the CPU.

    swm bench planner --model config/models/tiny.yaml --threads 2 --json

The model is a fresh one of the given config (timing does not depend on its weights) or a
checkpoint directory. Each method plans `--repeats` times from the same image and the same
base-policy-sized proposals (N x 16 x 5) for the push objective; the figure is the median
(and the 10th / 90th percentile), because this machine's CPU speed drifts with other work.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("grad", "mppi", "cem", "rank")


def _load_model(model: str):
    from swm_ros.models.registry import build_world_model, load_world_model

    p = Path(model)
    if p.suffix in (".yaml", ".yml"):
        from swm_ros.config import load_yaml

        return build_world_model("tiny", load_yaml(p)), f"fresh tiny model from {p}"
    return load_world_model(model), f"checkpoint {model}"


def run_planner_bench(model: str = "config/models/tiny.yaml", methods: tuple[str, ...] = METHODS,
                      threads: int = 2, repeats: int = 10, proposals: int = 4, horizon: int = 16,
                      task: str = "push", show_progress: bool = False) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from swm_ros.envs.base import ACTION_DIM, TaskSpec
    from swm_ros.planning.planner import Planner, load_planner_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    wm, source = _load_model(model)
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    props = np.random.default_rng(1).uniform(-0.8, 0.8, (proposals, horizon, ACTION_DIM)).astype(np.float32)
    spec = TaskSpec(task, ("red_block", "blue_block")[:2 if task in ("push", "separate", "stack") else 1], task)
    out: dict[str, Any] = {"model": source, "parameters": wm.num_parameters(), "threads": threads,
                           "proposals": proposals, "horizon": horizon, "task": task, "repeats": repeats,
                           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                           "load_average_before": list(os.getloadavg()), "methods": {}}
    with tqdm(total=len(methods) * (repeats + 1), desc="bench planner", disable=not show_progress) as bar:
        for method in methods:
            cfg = load_planner_config(method)
            planner = Planner(cfg, model=wm)
            planner.set_task(spec)
            planner.plan(image, props)                       # warm-up (allocator, first-call paths)
            bar.update(1)
            times, cpu, evals, gains = [], [], [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                r = planner.plan(image, props)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)     # CPU seconds of all threads: less load-dependent
                evals.append(r.outcome.evaluations)
                gains.append(r.outcome.best_score - r.outcome.base_score)
                bar.update(1)
            q = np.percentile(times, [10, 90])
            out["methods"][method] = {
                "median_s": float(statistics.median(times)), "p10_s": float(q[0]), "p90_s": float(q[1]),
                "median_cpu_s": float(statistics.median(cpu)),
                "chunks_scored": int(statistics.median(evals)), "config": _plain(cfg.method_config),
                "prefix_step": cfg.objective.prefix_step, "median_gain": float(statistics.median(gains))}
    out["load_average_after"] = list(os.getloadavg())
    return out


def _plain(cfg) -> dict[str, Any]:
    from swm_ros.config import to_dict

    return to_dict(cfg)


def cli_bench_planner(args) -> int:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        print(f"swm bench planner: unknown method(s) {unknown}; valid: {list(METHODS)}")
        return 2
    res = run_planner_bench(args.model, methods, args.threads, args.repeats, args.proposals,
                            show_progress=not args.json)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['model']} ({res['parameters']:,} parameters), {res['threads']} thread(s), "
              f"{res['proposals']} proposals x {res['horizon']} steps, task {res['task']}:")
        for m, r in res["methods"].items():
            print(f"  {m:5s} median {r['median_s'] * 1e3:8.1f} ms per chunk (p10 {r['p10_s'] * 1e3:.1f}, "
                  f"p90 {r['p90_s'] * 1e3:.1f}), CPU {r['median_cpu_s'] * 1e3:.1f} ms; {r['chunks_scored']} chunks scored")
        print(f"-> {path}")
    return 0
