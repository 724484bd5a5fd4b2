"""`swm train world-model`: train a world-model backend on SAQA rows.

    swm train world-model --config config/train/world_model_tiny.yaml [--out DIR] [--resume]

AdamW with linear warmup then cosine decay, gradient-norm clipping, balanced sampling of
(family, answer) strata (`SAQADataset.sample_weights`), fixed seeds (the batch of step s
is drawn from a generator seeded by (seed, s), so a resumed run sees the same batches),
periodic validation, a checkpoint directory loadable by `load_world_model(out)`, the
optimizer state for `--resume` (safetensors), `metrics.jsonl` and `curves.png`.

With `ema_decay` set, an exponential moving average of the weights (torch's `AveragedModel`)
is what validation measures and what `model.safetensors` holds; the weights being trained
go to `train_weights.safetensors` so that `--resume` continues both.

Two auxiliary losses use the episodes' privileged state: `aux_loss_weight` (where the
grounding finds each colour word vs the block's position, models/localisation.py) and
`future_state_loss_weight` (how far the blocks and the hand have moved after every action
step, read from the action tokens, models/future_states.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from swm_ros.config import ConfigError, load_config, to_dict
from swm_ros.models.checkpoint import (CONFIG_FILE, OPTIMIZER_FILE, WEIGHTS_FILE, _load_tensors,
                                       load_optimizer_state, read_checkpoint_config, save_checkpoint,
                                       save_optimizer_state, write_weights)
from swm_ros.models.future_states import FutureStateHead, FutureStateTargets, LastBlockInput, future_state_loss
from swm_ros.models.registry import build_world_model
from swm_ros.models.training_steps import scheduled_steps
from swm_ros.processing.image import ImageProcessor, ImageProcessorConfig

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
TRAIN_CONFIG_FILE = "train_config.yaml"
TRAIN_WEIGHTS_FILE = "train_weights.safetensors"   # the trained (not averaged) weights, with ema_decay
FUTURE_HEAD_FILE = "future_state_head.safetensors"  # the dynamics loss's head, with future_state_loss_weight


@dataclass
class MixedSource:
    """Another SAQA file whose training rows fill a fixed share of every batch: e.g. the
    learned base policy's own episodes (the chunks a planner ranks) beside the main file's
    expert, noisy and random ones, so the model learns them without forgetting the rest."""
    path: str
    fraction: float                              # share of each training batch, in (0, 1)
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    # None: as data.balanced. False draws its rows uniformly: for a file whose families are far
    # apart in size by design (contrastive rows), equal strata would replay its rarest few rows
    balanced: bool | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"mix fraction must be in (0, 1), got {self.fraction}")


@dataclass
class DataConfig:
    path: str                                    # SAQA file from `swm saqa`
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    val_splits: list[str] = field(default_factory=lambda: ["val"])
    max_horizon: int | None = None               # default: the SAQA file's
    families: list[str] | None = None            # None: all families
    camera: str | None = None                    # None: the episodes' first camera
    preload_images: bool = True                  # keep decoded episode images in memory
    val_rows: int = 2000                         # fixed random subset of the validation rows
    max_train_rows: int | None = None            # use only the first N training rows (debugging)
    balanced: bool = True                        # sample (family, answer) strata equally
    mix: list[MixedSource] = field(default_factory=list)   # more files' rows in every batch; val stays on `path`

    def __post_init__(self) -> None:
        if sum(m.fraction for m in self.mix) >= 1.0:
            raise ValueError("the mix fractions must leave a share of each batch to `path`")


@dataclass
class WorldModelTrainConfig:
    data: DataConfig
    backend: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)   # the backend's config (strict keys)
    out: str = "runs/world_model_tiny"
    batch_size: int = 64
    steps: int = 20000
    lr: float = 1e-3
    min_lr_ratio: float = 0.05                   # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 500
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 500
    log_every: int = 50
    checkpoint_every: int = 1000
    num_threads: int = 2
    length_buckets: int = 4                      # split each batch by horizon to trim padding (same loss)
    # weight of the auxiliary block-localisation loss (models/localisation.py): where the
    # model's word grounding finds each colour name vs the block's projected position (needs
    # a model with `grounding: true`); 0: answers only
    aux_loss_weight: float = 0.0
    # weight of the auxiliary dynamics loss (models/future_states.py): the action tokens, as
    # the last transformer block reads them, regressed to how far each block and the hand have
    # moved after that step (privileged state); needs a late-fusion backend (tiny, effnet)
    future_state_loss_weight: float = 0.0
    # start from this checkpoint directory's weights (same backend and parameter shapes; the
    # model config may differ in what adds no parameters, e.g. grounding_entities): a new
    # schedule from a trained model, where --resume continues the old one
    init_from: str | None = None
    # keep an exponential moving average of the weights (per optimizer step) and validate and
    # save it, not the last step's weights: the average smooths the last steps' noise for free
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "eval_every", "log_every", "checkpoint_every", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or null, got {self.ema_decay}")
        if self.aux_loss_weight < 0 or self.future_state_loss_weight < 0:
            raise ValueError("aux_loss_weight and future_state_loss_weight must be >= 0")


def load_train_config(path: str | Path) -> WorldModelTrainConfig:
    cfg = load_config(WorldModelTrainConfig, path)
    build_world_model(cfg.backend, cfg.model)      # validates backend name and model keys early
    return cfg


# ---- data ------------------------------------------------------------------------------
class BlockTargets:
    """Per row: where each colour's block is in the row's (cropped) frame, and where the
    effector is (for the model's non-colour entity words, "gripper"), from the episode's
    privileged state, for the auxiliary localisation loss. Projections cached per episode."""

    def __init__(self, ds, projector, entity_words: Sequence[str] = ()):
        self.ds, self.projector = ds, projector
        self.names = list(ds.colors) + list(entity_words)
        self._uv: dict[int, tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]] = {}

    def __call__(self, episodes: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from swm_ros.models.localisation import block_targets

        n_entities = len(self.names) - len(self.ds.colors)
        targets, masks = [], []
        for e, t in zip(episodes.tolist(), frames.tolist()):
            if e not in self._uv:
                st = self.ds.states(e)
                self._uv[e] = (self.projector(st.object_position), self.projector(st.effector_position),
                               st.object_colors, st.object_kinds)
            uv, effector_uv, colours, kinds = self._uv[e]
            tgt, m = block_targets(self.ds.colors, colours, uv[t], kinds)
            inside = bool(np.all((effector_uv[t] >= 0.0) & (effector_uv[t] <= 1.0)))
            targets.append(np.concatenate([tgt, np.tile(effector_uv[t].astype(np.float32), (n_entities, 1))]))
            masks.append(np.concatenate([m, np.full(n_entities, inside)]))
        return np.stack(targets), np.stack(masks)


class Batcher:
    """SAQA rows -> model inputs, with every distinct question tokenised once."""

    def __init__(self, ds, model, block_targets: BlockTargets | None = None,
                 future_states: FutureStateTargets | None = None):
        self.ds = ds
        self.block_targets = block_targets
        self.future_states = future_states
        self.with_proprio = model.reads_proprio
        tokens = model.tokenize(ds.questions) if ds.questions else torch.zeros(0, 1, dtype=torch.int64)
        width = int((tokens != 0).sum(1).max()) if len(tokens) else 1
        self.tokens = tokens[:, :max(width, 1)]           # no all-padding columns

    def chunks(self, indices, n: int) -> list[dict[str, torch.Tensor]]:
        """The rows in up to n chunks of similar horizon, each padded only to its own longest
        chunk: the same loss as one padded batch (padding is masked), less compute."""
        indices = np.asarray(indices)
        order = np.argsort(self.ds.columns["h"][indices], kind="stable")
        return [self(part) for part in np.array_split(indices[order], min(n, len(indices))) if len(part)]

    def __call__(self, indices) -> dict[str, torch.Tensor]:
        b = self.ds.batch(np.asarray(indices))
        t = int(b["horizon"].max()) if len(b["horizon"]) else 0     # trim the padded action steps
        extra = {}
        if self.block_targets is not None:
            uv, mask = self.block_targets(b["episode"], b["t"])
            extra = {"block_uv": torch.from_numpy(uv), "block_mask": torch.from_numpy(mask)}
        if self.future_states is not None:
            future, future_mask = self.future_states(b["episode"], b["t"], b["horizon"], t)
            extra.update(future=torch.from_numpy(future), future_mask=torch.from_numpy(future_mask))
        if self.with_proprio:
            extra["proprio"] = torch.from_numpy(b["proprio"])
        return {
            **extra,
            "images": torch.from_numpy(b["image"]),
            "actions": torch.from_numpy(b["actions"][:, :t]).float(),
            "action_mask": torch.from_numpy(b["action_mask"][:, :t]),
            "tokens": self.tokens[torch.from_numpy(b["question_id"])].unsqueeze(1),    # (B, 1, L)
            "answer": torch.from_numpy(b["answer"]).long(),
            "family": torch.from_numpy(b["family"]).long(),
            "horizon": torch.from_numpy(b["horizon"]).long(),
        }


@dataclass
class TrainSource:
    """One SAQA file's training rows and how many of them each batch draws."""
    name: str                    # "<file> (<splits>)", for the metrics
    ds: Any
    batcher: Batcher
    weights: np.ndarray          # sampling probability per row
    per_batch: int

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.weights), size=self.per_batch, p=self.weights)


