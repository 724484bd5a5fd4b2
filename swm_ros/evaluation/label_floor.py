"""How much of a SAQA split one frame can decide: the error floor of any frame-only predictor.

`swm eval label-floor` replays each sampled row's episode in the simulator to the row's start
frame (an episode is its seed plus its stored actions; a row whose replayed label differs from
the stored answer is counted and left out), then runs the row's h actions again from K starts
that one frame cannot tell apart from the real one, and labels each outcome with the row's
question family:

- `blocks`: every object shifted by N(0, sigma) in x and y, its heading and velocity kept;
  below the 64 px frame's pixel (about 6 mm on the table) the starts render alike
- `command`: the grasp point the actions integrate from (which lags or leads the hand; the frame
  shows the hand) set to the hand's position plus N(0, sigma)

A predictor given the frame must answer all K + 1 starts alike, so it is wrong on at least
min(p, 1 - p) of them (p: their share of "yes"). Averaged over rows, that bounds from below
the error any model of the frame makes on the split: what accuracy targets can ask of one.

Several sigmas (`--sigma-mm 1.5,3,6`) share each row's replay and its perturbation draws (the
same N(0, 1) noise scaled by each sigma), so the floor's growth with sigma is not drawn anew at
every point: how precisely a model must place things to answer as well as the labels allow.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from swm_ros.evaluation.reports import print_summary, write_summary

MODES = ("blocks", "command")


@dataclass
class LabelFloorConfig:
    data: str = "data/saqa/saqa.h5"
    split: str = "test"
    rows: int = 2000
    sigma_mm: tuple[float, ...] = (1.5,)    # perturbation scales, one floor each
    perturbations: int = 4
    mode: str = "blocks"
    seed: int = 0
    out: str = "runs/label_floor"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; modes are {MODES}")
        self.sigma_mm = tuple(float(v) for v in np.atleast_1d(self.sigma_mm))
        if self.rows < 1 or self.perturbations < 1 or not self.sigma_mm or min(self.sigma_mm) < 0:
            raise ValueError("rows and perturbations must be >= 1, every sigma_mm >= 0")


def _label(family, s0, s1, a: int, b: int, d: int) -> int:
    """1 / 0, or -1 inside the family's ambiguity band (a row SAQA would not have asked)."""
    from swm_ros.data.episodes import StateArrays

    yes, valid = family.label(StateArrays.from_states([s0]), StateArrays.from_states([s1]), [a], [b], [d])
    return int(yes[0]) if valid[0] else -1


def _perturb(env, mode: str, sigma: float, rng: np.random.Generator) -> None:
    if mode == "blocks":
        for name in env.privileged_state().objects:
            env.shift_object(name, sigma * rng.standard_normal(2))
    else:
        env.set_command(env.privileged_state().effector_position + sigma * rng.standard_normal(3))


def _rollout_label(env, start, actions: np.ndarray, family, subjects: tuple[int, int, int],
                   noise: tuple[str, float, np.random.Generator] | None) -> int:
    """The row's label after `actions` run from `start`, its scene first perturbed by `noise`
    (mode, sigma in metres, generator) when given."""
    env.restore(start)
    if noise is not None:
        _perturb(env, *noise)
    s0 = env.privileged_state()
    for a in actions:
        env.step_physics(a)
    return _label(family, s0, env.privileged_state(), *subjects)


