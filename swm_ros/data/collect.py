"""`swm collect`: seeded episodes from base policies over tasks and variants, in parallel.

    swm collect --out data/run1 --episodes 200 --tasks push,stack --variants nominal,ood_colors \
                --policies scripted:0.4,noisy:0.4,random:0.2 --workers 2

Episode i of a collection is fixed by (--seed, i) alone: its task and variant go round-robin
over the lists, its policy follows the weights (a golden-ratio sequence, so any prefix
keeps the mix), its env seed and split come from a per-episode RNG. So the same command
gives the same data, adding episodes never changes old ones, and a re-run skips
what is on disk (listed in manifest.json, or a complete file with matching attributes).
Output: <out>/episodes/ep_XXXXXX.h5 (docs/data-format.md) and <out>/manifest.json.
"""
from __future__ import annotations

import dataclasses
import importlib
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from swm_ros.data.episodes import EpisodeFormatError, EpisodeMeta, EpisodeRecorder, EpisodeReader
from swm_ros.data.manifest import DEFAULT_FRACTIONS, assign_split, read_manifest, write_manifest
from swm_ros.processing.image import ImageProcessor, ImageProcessorConfig

EPISODE_DIR = "episodes"


class CollectError(RuntimeError):
    """The output directory holds a different collection."""


