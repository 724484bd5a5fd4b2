"""The step loop both trainers share (`swm train world-model`, `swm train policy`): the
learning-rate schedule, a random generator per step, and a clean stop on Ctrl-C/SIGTERM.

Each step draws from a generator seeded by (seed, step), so a resumed run sees the batches
an uninterrupted one would have seen. The loop ends after the step at which `stop_at` is
reached or a stop was asked for (`StopRequest`); that step's `last` is true, so the caller
writes its checkpoint there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import numpy as np
import torch

from swm_ros.models.stop_request import StopRequest


class Schedule(Protocol):
    """The fields of a training config the step loop reads."""
    steps: int
    seed: int
    lr: float
    warmup_steps: int
    min_lr_ratio: float


def lr_at(step: int, cfg: Schedule) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to min_lr_ratio."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class TrainStep:
    index: int                     # 0-based optimizer step
    lr: float                      # already set on the optimizer
    rng: np.random.Generator       # this step's own stream, seeded by (seed, index)
    _stop: StopRequest
    _stop_at: int | None

    @property
    def done(self) -> int:
        """Steps completed once this one is: the number metrics and checkpoints carry."""
        return self.index + 1

    @property
    def last(self) -> bool:
        """The run ends after this step (stop_at reached, or a stop asked for while it ran)."""
        return self.done == self._stop_at or bool(self._stop)


def scheduled_steps(steps: Iterable[int], optimizer: torch.optim.Optimizer, cfg: Schedule,
                    stop_at: int | None = None) -> Iterator[TrainStep]:
    """Yield one `TrainStep` per index of `steps` (typically a tqdm over range(start, cfg.steps)),
    with the learning rate set, until the range ends or a step is `last`."""
    with StopRequest() as stop:
        for index in steps:
            lr = lr_at(index, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step = TrainStep(index, lr, np.random.default_rng([cfg.seed, index]), stop, stop_at)
            yield step
            if step.last:
                return
