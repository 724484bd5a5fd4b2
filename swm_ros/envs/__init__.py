"""Simulated worlds behind the `envs.base.Env` protocol."""
from __future__ import annotations

from typing import Any


def make_env(name: str = "nicol_tabletop", **kw: Any):
    """Build an environment by name; keyword arguments go to its constructor.

    `make_env(task="pick", variant="ood_colors", cameras=())` gives a `NicolTabletopEnv`;
    `make_env("ogbench-cube-single", task="task1")` an `OGBenchCubeEnv`.
    """
    # OGBench cube worlds: by name, or by `robot` (what `swm collect --robot` reaches), e.g.
    # make_env("ogbench-cube-double", task="play") or make_env(robot="ogbench-cube-single")
    robot = kw.get("robot")
    if name.startswith("ogbench") or (name in ("nicol_tabletop", "nicol") and str(robot).startswith("ogbench")):
        from swm_ros.envs.ogbench_cube import OGBenchCubeEnv

        if name.startswith("ogbench"):
            if robot is not None and robot != name:
                raise ValueError(f"environment {name!r} has no robot {robot!r} (OGBench's robot is part of the env)")
            kw["robot"] = name
        return OGBenchCubeEnv(**kw)
    if name in ("nicol_tabletop", "nicol"):
        from swm_ros.envs.nicol_tabletop import NicolTabletopEnv

        return NicolTabletopEnv(**kw)
    raise ValueError(f"unknown environment {name!r}; valid: ['nicol_tabletop', 'ogbench-cube-single', "
                     f"'ogbench-cube-double', 'ogbench-cube-triple', 'ogbench-cube-quadruple']")
