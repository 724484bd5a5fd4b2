"""Planner agreement on a recorded bag: would the planner have done what the robot did?

Every `plan_every` frames of an episode cut from the bag, the base policy proposes chunks
from the recorded frame and proprioception, the planner (swm_ros.planning) chooses one,
and the chosen chunk is compared with the actions that were actually executed from that
frame on. The policy's own first proposal is compared the same way, so the report shows
whether planning moved the chunk towards the recorded behaviour or away from it.

Two measures per plan, over the steps both chunks cover:
  - `l2_per_step`: mean Euclidean distance between planned and recorded actions (5-D);
  - `xy_cosine`: cosine between the summed planar motion (dx, dy) of the two chunks, i.e.
    whether they push the same way; undefined (skipped) when either barely moves.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from swm_ros.envs.base import Observation, TaskSpec

# summed |(dx, dy)| below this (in action units) is "not moving" for the direction measure
_STILL = 1e-3


@dataclass
class AgreementConfig:
    planner: str = "grad"          # config/planner/<name>.yaml or a YAML path
    policy: str = "learned"        # base policy proposing chunks (policies.scripted.make_policy names)
    proposals: int = 8             # chunks proposed per plan
    plan_every: int = 8            # frames between plans (the receding-horizon step)
    camera: str = "overhead"       # the name the policy reads the frame under
    seed: int = 0

    def __post_init__(self) -> None:
        if self.proposals < 1 or self.plan_every < 1:
            raise ValueError("proposals and plan_every must be >= 1")


def chunk_agreement(chunk: np.ndarray, recorded: np.ndarray) -> tuple[float, float | None]:
    """(l2 per step, xy cosine or None) of a chunk against the recorded actions from the same frame."""
    n = min(len(chunk), len(recorded))
    if n == 0:
        raise ValueError("no recorded actions to compare with")
    a, b = np.asarray(chunk[:n], float), np.asarray(recorded[:n], float)
    l2 = float(np.linalg.norm(a - b, axis=1).mean())
    da, db = a[:, :2].sum(0), b[:, :2].sum(0)
    na, nb = np.linalg.norm(da), np.linalg.norm(db)
    cos = float(da @ db / (na * nb)) if na > _STILL and nb > _STILL else None
    return l2, cos


class PlanAgreement:
    """Accumulates planner-vs-recorded agreement over the episodes of one bag."""

    def __init__(self, cfg: AgreementConfig, model) -> None:
        from swm_ros.planning.planner import Planner, load_planner_config
        from swm_ros.policies.scripted import make_policy

        self.cfg = cfg
        self.policy = make_policy(cfg.policy)
        self.planner = Planner(load_planner_config(cfg.planner), model=model,
                               image_processor=lambda frame: model.process_frames(frame)[0])
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[str] = []

    def add_episode(self, ep) -> None:
        """Plan at every `plan_every`-th frame of one BagEpisode that has a task."""
        m = ep.meta
        if not m.task:
            self.skipped.append(f"{m.episode_id}: no task recorded")
            return
        spec = TaskSpec(name=m.task, objects=tuple(m.task_objects), instruction=m.instruction,
                        variant=m.variant or "nominal")
        try:
            self.planner.set_task(spec)
        except (ValueError, KeyError, FileNotFoundError) as e:
            self.skipped.append(f"{m.episode_id}: {e}")
            return
        self.policy.reset(spec, seed=self.cfg.seed)
        for t in range(0, len(ep.actions), self.cfg.plan_every):
            # a simulated bag's privileged state goes along for scripted proposers (learned ones ignore it)
            obs = Observation(images={self.cfg.camera: ep.images[t]}, proprio=ep.proprio[t], step=t,
                              time=float(ep.frame_times[t] - ep.frame_times[0]) * 1e-9, state=ep.states.state(t))
            proposals = np.asarray(self.policy.propose(obs, self.cfg.proposals), np.float32)
            t0 = time.perf_counter()
            report = self.planner.plan(ep.images[t], proposals)
            plan_ms = (time.perf_counter() - t0) * 1e3
            recorded = ep.actions[t:]
            l2, cos = chunk_agreement(report.chunk, recorded)
            l2_base, cos_base = chunk_agreement(proposals[0], recorded)
            self.rows.append({"episode": m.episode_id, "t": t, "l2": l2, "cos": cos, "l2_base": l2_base,
                              "cos_base": cos_base, "plan_ms": plan_ms})

    def summary(self) -> dict[str, Any]:
        if not self.rows:
            return {"available": False, "reason": "no plans: " + ("; ".join(self.skipped) or "no frames")}

        def mean(key: str) -> float | None:
            vals = [r[key] for r in self.rows if r[key] is not None]
            return float(np.mean(vals)) if vals else None

        ms = np.asarray([r["plan_ms"] for r in self.rows])
        return {
            "available": True, "planner": self.cfg.planner, "policy": self.cfg.policy,
            "proposals": self.cfg.proposals, "plan_every": self.cfg.plan_every, "plans": len(self.rows),
            "l2_per_step": {"planned": mean("l2"), "base_proposal": mean("l2_base")},
            "xy_cosine": {"planned": mean("cos"), "base_proposal": mean("cos_base")},
            "plan_ms": {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90))},
            "means": "planned chunk vs the actions executed from the same frame; base_proposal: the policy's "
                     "first proposal, unplanned (lower l2 / higher cosine = closer to what the robot did)",
            "skipped": self.skipped,
        }
