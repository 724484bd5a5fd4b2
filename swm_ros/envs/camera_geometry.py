"""Where the workspace appears in a camera image: the region of interest for image processing.

    roi = region_roi(env, "overhead", lower=(0.35, -0.45, 0.80), upper=(0.65, -0.05, 0.95),
                     frame_hw=(480, 640), margin=0.25)

projects the corners of a world box into the camera, takes their bounding box, grows it by
`margin` (a fraction of its size, on every side) and makes it square in pixels, so the
processor's resize keeps the aspect ratio. The result is in fractions of the frame
(resolution-independent) and is what the robot profile stores as a camera's `roi`.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np


def region_roi(env, camera: str, lower: Sequence[float], upper: Sequence[float],
               frame_hw: tuple[int, int], margin: float = 0.25) -> tuple[float, float, float, float]:
    """Square (in pixels) region around the projection of the box [lower, upper], as frame fractions."""
    h, w = int(frame_hw[0]), int(frame_hw[1])
    corners = np.array(list(itertools.product(*zip(lower, upper))), dtype=float)
    uv = env.project_to_image(camera, corners, h, w)
    (u0, v0), (u1, v1) = uv.min(axis=0), uv.max(axis=0)
    side = max(u1 - u0, v1 - v0) * (1.0 + 2.0 * margin)
    side = min(side, float(min(h, w)))
    cu = np.clip((u0 + u1) / 2, side / 2, w - side / 2)
    cv = np.clip((v0 + v1) / 2, side / 2, h - side / 2)
    return (float((cu - side / 2) / w), float((cv - side / 2) / h),
            float((cu + side / 2) / w), float((cv + side / 2) / h))