@dataclass
class CollectConfig:
    out: str
    episodes: int = 10
    tasks: tuple[str, ...] = ("push",)
    variants: tuple[str, ...] = ("nominal",)
    policies: dict[str, float] = field(default_factory=lambda: {"scripted": 1.0})
    workers: int = 1
    image_size: tuple[int, int] = (64, 64)       # stored frames (after the image processor)
    cameras: tuple[str, ...] = ("overhead",)
    # Frames are rendered at render_size (the camera's own 4:3 aspect), cropped to the robot
    # profile's camera roi when crop is true, and resized to image_size (square then);
    # render_size None stores the rendered image_size frames as they are.
    render_size: tuple[int, int] | None = (240, 320)
    crop: bool = True
    max_steps: int | None = None          # None: the task's own max_steps
    seed: int = 0
    robot: str = "nicol"
    replan_every: int | None = None       # actions executed per proposed chunk; None: the whole chunk
    steps_after_success: int = 10         # keep recording this long after success, then stop; -1: never stop
    compression: str = "lzf"
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    env_factory: str = "swm_ros.envs:make_env"
    policy_factory: str = "swm_ros.policies.scripted:make_policy"

    def __post_init__(self) -> None:
        if self.episodes < 0 or self.workers < 1:
            raise ValueError("episodes must be >= 0 and workers >= 1")
        if not self.tasks or not self.variants or not self.policies:
            raise ValueError("tasks, variants and policies must not be empty")
        if any(w < 0 for w in self.policies.values()) or sum(self.policies.values()) <= 0:
            raise ValueError(f"policy weights must be >= 0 with a positive sum: {self.policies}")
        if self.render_size is not None and self.image_size[0] != self.image_size[1]:
            raise ValueError(f"processed frames are square: image_size {self.image_size} must be NxN")

    def manifest_config(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("workers")
        return d


@dataclass(frozen=True)
class EpisodePlan:
    index: int
    episode_id: str
    task: str
    variant: str
    policy: str
    seed: int
    split: str
    file: str          # relative to the output directory


def plan_episodes(cfg: CollectConfig) -> list[EpisodePlan]:
    names = list(cfg.policies)
    cum = np.cumsum([cfg.policies[n] for n in names], dtype=float)
    cum /= cum[-1]
    # policies by a golden-ratio sequence over the weights: every prefix of the collection
    # follows the mix closely (a plain random draw can give 4 x "scripted" out of 4)
    offset = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 0x9011])).random()
    plans = []
    for i in range(cfg.episodes):
        rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), i]))
        task = cfg.tasks[i % len(cfg.tasks)]
        variant = cfg.variants[(i // len(cfg.tasks)) % len(cfg.variants)]
        u = (offset + i * 0.6180339887498949) % 1.0
        policy = names[min(int(np.searchsorted(cum, u, side="right")), len(names) - 1)]
        eid = f"ep_{i:06d}"
        plans.append(EpisodePlan(i, eid, task, variant, policy, int(rng.integers(2**31 - 1)),
                                 assign_split(cfg.seed, i, variant, cfg.fractions), f"{EPISODE_DIR}/{eid}.h5"))
    return plans


# ---------------------------------------------------------------------------------------
# one episode (runs in a worker process)
# ---------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _load(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _env(cfg: CollectConfig, plan: EpisodePlan) -> Any:
    # one env per worker process, rebuilt when a later collection in the same process asks
    # for a different world or image pipeline (tests run several collections in one process)
    key = (cfg.env_factory, cfg.robot, tuple(cfg.image_size), cfg.render_size and tuple(cfg.render_size),
           tuple(cfg.cameras), cfg.crop)
    env = _WORKER.get("env")
    if env is not None and _WORKER.get("env_key") != key:
        env.close()
        env = None
    if env is None:
        _WORKER["env_key"] = key
        size = cfg.render_size if cfg.render_size is not None else cfg.image_size
        env = _load(cfg.env_factory)(robot=cfg.robot, task=plan.task, variant=plan.variant,
                                     image_size=tuple(size), cameras=tuple(cfg.cameras), seed=plan.seed)
        _WORKER["env"] = env
        _WORKER["processors"] = _processors(cfg, env)
    return env


def _processors(cfg: CollectConfig, env: Any) -> dict[str, ImageProcessor]:
    """Per camera, the processor between rendered and stored frames (none: stored as rendered)."""
    if cfg.render_size is None:
        return {}
    cams = getattr(getattr(env, "profile", None), "cameras", {})
    return {c: ImageProcessor(ImageProcessorConfig(roi=cams[c].roi if cfg.crop and c in cams else None,
                                                   size=cfg.image_size[0]))
            for c in cfg.cameras}


def _processed(obs: Any, processors: dict[str, ImageProcessor]) -> Any:
    """The observation with its frames as stored (the policy keeps seeing the raw ones)."""
    if not processors:
        return obs
    return dataclasses.replace(obs, images={c: processors[c](im) if c in processors else im
                                            for c, im in obs.images.items()})


def _policy(cfg: CollectConfig, name: str) -> Any:
    key = f"policy:{name}"
    if key not in _WORKER:
        _WORKER[key] = _load(cfg.policy_factory)(name)
    return _WORKER[key]


def _frame(env: Any, obs: Any, cameras: Sequence[str]) -> tuple[Any, Any]:
    """The observation with every requested camera, and the privileged state."""
    missing = [c for c in cameras if c not in obs.images]
    if missing:
        obs.images = {**obs.images, **{c: env.render(c) for c in missing}}
    return obs, (obs.state if obs.state is not None else env.privileged_state())


def run_episode(cfg: CollectConfig, plan: EpisodePlan) -> dict[str, Any]:
    """Roll one episode out and write it; returns its manifest entry."""
    t0 = time.perf_counter()
    env = _env(cfg, plan)
    obs = env.reset(seed=plan.seed, task=plan.task, variant=plan.variant)
    spec = env.task
    policy = _policy(cfg, plan.policy)
    policy.reset(spec, seed=plan.seed)
    max_steps = cfg.max_steps if cfg.max_steps is not None else spec.max_steps
    meta = EpisodeMeta(episode_id=plan.episode_id, robot=cfg.robot, task=spec.name, task_objects=tuple(spec.objects),
                       instruction=spec.instruction, variant=spec.variant, seed=plan.seed, policy=plan.policy,
                       control_dt=float(env.control_dt), max_steps=int(max_steps),
                       extra={"index": plan.index, "split": plan.split})
    processors = _WORKER["processors"]
    rec = EpisodeRecorder(Path(cfg.out) / plan.file, meta, cameras=cfg.cameras, compression=cfg.compression,
                          image_processing={c: p.config.to_dict() for c, p in processors.items()})
    obs, state = _frame(env, obs, cfg.cameras)
    rec.add(_processed(obs, processors), state=state)
    chunk, k, success_step = None, 0, None
    for step in range(max_steps):
        if chunk is None or k >= len(chunk) or (cfg.replan_every and k >= cfg.replan_every):
            chunk, k = np.asarray(policy.propose(obs, 1))[0], 0
        action = np.clip(chunk[k], -1.0, 1.0).astype(np.float32)
        k += 1
        obs, state = _frame(env, env.step(action), cfg.cameras)
        rec.add(_processed(obs, processors), action, state=state)
        if success_step is None and env.success():
            success_step = step + 1
        if success_step is not None and cfg.steps_after_success >= 0 \
                and step + 1 - success_step >= cfg.steps_after_success:
            break
    meta.extra.update(success_step=success_step, final_success=bool(env.success()),
                      seconds=round(time.perf_counter() - t0, 3))
    rec.finish(success=success_step is not None)
    return _entry(plan, meta, len(rec))


def _entry(plan: EpisodePlan, meta: EpisodeMeta, num_frames: int) -> dict[str, Any]:
    return {"episode_id": plan.episode_id, "index": plan.index, "file": plan.file, "task": meta.task,
            "variant": meta.variant, "policy": meta.policy, "seed": meta.seed, "split": plan.split,
            "success": bool(meta.success), "num_frames": int(num_frames)}


def _worker(args: tuple[CollectConfig, EpisodePlan]) -> dict[str, Any]:
    return run_episode(*args)


def run_jobs(worker: Callable[[Any], Any], jobs: list[Any], workers: int) -> Iterator[Any]:
    """`worker(job)` for every job, results in the order they finish: in this process for one
    worker, else in spawned processes (each keeps its env between jobs), stopped on exit."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(worker, jobs)
        return
    pool = mp.get_context("spawn").Pool(min(workers, len(jobs)))
    try:
        yield from pool.imap_unordered(worker, jobs)
    finally:
        pool.terminate()
        pool.join()


# ---------------------------------------------------------------------------------------
# the collection
# ---------------------------------------------------------------------------------------

def _existing(cfg: CollectConfig, plan: EpisodePlan, listed: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The manifest entry of an episode already complete on disk, else None."""
    path = Path(cfg.out) / plan.file
    if not path.is_file():
        return None
    entry = listed.get(plan.episode_id)
    same = lambda e: (e["task"], e["variant"], e["policy"], int(e["seed"])) == (plan.task, plan.variant, plan.policy, plan.seed)
    if entry is not None and same(entry):
        return entry
    try:
        with EpisodeReader(path) as ep:
            entry = _entry(plan, ep.meta, ep.num_frames)
    except EpisodeFormatError:
        return None          # unfinished or corrupt: collect it again (the writer replaces it atomically)
    if not same(entry):
        raise CollectError(f"{path} was collected with other settings ({entry['task']}/{entry['variant']}/"
                         f"{entry['policy']}/seed {entry['seed']}); use a new --out for a different collection")
    return entry


def collect(cfg: CollectConfig, progress: bool = True) -> dict[str, Any]:
    """Collect (or complete) the collection; returns a summary."""
    out = Path(cfg.out)
    (out / EPISODE_DIR).mkdir(parents=True, exist_ok=True)
    for stale in (out / EPISODE_DIR).glob(".*.tmp"):    # left by a killed earlier run
        stale.unlink(missing_ok=True)
    plans = plan_episodes(cfg)
    manifest = read_manifest(out)
    listed = {e["episode_id"]: e for e in manifest["episodes"]} if manifest else {}
    done: dict[str, dict[str, Any]] = {}
    # episodes beyond this plan (an earlier, larger run) stay listed
    planned = {p.episode_id for p in plans}
    done.update({k: v for k, v in listed.items() if k not in planned and (out / v["file"]).is_file()})
    pending = []
    for p in plans:
        e = _existing(cfg, p, listed)
        if e is None:
            pending.append(p)
        else:
            done[p.episode_id] = e
    skipped = len(plans) - len(pending)
    write_manifest(out, cfg.manifest_config(), list(done.values()))
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(pending), desc="collect", unit="ep")
    frames = 0
    try:
        for entry in run_jobs(_worker, [(cfg, p) for p in pending], cfg.workers):
            done[entry["episode_id"]] = entry
            frames += entry["num_frames"]
            write_manifest(out, cfg.manifest_config(), list(done.values()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(frames_per_s=f"{frames / (time.perf_counter() - t0):.0f}")
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    ok = [e for e in done.values() if e["episode_id"] in planned]
    return {"out": str(out), "planned": len(plans), "collected": len(pending), "skipped": skipped,
            "frames": frames, "seconds": seconds, "frames_per_s": frames / seconds if seconds > 0 else 0.0,
            "success_rate": float(np.mean([e["success"] for e in ok])) if ok else float("nan"),
            "splits": {s: sum(e["split"] == s for e in ok) for s in ("train", "val", "test", "ood")}}


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------

def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.replace(" ", ",").split(",") if t.strip())


def parse_policies(text: str) -> dict[str, float]:
    """"scripted:0.5,noisy:0.3,random:0.2" or "scripted,noisy" (equal weights)."""
    out = {}
    for item in _csv(text):
        name, _, w = item.partition(":")
        out[name] = float(w) if w else 1.0
    return out


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise ValueError(f"image size {text!r}: use 64 or 64x64")


def cli_collect(args: Any) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    cfg = CollectConfig(
        out=args.out, episodes=args.episodes, tasks=_csv(args.tasks), variants=_csv(args.variants),
        policies=parse_policies(args.policies), workers=args.workers, image_size=parse_size(args.image_size),
        cameras=_csv(args.cameras), max_steps=args.max_steps, seed=args.seed, robot=args.robot,
        replan_every=args.replan_every, compression=args.compression,
        render_size=None if args.render_size.lower() == "none" else parse_size(args.render_size),
        crop=not args.no_crop,
    )
    try:
        s = collect(cfg)
    except CollectError as e:
        print(f"swm collect: {e}")
        return 2
    print(f"{s['collected']} episodes collected, {s['skipped']} already on disk, {s['frames']} frames in "
          f"{s['seconds']:.1f} s ({s['frames_per_s']:.0f} frames/s); success {s['success_rate']:.2f}; "
          f"splits {s['splits']} -> {s['out']}")
    return 0
