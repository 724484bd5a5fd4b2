"""World-model backends by name, and loading a model from a checkpoint directory or a name.

    model = load_world_model("tiny")                     # the shipped weights, swm_ros/models/weights/tiny/
    model = load_world_model("runs/world_model_tiny")    # a checkpoint directory from `swm train world-model`
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class Backend:
    name: str
    module: str
    model_class: str
    config_class: str

    def classes(self) -> tuple[Any, Any]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.model_class), getattr(mod, self.config_class)


BACKENDS: dict[str, Backend] = {
    "tiny": Backend("tiny", "swm_ros.models.tiny", "TinyWorldModel", "TinyConfig"),
    "effnet": Backend("effnet", "swm_ros.models.effnet", "EffNetWorldModel", "EffNetConfig"),
    "paligemma": Backend("paligemma", "swm_ros.models.paligemma", "PaliGemmaWorldModel", "PaliGemmaWMConfig"),
}


class UnknownBackendError(ValueError):
    pass


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnknownBackendError(f"unknown world-model backend {name!r}; known backends: {sorted(BACKENDS)}") from None


def build_world_model(backend: str, config: dict[str, Any] | None = None, vocabulary: list[str] | None = None):
    """A freshly initialised model of `backend` from a plain config mapping (strict keys)."""
    from swm_ros.config import load_config
    from swm_ros.models.text import Tokenizer

    model_cls, config_cls = get_backend(backend).classes()
    cfg = load_config(config_cls, dict(config or {}), where=f"{backend} model config")
    tok = Tokenizer(vocabulary) if vocabulary is not None else Tokenizer.default()
    return model_cls(cfg, tok)


def default_weights(name: str) -> Path:
    return WEIGHTS_DIR / name


def checkpoint_backends(directory: str | Path) -> list[str]:
    """The backend of the model a checkpoint directory holds, or of each member of an ensemble."""
    from swm_ros.models.checkpoint import read_checkpoint_config
    from swm_ros.models.ensemble import is_ensemble_dir, member_directories

    members = member_directories(directory) if is_ensemble_dir(directory) else [Path(directory)]
    return [read_checkpoint_config(d)["backend"] for d in members]


def load_world_model(path_or_name: str | Path, device: str = "cpu", proprio: bool = False):
    """Load a checkpoint directory (one model's, or an ensemble's: `swm_ros.models.ensemble`),
    or shipped weights by name: a backend's (`tiny`) or another shipped model (`tiny-ogbench`,
    the tiny model trained on OGBench cube SAQA). `proprio`: the caller passes the robot's
    proprioception, so a model that reads it (`proprio_dim`) may load; every other caller gets
    a clear error here rather than at its first query."""
    from swm_ros.models.checkpoint import load_checkpoint
    from swm_ros.models.ensemble import is_ensemble_dir, load_ensemble

    p = Path(path_or_name)
    shipped = isinstance(path_or_name, str) and (path_or_name in BACKENDS or default_weights(path_or_name).is_dir())
    if shipped and not p.exists():
        p = default_weights(path_or_name)
        if not p.is_dir():
            raise FileNotFoundError(f"no shipped weights for backend {path_or_name!r} at {p}; "
                                    f"train them with `swm train world-model` or pass a checkpoint directory")
    model = load_ensemble(p, device=device) if is_ensemble_dir(p) else load_checkpoint(p, device=device)
    if model.reads_proprio and not proprio:
        raise ValueError(f"{p}: this world model reads the robot's proprioception (proprio_dim), "
                         f"which this command or node does not pass; only training, "
                         f"`swm eval world-model` and `swm eval closed-loop` do")
    return model
