"""A deep ensemble of world models behind the one `WorldModel` interface.

    ensemble = WorldModelEnsemble([load_checkpoint(a), load_checkpoint(b)])
    logits = ensemble.answer_logits(images, actions, questions)       # (B, Q, 2), like any backend

Every member answers; the ensemble's answer is the members' mean log-probability,
renormalised (the geometric mean of their probabilities: the mean of their log-odds for
yes/no). Averaging log-odds rather than probabilities keeps the answer differentiable in
the same way a single model's is, so gradient planners need no change; members that
disagree pull the answer toward 0.5, which is what a planner searching for an action
chunk one member is wrongly sure of should see.

Members must take the same questions (one vocabulary and question length), the same
frames (one image processor) and the same actions (action dim); they may differ in
architecture. Image features are the members' features, each flattened and laid side by
side, (B, F1 + F2 + ...): one tensor, as callers cache it and the ONNX scorer takes it.

On disk an ensemble is a directory holding `config.yaml` (format `swm_ros.world_model_ensemble`)
and one ordinary checkpoint directory per member; `swm ensemble` writes one.

Members fine-tuned from one checkpoint lie in one basin of the loss, and there the average
of their weights (a "model soup", Wortsman et al. 2022) answers about as well as the
ensemble at one model's cost: `average_checkpoints` / `swm ensemble --average-weights`
writes that average as an ordinary checkpoint.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from swm_ros.models.base import WorldModel
from swm_ros.models.checkpoint import (CONFIG_FILE, WEIGHTS_FILE, CheckpointError, _atomic_write,
                                       read_config_file)

ENSEMBLE_FORMAT = "swm_ros.world_model_ensemble"
ENSEMBLE_VERSION = 1


@dataclass(frozen=True)
class EnsembleConfig:
    members: int
    max_steps: int          # the shortest chunk every member takes

    def to_dict(self) -> dict[str, Any]:
        return {"members": self.members, "max_steps": self.max_steps}


class WorldModelEnsemble(WorldModel):
    """Members' mean log-probability of [no, yes] (see the module docstring)."""

    backend = "ensemble"

    def __init__(self, members: Sequence[WorldModel]):
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0]
        super().__init__(first.tokenizer, first.max_question_len)
        for i, m in enumerate(members[1:], start=1):
            for what, mine, theirs in (
                    ("vocabulary", m.vocabulary, first.vocabulary),
                    ("max_question_len", m.max_question_len, first.max_question_len),
                    ("action_dim", m.action_dim, first.action_dim),
                    ("image processor", m.processor_config(), first.processor_config()),
                    ("reads_proprio", m.reads_proprio, first.reads_proprio)):
                if mine != theirs:
                    raise ValueError(f"ensemble member {i} has another {what} than member 0: {mine!r} != {theirs!r}")
        self.members = torch.nn.ModuleList(members)
        self.action_dim = first.action_dim
        self.image_processor = first.image_processor
        self.config = EnsembleConfig(len(members), min(int(m.config.max_steps) for m in members))
        # each member's feature shape (batch left out), to split the flat features again; a
        # member resizes every frame to its own input size, so one blank frame shows them all
        with torch.no_grad():
            blank = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
            self._feature_shapes = [tuple(m.encode_image(blank).shape[1:]) for m in members]

    def encode_image(self, images) -> torch.Tensor:
        return torch.cat([m.encode_image(images).flatten(1) for m in self.members], dim=1)

    def _member_features(self, features: torch.Tensor) -> list[torch.Tensor]:
        sizes = [math.prod(s) for s in self._feature_shapes]
        if features.dim() != 2 or features.shape[1] != sum(sizes):
            raise ValueError(f"ensemble features must be (B, {sum(sizes)}), got {tuple(features.shape)}")
        return [f.reshape(f.shape[0], *s) for f, s in zip(features.split(sizes, dim=1), self._feature_shapes)]

    def prepare_questions(self, features: torch.Tensor, question_tokens: torch.Tensor) -> Any:
        return tuple(m.prepare_questions(f, question_tokens)
                     for m, f in zip(self.members, self._member_features(features)))

    def member_logits_from_features(self, features: torch.Tensor, actions: torch.Tensor, question_tokens: Any,
                                    action_mask: torch.Tensor | None = None,
                                    proprio: torch.Tensor | None = None) -> torch.Tensor:
        """(M, B, Q, 2) every member's logits; `question_tokens` raw (Q, L) / (B, Q, L) ids or
        this ensemble's `prepare_questions`."""
        per_member = question_tokens if isinstance(question_tokens, tuple) else (question_tokens,) * len(self.members)
        return torch.stack([m.answer_logits_from_features(f, actions, q, action_mask, proprio)
                            for m, f, q in zip(self.members, self._member_features(features), per_member)])

    def answer_logits_from_features(self, features, actions, question_tokens, action_mask=None, proprio=None):
        logp = self.member_logits_from_features(features, actions, question_tokens, action_mask,
                                                proprio).log_softmax(-1).mean(0)
        return logp.log_softmax(-1)

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    @property
    def reads_proprio(self) -> bool:
        return self.members[0].reads_proprio


