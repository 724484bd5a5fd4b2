"""Read a SAQA file: rows joined with episode images and actions, for training and evaluation.

    ds = SAQADataset("data/run1/saqa.h5", split="train", max_horizon=60)
    item = ds[0]        # image (H, W, 3) uint8, actions (60, 5), action_mask (60,), question, answer ...
    batch = ds.batch(np.arange(64))   # the same, stacked

No torch here: a torch `Dataset` wraps this in one line (`__len__` / `__getitem__`). Episode
files open lazily and are re-opened in a forked worker process.
"""
from __future__ import annotations

import functools
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np

from swm_ros.data.episodes import EpisodeFormatError, EpisodeReader
from swm_ros.data.manifest import SPLITS
from swm_ros.saqa.build import COLUMNS, SAQA_FORMAT, SAQA_VERSION


class _SomeFrames(dict):
    """Preloaded frames of an episode by index; a frame not preloaded (asked for by a dataset
    sharing this one's episodes) is read from the file once."""

    def __init__(self, file: Path, camera: str, frames: dict[int, np.ndarray]):
        super().__init__(frames)
        self.file, self.camera = file, camera

    def __missing__(self, t: int) -> np.ndarray:
        with EpisodeReader(self.file) as reader:
            frame = self[int(t)] = reader.image(self.camera, int(t))
        return frame


