"""Task families: seeded layouts, instructions, and success checks on privileged state only.

Every task names its objects in role order in `TaskSpec.objects`:

* reach    (target,)            the grasp point within 3 cm of the target block's centre
* push     (source, target)     source touches target (the expert pushes with closed pads)
* separate (a, b)               a and b start face to face and end > 10 cm apart
* pick     (block,)             block held between both pads, bottom > 5 cm above the table
* stack    (top, bottom)        top resting on bottom and released
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from swm_ros.envs.base import GRIPPER, PrivilegedState, TaskSpec
from swm_ros.envs.variants import Variant
from swm_ros.robots.profile import RobotProfile

# (x, y, yaw) of each object's centre on the table, by object name.
Layout = dict[str, tuple[float, float, float]]

REACH_RADIUS = 0.03
SEPARATE_DISTANCE = 0.10
LIFT_HEIGHT = 0.05
MIN_GAP = 0.11            # centre distance between objects not meant to touch: open pads fit between


@dataclass(frozen=True)
class Task:
    name: str
    n_roles: int
    max_steps: int
    instruction: str                      # format string over the role colours
    success: Callable[[tuple[str, ...], PrivilegedState], bool]
    touching_pair: bool = False           # the first two roles start face to face
    min_role_distance: float = MIN_GAP    # between the first two roles otherwise


def _reach(objs: tuple[str, ...], s: PrivilegedState) -> bool:
    return float(np.linalg.norm(s.effector_position - s.objects[objs[0]].position)) < REACH_RADIUS


def _push(objs: tuple[str, ...], s: PrivilegedState) -> bool:
    return s.touching(objs[0], objs[1])


def _separate(objs: tuple[str, ...], s: PrivilegedState) -> bool:
    a, b = (s.objects[o].position for o in objs[:2])
    return float(np.linalg.norm(a - b)) > SEPARATE_DISTANCE


def _pick(objs: tuple[str, ...], s: PrivilegedState) -> bool:
    o = s.objects[objs[0]]
    return s.grasped == o.name and o.position[2] - o.half_size - s.table_height > LIFT_HEIGHT


def _stack(objs: tuple[str, ...], s: PrivilegedState) -> bool:
    top, bottom = s.objects[objs[0]], s.objects[objs[1]]
    d = top.position - bottom.position
    resting = abs(d[2] - (top.half_size + bottom.half_size)) < 0.01 and np.hypot(d[0], d[1]) < bottom.half_size
    released = s.grasped != top.name and not s.touching(top.name, GRIPPER)
    return bool(resting and released and s.touching(top.name, bottom.name))


TASKS: dict[str, Task] = {
    "reach": Task("reach", 1, 50, "reach the {0} block", _reach),
    "push": Task("push", 2, 100, "push the {0} block to the {1} block", _push, min_role_distance=0.16),
    "separate": Task("separate", 2, 80, "separate the {0} block from the {1} block", _separate,
                     touching_pair=True),
    "pick": Task("pick", 1, 80, "pick up the {0} block", _pick),
    "stack": Task("stack", 2, 120, "stack the {0} block on the {1} block", _stack, min_role_distance=0.16),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid: {sorted(TASKS)}") from None


def task_success(spec: TaskSpec, state: PrivilegedState) -> bool:
    return bool(get_task(spec.name).success(spec.objects, state))


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def sample_task(name: str, variant: Variant, profile: RobotProfile, rng: np.random.Generator,
                max_steps: int | None = None) -> tuple[TaskSpec, Layout]:
    """Roles, instruction and a collision-free layout for all objects of the variant."""
    task = get_task(name)
    blocks = variant.blocks
    roles = [blocks[i] for i in rng.permutation(len(blocks))[:task.n_roles]]
    lo = np.asarray(profile.table.spawn_lower_xy)
    hi = np.asarray(profile.table.spawn_upper_xy)
    for _ in range(1000):
        layout = _try_layout(task, variant, roles, lo, hi, rng)
        if layout is not None:
            break
    else:  # pragma: no cover - the spawn region is far larger than needed
        raise RuntimeError(f"could not place the objects of task {name!r}")
    spec = TaskSpec(name=name, objects=tuple(r.name for r in roles),
                    instruction=task.instruction.format(*(r.color for r in roles)),
                    variant=variant.name, max_steps=max_steps or task.max_steps)
    return spec, layout


def _try_layout(task: Task, variant: Variant, roles, lo, hi, rng) -> Layout | None:
    layout: Layout = {}
    yaw = lambda: float(rng.uniform(-np.pi / 4, np.pi / 4))  # noqa: E731 - cubes repeat every pi/2
    first = rng.uniform(lo, hi)
    layout[roles[0].name] = (*first, yaw())
    if task.n_roles > 1:
        if task.touching_pair:
            th = layout[roles[0].name][2]
            ang = th + rng.integers(4) * np.pi / 2   # face to face along one of the block axes
            gap = roles[0].half_size + roles[1].half_size
            second = first + gap * np.array([np.cos(ang), np.sin(ang)])
            layout[roles[1].name] = (*second, th)
        else:
            second = rng.uniform(lo, hi)
            if np.linalg.norm(second - first) < task.min_role_distance:
                return None
            layout[roles[1].name] = (*second, yaw())
        if not np.all((second >= lo - 0.02) & (second <= hi + 0.02)):
            return None
    role_xy = [np.asarray(layout[r.name][:2]) for r in roles]
    for obj in variant.objects:
        if obj.name in layout:
            continue
        p = rng.uniform(lo, hi)
        if min(np.linalg.norm(p - np.asarray(v[:2])) for v in layout.values()) < MIN_GAP:
            return None
        # Keep the other objects off the line the expert pushes or carries along.
        if len(role_xy) == 2:
            a, b = role_xy
            d = (b - a) / max(np.linalg.norm(b - a), 1e-9)
            if _segment_distance(p, a - 0.12 * d, b) < 0.09:
                return None
        layout[obj.name] = (*p, yaw())
    return layout