# ---- on disk ---------------------------------------------------------------------------
def is_ensemble_dir(directory: str | Path) -> bool:
    """Whether `directory` holds an ensemble (its config.yaml carries the ensemble format)."""
    try:
        read_config_file(directory, ENSEMBLE_FORMAT, "world-model ensemble")
    except (FileNotFoundError, CheckpointError):
        return False
    return True


def member_directories(directory: str | Path) -> list[Path]:
    """The member checkpoint directories an ensemble directory lists, checked to exist."""
    return _read_ensemble(directory)[0]


def _read_ensemble(directory: str | Path) -> tuple[list[Path], dict[str, Any]]:
    """(member directories, config) of an ensemble directory, both checked."""
    path, config = read_config_file(directory, ENSEMBLE_FORMAT, "world-model ensemble")
    if config.get("format_version") != ENSEMBLE_VERSION:
        raise CheckpointError(f"{path}: format_version {config.get('format_version')!r}, "
                              f"this code reads {ENSEMBLE_VERSION}")
    names = config.get("members")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: 'members' must list at least 2 member directory names")
    for n in names:
        if n in ("", ".", "..") or "/" in n or "\\" in n:
            raise CheckpointError(f"{path}: member {n!r} is not a directory name inside the ensemble")
    dirs = [Path(directory) / n for n in names]
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{path}: member directory not found: {d}")
    return dirs, config


def load_ensemble(directory: str | Path, device: str = "cpu") -> WorldModelEnsemble:
    from swm_ros.models.checkpoint import load_checkpoint

    members, config = _read_ensemble(directory)
    try:
        ensemble = WorldModelEnsemble([load_checkpoint(d, device=device) for d in members])
    except CheckpointError:
        raise
    except ValueError as e:                 # members that cannot answer together
        raise CheckpointError(f"{Path(directory) / CONFIG_FILE}: {e}") from e
    ensemble.training_summary = config.get("training") or {}
    return ensemble.to(device).eval()


def write_ensemble(members: Sequence[str | Path], out: str | Path, note: dict[str, Any] | None = None) -> Path:
    """Copy the member checkpoints (weights + config) into `out` as `member_0`, `member_1`, ...
    and write the ensemble's config.yaml; the members are loaded together first, so an
    ensemble that would not load is never written."""
    import yaml

    from swm_ros.models.checkpoint import load_checkpoint

    out = Path(out)
    sources = [Path(m) for m in members]
    WorldModelEnsemble([load_checkpoint(s) for s in sources])        # raises on a mismatch
    names = [f"member_{i}" for i in range(len(sources))]
    for name, src in zip(names, sources):
        dst = out / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copyfile(src / f, dst / f)
    config = {"format": ENSEMBLE_FORMAT, "format_version": ENSEMBLE_VERSION, "members": names,
              "combine": "mean member log-probability",
              "training": {"members_from": [str(s) for s in sources], **(note or {})}}
    _atomic_write(out / CONFIG_FILE, lambda p: Path(p).write_text(yaml.safe_dump(config, sort_keys=False)))
    return out


def average_checkpoints(members: Sequence[str | Path], out: str | Path) -> Path:
    """The uniform average of the members' weights as one ordinary checkpoint in `out`.
    The members must be one model: backend, model config, vocabulary and image processor alike.
    Only sensible for members fine-tuned from a common checkpoint (one loss basin)."""
    from swm_ros.models.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint

    if len(members) < 2:
        raise ValueError(f"averaging needs at least 2 checkpoints, got {len(members)}")
    configs = [read_checkpoint_config(m) for m in members]
    for i, c in enumerate(configs[1:], start=1):
        for key in ("backend", "model", "vocabulary", "processor"):
            if c.get(key) != configs[0].get(key):
                raise ValueError(f"checkpoint {members[i]} has another {key} than {members[0]}: "
                                 f"only one model's weights can be averaged")
    models = [load_checkpoint(m) for m in members]
    states = [m.state_dict() for m in models]
    averaged = {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
                for k, v in states[0].items()}
    models[0].load_state_dict(averaged)
    return save_checkpoint(models[0], out, training={"average_of": [str(m) for m in members]})


def cli_ensemble(args: Any) -> int:
    if len(args.members) < 2:
        raise SystemExit(f"swm ensemble: give at least 2 member checkpoints, got {len(args.members)}")
    try:
        out = (average_checkpoints if args.average_weights else write_ensemble)(args.members, args.out)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"swm ensemble: {e}") from None
    kind = "their weights' average" if args.average_weights else f"an ensemble of {len(args.members)}"
    print(f"wrote {out} ({kind}); use it as --checkpoint {out}")
    return 0
