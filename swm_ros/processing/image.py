"""Camera frame -> model input: crop to the region of interest, resize to the model's size.

The overhead camera sees the whole table, but the blocks live in a small part of it
(about a third of the width of a 4:3 frame). Resizing the whole frame to 64x64 leaves a
4.5 cm block 3-4 px wide; cropping to the spawn region first makes it 7-8 px. The same
processor runs everywhere a world model sees an image: `swm collect` applies it before
storing frames (and records its config beside them), training copies that config into the
checkpoint, and the nodes apply the checkpoint's processor to raw camera frames. So a model
never sees a differently framed image than it was trained on.

The region is given as fractions of the raw frame (u0, v0, u1, v1), so it does not depend
on the camera's resolution, only on its pose and field of view. The robot profile holds it
per camera (`roi`), derived from the spawn region by `swm_ros.envs.camera_geometry`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import cv2
import numpy as np


class ImageProcessingError(ValueError):
    """A frame cannot be processed (wrong shape or dtype)."""


@dataclass(frozen=True)
class ImageProcessorConfig:
    roi: tuple[float, float, float, float] | None = None   # (u0, v0, u1, v1) fractions; None: whole frame
    size: int = 64                                          # output is size x size

    def __post_init__(self) -> None:
        if self.roi is not None:
            roi = tuple(float(x) for x in self.roi)
            if len(roi) != 4:
                raise ValueError(f"roi needs 4 numbers (u0, v0, u1, v1), got {self.roi!r}")
            u0, v0, u1, v1 = roi
            if not (0.0 <= u0 < u1 <= 1.0 and 0.0 <= v0 < v1 <= 1.0):
                raise ValueError(f"roi must satisfy 0 <= u0 < u1 <= 1 and 0 <= v0 < v1 <= 1, got {roi}")
            object.__setattr__(self, "roi", roi)
        if int(self.size) < 8:
            raise ValueError(f"size must be >= 8 px, got {self.size}")
        object.__setattr__(self, "size", int(self.size))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["roi"] = list(self.roi) if self.roi is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "ImageProcessorConfig":
        from swm_ros.config import load_config

        return load_config(cls, dict(d or {}), where="image processor")


class ImageProcessor:
    """Crop to `roi`, then resize to `size` x `size` with area interpolation (no aliasing)."""

    def __init__(self, config: ImageProcessorConfig | None = None):
        self.config = config or ImageProcessorConfig()

    def __repr__(self) -> str:
        return f"ImageProcessor(roi={self.config.roi}, size={self.config.size})"

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) of the region in a height x width frame."""
        if self.config.roi is None:
            return 0, 0, width, height
        u0, v0, u1, v1 = self.config.roi
        x0, x1 = int(round(u0 * width)), int(round(u1 * width))
        y0, y1 = int(round(v0 * height)), int(round(v1 * height))
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (size, size, 3) uint8."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ImageProcessingError(f"expected an (H, W, 3) RGB frame, got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise ImageProcessingError(f"expected uint8 pixels, got {frame.dtype}")
        x0, y0, x1, y1 = self.crop_box(frame.shape[0], frame.shape[1])
        crop = frame[y0:y1, x0:x1]
        s = self.config.size
        if crop.shape[:2] == (s, s):
            return np.ascontiguousarray(crop)
        interp = cv2.INTER_AREA if crop.shape[0] >= s and crop.shape[1] >= s else cv2.INTER_LINEAR
        return cv2.resize(crop, (s, s), interpolation=interp)

    def batch(self, frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, H, W, 3) -> (N, size, size, 3)."""
        return np.stack([self(f) for f in frames]) if len(frames) else np.zeros((0, self.config.size,
                                                                                self.config.size, 3), np.uint8)

    def is_identity_for(self, frame_shape: Sequence[int]) -> bool:
        """True when a frame of this shape is already a processed frame (no crop, right size)."""
        return self.config.roi is None and tuple(frame_shape[:2]) == (self.config.size, self.config.size)