def _train_source(path: str, splits: list[str], per_batch: int, model, cfg: WorldModelTrainConfig,
                  ds_kwargs: dict[str, Any], max_rows: int | None = None, share_with=None,
                  balanced: bool | None = None, colours: Sequence[str] | None = None) -> TrainSource:
    from swm_ros.saqa.dataset import SAQADataset

    ds = SAQADataset(path, split=splits, **ds_kwargs)
    if share_with is not None:     # a mix built on the same episodes: their frames in memory once
        ds.share_episodes(share_with)
    n = len(ds) if max_rows is None else min(len(ds), max_rows)
    if n == 0:
        raise ValueError(f"{path}: no training rows in splits {splits}")
    weights = ds.sample_weights()[:n] if (cfg.data.balanced if balanced is None else balanced) else np.ones(n)
    targets = None
    if cfg.aux_loss_weight > 0:
        entities = [w for w in getattr(model.config, "grounding_entities", []) if w in model.tokenizer.ids]
        targets = BlockTargets(ds, _block_projector(ds, model), entities)
    future = FutureStateTargets(ds, colours) if cfg.future_state_loss_weight > 0 else None
    return TrainSource(f"{path} ({','.join(splits)})", ds, Batcher(ds, model, targets, future),
                       weights / weights.sum(), per_batch)


