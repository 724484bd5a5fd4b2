"""`swm bench scoring`: candidate action chunks scored per second, torch vs onnxruntime.

What a sampling planner does per replanning step: one image encoded once, then batches of
candidate chunks (16 steps) scored against the task's questions (2). Torch runs the model's
`answer_logits_from_features` under `torch.no_grad()`; onnxruntime runs the same path
exported by `swm_ros.models.onnx_scoring`. Both use the same number of CPU threads. The
two are called alternately (so drifts in this shared CPU's speed hit both alike), after a
warm-up, and each figure is the median over the repeats.

    swm bench scoring --json [--checkpoint DIR] [--batch 64] [--threads 2]
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TARGET_CANDIDATES_PER_S = 500
QUESTIONS = ("Will the red block be touching the green block?", "Will the gripper be closer to the blue block?")


def load_bench_model(checkpoint: str | None) -> tuple[Any, str]:
    """The model to measure and where it came from: a checkpoint, the shipped tiny weights,
    or (neither) a freshly initialised tiny model of config/models/tiny.yaml."""
    from swm_ros.config import load_yaml
    from swm_ros.models.registry import build_world_model, default_weights, load_world_model

    if checkpoint:
        return load_world_model(checkpoint), f"checkpoint {checkpoint}"
    if default_weights("tiny").is_dir():
        return load_world_model("tiny"), f"shipped weights {default_weights('tiny')}"
    model = build_world_model("tiny", load_yaml(REPO / "config" / "models" / "tiny.yaml"))
    return model, "untrained tiny model of config/models/tiny.yaml (no shipped weights; same cost)"


def run_scoring_bench(checkpoint: str | None = None, batch: int = 64, steps: int = 16, threads: int = 2,
                      repeats: int = 20, warmup: int = 3, show_progress: bool = False) -> dict[str, Any]:
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _measure(threads, checkpoint, batch, steps, repeats, warmup, show_progress)
    finally:
        torch.set_num_threads(previous_threads)


def _measure(threads: int, checkpoint: str | None, batch: int, steps: int, repeats: int, warmup: int,
             show_progress: bool) -> dict[str, Any]:
    import onnxruntime
    import torch
    from tqdm import tqdm

    from swm_ros.models.onnx_scoring import OnnxScorer, export_scorer

    torch.manual_seed(0)
    model, source = load_bench_model(checkpoint)
    model.eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        feats = model.encode_image(image)                       # once per image, as a planner does
    tokens = model.tokenize(list(QUESTIONS))
    tokens = tokens[:, :max(int((tokens != 0).sum(1).max()), 1)]   # no all-padding columns, as a planner sends
    candidates = torch.from_numpy(rng.uniform(-1, 1, (batch, steps, model.action_dim)).astype(np.float32))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scorer = OnnxScorer(export_scorer(model, Path(tmp) / "scorer.onnx", steps=steps), threads=threads)
        export_s = time.perf_counter() - t0

        def torch_call() -> np.ndarray:
            with torch.no_grad():
                return model.answer_logits_from_features(feats, candidates, tokens).numpy()

        def onnx_call() -> np.ndarray:
            return scorer.logits(feats, candidates, tokens)

        diff = float(np.abs(torch_call() - onnx_call()).max())
        for _ in range(warmup):
            torch_call()
            onnx_call()
        times: dict[str, list[float]] = {"torch": [], "onnx": []}
        for _ in tqdm(range(repeats), desc="bench scoring", disable=not show_progress, leave=False):
            for name, fn in (("torch", torch_call), ("onnx", onnx_call)):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)

    med = {k: statistics.median(v) for k, v in times.items()}
    out: dict[str, Any] = {
        "candidates_per_s_torch": round(batch / med["torch"], 1),
        "candidates_per_s_onnx": round(batch / med["onnx"], 1),
        "ms_per_batch_torch": round(1e3 * med["torch"], 2),
        "ms_per_batch_onnx": round(1e3 * med["onnx"], 2),
        "target_candidates_per_s": TARGET_CANDIDATES_PER_S,
        "meets_target": bool(max(batch / med["torch"], batch / med["onnx"]) >= TARGET_CANDIDATES_PER_S),
        "max_abs_logit_diff": diff,
        "model": {"backend": model.backend, "source": source, "parameters": model.num_parameters()},
        "batch": batch, "steps": steps, "questions": len(QUESTIONS), "question_tokens": int(tokens.shape[1]),
        "threads": threads,
        "repeats": repeats, "warmup": warmup, "export_s": round(export_s, 2),
        "measured": "answer_logits_from_features on cached image features (the image encoded once), "
                    "torch.no_grad() vs onnxruntime CPU EP; median seconds per batch",
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    return out


def cli_bench_scoring(args) -> int:
    result = run_scoring_bench(checkpoint=args.checkpoint, batch=int(args.batch), steps=int(args.steps),
                               threads=int(args.threads), repeats=int(args.repeats), show_progress=not args.json)
    print(json.dumps(result, indent=None if args.json else 2))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return 0
