"""`swm eval future-states`: how much of the future a run trained with the dynamics loss reads
from its action tokens.

    swm eval future-states --run runs/world_model_tiny_future_states --data data/saqa/saqa_6400.h5

Loads the run's checkpoint and the head saved beside it (models/future_states.py) and, over
seeded (family, answer)-balanced rows, compares the head's squared error with that of
predicting no motion, per part: the blocks, the blocks that moved more than 5 mm, the hand,
the gripper opening. "explained" is 1 - head / no motion.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from swm_ros.evaluation.reports import print_summary, write_summary

MOVED_DM = 0.05        # a block "moved" once it is more than 5 mm (0.05 dm) from where it started


def future_state_errors(run: str | Path, data: str | Path, split: str = "val", rows: int = 768,
                        seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    from swm_ros.models.checkpoint import _load_tensors
    from swm_ros.models.future_states import FutureStateHead, FutureStateTargets, LastBlockInput
    from swm_ros.models.registry import load_world_model
    from swm_ros.models.train import FUTURE_HEAD_FILE, Batcher, forward_batch
    from swm_ros.saqa.dataset import SAQADataset

    run = Path(run)
    if not (run / FUTURE_HEAD_FILE).is_file():
        raise FileNotFoundError(f"{run / FUTURE_HEAD_FILE} not found: train with future_state_loss_weight > 0")
    model = load_world_model(run).eval()
    ds = SAQADataset(data, split=[split], max_horizon=model.config.max_steps, preload_images=False)
    if len(ds) == 0:
        raise ValueError(f"{data}: no rows in split {split!r}")
    targets = FutureStateTargets(ds)
    head = FutureStateHead(model.config.d_model, targets.size)
    try:
        head.load_state_dict(_load_tensors(run / FUTURE_HEAD_FILE))
    except RuntimeError as err:
        raise ValueError(f"{run / FUTURE_HEAD_FILE} does not fit {data}'s colours: {err}") from None
    weights = ds.sample_weights()
    idx = np.random.default_rng(seed).choice(len(ds), min(rows, len(ds)), replace=False, p=weights / weights.sum())
    batcher = Batcher(ds, model, future_states=targets)
    n_blocks = 3 * len(targets.colours)
    parts = {"blocks": slice(0, n_blocks), "blocks_moved": slice(0, n_blocks),
             "hand": slice(n_blocks, n_blocks + 3), "gripper_opening": slice(n_blocks + 3, n_blocks + 4)}
    sums = {k: np.zeros(3) for k in parts}          # head error, no-motion error, entries
    with torch.no_grad():
        for chunk in np.array_split(idx, max(1, -(-len(idx) // batch_size))):
            b = batcher(chunk)
            if b["actions"].shape[1] == 0:            # h = 0 rows only: no future to predict
                continue
            with LastBlockInput(model) as tap:
                forward_batch(model, b)
            pred = head(tap.action_states(b["actions"].shape[1], b["tokens"].shape[-1]))
            target, mask = b["future"], b["future_mask"].float()
            moved = mask * (target.abs() > MOVED_DM).float()
            for name, sl in parts.items():
                m = (moved if name == "blocks_moved" else mask)[..., sl]
                sums[name] += [float(((pred - target)[..., sl] ** 2 * m).sum()),
                               float((target[..., sl] ** 2 * m).sum()), float(m.sum())]
    ds.close()
    out: dict[str, Any] = {"run": str(run), "data": str(data), "split": split, "rows": int(len(idx)), "parts": {}}
    for name, (err, zero, count) in sums.items():
        if count:
            out["parts"][name] = {"head_mse": err / count, "no_motion_mse": zero / count,
                                  "explained": 1.0 - err / zero if zero else None, "entries": int(count)}
    return out


def to_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# Future states read from the action tokens: {summary['run']}", "",
             f"{summary['rows']} rows of {summary['data']} ({summary['split']}), squared error in dm², "
             f"the gripper opening in its own units", "",
             "| part | head | no motion | explained | entries |", "|---|---|---|---|---|"]
    for name, p in summary["parts"].items():
        explained = "" if p["explained"] is None else f"{p['explained']:.2f}"
        lines.append(f"| {name} | {p['head_mse']:.4f} | {p['no_motion_mse']:.4f} | {explained} | {p['entries']} |")
    return "\n".join(lines) + "\n"


def cli_eval_future_states(args: Any) -> int:
    torch.set_num_threads(args.threads)
    try:
        summary = future_state_errors(args.run, args.data, args.split, args.rows, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"swm eval future-states: {e}")
        return 2
    markdown = to_markdown(summary)
    write_summary(args.out, "future_states", summary, markdown)
    print_summary(summary, markdown, args.json)
    return 0
