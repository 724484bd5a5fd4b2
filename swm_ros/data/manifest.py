"""The collection manifest (`manifest.json`) and the episode -> split rule.

Splits are by episode: nominal-variant episodes go to train / val / test by a hash of the
collection seed and episode index (so adding episodes never moves old ones); every
episode of an out-of-distribution variant goes to "ood".
"""
from __future__ import annotations

import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "swm_ros.manifest"
MANIFEST_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test", "ood")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
NOMINAL = "nominal"


def split_from_uniform(u: float, variant: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    if variant != NOMINAL:
        return "ood"
    cum = np.cumsum(np.asarray(fractions, dtype=float) / sum(fractions))
    return SPLITS[int(np.searchsorted(cum, u, side="right").clip(0, 2))]


def assign_split(seed: int, index: int, variant: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    """Split of episode `index` of a collection seeded with `seed`."""
    u = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0x5A11])).random()
    return split_from_uniform(u, variant, fractions)


def split_for_id(episode_id: str, variant: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    """Fallback for episodes without a manifest: a stable hash of the episode id."""
    u = (zlib.crc32(episode_id.encode()) & 0xFFFFFFFF) / 2**32
    return split_from_uniform(u, variant, fractions)


def write_manifest(directory: str | Path, config: dict[str, Any], episodes: list[dict[str, Any]]) -> Path:
    """Atomically write `directory/manifest.json` (episodes sorted by id)."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    data = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "config": config,
            "episodes": sorted(episodes, key=lambda e: e["episode_id"])}
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
    return path


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest of a collection directory, or None when it has none."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if data.get("format") != MANIFEST_FORMAT or data.get("format_version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: not a swm_ros manifest of version {MANIFEST_VERSION}")
    return data
