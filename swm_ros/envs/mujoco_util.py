"""Small MuJoCo helpers shared by the simulated worlds."""
from __future__ import annotations

from typing import Callable

import mujoco


def is_descendant(m: mujoco.MjModel, body: int, root: int) -> bool:
    """True when `body` is `root` or hangs below it in the kinematic tree."""
    while body > 0:
        if body == root:
            return True
        body = int(m.body_parentid[body])
    return False


class RendererCache:
    """One offscreen `mujoco.Renderer` per (model, height, width), created on first use.

    Renderers hold GL contexts: reuse them across frames, close them with the env."""

    def __init__(self) -> None:
        self._renderers: dict[tuple[int, int, int], mujoco.Renderer] = {}

    def get(self, m: mujoco.MjModel, height: int, width: int,
            prepare: Callable[[mujoco.MjModel], None] | None = None) -> mujoco.Renderer:
        """The renderer for this model and size; `prepare(m)` runs once before creating it."""
        key = (id(m), height, width)
        r = self._renderers.get(key)
        if r is None:
            if prepare is not None:
                prepare(m)
            r = self._renderers[key] = mujoco.Renderer(m, height=height, width=width)
        return r

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
