"""Training samples for the chunk policy from a `swm collect` directory.

One sample per frame t that has an action: the stored (already cropped and resized) frame,
the proprio vector, the task features and the chunk target actions[t : t + chunk_length];
for training only, the world positions of the task's blocks at t (privileged state, the
target of the auxiliary localisation loss; the policy never reads them when it acts).
Past the episode's last action the chunk is padded with "hold": zero motion and the last
gripper command. Episodes are chosen from the manifest by split, task, variant and policy,
the lowest indices first, so a selection stays the same while a collection grows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from swm_ros.data.episodes import EpisodeReader
from swm_ros.data.manifest import read_manifest
from swm_ros.envs.base import ACTION_DIM, TaskSpec
from swm_ros.policies.learned.processors import MAX_ROLES, TASK_NAMES, TaskEncoder


@dataclass
class PolicyDataConfig:
    path: str = "data/nicol"                          # a `swm collect` directory (manifest.json)
    split: str = "train"
    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES))
    variants: list[str] = field(default_factory=lambda: ["nominal"])
    # episodes per (task, policy), lowest collection index first; never `random`
    episodes_per_task: dict[str, int] = field(default_factory=lambda: {"scripted": 12, "noisy": 12})
    val_split: str = "val"
    val_episodes_per_task: int = 4                    # scripted episodes of val_split, for a held-out loss
    camera: str | None = None                         # None: the episodes' first camera

    def __post_init__(self) -> None:
        if not self.tasks or not self.episodes_per_task:
            raise ValueError("tasks and episodes_per_task must not be empty")
        if any(n < 0 for n in self.episodes_per_task.values()) or self.val_episodes_per_task < 0:
            raise ValueError("episode counts must be >= 0")


def pad_chunks(actions: np.ndarray, chunk_length: int) -> np.ndarray:
    """(N-1, A) actions -> (N-1, chunk_length, A): chunk t = actions[t : t + chunk_length], held past the end."""
    n = actions.shape[0]
    if n == 0:
        return np.zeros((0, chunk_length, ACTION_DIM), np.float32)
    hold = np.zeros((chunk_length, actions.shape[1]), np.float32)
    hold[:, -1] = actions[-1, -1]                     # keep the last gripper target
    padded = np.concatenate([actions.astype(np.float32), hold])
    idx = np.arange(n)[:, None] + np.arange(chunk_length)[None]
    return padded[idx]


def select_episodes(cfg: PolicyDataConfig, split: str, per_task: dict[str, int]) -> list[dict[str, Any]]:
    """Manifest entries: for each task and policy, the first per_task[policy] episodes (by index)."""
    manifest = read_manifest(cfg.path)
    if manifest is None:
        raise FileNotFoundError(f"{cfg.path}: no manifest.json; collect data with `swm collect --out {cfg.path} ...`")
    chosen = []
    for task in cfg.tasks:
        for policy, count in per_task.items():
            found = sorted((e for e in manifest["episodes"] if e["split"] == split and e["task"] == task
                            and e["policy"] == policy and e["variant"] in cfg.variants), key=lambda e: e["index"])
            if len(found) < count:
                raise ValueError(f"{cfg.path}: only {len(found)} {policy} {task} episodes in split {split!r} "
                                 f"(variants {cfg.variants}), {count} asked for")
            chosen += found[:count]
    return chosen


@dataclass
class ChunkSamples:
    images: np.ndarray          # (M, S, S, 3) uint8, processed frames
    proprio: np.ndarray         # (M, P) float32
    task: np.ndarray            # (M, task_dim) float32
    chunks: np.ndarray          # (M, chunk_length, A) float32, raw actions
    role_positions: np.ndarray  # (M, MAX_ROLES, 3) float32, world xyz of the task's blocks (0 if absent)
    role_mask: np.ndarray       # (M, MAX_ROLES) bool, which roles the task has
    episodes: list[str]
    image_processing: dict[str, Any] | None
    camera: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_samples(cfg: PolicyDataConfig, entries: list[dict[str, Any]], chunk_length: int,
                 task_encoder: TaskEncoder, progress: bool = True) -> ChunkSamples:
    images, proprio, task, chunks, roles, masks, ids = [], [], [], [], [], [], []
    processing: dict[str, Any] | None = None
    camera = cfg.camera
    for i, e in enumerate(tqdm(entries, desc="load episodes", disable=not progress, leave=False)):
        with EpisodeReader(Path(cfg.path) / e["file"]) as ep:
            camera = camera or ep.cameras[0]
            proc = ep.image_processing(camera)
            if i == 0:
                processing = proc
            elif proc != processing:
                raise ValueError(f"{ep.path}: frames processed with {proc}, the first episode's with {processing}; "
                                 f"train on one collection setting")
            n = ep.num_actions
            if n == 0:
                continue
            spec = TaskSpec(ep.meta.task, tuple(ep.meta.task_objects), ep.meta.instruction, ep.meta.variant)
            images.append(ep.images(camera)[:n])
            proprio.append(ep.proprio[:n].astype(np.float32))
            task.append(np.repeat(task_encoder(spec)[None], n, 0))
            chunks.append(pad_chunks(ep.actions, chunk_length))
            pos, mask = _role_positions(ep, spec, n)
            roles.append(pos)
            masks.append(mask)
            ids.append(ep.meta.episode_id)
    if not images:
        raise ValueError(f"{cfg.path}: the selection holds no actions")
    return ChunkSamples(np.concatenate(images), np.concatenate(proprio), np.concatenate(task),
                        np.concatenate(chunks), np.concatenate(roles), np.concatenate(masks), ids, processing,
                        camera or "overhead")


def _role_positions(ep: EpisodeReader, spec: TaskSpec, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, MAX_ROLES, 3) world positions of the task's blocks over the first n frames, and the role mask."""
    states = ep.states
    pos = np.zeros((n, MAX_ROLES, 3), np.float32)
    mask = np.zeros((n, MAX_ROLES), bool)
    for r, name in enumerate(spec.objects[:MAX_ROLES]):
        if name not in states.object_names:
            raise ValueError(f"{ep.path}: task object {name!r} is not in the episode's state ({states.object_names})")
        pos[:, r] = states.object_position[:n, states.object_names.index(name)]
        mask[:, r] = True
    return pos, mask
