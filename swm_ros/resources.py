"""Where the package's data files (config/, launch/, shipped models) are.

An editable checkout reads them from the source tree, so edits take effect at once; an
installed package (pip or colcon) reads its `share/swm_ros` directory.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "swm_ros"
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def share_dir() -> Path:
    if (_SOURCE_ROOT / "package.xml").is_file() and (_SOURCE_ROOT / "config").is_dir():
        return _SOURCE_ROOT
    candidates = [Path(p) / "share" / PACKAGE for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates.append(Path(sys.prefix) / "share" / PACKAGE)
    for c in candidates:
        if (c / "config").is_dir():
            return c
    raise FileNotFoundError(f"cannot find the {PACKAGE} share directory (looked in {[str(c) for c in candidates]})")


def config_path(*parts: str) -> Path:
    return share_dir().joinpath("config", *parts)


def robot_profile_path(robot: str) -> Path:
    """A robot name (`nicol`) or a path to a profile YAML."""
    p = Path(robot)
    if p.suffix in (".yaml", ".yml"):
        return p
    return config_path("robots", f"{robot}.yaml")