def forward_batch(model, batch: dict[str, torch.Tensor], with_features: bool = False):
    feats = model.encode_image(batch["images"])
    logits = model.answer_logits_from_features(feats, batch["actions"], batch["tokens"], batch["action_mask"],
                                               batch.get("proprio"))[:, 0]
    return (logits, feats) if with_features else logits


def localisation_loss(pred_uv: torch.Tensor, target_uv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted block positions over the blocks present."""
    c = min(pred_uv.shape[1], target_uv.shape[1])
    err = ((pred_uv[:, :c] - target_uv[:, :c]) ** 2).sum(-1) * mask[:, :c]
    return err.sum() / mask[:, :c].sum().clamp(min=1)


def _future_state_head(model, source: TrainSource) -> FutureStateHead:
    """The dynamics loss's head for a late-fusion model (one reading its action tokens)."""
    if not hasattr(model, "blocks") or not hasattr(model.config, "d_model"):
        raise ConfigError(f"future_state_loss_weight > 0 needs a late-fusion backend (tiny, effnet), "
                          f"not {type(model).__name__}")
    return FutureStateHead(model.config.d_model, source.batcher.future_states.size)


def _block_projector(ds, model):
    from swm_ros.data.episodes import EpisodeReader
    from swm_ros.models.localisation import BlockProjector

    if not getattr(getattr(model, "config", None), "grounding", False):
        raise ConfigError("aux_loss_weight > 0 needs a model with word grounding (model: grounding: true)")
    unknown = [c for c in ds.colors if c not in model.tokenizer.ids]
    if unknown:
        raise ConfigError(f"aux_loss_weight > 0: the model's vocabulary lacks the colour name(s) {unknown}")
    with EpisodeReader(ds.episode_files[0]) as ep:
        camera = ds.camera or ep.cameras[0]
        robot = ep.meta.robot
    roi = model.image_processor.config.roi if model.image_processor is not None else None
    return BlockProjector(robot, camera, roi)


def _init_from(model, backend: str, path: Path) -> None:
    saved = read_checkpoint_config(path)
    if saved["backend"] != backend:
        raise ConfigError(f"init_from {path}: backend {saved['backend']!r}, the config's {backend!r}")
    tensors = _load_tensors(path / WEIGHTS_FILE)
    if saved["vocabulary"] != model.vocabulary:
        tensors = _grow_vocabulary(model, tensors, saved["vocabulary"], path)
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:          # shape mismatches
        raise ConfigError(f"init_from {path}: its weights do not fit this model: {err}") from None
    # a part the model adds with a zero init (ZERO_INIT_PARTS) may be missing: it starts as
    # if absent, so the model answers as the one it starts from
    zero_init = tuple(f"{part}." for part in getattr(model, "ZERO_INIT_PARTS", ()))
    # so may whole transformer blocks after the checkpoint's last (a deeper model grown from
    # it): they start as identities
    grown = _grown_blocks(model, tensors)
    missing = [k for k in missing if not k.startswith(zero_init) and _block_index(k) not in grown]
    if missing or unexpected:
        raise ConfigError(f"init_from {path}: its weights do not fit this model: missing {missing}, "
                          f"unexpected {unexpected}")
    if grown:
        model.make_blocks_identity(grown)


def _grow_vocabulary(model, tensors: dict[str, torch.Tensor], saved_vocabulary: list[str],
                     path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's word rows moved to where the model's vocabulary has the same words.

    A model whose vocabulary adds words (a new question family's) starts from one trained
    without them: every known word keeps its trained embedding, a new word its fresh init,
    so known questions are answered as before. Only a model that names its vocabulary-sized
    parameters (`VOCABULARY_PARTS`) can grow, and only by adding words."""
    lost = [w for w in saved_vocabulary if w not in model.tokenizer.ids]
    parts = getattr(model, "VOCABULARY_PARTS", ())
    if lost or not parts:
        raise ConfigError(f"init_from {path}: its vocabulary must match the model's"
                          + (f"; the model lacks {lost}" if lost else "")
                          + ("" if parts else f" ({type(model).__name__} cannot grow one)"))
    rows = torch.tensor([model.tokenizer.ids[w] for w in saved_vocabulary])
    fresh = model.state_dict()
    grown = dict(tensors)
    for name in parts:
        if tensors[name].shape[0] != len(saved_vocabulary):
            raise ConfigError(f"init_from {path}: {name} has {tensors[name].shape[0]} rows for "
                              f"{len(saved_vocabulary)} words")
        grown[name] = fresh[name].clone()
        grown[name][rows] = tensors[name]
    return grown


def _block_index(key: str) -> int | None:
    parts = key.split(".")
    return int(parts[1]) if parts[0] == "blocks" and parts[1].isdigit() else None


def _grown_blocks(model, tensors: dict[str, torch.Tensor]) -> list[int]:
    """Indices of the model's transformer blocks after the checkpoint's last one."""
    if not hasattr(model, "make_blocks_identity"):
        return []
    saved = {_block_index(k) for k in tensors} - {None}
    first_new = max(saved) + 1 if saved else 0
    return list(range(first_new, len(model.blocks)))


@torch.no_grad()
def evaluate(model, batcher: Batcher, indices: np.ndarray, batch_size: int = 256,
             family_names: list[str] | None = None) -> dict[str, Any]:
    """Loss, accuracy and accuracy per family and horizon bucket over `indices`."""
    was = model.training
    model.eval()
    losses, correct, fams, hors = [], [], [], []
    for b in batcher.chunks(indices, max(1, -(-len(indices) // batch_size))):
        logits = forward_batch(model, b)
        losses.append(F.cross_entropy(logits, b["answer"], reduction="none"))
        correct.append(logits.argmax(-1) == b["answer"])
        fams.append(b["family"])
        hors.append(b["horizon"])
    model.train(was)
    if not losses:
        return {"rows": 0}
    loss, ok, fam, hor = (torch.cat(x) for x in (losses, correct, fams, hors))
    out: dict[str, Any] = {"rows": int(len(ok)), "loss": float(loss.mean()), "accuracy": float(ok.float().mean())}
    out["by_family"] = {(family_names[f] if family_names else str(f)): float(ok[fam == f].float().mean())
                        for f in sorted(set(fam.tolist()))}
    buckets = {"h=0": hor == 0, "h=1-10": (hor >= 1) & (hor <= 10), "h=11-25": (hor >= 11) & (hor <= 25),
               "h>25": hor > 25}
    out["by_horizon"] = {k: float(ok[m].float().mean()) for k, m in buckets.items() if bool(m.any())}
    return out


def _weight_average(model, decay: float | None):
    """torch's exponential moving average of `model`'s parameters, or None without a decay."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


def _param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() < 2 or name.endswith("_pos") or name == "type_emb":
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---- metrics ---------------------------------------------------------------------------
def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """A run's metrics.jsonl, one JSON object a line, appended as training goes. A resumed run
    keeps the entries up to its checkpoint's step, so no step is ever logged twice."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        kept = [] if resume_step is None else [m for m in read_metrics(path) if m["step"] <= resume_step]
        path.write_text("".join(json.dumps(m) + "\n" for m in kept))

    def append(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")


def plot_curves(metrics: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [m for m in metrics if m.get("split") == "train"]
    val = [m for m in metrics if m.get("split") == "val" and "accuracy" in m]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax1.plot([m["step"] for m in train], [m["loss"] for m in train], label="train")
        ax2.plot([m["step"] for m in train], [m["accuracy"] for m in train], label="train (batches)")
        mixed = [m for m in train if "by_source" in m]
        for source in (mixed[-1]["by_source"] if mixed else {}):
            ax2.plot([m["step"] for m in mixed], [m["by_source"][source]["accuracy"] for m in mixed], ":",
                     lw=1, label=f"train: {source}")
    if val:
        ax1.plot([m["step"] for m in val], [m["loss"] for m in val], "o-", label="val")
        ax2.plot([m["step"] for m in val], [m["accuracy"] for m in val], "o-", label="val")
    ax1.set(xlabel="step", ylabel="cross-entropy", title="loss")
    ax2.set(xlabel="step", ylabel="accuracy", title="yes/no accuracy", ylim=(0.0, 1.0))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- training --------------------------------------------------------------------------
def train_world_model(cfg: WorldModelTrainConfig, out: str | Path | None = None, resume: bool = False,
                      progress: bool = True, stop_at: int | None = None) -> dict[str, Any]:
    """Train per `cfg` into `out` (default cfg.out); returns the training summary. `stop_at`
    ends this run after that step (with a checkpoint); `resume` continues it on the same schedule."""
    from tqdm import tqdm

    from swm_ros.saqa.dataset import SAQADataset

    out = Path(out or cfg.out)
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    model = build_world_model(cfg.backend, cfg.model)
    d = cfg.data
    max_h = d.max_horizon
    if max_h is None:
        max_h = SAQADataset(d.path, split=None).max_horizon
    if max_h > model.config.max_steps:
        raise ConfigError(f"data max_horizon {max_h} > model max_steps {model.config.max_steps}")
    ds_kwargs = dict(camera=d.camera, max_horizon=max_h, families=d.families, preload_images=d.preload_images)
    val_ds = SAQADataset(d.path, split=d.val_splits, **ds_kwargs)
    processing = val_ds.image_processing()
    if processing is not None:     # the model carries the crop + resize its frames went through
        model.image_processor = ImageProcessor(ImageProcessorConfig.from_dict(processing))
    mixed_rows = [max(1, round(m.fraction * cfg.batch_size)) for m in d.mix]
    if sum(mixed_rows) >= cfg.batch_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is too small for the mix fractions")
    sources = [_train_source(d.path, d.train_splits, cfg.batch_size - sum(mixed_rows), model, cfg, ds_kwargs,
                             d.max_train_rows, colours=val_ds.colors)]
    for m, rows in zip(d.mix, mixed_rows):
        sources.append(_train_source(m.path, m.train_splits, rows, model, cfg, ds_kwargs, share_with=sources[0].ds,
                                     balanced=m.balanced, colours=val_ds.colors))
        if sources[-1].ds.image_processing() != processing:
            raise ConfigError(f"mix {m.path}: its frames were processed with {sources[-1].ds.image_processing()}, "
                              f"{d.path}'s with {processing}: mix only files collected alike")
    val_idx = np.sort(np.random.default_rng(cfg.seed).choice(len(val_ds), min(d.val_rows, len(val_ds)),
                                                             replace=False)) if len(val_ds) else np.zeros(0, int)
    val_batch = Batcher(val_ds, model)
    future_head = _future_state_head(model, sources[0]) if cfg.future_state_loss_weight > 0 else None
    groups = _param_groups(model, cfg.weight_decay)
    if future_head is not None:
        groups.append({"params": list(future_head.parameters()), "weight_decay": cfg.weight_decay})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)

    start, metrics_path = 0, out / METRICS_FILE
    if resume:
        if not (out / OPTIMIZER_FILE).is_file():
            raise FileNotFoundError(f"nothing to resume: {out / OPTIMIZER_FILE} not found")
        saved = read_checkpoint_config(out)
        if saved["backend"] != cfg.backend or saved["model"] != model.config_dict() \
                or saved["vocabulary"] != model.vocabulary:
            raise ConfigError(f"{out / CONFIG_FILE}: the checkpoint's model differs from the config's; "
                              f"resume with the same backend and model config")
        averaged = cfg.ema_decay is not None
        if averaged != (out / TRAIN_WEIGHTS_FILE).is_file():
            raise ConfigError(f"{out}: resume with the ema_decay setting the run was started with")
        model.load_state_dict(_load_tensors(out / (TRAIN_WEIGHTS_FILE if averaged else WEIGHTS_FILE)))
        if (future_head is not None) != (out / FUTURE_HEAD_FILE).is_file():
            raise ConfigError(f"{out}: resume with the future_state_loss_weight the run was started with "
                              f"(zero or not)")
        if future_head is not None:
            future_head.load_state_dict(_load_tensors(out / FUTURE_HEAD_FILE))
        extra, meta = load_optimizer_state(optimizer, out / OPTIMIZER_FILE)
        start = int(meta["step"])
        if "torch_rng" in extra:
            torch.set_rng_state(extra["torch_rng"])
    else:
        out.mkdir(parents=True, exist_ok=True)
        for stale in (TRAIN_WEIGHTS_FILE, FUTURE_HEAD_FILE):     # an earlier run's, in the same directory
            (out / stale).unlink(missing_ok=True)
        if cfg.init_from is not None:
            _init_from(model, cfg.backend, Path(cfg.init_from))
    if not resume and model.reads_proprio and not bool(model.proprio.mean.any()):
        src = sources[0]          # standardise the proprioception with the training rows' statistics
        rows = np.random.default_rng(cfg.seed).choice(len(src.weights), min(5000, len(src.weights)), replace=False)
        cols = src.ds.columns
        model.proprio.set_statistics(np.stack([src.ds.proprio(int(cols["episode"][i]), int(cols["t"][i]))
                                               for i in rows]))
    ema = _weight_average(model, cfg.ema_decay)
    if ema is not None and resume:
        ema.module.load_state_dict(_load_tensors(out / WEIGHTS_FILE))
        ema.n_averaged.fill_(max(start, 1))
    saved_model = ema.module if ema is not None else model     # what validation and the checkpoint see
    log = MetricsLog(metrics_path, resume_step=start if resume else None).append
    (out / TRAIN_CONFIG_FILE).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    summary: dict[str, Any] = {"backend": cfg.backend, "data": str(d.path), "train_rows": len(sources[0].weights),
                               "val_rows": int(len(val_idx)), "parameters": model.num_parameters()}
    if d.mix:
        summary["mix"] = [{"source": src.name, "train_rows": len(src.weights), "per_batch": src.per_batch}
                          for src in sources]
    last_val: dict[str, Any] = {}

    def save(step: int) -> None:
        summary.update(step=step, steps=cfg.steps, val=last_val, seconds=time.perf_counter() - t0)
        save_checkpoint(saved_model, out, training=summary)
        if ema is not None:
            write_weights(out / TRAIN_WEIGHTS_FILE, model.state_dict())
        if future_head is not None:
            write_weights(out / FUTURE_HEAD_FILE, future_head.state_dict())
        save_optimizer_state(optimizer, out / OPTIMIZER_FILE, extra={"torch_rng": torch.get_rng_state()},
                             metadata={"step": step, "seed": cfg.seed})
        plot_curves(read_metrics(metrics_path), out / CURVES_FILE)

    model.train()
    t0 = time.perf_counter()
    run_loss, run_ok, run_n, run_aux, run_future = 0.0, 0, 0, 0.0, 0.0
    # the action tokens' states for the dynamics loss, kept from the same forward pass
    tap = LastBlockInput(model) if future_head is not None else contextlib.nullcontext()
    source_ok = np.zeros(len(sources), int)       # correct answers per source since the last log
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train world-model",
               disable=not progress, dynamic_ncols=True)
    for step in scheduled_steps(bar, optimizer, cfg, stop_at):
        optimizer.zero_grad(set_to_none=True)
        for k, source in enumerate(sources):
            idx = source.draw(step.rng)
            buckets = max(1, round(cfg.length_buckets * len(idx) / cfg.batch_size))
            for batch in source.batcher.chunks(idx, buckets):
                with tap:
                    logits, feats = forward_batch(model, batch, with_features=True)
                loss = F.cross_entropy(logits, batch["answer"], reduction="sum") / cfg.batch_size
                if future_head is not None and batch["actions"].shape[1] > 0:
                    states = tap.action_states(batch["actions"].shape[1], batch["tokens"].shape[-1])
                    future = future_state_loss(future_head(states), batch["future"], batch["future_mask"])
                    loss = loss + cfg.future_state_loss_weight * future * (len(logits) / cfg.batch_size)
                    run_future += float(future.detach()) * len(logits)
                if batch.get("block_uv") is not None:
                    aux = localisation_loss(model.locate(feats, source.batcher.block_targets.names),
                                            batch["block_uv"], batch["block_mask"])
                    loss = loss + cfg.aux_loss_weight * aux * (len(logits) / cfg.batch_size)
                    run_aux += float(aux.detach()) * len(logits)
                loss.backward()
                run_loss += float(loss.detach()) * cfg.batch_size
                ok = int((logits.argmax(-1) == batch["answer"]).sum())
                run_ok += ok
                source_ok[k] += ok
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        run_n += cfg.batch_size
        done = step.done
        if done % cfg.log_every == 0 or done == cfg.steps:
            entry = {"step": done, "split": "train", "loss": run_loss / run_n, "accuracy": run_ok / run_n,
                     "lr": step.lr, "grad_norm": float(grad_norm), "seconds": time.perf_counter() - t0}
            if cfg.aux_loss_weight > 0:
                entry["localisation_mse"] = run_aux / run_n
            if future_head is not None:
                entry["future_state_mse"] = run_future / run_n
            if d.mix:       # how the model does on each file's rows, e.g. on-policy ones vs the rest
                rows = run_n // cfg.batch_size
                entry["by_source"] = {src.name: {"accuracy": int(c) / (src.per_batch * rows),
                                                 "rows": src.per_batch * rows}
                                      for src, c in zip(sources, source_ok)}
                source_ok[:] = 0
            log(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}", acc=f"{entry['accuracy']:.3f}")
            summary["train"] = {k: entry[k] for k in ("loss", "accuracy")}
            run_loss, run_ok, run_n, run_aux, run_future = 0.0, 0, 0, 0.0, 0.0
        if len(val_idx) and (done % cfg.eval_every == 0 or done == cfg.steps):
            last_val = evaluate(saved_model, val_batch, val_idx, family_names=val_ds.family_names)
            if ema is not None:     # the trained weights too, to see what the average adds
                last_val["accuracy_trained"] = evaluate(model, val_batch, val_idx)["accuracy"]
            log({"step": done, "split": "val", **last_val})
            bar.write(f"step {done}: val accuracy {last_val['accuracy']:.4f} loss {last_val['loss']:.4f}")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or step.last:
            save(done)
    bar.close()
    for source in sources:
        source.ds.close()
    val_ds.close()
    if start >= cfg.steps:         # nothing left to do: the saved checkpoint stays as it is
        return read_checkpoint_config(out).get("training", {})
    return summary


def cli_train_world_model(args) -> int:
    cfg = load_train_config(args.config)
    if getattr(args, "steps", None):
        cfg = dataclasses.replace(cfg, steps=args.steps)
    if getattr(args, "seed", None) is not None:        # ensemble members: one config, several seeds
        cfg = dataclasses.replace(cfg, seed=args.seed)
    out = Path(args.out or cfg.out)
    summary = train_world_model(cfg, out, resume=args.resume, progress=not getattr(args, "no_progress", False),
                                stop_at=getattr(args, "stop_at", None))
    val = summary.get("val") or {}
    print(f"trained {summary.get('step')} steps -> {out}"
          + (f"; val accuracy {val['accuracy']:.4f}" if "accuracy" in val else ""))
    return 0
