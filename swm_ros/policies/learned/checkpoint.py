"""Policy checkpoints: a directory with `model.safetensors` and `config.yaml`. Never pickle.

config.yaml holds the format tag, the network config (model.FlowPolicyConfig), the
processors (image crop, normalisation statistics, task vocabulary: processors.py) and a
training summary. The file helpers are the world-model checkpoints' (models/checkpoint.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from swm_ros.config import ConfigError, load_config
from swm_ros.models.checkpoint import (CONFIG_FILE, WEIGHTS_FILE, CheckpointError, _load_tensors, _plain,
                                       read_config_file, write_checkpoint_files)
from swm_ros.policies.learned.model import FlowChunkPolicy, FlowPolicyConfig
from swm_ros.policies.learned.processors import PolicyProcessor

POLICY_FORMAT = "swm_ros.policy"
POLICY_FORMAT_VERSION = 1
POLICY_KIND = "flow"

__all__ = ["CheckpointError", "save_policy_checkpoint", "load_policy_checkpoint", "read_policy_config"]


def save_policy_checkpoint(model: FlowChunkPolicy, processor: PolicyProcessor, directory: str | Path,
                           training: dict[str, Any] | None = None) -> Path:
    """Write model.safetensors + config.yaml into `directory` (created); returns the directory."""
    config = {"format": POLICY_FORMAT, "format_version": POLICY_FORMAT_VERSION, "kind": POLICY_KIND,
              "model": _plain(model.config.to_dict()), "processor": _plain(processor.to_dict()),
              "training": _plain(training or {})}
    return write_checkpoint_files(directory, model.state_dict(), config)


def read_policy_config(directory: str | Path) -> dict[str, Any]:
    path, config = read_config_file(directory, POLICY_FORMAT, "policy")
    if config.get("format_version") != POLICY_FORMAT_VERSION or config.get("kind") != POLICY_KIND:
        raise CheckpointError(f"{path}: format_version {config.get('format_version')!r} / kind "
                              f"{config.get('kind')!r}; this code reads {POLICY_FORMAT_VERSION} / {POLICY_KIND!r}")
    for key in ("model", "processor"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{path}: missing or malformed {key!r}")
    return config


def load_policy_checkpoint(directory: str | Path) -> tuple[FlowChunkPolicy, PolicyProcessor, dict[str, Any]]:
    """(network in eval mode, processors, training summary) saved in `directory`."""
    directory = Path(directory)
    config = read_policy_config(directory)
    try:
        model = FlowChunkPolicy(load_config(FlowPolicyConfig, config["model"], where=f"{directory / CONFIG_FILE}: model"))
        processor = PolicyProcessor.from_dict(config["processor"])
    except (ConfigError, ValueError) as e:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {e}") from e
    tensors = _load_tensors(directory / WEIGHTS_FILE)
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
    if missing or unexpected:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: weights do not match the model config: "
                              f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: {e}") from e
    if processor.proprio.dim != model.config.proprio_dim or processor.action.dim != model.config.action_dim \
            or processor.task.dim != model.config.task_dim:
        raise CheckpointError(f"{directory / CONFIG_FILE}: processor sizes do not match the model config")
    return model.eval(), processor, config.get("training") or {}
