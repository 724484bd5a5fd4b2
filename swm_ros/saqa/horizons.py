"""Prediction horizons for SAQA rows, as in the SWM paper's data generation.

For every start frame t, `n` horizons h ~ Beta(alpha, beta) x min(max_horizon, steps left),
rounded; the first is h = 0 (no actions: "is it true now"), which is what lets the same
model check a sub-goal without actions. Duplicates are kept, so each start frame has
exactly `n` rows; h never passes the episode's last frame.
"""
from __future__ import annotations

import numpy as np

BETA_ALPHA = 1.6
BETA_BETA = 1.0


def sample_horizons(rng: np.random.Generator, steps_left: np.ndarray, n: int = 8, max_horizon: int = 60,
                    alpha: float = BETA_ALPHA, beta: float = BETA_BETA, include_zero: bool = True) -> np.ndarray:
    """(S, n) int64 horizons for S start frames with `steps_left` actions after each."""
    steps_left = np.asarray(steps_left, dtype=np.int64)
    if np.any(steps_left < 0):
        raise ValueError("steps_left must be >= 0")
    cap = np.minimum(max_horizon, steps_left)[:, None]
    h = np.rint(rng.beta(alpha, beta, size=(len(steps_left), n)) * cap).astype(np.int64)
    if include_zero and n > 0:
        h[:, 0] = 0
    return np.minimum(h, cap)


def start_frames(num_frames: int, stride: int = 1, min_steps_left: int = 0) -> np.ndarray:
    """Start frames 0, stride, ... with at least `min_steps_left` actions after them."""
    last = num_frames - 1 - min_steps_left
    return np.arange(0, max(last + 1, 0), stride, dtype=np.int64)
