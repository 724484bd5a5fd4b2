"""`swm bag eval`: run a recorded bag's frames through a world model and score it.

For every episode cut from the bag (swm_ros.bags.episodes: frames at the executed actions),
SAQA questions are drawn and labelled from the recorded privileged state (`world_state`,
swm_ros.saqa.families via saqa.build.episode_rows) at frame t and t+h, and the model answers
each from the image at t and the *recorded* actions t..t+h-1. Reported:

  (a) answer accuracy, overall / per family / per horizon, on frames that have labels;
  (b) agreement between planned chunks and recorded actions (bags/plan_agreement.py): with
      `agreement=`, the base policy proposes from the recorded frames, the planner chooses,
      and the choice is compared with what the robot executed; otherwise not available;
  (c) per-frame latency: model time for all of one frame's questions (image encoded once).

`speedup` = seconds of bag time evaluated / wall seconds of the whole evaluation (reading
and decoding the bag, labelling, the model): how much faster than real time a replay
evaluation runs. This is the model on the bag's frames, in one process; `swm bag eval --graph`
adds (b) and (c) through the ROS 2 graph with the controller in shadow mode (bags/graph_eval.py).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from swm_ros.bags.episodes import BagTopics, read_bag_episodes
from swm_ros.bags.plan_agreement import AgreementConfig, PlanAgreement
from swm_ros.bags.reader import BagReader


@dataclass
class EvalConfig:
    horizons_per_start: int = 2        # horizons drawn per frame (h = 0 always included)
    max_horizon: int = 16
    start_stride: int = 1              # evaluate every k-th frame
    seed: int = 0
    max_frames: int = 0                # 0 = all frames
    max_seconds: float = 0.0           # > 0: only the bag's first seconds are read and evaluated
    threads: int = 1                   # torch intra-op threads


def _load_model(checkpoint: str | None):
    from swm_ros.models.registry import load_world_model

    return load_world_model(checkpoint or "tiny")


def evaluate_bag(bag: str | Path, checkpoint: str | None = None, robot: str = "nicol",
                 topics: BagTopics | None = None, cfg: EvalConfig | None = None, model=None,
                 progress: bool = True, agreement: AgreementConfig | None = None) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from swm_ros.saqa.build import QuestionTable, SAQAConfig, episode_rows
    from swm_ros.saqa.families import FAMILIES

    cfg = cfg or EvalConfig()
    # One intra-op thread: on a loaded 2-core machine more threads made each frame ~10x slower.
    torch.set_num_threads(max(1, cfg.threads))
    wall0 = time.perf_counter()
    model = model if model is not None else _load_model(checkpoint)
    model.eval()
    planned = PlanAgreement(agreement, model) if agreement is not None else None
    reader = BagReader(bag)
    episodes = read_bag_episodes(reader, robot, topics, max_seconds=cfg.max_seconds or None)
    scfg = SAQAConfig(horizons_per_start=cfg.horizons_per_start, max_horizon=cfg.max_horizon,
                      start_stride=cfg.start_stride, balance=False, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    table = QuestionTable()
    latencies, correct, fam_ids, horizons, answers = [], [], [], [], []
    bag_seconds = 0.0
    frames_done = 0
    total_frames = sum(len(range(0, len(e.images), cfg.start_stride)) for e in episodes)
    bar = tqdm(total=min(total_frames, cfg.max_frames or total_frames), desc="bag eval", disable=not progress)
    for ep in episodes:
        if cfg.max_frames and frames_done >= cfg.max_frames:
            break
        rows, _, _ = episode_rows(ep.states, scfg, rng, table)
        by_t: dict[int, np.ndarray] = {}
        for i, t in enumerate(rows["t"]):
            by_t.setdefault(int(t), []).append(i)
        last_t = 0
        for t in sorted(by_t):
            if cfg.max_frames and frames_done >= cfg.max_frames:
                break
            idx = np.asarray(by_t[t])
            h = rows["h"][idx].astype(int)
            questions = [table.texts[q] for q in rows["question"][idx]]
            t0 = time.perf_counter()
            with torch.no_grad():
                # one image for all of the frame's questions: features of batch 1, which the model
                # broadcasts (and grounds each word once) instead of copying per question
                feats = model.encode_image(ep.images[t][None])
                tokens = model.tokenize(questions)[:, None, :]
                acts, mask = _actions(ep.actions, t, h)
                p_yes = model.answer_logits_from_features(feats, acts, tokens, mask).softmax(-1)[:, 0, 1].numpy()
            latencies.append((time.perf_counter() - t0) * 1e3)
            correct.append((p_yes > 0.5) == rows["answer"][idx].astype(bool))
            answers.append(rows["answer"][idx].astype(bool))
            fam_ids.append(rows["family"][idx])
            horizons.append(h)
            frames_done += 1
            last_t = t
            bar.update(1)
        if planned is not None:
            planned.add_episode(ep)
        if len(ep.frame_times) > 1:
            bag_seconds += (ep.frame_times[min(last_t + cfg.start_stride, len(ep.frame_times) - 1)]
                            - ep.frame_times[0]) / 1e9
    bar.close()
    wall = time.perf_counter() - wall0
    ok = np.concatenate(correct) if correct else np.zeros(0, bool)
    fam = np.concatenate(fam_ids) if fam_ids else np.zeros(0, int)
    hor = np.concatenate(horizons) if horizons else np.zeros(0, int)
    lat = np.asarray(latencies)
    per_family = {f.name: {"questions": int((fam == i).sum()),
                           "accuracy": float(ok[fam == i].mean()) if (fam == i).any() else None}
                  for i, f in enumerate(FAMILIES) if (fam == i).any()}
    buckets = [(0, 0), (1, 4), (5, 8), (9, 16), (17, 10**6)]
    per_horizon = {f"{lo}-{hi}" if hi < 10**6 else f">={lo}": {
        "questions": int(((hor >= lo) & (hor <= hi)).sum()),
        "accuracy": float(ok[(hor >= lo) & (hor <= hi)].mean()) if ((hor >= lo) & (hor <= hi)).any() else None}
        for lo, hi in buckets}
    return {
        "bag": str(bag), "checkpoint": checkpoint or "tiny (shipped)", "config": asdict(cfg),
        "episodes": len(episodes), "frames": frames_done, "questions": int(ok.size),
        "labels_from": "recorded world_state (privileged state) at t and t+h",
        "accuracy": float(ok.mean()) if ok.size else None,
        # the labels are not balanced: what always answering the majority answer would score
        "majority_baseline": (float(max(np.concatenate(answers).mean(), 1 - np.concatenate(answers).mean()))
                              if answers else None),
        "per_family": per_family, "per_horizon": per_horizon,
        "planner_agreement": (planned.summary() if planned is not None else
                              {"available": False, "reason": "no planner asked for (swm bag eval --planner NAME)"}),
        "latency_ms": {"per_frame": lat.round(3).tolist(),
                       **({"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                           "max": float(lat.max()), "mean": float(lat.mean())} if lat.size else {})},
        "bag_seconds": float(bag_seconds), "wall_seconds": wall,
        "speedup": float(bag_seconds / wall) if wall > 0 else None,
        "speedup_means": "seconds of bag time evaluated / wall seconds of the evaluation (bag reading, decoding, "
                         "labelling and the model, one process, no DDS)",
        "problems": list(reader.problems) + [p for e in episodes for p in e.problems],
    }


def _actions(actions: np.ndarray, t: int, horizons: np.ndarray):
    """The recorded actions t..t+h-1 for each horizon h, padded to the longest: (actions, mask)."""
    import torch

    hmax = max(1, int(horizons.max()))
    acts = np.zeros((len(horizons), hmax, actions.shape[1]), np.float32)
    mask = np.zeros((len(horizons), hmax), bool)
    for j, hh in enumerate(horizons):
        acts[j, :hh] = actions[t: t + hh]
        mask[j, :hh] = True
    return torch.from_numpy(acts), torch.from_numpy(mask)


def write_report(result: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """report.json, report.md and two plots (latency, accuracy per family) into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md",
             "latency": out / "latency.png", "accuracy": out / "accuracy_per_family.png"}
    paths["json"].write_text(json.dumps(result, indent=2))
    lat = result["latency_ms"]["per_frame"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(lat, lw=0.8)
    ax.set_xlabel("frame")
    ax.set_ylabel("model latency (ms)")
    ax.set_title("per-frame latency")
    fig.tight_layout()
    fig.savefig(paths["latency"], dpi=100)
    plt.close(fig)
    fams = result["per_family"]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(list(fams), [v["accuracy"] or 0 for v in fams.values()])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(paths["accuracy"], dpi=100)
    plt.close(fig)
    lm = result["latency_ms"]
    acc = result["accuracy"]
    lines = [f"# Replay evaluation of `{result['bag']}`", "",
             f"Model: `{result['checkpoint']}`. Labels: {result['labels_from']}.", "",
             "| what | value |", "|---|---|",
             f"| episodes / frames / questions | {result['episodes']} / {result['frames']} / {result['questions']} |",
             f"| (a) answer accuracy (majority-answer baseline) | {acc:.3f} ({result['majority_baseline']:.3f}) |"
             if acc is not None else "| (a) answer accuracy | no labels |",
             f"| (b) planner agreement | {_agreement_cell(result['planner_agreement'])} |",
             f"| (c) latency per frame p50 / p90 / max (ms) | {lm.get('p50', float('nan')):.2f} / "
             f"{lm.get('p90', float('nan')):.2f} / {lm.get('max', float('nan')):.2f} |",
             f"| bag seconds / wall seconds | {result['bag_seconds']:.1f} / {result['wall_seconds']:.1f} |",
             f"| speedup over real time | {result['speedup']:.1f}x ({result['speedup_means']}) |"
             if result["speedup"] else "| speedup | n/a |",
             "", "## Accuracy per family", "", "| family | questions | accuracy |", "|---|---|---|"]
    lines += [f"| {k} | {v['questions']} | {v['accuracy']:.3f} |" for k, v in fams.items()]
    lines += ["", "## Accuracy per horizon (actions)", "", "| h | questions | accuracy |", "|---|---|---|"]
    lines += [f"| {k} | {v['questions']} | {_fmt(v['accuracy'])} |" for k, v in result["per_horizon"].items()]
    if "graph" in result:
        lines += ["", "## Through the ROS 2 graph (controller in shadow mode)", ""] + _graph_lines(result["graph"])
    if result["problems"]:
        lines += ["", "## Problems (results are partial)", ""] + [f"- {p}" for p in result["problems"]]
    lines += ["", "![latency](latency.png)", "", "![accuracy](accuracy_per_family.png)", ""]
    paths["md"].write_text("\n".join(lines))
    return paths


def _graph_lines(g: dict[str, Any]) -> list[str]:
    c = g["config"]
    head = (f"`{g['graph']}` graph at {c['rate']}x: `{c['policy']}` policy, {c['proposals']} proposals, "
            f"planner `{c['planner']}`, {c['execute_steps']} actions per plan; replayed {', '.join(g['replayed_topics'])}.")
    if not g["available"]:
        return [head, "", f"No plan matched a recorded frame ({g['plans_unmatched']} unmatched; player exit code "
                          f"{g['player_exit_code']}, nodes that exited early {g['nodes_exited_early']})."]
    l2, cos, ms = g["l2_per_step"], g["xy_cosine"], g["plan_ms"]
    return [head, "", "| what | value |", "|---|---|",
            f"| plans (unmatched) | {g['plans']} ({g['plans_unmatched']}) |",
            f"| (b) action L2 per step, planned / first proposal | {_fmt(l2['planned'])} / {_fmt(l2['base_proposal'])} |",
            f"| (b) xy direction cosine, planned / first proposal | {_fmt(cos['planned'])} / "
            f"{_fmt(cos['base_proposal'])} |",
            f"| objective, chosen / best proposal | {_fmt(g['score']['chosen'])} / {_fmt(g['score']['base'])} |",
            f"| (c) planning latency p50 / p90 / max (ms) | {ms['p50']:.0f} / {ms['p90']:.0f} / {ms['max']:.0f} |",
            f"| shadow trajectories / arm commands | {g['shadow_trajectories']} / {g['arm_commands']} |",
            f"| bag seconds / playback wall seconds | {g['bag_seconds']:.1f} / {g['playback_wall_seconds']:.1f} |",
            f"| player exit code, nodes that exited early | {g['player_exit_code']}, {g['nodes_exited_early'] or 'none'} |"]


def _agreement_cell(a: dict[str, Any]) -> str:
    if not a["available"]:
        return f"not available: {a['reason']}"
    l2, cos = a["l2_per_step"], a["xy_cosine"]
    return (f"{a['plans']} plans ({a['planner']} over {a['proposals']} `{a['policy']}` proposals, every "
            f"{a['plan_every']} frames): action L2 per step {_fmt(l2['planned'])} planned vs "
            f"{_fmt(l2['base_proposal'])} unplanned; xy direction cosine {_fmt(cos['planned'])} vs "
            f"{_fmt(cos['base_proposal'])}; plan p50 {a['plan_ms']['p50']:.0f} ms")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
