"""Everything between an `Observation` / `TaskSpec` and the policy network's tensors.

As in LeRobot, the network (model.py) only sees normalised tensors; the processors here
turn raw inputs into them and the network's output back into actions, and all of their
state (image crop, statistics, task vocabulary) is saved in the checkpoint's config.yaml:

* images: `swm_ros.processing.image.ImageProcessor`, the same crop + resize the training
  frames went through (`EpisodeReader.image_processing(camera)`), applied to raw frames.
* proprio: mean / std normalisation with the training set's statistics.
* actions: min / max scaled to [-1, 1] per dimension, and back (exactly invertible).
* task: one-hot of the task family, plus the nominal RGB colour of each role's block
  ("push the red block to the blue block" -> red, blue), so the policy knows which block
  to act on. Colours come from the scene variants' table, saved in the checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from swm_ros.envs.base import TaskSpec
from swm_ros.processing.image import ImageProcessor, ImageProcessorConfig

TASK_NAMES: tuple[str, ...] = ("reach", "push", "separate", "pick", "stack")
MAX_ROLES = 2


def scene_colors() -> dict[str, list[float]]:
    """Colour name -> nominal RGB of every block colour the scene variants use."""
    from swm_ros.envs.variants import VARIANTS

    return {o.color: [float(c) for c in o.rgba[:3]] for v in VARIANTS.values() for o in v.blocks}


class Normalizer:
    """Per-dimension affine map: `kind` "minmax" maps [low, high] to [-1, 1], "meanstd" to
    zero mean and unit std. A constant dimension gets scale 1 (never a division by zero)."""

    KINDS = ("minmax", "meanstd")

    def __init__(self, kind: str, a: Sequence[float], b: Sequence[float]) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"normaliser kind must be one of {self.KINDS}, got {kind!r}")
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape or a.ndim != 1 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ValueError(f"normaliser statistics must be two finite vectors of one length, got {a} and {b}")
        self.kind, self.a, self.b = kind, a, b
        if kind == "minmax":        # a = low, b = high
            half = (b - a) / 2.0
            self.offset, self.scale = (a + b) / 2.0, np.where(half > 1e-8, half, 1.0)
        else:                        # a = mean, b = std
            self.offset, self.scale = a, np.where(b > 1e-8, b, 1.0)

    @classmethod
    def fit(cls, kind: str, data: np.ndarray) -> "Normalizer":
        data = np.asarray(data, dtype=np.float64).reshape(-1, np.shape(data)[-1])
        if kind == "minmax":
            return cls(kind, data.min(0), data.max(0))
        return cls(kind, data.mean(0), data.std(0))

    @property
    def dim(self) -> int:
        return int(self.a.shape[0])

    def normalize(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} values in the last axis, got shape {x.shape}")
        return ((x - self.offset) / self.scale).astype(np.float32)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if y.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} values in the last axis, got shape {y.shape}")
        return (y * self.scale + self.offset).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "a": [float(v) for v in self.a], "b": [float(v) for v in self.b]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        try:
            return cls(d["kind"], d["a"], d["b"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad normaliser config {d!r}: {e}") from e


@dataclass
class TaskEncoder:
    """TaskSpec -> (len(tasks) + 4 * MAX_ROLES,) float32: task one-hot, role RGBs, role present flags."""

    tasks: tuple[str, ...] = TASK_NAMES
    colors: dict[str, list[float]] = field(default_factory=scene_colors)

    @property
    def dim(self) -> int:
        return len(self.tasks) + 4 * MAX_ROLES

    def role_color(self, obj: str) -> str:
        """`red_block` (or `red`) -> `red`; an unknown colour is an error naming the known ones."""
        color = obj[:-len("_block")] if obj.endswith("_block") else obj
        if color not in self.colors:
            raise ValueError(f"object {obj!r}: colour {color!r} unknown to this policy "
                             f"(knows {sorted(self.colors)})")
        return color

    def __call__(self, spec: TaskSpec) -> np.ndarray:
        if spec.name not in self.tasks:
            raise ValueError(f"task {spec.name!r} unknown to this policy (trained on {list(self.tasks)})")
        if not 1 <= len(spec.objects) <= MAX_ROLES:
            raise ValueError(f"task {spec.name!r} names {len(spec.objects)} objects; this policy takes 1..{MAX_ROLES}")
        out = np.zeros(self.dim, np.float32)
        out[self.tasks.index(spec.name)] = 1.0
        base = len(self.tasks)
        for i, obj in enumerate(spec.objects):
            out[base + 3 * i: base + 3 * i + 3] = self.colors[self.role_color(obj)]
            out[base + 3 * MAX_ROLES + i] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "colors": {k: list(v) for k, v in self.colors.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskEncoder":
        try:
            return cls(tuple(d["tasks"]), {str(k): [float(c) for c in v] for k, v in d["colors"].items()})
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"bad task encoder config {d!r}: {e}") from e


class PolicyProcessor:
    """The processors of one policy, saved with it (`to_dict` / `from_dict`)."""

    def __init__(self, camera: str, image: ImageProcessorConfig, proprio: Normalizer, action: Normalizer,
                 task: TaskEncoder | None = None) -> None:
        self.camera = camera
        self.image = ImageProcessor(image)
        self.proprio = proprio
        self.action = action
        self.task = task or TaskEncoder()

    def image_input(self, frame: np.ndarray) -> np.ndarray:
        """A raw (H, W, 3) uint8 camera frame -> the (size, size, 3) uint8 frame the model sees."""
        return self.image(frame)

    def to_dict(self) -> dict[str, Any]:
        return {"camera": self.camera, "image": self.image.config.to_dict(), "proprio": self.proprio.to_dict(),
                "action": self.action.to_dict(), "task": self.task.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PolicyProcessor":
        try:
            return cls(str(d["camera"]), ImageProcessorConfig.from_dict(d["image"]),
                       Normalizer.from_dict(d["proprio"]), Normalizer.from_dict(d["action"]),
                       TaskEncoder.from_dict(d["task"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad processor config: missing or malformed {e}") from e
