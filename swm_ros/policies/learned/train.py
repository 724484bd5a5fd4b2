"""`swm train policy`: train the flow-matching chunk policy on collected episodes.

    swm train policy --config config/train/policy_flow.yaml [--out DIR] [--resume]

AdamW with linear warmup then cosine decay (the world model's schedule), gradient-norm
clipping, an optional auxiliary loss on the task blocks' positions (`aux_loss_weight`; the
model's position head, model.py), random-shift image augmentation, fixed seeds (the batch, shifts and noise of step
s come from generators seeded by (seed, s), so a resumed run sees the same batches), a
held-out flow loss on validation episodes, a checkpoint directory loadable by
`load_policy(out)`, optimizer state for `--resume` (safetensors), `metrics.jsonl` and
`loss.png`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from swm_ros.config import ConfigError, load_config, to_dict
from swm_ros.models.checkpoint import OPTIMIZER_FILE, WEIGHTS_FILE, _load_tensors, load_optimizer_state, save_optimizer_state
from swm_ros.models.train import MetricsLog, read_metrics
from swm_ros.models.training_steps import scheduled_steps
from swm_ros.policies.learned.checkpoint import read_policy_config, save_policy_checkpoint
from swm_ros.policies.learned.data import ChunkSamples, PolicyDataConfig, load_samples, select_episodes
from swm_ros.policies.learned.model import FlowChunkPolicy, FlowPolicyConfig
from swm_ros.policies.learned.processors import MAX_ROLES, Normalizer, PolicyProcessor, TaskEncoder
from swm_ros.processing.image import ImageProcessorConfig

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss.png"
TRAIN_CONFIG_FILE = "train_config.yaml"


@dataclass
class PolicyTrainConfig:
    data: PolicyDataConfig = field(default_factory=PolicyDataConfig)
    model: FlowPolicyConfig = field(default_factory=FlowPolicyConfig)
    out: str = "runs/policy_flow"
    batch_size: int = 32
    samples_per_cond: int = 8          # noise draws per encoded observation
    steps: int = 2500
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    shift_pixels: int = 3              # random-shift augmentation, +- px (0: off)
    aux_loss_weight: float = 0.0       # block-position MSE (normalised units) next to the flow loss
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    num_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("batch_size", "samples_per_cond", "steps", "log_every", "eval_every", "checkpoint_every",
                     "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0 or self.shift_pixels < 0:
            raise ValueError("warmup_steps and shift_pixels must be >= 0, min_lr_ratio in [0, 1]")
        if self.aux_loss_weight < 0:
            raise ValueError("aux_loss_weight must be >= 0")
        if self.aux_loss_weight > 0 and self.model.position_roles != MAX_ROLES:
            raise ValueError(f"aux_loss_weight > 0 needs model.position_roles: {MAX_ROLES} (one xyz per task role)")


def load_train_config(path: str | Path) -> PolicyTrainConfig:
    return load_config(PolicyTrainConfig, path)


def random_shift(images: np.ndarray, pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each (H, W, 3) frame by up to +-pixels, edges replicated (DrQ / Diffusion Policy)."""
    if pixels == 0:
        return images
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pixels + 1, size=(2, b))
    return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


class Tensors:
    """Samples as normalised tensors; block positions by `positions` (a training-only normaliser)."""

    def __init__(self, s: ChunkSamples, processor: PolicyProcessor, positions: Normalizer) -> None:
        self.images = s.images
        self.proprio = torch.from_numpy(processor.proprio.normalize(s.proprio))
        self.task = torch.from_numpy(s.task)
        self.actions = torch.from_numpy(processor.action.normalize(s.chunks))
        self.positions = torch.from_numpy(positions.normalize(s.role_positions))
        self.role_mask = torch.from_numpy(s.role_mask)

    def __len__(self) -> int:
        return len(self.images)


