"""Bags <-> the project's episode files (docs/data-format.md), both directions.

bag -> episodes: a labelled bag (a simulator's, or a real robot's with `world_state`
annotations) becomes world-model training data. The executed actions come from the recorded
action chunks: a chunk runs from its arrival until the next one arrives, one action every
`dt`; each executed action is an episode step. Frame t is the latest image, world state and
joint state at or before that action's start; the last frame is one `dt` after the last
action. A new `task_info` message (a reset) starts a new episode.

episodes -> bag: each step becomes one image, /joint_states, world_state and a one-action
ActionChunk at t0 + t * control_dt, and a task_info at the start, so the bag -> episode
direction gives back the same episode (images and actions exactly, poses to float64).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from swm_ros.bags.images import image_to_rgb
from swm_ros.bags.reader import BagError, BagReader, BagTopicsError
from swm_ros.bags.writer import BagWriter
from swm_ros.data.episodes import EpisodeMeta, EpisodeReader, StateArrays, write_episode
from swm_ros.envs.base import ACTION_DIM, ACTION_NAMES, ObjectState, PrivilegedState, proprio_vector

NS = 1_000_000_000
STATE_QOS = [{"history": "keep_last", "depth": 10, "reliability": "reliable", "durability": "volatile"}]
SENSOR_QOS = [{"history": "keep_last", "depth": 5, "reliability": "best_effort", "durability": "volatile"}]
LATCHED_QOS = [{"history": "keep_last", "depth": 1, "reliability": "reliable", "durability": "transient_local"}]
COMMAND_QOS = [{"history": "keep_last", "depth": 5, "reliability": "reliable", "durability": "volatile"}]


@dataclass(frozen=True)
class BagTopics:
    """Which bag topics hold what (absolute names, as recorded)."""

    image: str = "/realsense/color/image_raw"
    joint_states: str = "/joint_states"
    world_state: str = "/world_state"
    action_chunk: str = "/action_chunk"
    task_info: str = "/task_info"

    @classmethod
    def for_robot(cls, robot: str = "nicol", camera: str = "overhead", namespace: str = "") -> "BagTopics":
        from swm_ros.robots.profile import load_robot_profile

        prof = load_robot_profile(robot)
        ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
        return cls(image=f"{ns}/{prof.cameras[camera].topic.lstrip('/')}",
                   joint_states=prof.controller.joint_states_topic,
                   world_state=f"{ns}/world_state", action_chunk=f"{ns}/action_chunk", task_info=f"{ns}/task_info")


# ------------------------------------------------------------------------------- messages

def _time(store, t_ns: int):
    return store.types["builtin_interfaces/msg/Time"](sec=int(t_ns // NS), nanosec=int(t_ns % NS))


def _header(store, t_ns: int, frame_id: str = ""):
    return store.types["std_msgs/msg/Header"](stamp=_time(store, t_ns), frame_id=frame_id)


def _pose(store, position, quat_wxyz):
    p = store.types["geometry_msgs/msg/Point"](*(float(v) for v in position))
    w, x, y, z = (float(v) for v in quat_wxyz)
    return store.types["geometry_msgs/msg/Pose"](position=p, orientation=store.types["geometry_msgs/msg/Quaternion"](x, y, z, w))


def world_state_msg(store, s: PrivilegedState, success: bool, t_ns: int):
    objs = list(s.objects.values())
    yaw = float(s.effector_yaw)
    return store.types["swm_ros/msg/WorldState"](
        header=_header(store, t_ns, "world"), step=int(s.step),
        object_names=[o.name for o in objs], object_colors=[o.color for o in objs],
        object_poses=[_pose(store, o.position, o.quaternion) for o in objs],
        object_kinds=[o.kind for o in objs],
        object_half_sizes=np.array([o.half_size for o in objs], dtype=np.float32),
        effector_pose=_pose(store, s.effector_position, (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))),
        gripper_opening=float(s.gripper_opening), grasped=s.grasped or "",
        contacts=["|".join(c) for c in sorted(s.contacts)], success=bool(success))


def privileged_from_msg(msg, joint_positions: np.ndarray, table_height: float, time_s: float) -> PrivilegedState:
    objects = {}
    for i, name in enumerate(msg.object_names):
        p = msg.object_poses[i]
        objects[name] = ObjectState(name=name, kind=msg.object_kinds[i], color=msg.object_colors[i],
                                    position=np.array([p.position.x, p.position.y, p.position.z]),
                                    quaternion=np.array([p.orientation.w, p.orientation.x, p.orientation.y,
                                                         p.orientation.z]),
                                    half_size=float(msg.object_half_sizes[i]))
    o = msg.effector_pose.orientation
    yaw = float(np.arctan2(2 * (o.w * o.z + o.x * o.y), 1 - 2 * (o.y * o.y + o.z * o.z)))
    e = msg.effector_pose.position
    contacts = frozenset(tuple(sorted(c.split("|", 1))) for c in msg.contacts if "|" in c)
    return PrivilegedState(step=int(msg.step), time=time_s, objects=objects,
                           effector_position=np.array([e.x, e.y, e.z]), effector_yaw=yaw,
                           gripper_opening=float(msg.gripper_opening), grasped=msg.grasped or None,
                           contacts=contacts, joint_positions=np.asarray(joint_positions, dtype=np.float64),
                           table_height=float(table_height))


# ------------------------------------------------------------------------------- episodes -> bag

def episodes_to_bag(episodes: Sequence[str | Path], out: str | Path, robot: str = "nicol",
                    topics: BagTopics | None = None, start_ns: int = 1_700_000_000 * NS,
                    gap_s: float = 1.0) -> dict[str, Any]:
    """Write episode files into one new bag, one after the other (`gap_s` apart)."""
    from swm_ros.robots.profile import load_robot_profile

    prof = load_robot_profile(robot)
    topics = topics or BagTopics.for_robot(robot)
    joint_names = list(prof.joint_names)
    t_ns = int(start_ns)
    with BagWriter(out, custom_data={"converted_from": "swm_ros episodes"}) as bag:
        st = bag.store
        bag.add_topic(topics.image, "sensor_msgs/msg/Image", SENSOR_QOS)
        bag.add_topic(topics.joint_states, "sensor_msgs/msg/JointState", STATE_QOS)
        bag.add_topic(topics.world_state, "swm_ros/msg/WorldState", STATE_QOS)
        bag.add_topic(topics.action_chunk, "swm_ros/msg/ActionChunk", COMMAND_QOS)
        bag.add_topic(topics.task_info, "swm_ros/msg/TaskInfo", LATCHED_QOS)
        for index, path in enumerate(episodes):
            with EpisodeReader(path) as ep:
                m, states, actions = ep.meta, ep.states, ep.actions
                images = ep.images(ep.cameras[0])
                dt_ns = int(round(m.control_dt * NS))
                bag.write_message(topics.task_info, t_ns, st.types["swm_ros/msg/TaskInfo"](
                    header=_header(st, t_ns), name=m.task, variant=m.variant, instruction=m.instruction,
                    objects=list(m.task_objects), seed=int(m.seed), episode=index), "swm_ros/msg/TaskInfo")
                success_step = m.extra.get("success_step")
                for t in range(len(states)):
                    tt = t_ns + t * dt_ns
                    img = np.ascontiguousarray(images[t])
                    bag.write_message(topics.image, tt, st.types["sensor_msgs/msg/Image"](
                        header=_header(st, tt, prof.cameras[ep.cameras[0]].frame_id if ep.cameras[0] in prof.cameras
                                       else ep.cameras[0]),
                        height=img.shape[0], width=img.shape[1], encoding="rgb8", is_bigendian=0,
                        step=img.shape[1] * 3, data=img.reshape(-1)), "sensor_msgs/msg/Image")
                    q = states.joint_positions[t]
                    bag.write_message(topics.joint_states, tt, st.types["sensor_msgs/msg/JointState"](
                        header=_header(st, tt), name=joint_names[: len(q)], position=np.asarray(q, np.float64),
                        velocity=np.zeros(0), effort=np.zeros(0)), "sensor_msgs/msg/JointState")
                    success = success_step is not None and t >= int(success_step)
                    bag.write_message(topics.world_state, tt, world_state_msg(st, states.state(t), success, tt),
                                      "swm_ros/msg/WorldState")
                    if t < len(actions):
                        bag.write_message(topics.action_chunk, tt, st.types["swm_ros/msg/ActionChunk"](
                            header=_header(st, tt), action_names=list(ACTION_NAMES), dt=float(m.control_dt), horizon=1,
                            actions=np.asarray(actions[t], np.float32), source=m.policy or "episode", task=m.task),
                            "swm_ros/msg/ActionChunk")
                t_ns += (len(states) - 1) * dt_ns + int(gap_s * NS)
        counts = dict(bag.counts)
    return {"bag": str(out), "episodes": len(episodes), "messages": counts}


# ------------------------------------------------------------------------------- bag -> episodes

@dataclass
class BagEpisode:
    """One episode cut from a bag, in memory (what `swm bag eval` and the converter use)."""

    meta: EpisodeMeta
    images: np.ndarray             # (N, H, W, 3) uint8
    actions: np.ndarray            # (N-1, 5) float32
    proprio: np.ndarray            # (N, P) float32
    states: StateArrays
    frame_times: np.ndarray        # (N,) int64 ns, bag time of each frame
    problems: list[str] = field(default_factory=list)


def _latest(times: list[int], t: int) -> int:
    """Index of the last entry at or before t (-1 if none)."""
    return bisect.bisect_right(times, t) - 1


def _executed_actions(chunks: list[tuple[int, Any]]) -> list[tuple[int, np.ndarray, float]]:
    """(start ns, action, dt s) of every action that ran: each chunk until the next one arrives."""
    out = []
    for i, (t, c) in enumerate(chunks):
        names = list(c.action_names)
        if names and names != list(ACTION_NAMES):
            raise BagError(f"action chunk at {t / NS:.3f} s has actions {names}; episodes need {list(ACTION_NAMES)}")
        a = np.asarray(c.actions, dtype=np.float32).reshape(-1, ACTION_DIM)[: int(c.horizon) or None]
        dt_ns = int(round(float(c.dt) * NS))
        if dt_ns <= 0:
            raise BagError(f"action chunk at {t / NS:.3f} s has dt {c.dt}")
        end = chunks[i + 1][0] if i + 1 < len(chunks) else None
        for k in range(len(a)):
            start = t + k * dt_ns
            if end is not None and start >= end:
                break
            out.append((start, a[k], float(c.dt)))
    return out


def read_bag_episodes(bag: str | Path | BagReader, robot: str = "nicol", topics: BagTopics | None = None,
                      min_frames: int = 2, max_seconds: float | None = None) -> list[BagEpisode]:
    """Cut a labelled bag into episodes (see the module docstring). Errors list the bag's topics.
    `max_seconds`: only the bag's first seconds are read (the last episode may end early)."""
    from swm_ros.robots.profile import load_robot_profile

    reader = bag if isinstance(bag, BagReader) else BagReader(bag)
    prof = load_robot_profile(robot)
    topics = topics or BagTopics.for_robot(robot)
    need = [topics.image, topics.world_state, topics.action_chunk, topics.joint_states]
    reader.require_topics(need, "conversion to episodes (images, world_state labels, executed actions, joints)")
    expect = {topics.image: "sensor_msgs/msg/Image", topics.world_state: "swm_ros/msg/WorldState",
              topics.action_chunk: "swm_ros/msg/ActionChunk", topics.joint_states: "sensor_msgs/msg/JointState"}
    wrong = [f"{t} is {reader.topics[t].msgtype}, not {want}" for t, want in expect.items()
             if reader.topics[t].msgtype != want]
    if wrong:
        raise BagTopicsError(f"{reader.path}: wrong topic types: {'; '.join(wrong)}")
    # pass 1: everything but images, decoded
    series: dict[str, list[tuple[int, Any]]] = {t: [] for t in need[1:]}
    tasks: list[tuple[int, Any]] = []
    image_times: list[int] = []
    sel = need + ([topics.task_info] if topics.task_info in reader.topics else [])
    end_ns = None
    if max_seconds:
        start = reader.start_ns
        if start is None:                                  # no statistics (unfinished file): peek
            start = next((m.log_time for m in reader.messages(sel, end_ns=2**63 - 1)), 0)
        end_ns = start + int(max_seconds * NS)
    for m in reader.messages(sel, end_ns=end_ns):
        if m.topic == topics.image:
            image_times.append(m.log_time)
        elif m.topic == topics.task_info:
            tasks.append((m.log_time, reader.decode(m)))
        else:
            series[m.topic].append((m.log_time, reader.decode(m)))
    joint_names = list(prof.joint_names)
    bounds = [t for t, _ in tasks] or [min((t for t, _ in series[topics.action_chunk]), default=0)]
    bounds = sorted(set(bounds)) + [2**63 - 1]
    plans = []
    for i in range(len(bounds) - 1):
        lo, hi = bounds[i], bounds[i + 1]
        chunks = [(t, c) for t, c in series[topics.action_chunk] if lo <= t < hi]
        executed = [(t, a, d) for t, a, d in _executed_actions(chunks) if t < hi] if chunks else []
        if end_ns is not None:        # a prefix: every frame, the one after the last action too, inside it
            executed = [(t, a, d) for t, a, d in executed if t + int(round(d * NS)) < end_ns]
        if len(executed) + 1 < min_frames:
            continue
        frame_t = [t for t, _, _ in executed] + [executed[-1][0] + int(round(executed[-1][2] * NS))]
        task = next((c for t, c in reversed(tasks) if t <= lo), None)
        plans.append((frame_t, executed, task, i))
    # pass 2: the images each episode's frames need (each a copy: the bag data is not kept)
    wanted_img: dict[int, list[tuple[int, int]]] = {}
    for p_i, (frame_t, *_rest) in enumerate(plans):
        for f_i, t in enumerate(frame_t):
            k = _latest(image_times, t)
            wanted_img.setdefault(k, []).append((p_i, f_i))
    frames: dict[tuple[int, int], np.ndarray] = {}
    k = -1
    for m in reader.messages([topics.image], end_ns=end_ns):
        k += 1
        if k in wanted_img:
            rgb = image_to_rgb(reader.decode(m), where=f"{m.topic} at {m.log_time / NS:.3f} s")
            for key in wanted_img[k]:
                frames[key] = rgb
    out = []
    ws_t = [t for t, _ in series[topics.world_state]]
    js_t = [t for t, _ in series[topics.joint_states]]
    for p_i, (frame_t, executed, task, index) in enumerate(plans):
        problems = []
        missing = [f_i for f_i in range(len(frame_t)) if (p_i, f_i) not in frames]
        if missing:
            raise BagError(f"{reader.path}: episode {index}: no image at or before frame(s) {missing[:5]} "
                           f"(first frame {frame_t[0] / NS:.3f} s; first image "
                           f"{(image_times[0] / NS if image_times else float('nan')):.3f} s)")
        states, proprio = [], []
        for f_i, t in enumerate(frame_t):
            wi, ji = _latest(ws_t, t), _latest(js_t, t)
            if wi < 0 or ji < 0:
                raise BagError(f"{reader.path}: episode {index}: no world_state / joint_states at or before "
                               f"frame {f_i} ({t / NS:.3f} s)")
            js = series[topics.joint_states][ji][1]
            index_of = {n: j for j, n in enumerate(js.name)}
            if any(n not in index_of for n in joint_names):
                raise BagError(f"{reader.path}: joint_states lacks joints {[n for n in joint_names if n not in index_of]}")
            q = np.array([js.position[index_of[n]] for n in joint_names])
            s = privileged_from_msg(series[topics.world_state][wi][1], q, prof.table.height,
                                    (t - frame_t[0]) / NS)
            states.append(s)
            proprio.append(proprio_vector(q, s.effector_position, s.effector_yaw, s.gripper_opening))
        arrays = StateArrays.from_states(states)
        success_flags = [series[topics.world_state][_latest(ws_t, t)][1].success for t in frame_t]
        dts = {round(d, 6) for _, _, d in executed}
        if len(dts) > 1:
            problems.append(f"actions with several dt {sorted(dts)}; control_dt is the first")
        meta = EpisodeMeta(
            episode_id=f"ep_{index:06d}", robot=prof.name, task=task.name if task else "",
            task_objects=tuple(task.objects) if task else (), instruction=task.instruction if task else "",
            variant=(task.variant or "nominal") if task else "nominal", seed=int(task.seed) if task else 0,
            policy=executed_source(series[topics.action_chunk], frame_t), success=bool(any(success_flags)),
            control_dt=float(executed[0][2]), max_steps=len(executed),
            extra={"source_bag": str(reader.path), "start_time_ns": int(frame_t[0]),
                   "success_step": next((i for i, s in enumerate(success_flags) if s), None),
                   "final_success": bool(success_flags[-1]), "split": "train"})
        out.append(BagEpisode(meta, np.stack([frames[(p_i, f)] for f in range(len(frame_t))]),
                              np.stack([a for _, a, _ in executed]).astype(np.float32), np.stack(proprio),
                              arrays, np.asarray(frame_t, dtype=np.int64), problems))
    return out


