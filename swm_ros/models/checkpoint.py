"""World-model checkpoints: a directory with `model.safetensors` and `config.yaml`. Never pickle.

    save_checkpoint(model, "runs/wm", training={"step": 1000, "val_accuracy": 0.9})
    model = load_checkpoint("runs/wm")

config.yaml holds the format tag, the backend name, the model config, the vocabulary (the
tokenizer the weights were trained with), the image processor that turns raw camera frames
into model input (crop + resize; null: frames are used as given) and a training summary. Optimizer state for
resuming training is a separate safetensors file (`save_optimizer_state`), tensors only;
the param-group hyper-parameters go to its JSON metadata.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CHECKPOINT_FORMAT = "swm_ros.world_model"
CHECKPOINT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
OPTIMIZER_FILE = "optimizer.safetensors"


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be used (corrupt, wrong format, mismatched weights)."""


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _plain(x: Any) -> Any:
    """YAML-safe plain data (numpy / torch scalars to Python numbers)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    return x


def _saved_state(model) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint holds: the whole state dict, or the backend's own selection
    (`checkpoint_state_dict()`, e.g. only LoRA + projector over weights loaded from disk)."""
    select = getattr(model, "checkpoint_state_dict", None)
    return select() if callable(select) else model.state_dict()


def write_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A safetensors file of `tensors` (copied to CPU), written atomically."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    _atomic_write(Path(path), lambda p: save_file(tensors, p, metadata=metadata))


def write_checkpoint_files(directory: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """model.safetensors (tagged with config["format"]) + config.yaml, each written atomically."""
    directory = Path(directory)
    write_weights(directory / WEIGHTS_FILE, tensors, metadata={"format": config["format"]})

    def write_yaml(p: str) -> None:
        with open(p, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
    _atomic_write(directory / CONFIG_FILE, write_yaml)
    return directory


def read_config_file(directory: str | Path, fmt: str, what: str) -> tuple[Path, dict[str, Any]]:
    """(path, mapping) of `directory`/config.yaml when it exists, parses and carries format `fmt`;
    `what` names the kind of checkpoint in the errors."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{what} checkpoint directory not found: {directory}")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint config not found: {path}")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(config, dict) or config.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {what} checkpoint config (format {fmt!r} expected)")
    return path, config


def save_checkpoint(model, directory: str | Path, training: dict[str, Any] | None = None) -> Path:
    """Write model.safetensors + config.yaml into `directory` (created); returns the directory."""
    config = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "backend": model.backend,
        "model": _plain(model.config_dict()),
        "vocabulary": list(model.vocabulary),
        # how raw camera frames become this model's input (swm_ros.processing.image)
        "processor": model.processor_config(),
        "training": _plain(training or {}),
    }
    return write_checkpoint_files(directory, _saved_state(model), config)


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    path, config = read_config_file(directory, CHECKPOINT_FORMAT, "world-model")
    if config.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: format_version {config.get('format_version')!r}, "
                              f"this code reads {CHECKPOINT_VERSION}")
    for key in ("backend", "model", "vocabulary"):
        if key not in config:
            raise CheckpointError(f"{path}: missing key {key!r}")
    return config


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file: {e}") from e


def load_checkpoint(directory: str | Path, device: str = "cpu"):
    """The model saved in `directory`, in eval mode."""
    from swm_ros.config import ConfigError
    from swm_ros.models.registry import build_world_model

    directory = Path(directory)
    config = read_checkpoint_config(directory)
    try:
        model = build_world_model(config["backend"], config["model"], config["vocabulary"])
    except ConfigError as e:
        raise CheckpointError(f"{directory / CONFIG_FILE}: bad model config: {e}") from e
    tensors = _load_tensors(directory / WEIGHTS_FILE)
    expected = set(_saved_state(model))
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: weights do not match the {config['backend']} model: "
                              f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    try:
        # a partial checkpoint (trainable tensors over pretrained weights) loads non-strictly;
        # the key check above already made sure it holds exactly what the model saves
        model.load_state_dict(tensors, strict=len(expected) == len(model.state_dict()))
    except RuntimeError as e:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: {e}") from e
    model.training_summary = config.get("training") or {}
    if config.get("processor") is not None:
        from swm_ros.processing.image import ImageProcessor, ImageProcessorConfig
        try:
            model.image_processor = ImageProcessor(ImageProcessorConfig.from_dict(config["processor"]))
        except (ConfigError, ValueError) as e:
            raise CheckpointError(f"{directory / CONFIG_FILE}: bad processor config: {e}") from e
    return model.to(device).eval()


# ---- optimizer state (for resume) ----------------------------------------------------
def save_optimizer_state(optimizer: torch.optim.Optimizer, path: str | Path,
                         extra: dict[str, torch.Tensor] | None = None, metadata: dict[str, Any] | None = None) -> None:
    """Optimizer tensors as safetensors; param groups and `metadata` as JSON in its header."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[name] = v
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous().clone()
    meta = {"format": "swm_ros.optimizer", "param_groups": json.dumps(sd["param_groups"]),
            "scalars": json.dumps(scalars), "metadata": json.dumps(_plain(metadata or {}))}
    _atomic_write(Path(path), lambda p: save_file(tensors, p, metadata=meta))


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: str | Path
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore `optimizer` from `path`; returns (extra tensors, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    tensors = _load_tensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        groups = json.loads(meta["param_groups"])
        scalars = json.loads(meta.get("scalars", "{}"))
        metadata = json.loads(meta.get("metadata", "{}"))
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: optimizer state without valid metadata: {e}") from e
    state: dict[int, dict[str, Any]] = {}
    extra: dict[str, torch.Tensor] = {}
    for key, v in tensors.items():
        kind, rest = key.split(".", 1)
        if kind == "extra":
            extra[rest] = v
        else:
            idx, name = rest.split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    for idx, sc in scalars.items():
        state.setdefault(int(idx), {}).update(sc)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: optimizer state does not match the model: {e}") from e
    return extra, metadata
