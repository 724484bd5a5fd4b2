"""Auxiliary supervision: where each coloured block is in the model's (cropped) image.

A from-scratch model learns what the actions say long before it learns to find "the red
block" among 2-4 blocks 7 pixels wide: with answers alone, relative-position and touching
questions stayed at chance for 5,000 steps. The simulator knows where every block is, so
training can also ask the image tokens to point at each colour (a soft-argmax over the
tokens, regressed to the block's projected position). The answer path is unchanged; the
auxiliary head only shapes the image features, and is ignored at inference.

`BlockProjector` maps world positions to [0, 1] coordinates of the processed frame, using
the simulated camera (pinhole with its field of view) and the processor's crop.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np


class BlockProjector:
    """World points -> (u, v) in [0, 1] of the cropped frame of one camera of a robot profile."""

    RENDER_HW = (480, 640)

    def __init__(self, robot: str, camera: str, roi: Sequence[float] | None):
        from swm_ros.envs import make_env

        os.environ.setdefault("MUJOCO_GL", "egl")     # the env builds a renderer; headless here
        env = make_env(robot=robot, task="push", image_size=self.RENDER_HW, cameras=(camera,), seed=0)
        try:
            env.reset(seed=0)
        except Exception:
            env.close()
            raise
        self._env, self._camera = env, camera
        self.roi = tuple(roi) if roi is not None else (0.0, 0.0, 1.0, 1.0)

    def close(self) -> None:
        self._env.close()

    def __call__(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=float)
        flat = pts.reshape(-1, 3)
        uv = self._env.project_to_image(self._camera, flat, *self.RENDER_HW) / np.array([self.RENDER_HW[1],
                                                                                         self.RENDER_HW[0]])
        u0, v0, u1, v1 = self.roi
        uv = (uv - np.array([u0, v0])) / np.array([u1 - u0, v1 - v0])
        return uv.reshape(*pts.shape[:-1], 2)


def block_targets(colours: Sequence[str], object_colors: Sequence[str], uv: np.ndarray,
                  kinds: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per colour of the model's colour list: the (u, v) of the block of that colour, and
    whether there is exactly one such block inside the frame."""
    target = np.zeros((len(colours), 2), dtype=np.float32)
    mask = np.zeros(len(colours), dtype=bool)
    for c, name in enumerate(colours):
        hits = [k for k, col in enumerate(object_colors) if col == name and (kinds is None or kinds[k] == "block")]
        if len(hits) == 1 and np.all((uv[hits[0]] >= 0.0) & (uv[hits[0]] <= 1.0)):
            target[c] = uv[hits[0]]
            mask[c] = True
    return target, mask
