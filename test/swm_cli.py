"""Run the `swm` CLI in a subprocess, as a user would, from tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), OMP_NUM_THREADS="2")


def run_swm(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swm_ros.cli", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def start_swm(*args: str) -> subprocess.Popen:
    """The CLI running in the background (to signal it); the caller waits for it."""
    return subprocess.Popen([sys.executable, "-m", "swm_ros.cli", *args], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect_small_saqa(out: Path) -> Path:
    """6 short push episodes (scripted, noisy, random) and their SAQA rows: <out>/saqa.h5."""
    r = run_swm("collect", "--out", str(out), "--episodes", "6", "--tasks", "push", "--variants", "nominal",
                "--policies", "scripted:1,noisy:1,random:1", "--workers", "1", "--max-steps", "40")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_swm("saqa", "--episodes", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out / "saqa.h5"