def executed_source(chunks: list[tuple[int, Any]], frame_t: list[int]) -> str:
    sources = {c.source for t, c in chunks if frame_t[0] <= t <= frame_t[-1] and c.source}
    return ",".join(sorted(sources))


def bag_to_episodes(bag: str | Path, out: str | Path, robot: str = "nicol", topics: BagTopics | None = None,
                    compression: str = "lzf") -> dict[str, Any]:
    """Convert a bag into `<out>/episodes/ep_XXXXXX.h5` + `<out>/manifest.json` (swm saqa reads it)."""
    from swm_ros.data.manifest import write_manifest

    out = Path(out)
    reader = BagReader(bag)
    eps = read_bag_episodes(reader, robot, topics)
    if not eps:
        raise BagError(f"{bag}: no episode with at least 2 frames (no executed action chunks?)")
    entries = []
    for ep in eps:
        path = out / "episodes" / f"{ep.meta.episode_id}.h5"
        cam = "overhead"
        write_episode(path, ep.meta, {cam: ep.images}, ep.actions, ep.proprio, ep.states, compression=compression)
        entries.append({"episode_id": ep.meta.episode_id, "index": int(ep.meta.episode_id[3:]),
                        "file": str(path.relative_to(out)), "task": ep.meta.task, "variant": ep.meta.variant,
                        "policy": ep.meta.policy, "seed": ep.meta.seed, "split": "train",
                        "success": ep.meta.success, "num_frames": len(ep.images)})
    write_manifest(out, {"source_bag": str(bag), "robot": robot}, entries)
    return {"out": str(out), "episodes": len(eps), "frames": int(sum(len(e.images) for e in eps)),
            "problems": [p for e in eps for p in e.problems] + list(reader.problems)}


def list_episode_files(paths: Iterable[str | Path]) -> list[Path]:
    """Episode files from files and collection directories (their episodes/ folder)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted((p / "episodes").glob("ep_*.h5")) or sorted(p.glob("ep_*.h5"))
        else:
            files.append(p)
    if not files:
        raise FileNotFoundError(f"no episode files in {[str(p) for p in paths]}")
    return files
