"""The learned base policy behind the project's `Policy` protocol (envs/base.py).

    policy = load_policy()                 # the shipped weights, swm_ros/policies/weights/flow/
    policy.reset(task_spec, seed=0)
    chunks = policy.propose(observation, n=8)   # (8, 16, 5) in [-1, 1], different noise each

It sees only what a robot has: the raw camera frame of its camera (cropped and resized here
exactly as its training frames were), the proprio vector and the task (family and the
colours of its blocks). `Observation.state` is never read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from swm_ros.envs.base import ACTION_DIM, Observation, TaskSpec
from swm_ros.policies.learned.checkpoint import load_policy_checkpoint
from swm_ros.policies.learned.model import FlowChunkPolicy
from swm_ros.policies.learned.processors import PolicyProcessor

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = "flow"
TRAIN_COMMAND = "swm train policy --config config/train/policy_flow.yaml"


class LearnedChunkPolicy:
    """A flow-matching chunk policy (model.py) with its processors (processors.py)."""

    def __init__(self, model: FlowChunkPolicy, processor: PolicyProcessor, seed: int = 0,
                 chunk_length: int | None = None, inference_steps: int | None = None,
                 training: dict | None = None) -> None:
        trained = model.config.chunk_length
        self.chunk_length = int(chunk_length or trained)
        if not 1 <= self.chunk_length <= trained:
            raise ValueError(f"chunk_length {self.chunk_length}: this policy proposes 1..{trained} actions")
        if model.config.action_dim != ACTION_DIM:
            raise ValueError(f"policy has {model.config.action_dim} action dims, the envs use {ACTION_DIM}")
        self.model = model.eval()
        self.processor = processor
        self.inference_steps = inference_steps
        self.training = training or {}
        self._generator = torch.Generator().manual_seed(int(seed))
        self._task: np.ndarray | None = None

    @property
    def camera(self) -> str:
        return self.processor.camera

    def reset(self, task: TaskSpec, seed: int | None = None) -> None:
        self._task = self.processor.task(task)      # raises for an unknown task or colour
        if seed is not None:
            self._generator = torch.Generator().manual_seed(int(seed))

    def propose(self, observation: Observation, n: int = 1) -> np.ndarray:
        """(n, chunk_length, 5) float32 actions in [-1, 1]."""
        if self._task is None:
            raise RuntimeError("call reset(task) before propose()")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        frame = observation.images.get(self.camera)
        if frame is None:
            raise ValueError(f"the observation has no {self.camera!r} image (has {sorted(observation.images)}); "
                             f"this policy was trained on that camera")
        image = self.processor.image_input(frame)
        proprio = np.asarray(observation.proprio, dtype=np.float32).ravel()
        if proprio.shape[0] != self.processor.proprio.dim:
            raise ValueError(f"proprio has {proprio.shape[0]} values, this policy expects {self.processor.proprio.dim}")
        if not np.all(np.isfinite(proprio)):
            raise ValueError("proprio contains non-finite values")
        with torch.inference_mode():
            cond = self.model.condition(torch.from_numpy(image)[None],
                                        torch.from_numpy(self.processor.proprio.normalize(proprio))[None],
                                        torch.from_numpy(self._task)[None])
            chunks = self.model.sample(cond, n, generator=self._generator, steps=self.inference_steps)[0]
        actions = self.processor.action.unnormalize(chunks.numpy())[:, :self.chunk_length]
        return np.clip(actions, -1.0, 1.0).astype(np.float32)


def default_weights(name: str = DEFAULT_WEIGHTS) -> Path:
    return WEIGHTS_DIR / name


def load_policy(checkpoint: str | Path | None = None, seed: int = 0, chunk_length: int | None = None,
                inference_steps: int | None = None, num_threads: int | None = 1) -> LearnedChunkPolicy:
    """A checkpoint directory, or the shipped weights (None or a name under policies/weights/).

    num_threads sets torch's CPU threads (None: leave them): a model this small gains nothing
    from more than one, and on a busy machine extra threads slow inference down several-fold."""
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    path = Path(checkpoint) if checkpoint is not None else default_weights()
    if checkpoint is not None and not path.exists() and (WEIGHTS_DIR / str(checkpoint)).is_dir():
        path = WEIGHTS_DIR / str(checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"no learned-policy checkpoint at {path}; train one with `{TRAIN_COMMAND}` "
                                f"(writes runs/policy_flow; the shipped weights live in {default_weights()})")
    model, processor, training = load_policy_checkpoint(path)
    return LearnedChunkPolicy(model, processor, seed=seed, chunk_length=chunk_length,
                              inference_steps=inference_steps, training=training)