def _losses(model: FlowChunkPolicy, data: Tensors, idx: np.ndarray, images: np.ndarray,
            generator: torch.Generator, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(flow loss, block-position loss or None without a position head) of samples idx."""
    idx_t = torch.from_numpy(idx)
    cond, positions = model.condition_and_positions(torch.from_numpy(images), data.proprio[idx_t], data.task[idx_t])
    flow = model.loss(cond, data.actions[idx_t], generator=generator, samples_per_cond=k)
    if positions is None:
        return flow, None
    mask = data.role_mask[idx_t]
    return flow, ((positions - data.positions[idx_t]) ** 2)[mask].mean()


@torch.no_grad()
def validation_losses(model: FlowChunkPolicy, data: Tensors, positions: Normalizer, seed: int,
                      batch: int = 256) -> dict[str, float]:
    """Flow loss on every validation sample with fixed noise (comparable across steps) and,
    with a position head, the mean distance (cm) between predicted and true block positions."""
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    flow, error_cm, roles = 0.0, 0.0, 0
    for start in range(0, len(data), batch):
        idx = torch.arange(start, min(start + batch, len(data)))
        cond, pred = model.condition_and_positions(torch.from_numpy(data.images[idx.numpy()]), data.proprio[idx],
                                                   data.task[idx])
        flow += float(model.loss(cond, data.actions[idx], generator=g, samples_per_cond=4)) * len(idx)
        if pred is not None:
            mask = data.role_mask[idx].numpy()
            err = positions.unnormalize(pred.numpy()) - positions.unnormalize(data.positions[idx].numpy())
            error_cm += float(np.linalg.norm(err, axis=-1)[mask].sum()) * 100.0
            roles += int(mask.sum())
    model.train(was)
    out = {"loss": flow / max(len(data), 1)}
    if roles:
        out["position_error_cm"] = error_cm / roles
    return out


def plot_loss(metrics: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for split, style in (("train", "-"), ("val", "o-")):
        rows = [m for m in metrics if m.get("split") == split]
        if rows:
            ax.plot([m["step"] for m in rows], [m["loss"] for m in rows], style, label=split)
    ax.set(xlabel="step", ylabel="flow-matching MSE", title="policy loss", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_processor(train: ChunkSamples, encoder: TaskEncoder) -> PolicyProcessor:
    image = ImageProcessorConfig.from_dict(train.image_processing) if train.image_processing else ImageProcessorConfig(
        size=train.images.shape[1])
    return PolicyProcessor(train.camera, image, Normalizer.fit("meanstd", train.proprio),
                           Normalizer.fit("minmax", train.chunks.reshape(-1, train.chunks.shape[-1])), encoder)


def train_policy(cfg: PolicyTrainConfig, out: str | Path | None = None, resume: bool = False,
                 progress: bool = True, stop_at: int | None = None) -> dict[str, Any]:
    """Train per `cfg` into `out` (default cfg.out); returns the training summary."""
    from tqdm import tqdm

    out = Path(out or cfg.out)
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    encoder = TaskEncoder()
    d = cfg.data
    train_entries = select_episodes(d, d.split, d.episodes_per_task)
    samples = load_samples(d, train_entries, cfg.model.chunk_length, encoder, progress)
    mc = cfg.model
    if (samples.proprio.shape[1], samples.task.shape[1], samples.chunks.shape[2], samples.images.shape[1]) != \
            (mc.proprio_dim, mc.task_dim, mc.action_dim, mc.image_size):
        raise ConfigError(f"model config (proprio_dim {mc.proprio_dim}, task_dim {mc.task_dim}, action_dim "
                          f"{mc.action_dim}, image_size {mc.image_size}) does not fit the data (proprio "
                          f"{samples.proprio.shape[1]}, task {samples.task.shape[1]}, actions {samples.chunks.shape[2]}, "
                          f"frames {samples.images.shape[1]} px)")
    processor = build_processor(samples, encoder)
    positions = Normalizer.fit("meanstd", samples.role_positions[samples.role_mask])
    train = Tensors(samples, processor, positions)
    val = None
    if d.val_episodes_per_task:
        val_entries = select_episodes(d, d.val_split, {"scripted": d.val_episodes_per_task})
        val = Tensors(load_samples(d, val_entries, mc.chunk_length, encoder, progress), processor, positions)
    model = FlowChunkPolicy(mc)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)

    start, metrics_path = 0, out / METRICS_FILE
    if resume:
        if not (out / OPTIMIZER_FILE).is_file():
            raise FileNotFoundError(f"nothing to resume: {out / OPTIMIZER_FILE} not found")
        saved = read_policy_config(out)
        if saved["model"] != mc.to_dict() or saved["processor"] != processor.to_dict():
            raise ConfigError(f"{out}: the checkpoint's model or data differ from the config's; "
                              f"resume with the same config")
        model.load_state_dict(_load_tensors(out / WEIGHTS_FILE))
        _, meta = load_optimizer_state(optimizer, out / OPTIMIZER_FILE)
        start = int(meta["step"])
    else:
        out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(metrics_path, resume_step=start if resume else None).append
    (out / TRAIN_CONFIG_FILE).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    summary: dict[str, Any] = {
        "data": str(d.path), "split": d.split, "episodes": len(train_entries), "samples": len(train),
        "episodes_per_task": dict(d.episodes_per_task), "tasks": list(d.tasks), "variants": list(d.variants),
        "val_samples": len(val) if val is not None else 0, "parameters": model.num_parameters()}
    t0 = time.perf_counter()

    def save(step: int) -> None:
        summary.update(step=step, steps=cfg.steps, seconds=round(time.perf_counter() - t0, 1))
        save_policy_checkpoint(model, processor, out, training=summary)
        save_optimizer_state(optimizer, out / OPTIMIZER_FILE, metadata={"step": step, "seed": cfg.seed})
        plot_loss(read_metrics(metrics_path), out / CURVE_FILE)

    model.train()
    run_loss, run_aux, run_n = 0.0, 0.0, 0
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train policy",
               disable=not progress, dynamic_ncols=True)
    for step in scheduled_steps(bar, optimizer, cfg, stop_at):
        idx = step.rng.choice(len(train), size=cfg.batch_size)
        images = random_shift(train.images[idx], cfg.shift_pixels, step.rng)
        noise = torch.Generator().manual_seed(int(step.rng.integers(2**62)))
        loss, aux = _losses(model, train, idx, images, noise, cfg.samples_per_cond)
        total = loss if aux is None or cfg.aux_loss_weight == 0 else loss + cfg.aux_loss_weight * aux
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        run_loss += float(loss.detach())
        run_aux += float(aux.detach()) if aux is not None else 0.0
        run_n += 1
        done = step.done
        if done % cfg.log_every == 0 or done == cfg.steps:
            entry = {"step": done, "split": "train", "loss": run_loss / run_n, "lr": step.lr,
                     "grad_norm": float(grad_norm), "seconds": round(time.perf_counter() - t0, 1)}
            if model.positions is not None:
                entry["position_loss"] = run_aux / run_n
            log(entry)
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            summary["train_loss"] = entry["loss"]
            run_loss, run_aux, run_n = 0.0, 0.0, 0
        if val is not None and (done % cfg.eval_every == 0 or done == cfg.steps):
            v = validation_losses(model, val, positions, cfg.seed)
            summary["val_loss"] = v["loss"]
            if "position_error_cm" in v:
                summary["val_position_error_cm"] = v["position_error_cm"]
            log({"step": done, "split": "val", **v})
            bar.write(f"step {done}: " + ", ".join(f"val {k} {x:.4f}" for k, x in v.items()))
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or step.last:
            save(done)
    bar.close()
    if start >= cfg.steps:
        return read_policy_config(out).get("training", {})
    return summary


def cli_train_policy(args) -> int:
    cfg = load_train_config(args.config)
    if getattr(args, "steps", None):
        cfg = dataclasses.replace(cfg, steps=args.steps)
    if getattr(args, "data", None):
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=args.data))
    out = Path(args.out or cfg.out)
    summary = train_policy(cfg, out, resume=args.resume, progress=not getattr(args, "no_progress", False),
                           stop_at=getattr(args, "stop_at", None))
    val = summary.get("val_loss")
    print(f"trained {summary.get('step')} steps on {summary.get('samples')} samples -> {out}"
          + (f"; val loss {val:.4f}" if val is not None else ""))
    return 0
