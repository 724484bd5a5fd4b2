"""Simulated worlds behind the `envs.base.Env` protocol."""
from __future__ import annotations

from typing import Any


def make_env(name: str = "nicol_tabletop", **kw: Any):
    """Build an environment by name; keyword arguments go to its constructor.

    `make_env(task="pick", variant="ood_colors", cameras=())` gives a `NicolTabletopEnv`.
    """
    if name in ("nicol_tabletop", "nicol"):
        from swm_ros.envs.nicol_tabletop import NicolTabletopEnv

        return NicolTabletopEnv(**kw)
    raise ValueError(f"unknown environment {name!r}; valid: ['nicol_tabletop']")
