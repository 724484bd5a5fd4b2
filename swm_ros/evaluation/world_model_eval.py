"""`swm eval world-model`: answer accuracy of a world model on held-out SAQA rows.

    swm eval world-model --split test --json                  # the shipped model
    swm eval world-model --checkpoint runs/world_model_tiny --split ood --data data/saqa/saqa.h5

Reports accuracy overall (`accuracy`, a fraction), per question family, per horizon bucket and
per family within each bucket (`by_family_horizon`: where the errors are, perception at h = 0 or
dynamics further ahead), the expected calibration error of p(yes) (10 equal-width bins) with a
reliability plot, and the Brier score. Writes <out>/world_model_eval_<split>.{json,md,png}.
Rows are evaluated in the order of the file, up to --max-rows (a seeded random subset).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HORIZON_BUCKETS: dict[str, tuple[int, int]] = {"h=0": (0, 0), "h=1-10": (1, 10), "h=11-25": (11, 25),
                                               "h=26-40": (26, 40), "h=41-60": (41, 60)}
CALIBRATION_BINS = 10
DEFAULT_DATA = "data/saqa/saqa.h5"


def calibration(p_yes: np.ndarray, answer: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Expected calibration error of p(yes) against the yes/no answers, and the reliability table."""
    p_yes, answer = np.asarray(p_yes, float), np.asarray(answer, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p_yes, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        if n:
            conf, freq = float(p_yes[m].mean()), float(answer[m].mean())
            ece += n / len(p_yes) * abs(conf - freq)
            table.append({"bin": [float(edges[b]), float(edges[b + 1])], "rows": n,
                          "mean_p_yes": conf, "yes_rate": freq})
    return {"ece": float(ece), "brier": float(np.mean((p_yes - answer) ** 2)) if len(p_yes) else float("nan"),
            "reliability": table}


def _accuracy_table(correct: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {name: {"accuracy": float(correct[m].mean()), "rows": int(m.sum())}
            for name, m in groups.items() if m.any()}


@torch.no_grad()
def evaluate_world_model(model, saqa_path: str | Path, split: str = "test", max_rows: int | None = None,
                         batch_size: int = 256, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Accuracy, per family and horizon, and calibration of `model` on one split of a SAQA file."""
    from tqdm import tqdm

    from swm_ros.models.train import Batcher, forward_batch
    from swm_ros.saqa.dataset import SAQADataset

    ds = SAQADataset(saqa_path, split=split, max_horizon=getattr(getattr(model, "config", None), "max_steps", None))
    if len(ds) == 0:
        raise ValueError(f"{saqa_path}: no rows in split {split!r}")
    processing = ds.image_processing()
    mine = model.processor_config()
    if processing != mine:
        raise ValueError(f"the model expects frames processed with {mine}, the data was stored with {processing}: "
                         f"evaluate on data collected with the same processor")
    idx = np.arange(len(ds))
    if max_rows is not None and max_rows < len(ds):
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), max_rows, replace=False))
    model.eval()
    batcher = Batcher(ds, model)
    p_yes, answers, families, horizons = [], [], [], []
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(idx), batch_size), desc=f"eval {split}", disable=not progress, unit="batch"):
        for b in batcher.chunks(idx[start:start + batch_size], 4):
            p_yes.append(forward_batch(model, b).softmax(-1)[:, 1].numpy())
            answers.append(b["answer"].numpy())
            families.append(b["family"].numpy())
            horizons.append(b["horizon"].numpy())
    seconds = time.perf_counter() - t0
    p, y, fam, hor = (np.concatenate(x) for x in (p_yes, answers, families, horizons))
    correct = (p >= 0.5) == (y == 1)
    names, present = ds.family_names, sorted(set(fam.tolist()))
    buckets = {k: (hor >= lo) & (hor <= hi) for k, (lo, hi) in HORIZON_BUCKETS.items()}
    result: dict[str, Any] = {
        "split": split, "rows": int(len(y)), "accuracy": float(correct.mean()),
        "yes_fraction": float(y.mean()),
        "baseline_majority": float(max(y.mean(), 1 - y.mean())),
        "by_family": _accuracy_table(correct, {names[f]: fam == f for f in present}),
        "by_horizon": _accuracy_table(correct, buckets),
        "by_family_horizon": {names[f]: _accuracy_table(correct, {k: (fam == f) & m for k, m in buckets.items()})
                              for f in present},
        **calibration(p, y),
        "rows_per_s": float(len(y) / seconds) if seconds > 0 else None,
        "data": str(saqa_path),
    }
    return result


def plot_reliability(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2))
    rel = result["reliability"]
    conf = [r["mean_p_yes"] for r in rel]
    freq = [r["yes_rate"] for r in rel]
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.plot(conf, freq, "o-", label=f"model (ECE {result['ece']:.3f})")
    ax.set(xlabel="mean predicted p(yes)", ylabel="observed yes rate", xlim=(0, 1), ylim=(0, 1),
           title=f"reliability, {result['split']} split")
    ax.legend(loc="upper left")
    fams = result["by_family"]
    bx.barh(list(fams), [v["accuracy"] for v in fams.values()], color="tab:blue")
    bx.axvline(result["accuracy"], color="k", lw=1, label=f"overall {result['accuracy']:.3f}")
    bx.set(xlim=(0.4, 1.0), xlabel="accuracy", title="accuracy per question family")
    bx.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_markdown(result: dict[str, Any], model_name: str) -> str:
    lines = [f"# World-model evaluation: {model_name}, split `{result['split']}`", "",
             f"- rows: {result['rows']} from `{result['data']}` (yes fraction {result['yes_fraction']:.3f}, "
             f"majority baseline {result['baseline_majority']:.3f})",
             f"- **accuracy {result['accuracy']:.4f}**, expected calibration error {result['ece']:.4f}, "
             f"Brier {result['brier']:.4f}", "",
             "| family | accuracy | rows |", "|---|---|---|"]
    lines += [f"| {k} | {v['accuracy']:.4f} | {v['rows']} |" for k, v in result["by_family"].items()]
    lines += ["", "| horizon | accuracy | rows |", "|---|---|---|"]
    lines += [f"| {k} | {v['accuracy']:.4f} | {v['rows']} |" for k, v in result["by_horizon"].items()]
    cross = result.get("by_family_horizon")
    if cross:
        errors = (1.0 - result["accuracy"]) * result["rows"]
        lines += ["", "Accuracy (rows) per family and horizon, and each family's share of all errors:", "",
                  "| family | " + " | ".join(HORIZON_BUCKETS) + " | share of errors |",
                  "|---" * (len(HORIZON_BUCKETS) + 2) + "|"]
        for k, by_h in cross.items():
            cells = [f"{by_h[b]['accuracy']:.3f} ({by_h[b]['rows']})" if b in by_h else "-" for b in HORIZON_BUCKETS]
            fam = result["by_family"][k]
            share = (1.0 - fam["accuracy"]) * fam["rows"] / errors if errors else 0.0
            lines.append(f"| {k} | " + " | ".join(cells) + f" | {share:.3f} |")
    return "\n".join(lines) + "\n"


def cli_eval_world_model(args: Any) -> int:
    from swm_ros.models.registry import load_world_model

    torch.set_num_threads(args.threads)
    source = args.checkpoint or args.backend
    try:
        model = load_world_model(source, proprio=True)
    except (FileNotFoundError, ValueError) as e:
        print(f"swm eval world-model: {e}")
        return 2
    data = Path(args.data)
    if not data.is_file():
        print(f"swm eval world-model: no SAQA file at {data}; build one with `swm collect` + `swm saqa` "
              f"(see the README) or pass --data")
        return 2
    try:
        result = evaluate_world_model(model, data, split=args.split, max_rows=args.max_rows,
                                      progress=not args.json)
    except ValueError as e:
        print(f"swm eval world-model: {e}")
        return 2
    result["model"] = str(source)
    out = Path(args.out)
    stem = out / f"world_model_eval_{args.split}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(to_markdown(result, str(source)))
    plot_reliability(result, stem.with_suffix(".png"))
    if args.json:
        print(json.dumps(result))
    else:
        print(to_markdown(result, str(source)))
        print(f"-> {stem}.json, .md, .png")
    return 0
