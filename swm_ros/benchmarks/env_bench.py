"""`swm bench env`: rendering and physics throughput of the NicoL tabletop, on one thread.

Each rendered frame is one `mj_step` + `Renderer.update_scene` + `render()` with the overhead
camera, so the scene really changes between frames. Every figure is the median of several
repeats, because this CPU's speed drifts with the other work on the machine.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPEATS = 5


def _median_rate(fn: Callable[[], int], repeats: int, progress) -> float:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
        progress.update(1)
    return float(statistics.median(rates))


def run_env_bench(frames: int = 300, repeats: int = REPEATS, show_progress: bool = False) -> dict[str, Any]:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco
    from tqdm import tqdm

    from swm_ros.envs.nicol_tabletop import NicolTabletopEnv

    env = NicolTabletopEnv(task="push", cameras=())
    m, d = env._sim.model, env._sim.data  # the raw model: the benchmark measures MuJoCo itself
    rng = np.random.default_rng(0)
    lo, hi = env.profile.position_limits()
    home = env.joint_positions()
    act = env._sim.act

    def jiggle() -> None:
        d.ctrl[act] = np.clip(home + rng.uniform(-0.05, 0.05, home.size), lo, hi)

    out: dict[str, Any] = {}
    with tqdm(total=4 * repeats, desc="bench env", disable=not show_progress, leave=False) as bar:
        for size in (64, 224):
            renderer = mujoco.Renderer(m, height=size, width=size)
            renderer.update_scene(d, camera="overhead")
            renderer.render()  # warm-up: context and texture upload

            def frames_loop(renderer=renderer) -> int:
                for i in range(frames):
                    if i % 10 == 0:
                        jiggle()
                    mujoco.mj_step(m, d)
                    renderer.update_scene(d, camera="overhead")
                    renderer.render()
                return frames

            out[f"fps_{size}"] = round(_median_rate(frames_loop, repeats, bar), 1)
            renderer.close()

        def physics_loop() -> int:
            n = 20 * frames
            for i in range(0, n, 50):
                jiggle()
                mujoco.mj_step(m, d, nstep=50)
            return n

        out["physics_steps_per_s"] = round(_median_rate(physics_loop, repeats, bar), 1)

        env.reset(seed=0)
        policy_rng = np.random.default_rng(1)

        def env_loop() -> int:
            n = max(20, frames // 10)
            for _ in range(n):
                env.step(policy_rng.uniform(-1, 1, 5))
            env.reset()
            return n

        out["env_steps_per_s"] = round(_median_rate(env_loop, repeats, bar), 1)
    out.update(
        physics_timestep=float(m.opt.timestep),
        physics_realtime_factor=round(out["physics_steps_per_s"] * m.opt.timestep, 1),
        frames=frames, repeats=repeats, camera="overhead", mujoco=mujoco.__version__,
        mujoco_gl=os.environ.get("MUJOCO_GL"), cpu=platform.processor() or platform.machine(),
    )
    env.close()
    return out


def cli_bench_env(args) -> int:
    result = run_env_bench(frames=int(args.frames), show_progress=not args.json)
    text = json.dumps(result, indent=None if args.json else 2)
    print(text)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return 0
