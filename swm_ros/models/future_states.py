"""Auxiliary supervision of dynamics: where the blocks and the hand are after every action step.

A SAQA row says one bit about a future up to 60 steps away, and what every model variant gets
wrong is that future: what the blocks do once the hand reaches them (model card, "How much the
frame can decide"). The simulator recorded all of it. So training can also ask each action
token, as the last transformer block reads it, how far every block (by colour) and the hand
have moved since the frame after that step, and how far the gripper has opened or closed: a
dense signal about the dynamics the answers depend on.

`FutureStateHead` and its weights belong to the trainer (`future_state_loss_weight`, saved
beside the run's optimizer state for `--resume`); the model that answers is unchanged, and a
checkpoint trained with the loss loads and answers like any other.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

# metres -> decimetres: the hand moves up to 2 cm a step, a pushed block a few cm over a row's
# horizon; in decimetres both sit near the gripper opening's [0, 1] range
POSITION_SCALE = 10.0


class FutureStateTargets:
    """Per row and action step k (1..h): the displacement since frame t of each colour's block
    (x, y, z) and of the hand, and the change of the gripper opening, from the episode's
    privileged state at frame t + k; masked where a colour is not exactly one block of the
    scene and after the row's horizon."""

    def __init__(self, ds, colours: Sequence[str] | None = None):
        self.ds = ds
        self.colours = list(ds.colors if colours is None else colours)
        self.size = 3 * len(self.colours) + 3 + 1
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _episode(self, episode: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames, size) state vector per frame in the target's units, and which entries exist."""
        if episode not in self._cache:
            st = self.ds.states(episode)
            n = len(st.effector_position)
            state = np.zeros((n, self.size), dtype=np.float32)
            valid = np.zeros(self.size, dtype=bool)
            for c, name in enumerate(self.colours):
                hits = [k for k, (col, kind) in enumerate(zip(st.object_colors, st.object_kinds))
                        if col == name and kind == "block"]
                if len(hits) == 1:
                    state[:, 3 * c:3 * c + 3] = st.object_position[:, hits[0]] * POSITION_SCALE
                    valid[3 * c:3 * c + 3] = True
            state[:, -4:-1] = st.effector_position * POSITION_SCALE
            state[:, -1] = st.gripper_opening
            valid[-4:] = True
            self._cache[episode] = (state, valid)
        return self._cache[episode]

    def __call__(self, episodes: np.ndarray, frames: np.ndarray, horizons: np.ndarray,
                 steps: int) -> tuple[np.ndarray, np.ndarray]:
        """-> targets (B, steps, size) and mask (B, steps, size) for rows (episode, t, h)."""
        b = len(episodes)
        targets = np.zeros((b, steps, self.size), dtype=np.float32)
        mask = np.zeros((b, steps, self.size), dtype=bool)
        for i, (e, t, h) in enumerate(zip(episodes.tolist(), frames.tolist(), horizons.tolist())):
            state, valid = self._episode(e)
            k = min(h, steps, len(state) - 1 - t)
            if k <= 0:
                continue
            targets[i, :k] = state[t + 1:t + 1 + k] - state[t]
            mask[i, :k] = valid
        return targets, mask


class FutureStateHead(nn.Module):
    """Action-token states (..., d) -> predicted displacements (..., size)."""

    def __init__(self, d: int, size: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or d
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, size))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)


class LastBlockInput:
    """Context manager: while active, keeps the input of a late-fusion model's last transformer
    block, the token states the `<answer>` position reads, so the trainer can supervise the
    action tokens' part of it without a second forward pass."""

    def __init__(self, model):
        self.block = model.blocks[-1]
        self.tokens: torch.Tensor | None = None
        self._handle = None

    def __enter__(self) -> "LastBlockInput":
        self.tokens = None
        self._handle = self.block.register_forward_pre_hook(self._keep)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _keep(self, module, args) -> None:
        self.tokens = args[0]

    def action_states(self, steps: int, question_tokens: int) -> torch.Tensor:
        """The action tokens' states (B, steps, d) of a sequence [image][actions][question
        words][<answer>] (one question per row), given the question's token columns."""
        if self.tokens is None:
            raise RuntimeError("no forward pass ran while LastBlockInput was active")
        start = self.tokens.shape[1] - steps - (question_tokens + 1)
        return self.tokens[:, start:start + steps]


def future_state_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries that exist (0 when none do)."""
    m = mask.to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp(min=1.0)
