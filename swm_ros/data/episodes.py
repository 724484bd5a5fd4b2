"""Episode files: one HDF5 file per episode, written atomically, read back fast.

Layout (format_version 1; docs/data-format.md is the reference):

    /                  attrs: format_version, episode_id, robot, task, task_objects (JSON),
                              instruction, variant, seed, policy, success, control_dt,
                              max_steps, num_frames, num_actions, action_names (JSON),
                              cameras (JSON), extra (JSON)
    /images/<camera>   (N, H, W, 3) uint8, one frame per chunk, lzf or gzip
    /actions           (N-1, 5) float32: actions[t] was applied at frame t, giving frame t+1
    /proprio           (N, P) float32
    /state/...         the privileged state, flattened (see `StateArrays`)

N frames and N-1 actions: frame 0 is the reset observation, frame t+1 the observation
after action t. Everything per-frame has length N.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from swm_ros.envs.base import ACTION_DIM, ACTION_NAMES, GRIPPER, TABLE, ObjectState, Observation, PrivilegedState

FORMAT_VERSION = 1
FORMAT_NAME = "swm_ros.episode"


class EpisodeFormatError(ValueError):
    """An episode file is missing, corrupt, incomplete or of an unsupported format version."""


@dataclass
class EpisodeMeta:
    """Episode-level attributes."""

    episode_id: str
    robot: str = "nicol"
    task: str = ""
    task_objects: tuple[str, ...] = ()
    instruction: str = ""
    variant: str = "nominal"
    seed: int = 0
    policy: str = ""
    success: bool = False
    control_dt: float = 0.0
    max_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# The privileged state of a whole episode as arrays
# ---------------------------------------------------------------------------------------

@dataclass
class StateArrays:
    """Privileged states of N frames as arrays over a fixed object list of K objects.

    Contacts are a (N, K+2, K+2) symmetric bool matrix over `bodies` = [objects..., gripper,
    table]. `grasped` holds an object index or -1. SAQA labels are computed on these arrays
    (or on `take(idx)` gathers of them), never on Python objects per step.
    """

    object_names: tuple[str, ...]
    object_kinds: tuple[str, ...]
    object_colors: tuple[str, ...]
    half_sizes: np.ndarray          # (K,) float64
    table_height: float
    step: np.ndarray                # (N,) int64
    time: np.ndarray                # (N,) float64
    object_position: np.ndarray     # (N, K, 3) float64
    object_quaternion: np.ndarray   # (N, K, 4) float64, w x y z
    effector_position: np.ndarray   # (N, 3) float64
    effector_yaw: np.ndarray        # (N,) float64
    gripper_opening: np.ndarray     # (N,) float64
    grasped: np.ndarray             # (N,) int64, -1 = nothing
    contacts: np.ndarray            # (N, K+2, K+2) bool
    joint_positions: np.ndarray     # (N, J) float64

    PER_FRAME = ("step", "time", "object_position", "object_quaternion", "effector_position",
                 "effector_yaw", "gripper_opening", "grasped", "contacts", "joint_positions")

    @property
    def num_objects(self) -> int:
        return len(self.object_names)

    @property
    def bodies(self) -> tuple[str, ...]:
        return (*self.object_names, GRIPPER, TABLE)

    @property
    def gripper_index(self) -> int:
        return self.num_objects

    @property
    def table_index(self) -> int:
        return self.num_objects + 1

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def take(self, idx: np.ndarray | Sequence[int]) -> "StateArrays":
        """A gather of frames (a copy): per-frame arrays indexed by `idx`."""
        idx = np.asarray(idx)
        kw = {k: getattr(self, k)[idx] for k in self.PER_FRAME}
        return StateArrays(self.object_names, self.object_kinds, self.object_colors, self.half_sizes,
                           self.table_height, **kw)

    @classmethod
    def from_states(cls, states: Sequence[PrivilegedState]) -> "StateArrays":
        if not states:
            raise ValueError("no states")
        first = states[0]
        names = tuple(first.objects)
        index = {n: i for i, n in enumerate(names)}
        bodies = {**index, GRIPPER: len(names), TABLE: len(names) + 1}
        n, k = len(states), len(names)
        pos = np.zeros((n, k, 3))
        quat = np.zeros((n, k, 4))
        contacts = np.zeros((n, k + 2, k + 2), dtype=bool)
        grasped = np.full(n, -1, dtype=np.int64)
        for t, s in enumerate(states):
            if tuple(s.objects) != names:
                raise ValueError(f"state {t}: object set changed within the episode "
                                 f"({list(s.objects)} vs {list(names)})")
            for i, o in enumerate(s.objects.values()):
                pos[t, i] = o.position
                quat[t, i] = o.quaternion
            for a, b in s.contacts:
                ia, ib = bodies.get(a), bodies.get(b)
                if ia is not None and ib is not None:   # contacts with other bodies are dropped
                    contacts[t, ia, ib] = contacts[t, ib, ia] = True
            if s.grasped is not None:
                grasped[t] = index[s.grasped]
        objs = list(first.objects.values())
        return cls(
            object_names=names,
            object_kinds=tuple(o.kind for o in objs),
            object_colors=tuple(o.color for o in objs),
            half_sizes=np.array([o.half_size for o in objs], dtype=np.float64),
            table_height=float(first.table_height),
            step=np.array([s.step for s in states], dtype=np.int64),
            time=np.array([s.time for s in states], dtype=np.float64),
            object_position=pos,
            object_quaternion=quat,
            effector_position=np.array([s.effector_position for s in states], dtype=np.float64).reshape(n, 3),
            effector_yaw=np.array([s.effector_yaw for s in states], dtype=np.float64),
            gripper_opening=np.array([s.gripper_opening for s in states], dtype=np.float64),
            grasped=grasped,
            contacts=contacts,
            joint_positions=np.array([np.asarray(s.joint_positions, dtype=np.float64) for s in states]).reshape(n, -1),
        )

    def state(self, t: int) -> PrivilegedState:
        """Rebuild the `PrivilegedState` of frame t."""
        t = int(t)
        if not -len(self) <= t < len(self):
            raise IndexError(f"frame {t} out of range for {len(self)} frames")
        objects = {
            name: ObjectState(name=name, kind=self.object_kinds[i], color=self.object_colors[i],
                              position=self.object_position[t, i].copy(),
                              quaternion=self.object_quaternion[t, i].copy(),
                              half_size=float(self.half_sizes[i]))
            for i, name in enumerate(self.object_names)
        }
        bodies = self.bodies
        ii, jj = np.nonzero(np.triu(self.contacts[t]))
        contacts = frozenset(tuple(sorted((bodies[i], bodies[j]))) for i, j in zip(ii, jj))
        g = int(self.grasped[t])
        return PrivilegedState(
            step=int(self.step[t]), time=float(self.time[t]), objects=objects,
            effector_position=self.effector_position[t].copy(),
            effector_yaw=float(self.effector_yaw[t]), gripper_opening=float(self.gripper_opening[t]),
            grasped=self.object_names[g] if g >= 0 else None, contacts=contacts,
            joint_positions=self.joint_positions[t].copy(), table_height=self.table_height,
        )


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------

def _compression_kwargs(compression: str | None, chunk: tuple[int, ...]) -> dict[str, Any]:
    if compression in (None, "none"):
        return {"chunks": chunk}
    if compression == "lzf":
        return {"compression": "lzf", "chunks": chunk}
    if compression.startswith("gzip"):
        level = int(compression.split(":")[1]) if ":" in compression else 4
        return {"compression": "gzip", "compression_opts": level, "chunks": chunk}
    raise ValueError(f"unknown compression {compression!r}; use lzf, gzip[:level] or none")


def write_episode(path: str | Path, meta: EpisodeMeta, images: dict[str, np.ndarray], actions: np.ndarray,
                  proprio: np.ndarray, states: StateArrays | Sequence[PrivilegedState],
                  compression: str = "lzf", image_processing: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write one episode atomically: a temporary file in the same directory, then rename.

    `image_processing[camera]` is the config of the processor (swm_ros.processing.image) the
    frames went through, stored beside them so a model trained on them can apply the same.
    """
    path = Path(path)
    if not isinstance(states, StateArrays):
        states = StateArrays.from_states(states)
    n = len(states)
    actions = np.asarray(actions, dtype=np.float32).reshape(-1, ACTION_DIM)
    proprio = np.asarray(proprio, dtype=np.float32).reshape(n, -1)
    if actions.shape[0] != n - 1:
        raise ValueError(f"{n} frames need {n - 1} actions, got {actions.shape[0]}")
    for cam, img in images.items():
        if img.dtype != np.uint8 or img.ndim != 4 or img.shape[0] != n or img.shape[-1] != 3:
            raise ValueError(f"images[{cam!r}] must be (N={n}, H, W, 3) uint8, got {img.shape} {img.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            a = f.attrs
            a["format"] = FORMAT_NAME
            a["format_version"] = FORMAT_VERSION
            a["episode_id"] = meta.episode_id
            a["robot"] = meta.robot
            a["task"] = meta.task
            a["task_objects"] = json.dumps(list(meta.task_objects))
            a["instruction"] = meta.instruction
            a["variant"] = meta.variant
            a["seed"] = int(meta.seed)
            a["policy"] = meta.policy
            a["success"] = bool(meta.success)
            a["control_dt"] = float(meta.control_dt)
            a["max_steps"] = int(meta.max_steps)
            a["num_frames"] = n
            a["num_actions"] = n - 1
            a["action_names"] = json.dumps(list(ACTION_NAMES))
            a["cameras"] = json.dumps(list(images))
            a["extra"] = json.dumps(meta.extra)
            g = f.create_group("images")
            for cam, img in images.items():
                ds = g.create_dataset(cam, data=img, **_compression_kwargs(compression, (1, *img.shape[1:])))
                ds.attrs["processor"] = json.dumps((image_processing or {}).get(cam))
            f.create_dataset("actions", data=actions)
            f.create_dataset("proprio", data=proprio)
            s = f.create_group("state")
            s.attrs["object_names"] = json.dumps(list(states.object_names))
            s.attrs["object_kinds"] = json.dumps(list(states.object_kinds))
            s.attrs["object_colors"] = json.dumps(list(states.object_colors))
            s.attrs["bodies"] = json.dumps(list(states.bodies))
            s.attrs["table_height"] = float(states.table_height)
            s.create_dataset("half_sizes", data=states.half_sizes)
            for key in StateArrays.PER_FRAME:
                arr = getattr(states, key)
                kw = {"compression": "gzip", "compression_opts": 1} if key == "contacts" and arr.size > 4096 else {}
                s.create_dataset(key, data=arr, **kw)
            a["complete"] = True   # last: a file without it was never finished
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


class EpisodeRecorder:
    """Buffers an episode step by step, then writes it atomically with `finish`.

    Call `add(obs)` for the reset observation, then `add(obs, action)` after each step with
    the action that led to `obs`; `finish(success)` writes the file.
    """

    def __init__(self, path: str | Path, meta: EpisodeMeta, cameras: Sequence[str] | None = None,
                 compression: str = "lzf", image_processing: dict[str, dict[str, Any]] | None = None):
        self.path = Path(path)
        self.image_processing = image_processing
        self.meta = meta
        self.cameras = tuple(cameras) if cameras is not None else None
        self.compression = compression
        self._images: dict[str, list[np.ndarray]] = {}
        self._actions: list[np.ndarray] = []
        self._proprio: list[np.ndarray] = []
        self._states: list[PrivilegedState] = []

    def __len__(self) -> int:
        return len(self._states)

    def add(self, obs: Observation, action: np.ndarray | None = None, state: PrivilegedState | None = None) -> None:
        state = state if state is not None else obs.state
        if state is None:
            raise ValueError("the observation carries no privileged state; pass state=env.privileged_state()")
        if self._states and action is None:
            raise ValueError("every frame after the first needs the action that led to it")
        if not self._states and action is not None:
            raise ValueError("the first frame (the reset observation) has no action")
        cams = self.cameras if self.cameras is not None else tuple(obs.images)
        if self.cameras is None:
            self.cameras = cams
        for c in cams:
            self._images.setdefault(c, []).append(np.asarray(obs.images[c], dtype=np.uint8))
        if action is not None:
            self._actions.append(np.asarray(action, dtype=np.float32).reshape(ACTION_DIM))
        self._proprio.append(np.asarray(obs.proprio, dtype=np.float32).ravel())
        self._states.append(state)

    def finish(self, success: bool | None = None) -> Path:
        if success is not None:
            self.meta.success = bool(success)
        images = {c: np.stack(v) for c, v in self._images.items()}
        actions = np.stack(self._actions) if self._actions else np.zeros((0, ACTION_DIM), np.float32)
        return write_episode(self.path, self.meta, images, actions, np.stack(self._proprio), self._states,
                             compression=self.compression, image_processing=self.image_processing)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------

class EpisodeReader:
    """Read one episode file. Arrays load lazily and are cached; images can be read per frame.

    >>> with EpisodeReader(path) as ep:
    ...     s = ep.state(10)            # PrivilegedState of frame 10
    ...     img = ep.image("overhead", 10)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise EpisodeFormatError(f"{self.path}: no such episode file")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise EpisodeFormatError(f"{self.path}: not a readable HDF5 episode file (corrupt or truncated?): {e}") from e
        try:
            self._check()
            self.meta = self._read_meta()
        except EpisodeFormatError:
            self._f.close()
            raise
        self._states: StateArrays | None = None
        self._actions: np.ndarray | None = None

    def _check(self) -> None:
        a = self._f.attrs
        if a.get("format") != FORMAT_NAME:
            raise EpisodeFormatError(f"{self.path}: not a swm_ros episode file (format attribute {a.get('format')!r})")
        version = a.get("format_version")
        if version is None or int(version) != FORMAT_VERSION:
            raise EpisodeFormatError(f"{self.path}: episode format_version {version} is not supported "
                                     f"(this reader reads version {FORMAT_VERSION}); re-collect or convert it")
        if not a.get("complete", False):
            raise EpisodeFormatError(f"{self.path}: episode file is incomplete (writer did not finish)")
        for key in ("images", "actions", "proprio", "state"):
            if key not in self._f:
                raise EpisodeFormatError(f"{self.path}: missing /{key}")

    def _read_meta(self) -> EpisodeMeta:
        a = self._f.attrs
        return EpisodeMeta(
            episode_id=str(a["episode_id"]), robot=str(a["robot"]), task=str(a["task"]),
            task_objects=tuple(json.loads(a["task_objects"])), instruction=str(a["instruction"]),
            variant=str(a["variant"]), seed=int(a["seed"]), policy=str(a["policy"]),
            success=bool(a["success"]), control_dt=float(a["control_dt"]), max_steps=int(a["max_steps"]),
            extra=json.loads(a["extra"]),
        )

    # context manager / lifetime
    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> "EpisodeReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_frames

    @property
    def num_frames(self) -> int:
        return int(self._f.attrs["num_frames"])

    @property
    def num_actions(self) -> int:
        return int(self._f.attrs["num_actions"])

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(json.loads(self._f.attrs["cameras"]))

    def _read(self, key: str) -> np.ndarray:
        try:
            return self._f[key][()]
        except (OSError, KeyError) as e:
            raise EpisodeFormatError(f"{self.path}: cannot read /{key} (corrupt file?): {e}") from e

    @property
    def actions(self) -> np.ndarray:
        """(N-1, 5) float32."""
        if self._actions is None:
            self._actions = self._read("actions")
        return self._actions

    @property
    def proprio(self) -> np.ndarray:
        return self._read("proprio")

    def image_processing(self, camera: str | None = None) -> dict[str, Any] | None:
        """Config of the processor the camera's frames went through (None: raw frames)."""
        cam = camera or self.cameras[0]
        raw = self._f[f"images/{cam}"].attrs.get("processor")
        return json.loads(raw) if raw is not None else None

    def images(self, camera: str | None = None) -> np.ndarray:
        """All frames of one camera, (N, H, W, 3) uint8."""
        return self._read(f"images/{camera or self.cameras[0]}")

    def image(self, camera: str | None, t: int | np.ndarray) -> np.ndarray:
        """Frame(s) t of one camera; t may be an int or a sorted index array."""
        ds = self._f[f"images/{camera or self.cameras[0]}"]
        try:
            return ds[t] if np.isscalar(t) else ds[np.asarray(t)]
        except OSError as e:
            raise EpisodeFormatError(f"{self.path}: cannot read images/{camera} frame(s) {t}: {e}") from e

    @property
    def states(self) -> StateArrays:
        if self._states is None:
            g = self._f["state"]
            try:
                self._states = StateArrays(
                    object_names=tuple(json.loads(g.attrs["object_names"])),
                    object_kinds=tuple(json.loads(g.attrs["object_kinds"])),
                    object_colors=tuple(json.loads(g.attrs["object_colors"])),
                    half_sizes=g["half_sizes"][()],
                    table_height=float(g.attrs["table_height"]),
                    **{k: g[k][()] for k in StateArrays.PER_FRAME},
                )
            except (OSError, KeyError) as e:
                raise EpisodeFormatError(f"{self.path}: cannot read /state (corrupt file?): {e}") from e
        return self._states

    def state(self, t: int) -> PrivilegedState:
        return self.states.state(t)


def read_meta(path: str | Path) -> EpisodeMeta:
    """Validate a file and return its attributes (cheap: no arrays are read)."""
    with EpisodeReader(path) as ep:
        return ep.meta


def is_complete(path: str | Path) -> bool:
    """True when `path` is a finished, readable episode file of the current version."""
    try:
        read_meta(path)
        return True
    except EpisodeFormatError:
        return False


def meta_dict(meta: EpisodeMeta) -> dict[str, Any]:
    d = asdict(meta)
    d["task_objects"] = list(meta.task_objects)
    return d
