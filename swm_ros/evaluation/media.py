"""Pictures a person looks at: contact sheets and GIFs of camera frames."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import imageio.v3 as iio
import numpy as np


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], columns: int = 8, pad: int = 2) -> np.ndarray:
    """Tile frames into one image: one row per sequence, `columns` frames evenly picked from it."""
    if not rows or not any(len(r) for r in rows):
        raise ValueError("contact_sheet needs at least one frame")
    h, w = next(f for r in rows for f in r).shape[:2]
    sheet = np.full((len(rows) * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, frames in enumerate(rows):
        if not len(frames):
            continue
        picks = np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int)
        for j, k in enumerate(picks):
            frame = frames[k]
            if frame.shape[:2] != (h, w):
                raise ValueError(f"frame {k} of row {i} is {frame.shape[:2]}, expected {(h, w)}")
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            sheet[y:y + h, x:x + w] = frame[..., :3]
    return sheet


def save_png(image: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)
    return path


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 10.0, scale: int = 1) -> Path:
    """An animated GIF; `scale` repeats pixels so 64x64 frames stay visible."""
    if not len(frames):
        raise ValueError("save_gif needs at least one frame")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([np.asarray(f)[..., :3] for f in frames])
    if scale > 1:
        data = data.repeat(scale, axis=1).repeat(scale, axis=2)
    iio.imwrite(path, data, duration=1000.0 / fps, loop=0)
    return path