class SAQADataset:
    """SAQA rows of one or more splits (None: all) and optionally some families only."""

    def __init__(self, path: str | Path, split: str | Sequence[str] | None = "train", camera: str | None = None,
                 max_horizon: int | None = None, episode_root: str | Path | None = None,
                 families: Sequence[str] | None = None, cache_episodes: int = 32, preload_images: bool = False,
                 tokenizer: Callable[[str], np.ndarray] | None = None):
        self.path = Path(path)
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise EpisodeFormatError(f"{self.path}: not a readable SAQA file: {e}") from e
        with f:
            if f.attrs.get("format") != SAQA_FORMAT or int(f.attrs.get("format_version", -1)) != SAQA_VERSION:
                raise EpisodeFormatError(f"{self.path}: not a SAQA file of format_version {SAQA_VERSION}")
            self.config = json.loads(f.attrs["config"])
            self.families = json.loads(f.attrs["families"])
            self.directions = json.loads(f.attrs["directions"])
            self.colors = json.loads(f.attrs["colors"])
            # the collection where it was built, else the SAQA file's own directory (moved together)
            root = Path(episode_root) if episode_root else Path(f.attrs["episode_root"] or self.path.parent)
            if episode_root is None and not root.is_dir():
                root = self.path.parent
            self.episode_ids = [s.decode() if isinstance(s, bytes) else s for s in f["episodes/id"][()]]
            self.episode_files = [root / (s.decode() if isinstance(s, bytes) else s) for s in f["episodes/file"][()]]
            self.questions = [s.decode() if isinstance(s, bytes) else s for s in f["questions"][()]]
            cols = {k: f[f"rows/{k}"][()] for k in COLUMNS}
        sel = np.ones(len(cols["answer"]), dtype=bool)
        if split is not None:
            names = [split] if isinstance(split, str) else list(split)
            for s in names:
                if s not in SPLITS:
                    raise ValueError(f"unknown split {s!r}; splits are {SPLITS}")
            sel &= np.isin(cols["split"], [SPLITS.index(s) for s in names])
        if families is not None:
            ids = {fam["name"]: fam["id"] for fam in self.families}
            sel &= np.isin(cols["family"], [ids[n] for n in families])
        self.columns = {k: v[sel] for k, v in cols.items()}
        self.family_names = [fam["name"] for fam in sorted(self.families, key=lambda x: x["id"])]
        self.max_horizon = int(max_horizon if max_horizon is not None else self.config["max_horizon"])
        if len(self) and int(self.columns["h"].max()) > self.max_horizon:
            raise ValueError(f"rows reach h = {int(self.columns['h'].max())} > max_horizon {self.max_horizon}")
        self.camera = camera
        self.tokenizer = tokenizer
        self.cache_episodes = cache_episodes
        self.preload_images = preload_images
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._pid = os.getpid()
        self._shared: tuple[SAQADataset, dict[int, int]] | None = None   # (other, my episode -> its)

    def __len__(self) -> int:
        return len(self.columns["answer"])

    def yes_fraction(self) -> float:
        return float(self.columns["answer"].mean()) if len(self) else float("nan")

    def sample_weights(self) -> np.ndarray:
        """Per-row weights giving every (family, answer) stratum the same total weight (the
        paper's oversampling of rare question types); for a weighted random sampler."""
        key = self.columns["family"].astype(np.int64) * 2 + self.columns["answer"]
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        w = 1.0 / counts[inverse]
        return w / w.sum()

    # ---- episodes ---------------------------------------------------------------------
    def share_episodes(self, other: "SAQADataset") -> int:
        """Read episodes that `other` also reads through `other`'s cache: two SAQA files built on
        one collection (a training mix) then hold its preloaded frames once, not twice. Returns
        how many of this file's episodes are shared."""
        if (other.camera, other.preload_images) != (self.camera, self.preload_images):
            raise ValueError("share_episodes needs the same camera and preload_images on both datasets")
        theirs = {f.resolve(): i for i, f in enumerate(other.episode_files)}
        mine = [f.resolve() for f in self.episode_files]
        mapping = {e: theirs[f] for e, f in enumerate(mine) if f in theirs}
        self._shared = (other, mapping) if mapping else None
        return len(mapping)

    def _episode(self, e: int) -> dict[str, Any]:
        if self._shared is not None:
            other, mapping = self._shared
            i = mapping.get(e)
            if i is not None:
                return other._episode(i)
        if os.getpid() != self._pid:     # forked into a loader worker: h5py handles do not survive fork
            self._cache.clear()
            self._pid = os.getpid()
        ep = self._cache.get(e)
        if ep is not None:
            self._cache.move_to_end(e)
            return ep
        reader = EpisodeReader(self.episode_files[e])
        cam = self.camera or reader.cameras[0]
        ep = {"reader": reader, "camera": cam, "actions": reader.actions}
        if self.preload_images:
            # everything a row reads, then the file is closed: a preloaded training set (and
            # its mix) can span more episodes than the process may hold open files
            starts = self._row_frames.get(e, ())
            if 4 * len(starts) <= reader.num_frames:
                # rows start at few of its frames (branches: frame 0 only): keep just those
                images = _SomeFrames(self.episode_files[e], cam, {int(t): reader.image(cam, int(t)) for t in starts})
            else:
                images = reader.images(cam)
            ep.update(images=images, proprio=np.asarray(reader.proprio, dtype=np.float32), reader=None)
            reader.close()
        self._cache[e] = ep
        limit = self.cache_episodes if not self.preload_images else max(self.cache_episodes, 1 << 30)
        while len(self._cache) > limit:
            _, old = self._cache.popitem(last=False)
            if old["reader"] is not None:
                old["reader"].close()
        return ep

    @functools.cached_property
    def _row_frames(self) -> dict[int, np.ndarray]:
        """Episode -> the frames its rows start at."""
        e, t = self.columns["episode"].astype(np.int64), self.columns["t"].astype(np.int64)
        key = np.unique(e << 32 | t)
        eps, first = np.unique(key >> 32, return_index=True)
        return dict(zip(eps.tolist(), np.split(key & 0xFFFFFFFF, first[1:])))

    def image_processing(self) -> dict[str, Any] | None:
        """The processor config the frames were stored with (checked on a sample of episodes)."""
        seen = []
        for e in sorted({0, len(self.episode_files) // 2, len(self.episode_files) - 1}):
            if 0 <= e < len(self.episode_files):
                with EpisodeReader(self.episode_files[e]) as reader:
                    seen.append(reader.image_processing(self.camera or reader.cameras[0]))
        if any(s != seen[0] for s in seen):
            raise EpisodeFormatError(f"{self.path}: episodes were stored with different image processors: {seen}")
        return seen[0] if seen else None

    def image(self, episode: int, t: int) -> np.ndarray:
        ep = self._episode(episode)
        if "images" in ep:
            return ep["images"][t]
        return ep["reader"].image(ep["camera"], int(t))

    def states(self, episode: int):
        """The episode's privileged states (`StateArrays`), loaded once per cached episode."""
        ep = self._episode(episode)
        if "states" not in ep:
            if ep["reader"] is None:
                with EpisodeReader(self.episode_files[episode]) as reader:
                    ep["states"] = reader.states
            else:
                ep["states"] = ep["reader"].states
        return ep["states"]

    def proprio(self, episode: int, t: int) -> np.ndarray:
        """The robot's own state at frame t (joints, effector pose, gripper opening), float32."""
        ep = self._episode(episode)
        if "proprio" not in ep:
            ep["proprio"] = np.asarray(ep["reader"].proprio, dtype=np.float32)
        return ep["proprio"][t]

    def actions(self, episode: int, t: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Actions t..t+h-1 zero-padded to max_horizon, and the mask of real steps."""
        acts = self._episode(episode)["actions"]
        out = np.zeros((self.max_horizon, acts.shape[1]), dtype=np.float32)
        out[:h] = acts[t:t + h]
        mask = np.zeros(self.max_horizon, dtype=bool)
        mask[:h] = True
        return out, mask

    # ---- rows -------------------------------------------------------------------------
    def __getitem__(self, i: int) -> dict[str, Any]:
        c = {k: v[i] for k, v in self.columns.items()}
        e, t, h = int(c["episode"]), int(c["t"]), int(c["h"])
        actions, mask = self.actions(e, t, h)
        q = self.questions[int(c["question"])]
        item = {
            "image": self.image(e, t),
            "proprio": self.proprio(e, t),
            "actions": actions,
            "action_mask": mask,
            "horizon": h,
            "question": q,
            "question_id": int(c["question"]),
            # family token + colour ids + direction: what a family-token model consumes
            "structured": np.array([c["family"], c["color_a"], c["color_b"], c["direction"]], dtype=np.int64),
            "family": int(c["family"]),
            "subject_a": int(c["subject_a"]),
            "subject_b": int(c["subject_b"]),
            "direction": int(c["direction"]),
            "answer": int(c["answer"]),
            "episode": e,
            "t": t,
        }
        if self.tokenizer is not None:
            item["tokens"] = self.tokenizer(q)
        return item

    def batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """Stacked items; array fields become arrays, questions a list."""
        items = [self[int(i)] for i in indices]
        out: dict[str, Any] = {}
        for k in items[0]:
            vals = [it[k] for it in items]
            out[k] = vals if isinstance(vals[0], str) else np.stack([np.asarray(v) for v in vals])
        return out

    def close(self) -> None:
        for ep in self._cache.values():
            if ep["reader"] is not None:
                ep["reader"].close()
        self._cache.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
