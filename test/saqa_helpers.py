"""Hand-built privileged states for the data / SAQA tests (no simulator needed)."""
from __future__ import annotations

import numpy as np

from swm_ros.envs.base import TABLE, ObjectState, PrivilegedState

HALF = 0.02          # 4 cm blocks
TABLE_Z = 0.8
REST_Z = TABLE_Z + HALF
COLORS = ("red", "blue", "green")


def make_state(positions: dict[str, tuple[float, float, float]], *, step: int = 0, effector=(0.3, 0.0, 1.0),
               grasped: str | None = None, contacts: set[tuple[str, str]] | None = None,
               kinds: dict[str, str] | None = None, opening: float = 1.0, yaw: float = 0.0) -> PrivilegedState:
    """Blocks named "<colour>_block"; positions keyed by colour. Resting blocks touch the table."""
    objects = {}
    for color, p in positions.items():
        name = f"{color}_block"
        kind = (kinds or {}).get(color, "block")
        objects[name] = ObjectState(name=name, kind=kind, color=color, position=np.array(p, dtype=float),
                                    quaternion=np.array([1.0, 0, 0, 0]), half_size=HALF)
    pairs = set()
    for name, o in objects.items():
        if abs(o.position[2] - REST_Z) < 1e-6:
            pairs.add(tuple(sorted((name, TABLE))))
    for a, b in (contacts or set()):
        pairs.add(tuple(sorted((a, b))))
    return PrivilegedState(step=step, time=step * 0.05, objects=objects, effector_position=np.array(effector, float),
                           effector_yaw=yaw, gripper_opening=opening, grasped=grasped, contacts=frozenset(pairs),
                           joint_positions=np.linspace(-0.5, 0.5, 9) + step * 1e-3, table_height=TABLE_Z)


def block(c: str) -> str:
    return f"{c}_block"


def random_walk_states(rng: np.random.Generator, n: int, k: int = 3) -> list[PrivilegedState]:
    """A synthetic episode: blocks jittering and sometimes pushed, an effector wandering."""
    colors = COLORS[:k]
    pos = np.array([[0.45 + 0.1 * i, -0.1 + 0.1 * i, REST_Z] for i in range(k)])
    eff = np.array([0.3, 0.0, 0.95])
    states = []
    for t in range(n):
        eff = eff + rng.normal(0, 0.01, 3)
        i = rng.integers(k)
        pos[i, :2] += rng.normal(0, 0.008, 2)
        contacts = set()
        for a in range(k):
            for b in range(a + 1, k):
                if np.abs(pos[a] - pos[b]).max() < 2 * HALF + 1e-3:
                    contacts.add((block(colors[a]), block(colors[b])))
        grasped = block(colors[0]) if (t // 20) % 3 == 2 else None
        states.append(make_state({c: tuple(pos[j]) for j, c in enumerate(colors)}, step=t, effector=tuple(eff),
                                 grasped=grasped, contacts=contacts, opening=float(rng.random())))
    return states