def label_floor(cfg: LabelFloorConfig, progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    from swm_ros.data.episodes import EpisodeReader
    from swm_ros.envs import make_env
    from swm_ros.saqa.dataset import SAQADataset
    from swm_ros.saqa.families import get_family

    ds = SAQADataset(cfg.data, split=cfg.split)
    if len(ds) == 0:
        raise ValueError(f"{cfg.data} has no {cfg.split!r} rows")
    rng = np.random.default_rng(cfg.seed)
    picked = np.sort(rng.choice(len(ds), min(cfg.rows, len(ds)), replace=False))
    col = {k: v[picked] for k, v in ds.columns.items()}
    by_episode: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(col["episode"]):
        by_episode[int(e)].append(i)

    envs: dict[tuple[str, str], Any] = {}
    rows, replay_mismatch = [], 0
    bar = tqdm(total=len(picked), desc="label floor", disable=not progress)
    try:
        for e, members in by_episode.items():
            with EpisodeReader(ds.episode_files[e]) as reader:
                meta, actions = reader.meta, reader.actions
            key = (meta.robot, meta.variant)
            if key not in envs:
                envs[key] = make_env(robot=meta.robot, task=meta.task, variant=meta.variant, cameras=())
                if not hasattr(envs[key], "shift_object"):
                    raise ValueError(f"{type(envs[key]).__name__} cannot perturb its scene (NicoL tabletop only)")
            env = envs[key]
            env.reset(seed=meta.seed, task=meta.task, variant=meta.variant)
            starts, t_now = {}, 0
            for t in sorted({int(col["t"][i]) for i in members}):
                for s in range(t_now, t):
                    env.step_physics(actions[s])
                t_now = t
                starts[t] = env.snapshot()
            for i in members:
                t, h = int(col["t"][i]), int(col["h"][i])
                family = get_family(ds.family_names[int(col["family"][i])])
                subjects = int(col["subject_a"][i]), int(col["subject_b"][i]), int(col["direction"][i])

                def outcome(sigma_mm: float, k: int) -> int:
                    # start k > 0 is perturbed by draw k of this row, the same at every sigma
                    noise = None if k == 0 else (cfg.mode, sigma_mm / 1000.0, np.random.default_rng((cfg.seed, i, k)))
                    return _rollout_label(env, starts[t], actions[t:t + h], family, subjects, noise)

                bar.update()
                real = outcome(0.0, 0)
                if real != int(col["answer"][i]):
                    replay_mismatch += 1
                    continue
                rows.append((family.name, [[real] + [outcome(sg, k) for k in range(1, cfg.perturbations + 1)]
                                           for sg in cfg.sigma_mm]))
    finally:
        bar.close()
        for env in envs.values():
            env.close()
    return summarise(cfg, rows, replay_mismatch)


def row_floor(labels: list[int]) -> float:
    """min(p, 1 - p) over one row's labelled starts (those inside an ambiguity band left out)."""
    asked = [v for v in labels if v >= 0]
    p = float(np.mean(asked))
    return min(p, 1.0 - p)


def _floor_at(rows: list[tuple[str, list[int]]]) -> dict[str, Any]:
    """One sigma's floor: rows are (family, that sigma's labels of the row's starts)."""
    by_family: dict[str, list[float]] = defaultdict(list)
    for name, labels in rows:
        by_family[name].append(row_floor(labels))
    values = np.array([f for v in by_family.values() for f in v])
    if not len(values):
        return {"error_floor": float("nan"), "accuracy_ceiling": float("nan"), "rows_with_a_flip": float("nan"),
                "by_family": {}}
    return {"error_floor": float(values.mean()), "accuracy_ceiling": float(1.0 - values.mean()),
            "rows_with_a_flip": float((values > 0).mean()),
            "by_family": {k: {"rows": len(v), "error_floor": float(np.mean(v))} for k, v in sorted(by_family.items())}}


def summarise(cfg: LabelFloorConfig, rows: list[tuple[str, list[list[int]]]], replay_mismatch: int) -> dict[str, Any]:
    """rows: (family, per sigma of cfg.sigma_mm the labels of the row's K + 1 starts)."""
    return {"config": asdict(cfg), "rows": len(rows), "replay_mismatch": replay_mismatch,
            "by_sigma": [{"sigma_mm": sg, **_floor_at([(name, labels[j]) for name, labels in rows])}
                         for j, sg in enumerate(cfg.sigma_mm)]}


def to_markdown(summary: dict[str, Any]) -> str:
    c = summary["config"]
    families = sorted({k for f in summary["by_sigma"] for k in f["by_family"]})
    lines = [f"# Label floor: {c['data']} ({c['split']}), {c['mode']} perturbed, {c['perturbations']} starts per row",
             "", f"{summary['rows']} rows ({summary['replay_mismatch']} left out: the replay labelled them otherwise). "
             "Error floor of a frame-only predictor (accuracy at most one minus it), and the share of rows whose "
             "answer changes in some start:", "",
             "| sigma (mm) | error floor | accuracy ceiling | rows with a flip | " + " | ".join(families) + " |",
             "|---" * (4 + len(families)) + "|"]
    for f in summary["by_sigma"]:
        fam = [f"{f['by_family'][k]['error_floor']:.4f}" if k in f["by_family"] else "-" for k in families]
        lines.append(f"| {f['sigma_mm']:g} | **{f['error_floor']:.4f}** | {f['accuracy_ceiling']:.4f} | "
                     f"{f['rows_with_a_flip']:.4f} | " + " | ".join(fam) + " |")
    return "\n".join(lines) + "\n"


def plot_floor(summary: dict[str, Any], path: Path) -> None:
    """Error floor against sigma, overall and per family."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = summary["by_sigma"]
    sigmas = [f["sigma_mm"] for f in points]
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    for name in sorted({k for f in points for k in f["by_family"]}):
        rows = max(f["by_family"].get(name, {}).get("rows", 0) for f in points)
        ax.plot(sigmas, [f["by_family"].get(name, {}).get("error_floor", np.nan) for f in points],
                marker=".", lw=1, alpha=0.7, label=f"{name} ({rows} rows)")
    ax.plot(sigmas, [f["error_floor"] for f in points], "k-o", lw=2.5, label="all rows")
    ax.set_xlabel(f"sigma of the {summary['config']['mode']} perturbation (mm)")
    ax.set_ylabel("error floor of a frame-only predictor")
    ax.set_title(f"{Path(summary['config']['data']).name} ({summary['config']['split']}), {summary['rows']} rows")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cli_eval_label_floor(args: Any) -> int:
    try:
        sigmas = tuple(float(v) for v in args.sigma_mm.split(","))
        cfg = LabelFloorConfig(data=args.data, split=args.split, rows=args.rows, sigma_mm=sigmas,
                               perturbations=args.perturbations, mode=args.mode, seed=args.seed, out=args.out)
        summary = label_floor(cfg, progress=not args.json)
    except (ValueError, FileNotFoundError) as e:
        print(f"swm eval label-floor: {e}")
        return 2
    markdown = to_markdown(summary)
    out = write_summary(cfg.out, "label_floor", summary, markdown)
    if len(cfg.sigma_mm) > 1:
        plot_floor(summary, out / "label_floor.png")
    print_summary(summary, markdown, args.json)
    return 0
