"""The optimisers on known analytic objectives: each improves it, keeps the best chunk it
scored, and the gradient optimiser stays inside the action box."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from swm_ros.config import ConfigError, load_config
from swm_ros.planning.objective import Scores
from swm_ros.planning.optimisers import (CEMConfig, GradientConfig, MPPIConfig, RankConfig, optimise,
                                         optimise_gradient)
from swm_ros.planning.planner import PlannerConfig, load_planner_config, planner_config_path

H, A = 16, 5


class Bowl:
    """score = exp(-mean((x - goal)^2) / 0.1): a smooth bowl with its peak at `goal`, in (0, 1]."""

    def __init__(self, goal: torch.Tensor, differentiable: bool = True):
        self.goal = goal
        self.differentiable = differentiable
        self.evaluations = 0

    def scores(self, x: torch.Tensor) -> Scores:
        self.evaluations += len(x)
        d = ((x - self.goal) ** 2).mean(dim=(1, 2))
        return Scores(torch.exp(-d / 0.1), -d / 0.1)          # the margin form: log of the same score

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores(x).probability


def _goal(outside: bool = False) -> torch.Tensor:
    g = torch.linspace(-0.6, 0.6, H)[:, None].repeat(1, A)
    if outside:
        g[:, 0] = 1.6                                          # unreachable: beyond the box [-1, 1]
        g[:, 1] = -1.4
    return g


def _proposals(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, H, A), generator=g) * 2 - 1) * 0.8


def _watch(objective: Bowl) -> list[torch.Tensor]:
    """Record every candidate batch the optimiser scores (a copy), in order."""
    seen: list[torch.Tensor] = []
    inner = objective.scores

    def watch(x):
        seen.append(x.detach().clone())
        return inner(x)

    objective.scores = watch
    return seen


CONFIGS = {
    "grad": GradientConfig(lr=0.1, iterations=30),
    "mppi": MPPIConfig(samples=64, iterations=8, temperature=0.02),
    "cem": CEMConfig(samples=64, elites=8, iterations=8),
    "rank": RankConfig(),
}


@pytest.mark.parametrize("method", ["grad", "mppi", "cem"])
def test_each_optimiser_improves_a_known_objective(method: str) -> None:
    torch.manual_seed(0)
    objective = Bowl(_goal())
    props = _proposals()
    out = optimise(method, props, objective, CONFIGS[method], generator=torch.Generator().manual_seed(1))
    raw = objective.score(props)
    assert out.base_score == pytest.approx(float(raw.max()), abs=1e-6)
    assert out.iteration_scores[0] == pytest.approx(out.base_score)
    np.testing.assert_allclose(out.proposal_scores, raw.numpy(), atol=1e-6)     # each proposal's, in order
    assert all(b >= a for a, b in zip(out.iteration_scores, out.iteration_scores[1:])), out.iteration_scores
    assert out.best_score == pytest.approx(out.iteration_scores[-1])
    assert float(objective.score(torch.from_numpy(out.best)[None])) == pytest.approx(out.best_score, abs=1e-5)
    print(f"{method}: {out.base_score:.3f} -> {out.best_score:.3f} in {len(out.iteration_scores) - 1} iterations, "
          f"{out.evaluations} chunks scored")
    assert out.best_score > out.base_score + 0.2, (out.base_score, out.best_score)
    assert out.best.shape == (H, A) and out.best.dtype == np.float32
    assert np.all(np.abs(out.best) <= 1.0)


@pytest.mark.parametrize("method,config", [("grad", GradientConfig(refine_top=1)), ("grad", GradientConfig(refine_top=0)),
                                           ("mppi", MPPIConfig(samples=2)), ("cem", CEMConfig(samples=16)),
                                           ("rank", RankConfig())])
def test_every_optimiser_reports_the_raw_proposals_scores(method: str, config) -> None:
    """Whatever it samples or refines, the outcome says how each raw proposal scored (what a
    planner ranked them by), in the proposals' order."""
    props = _proposals(n=6)
    objective = Bowl(_goal())
    out = optimise(method, props, objective, config, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(out.proposal_scores, objective.score(props).numpy(), atol=1e-6)
    assert out.base_score == pytest.approx(float(out.proposal_scores.max()), abs=1e-6)


def test_gradient_reaches_the_box_edge_and_never_leaves_the_box() -> None:
    objective = Bowl(_goal(outside=True))
    x_seen = _watch(objective)
    out = optimise_gradient(_proposals(), objective, GradientConfig(lr=0.2, iterations=40), bound=1.0)
    assert all(float(x.abs().max()) <= 1.0 + 1e-6 for x in x_seen)     # every iterate was inside the box
    assert np.allclose(out.best[:, 0], 1.0, atol=1e-3) and np.allclose(out.best[:, 1], -1.0, atol=1e-3)
    assert np.allclose(out.best[:, 2:], _goal()[:, 2:].numpy(), atol=0.12)   # Adam jitters by ~lr near the peak
    # a tighter box is honoured too
    out = optimise_gradient(_proposals(), Bowl(_goal(outside=True)), GradientConfig(lr=0.2, iterations=10), bound=0.5)
    assert np.abs(out.best).max() <= 0.5 + 1e-6


def test_gradient_refine_top_climbs_from_the_best_proposal_only() -> None:
    """refine_top 1: every proposal is scored once, then only the best-scoring one moves; the
    base score is still the best raw proposal, and the climb improves on it."""
    objective = Bowl(_goal())
    props = _proposals(4)
    seen = _watch(objective)
    out = optimise_gradient(props, objective, GradientConfig(lr=0.1, iterations=20, refine_top=1))
    raw = Bowl(_goal()).score(props)
    assert len(seen[0]) == 4 and all(len(x) == 1 for x in seen[1:])
    torch.testing.assert_close(seen[1][0], props[int(raw.argmax())])
    assert out.base_score == pytest.approx(float(raw.max()), abs=1e-6) == out.iteration_scores[0]
    assert out.best_score > out.base_score + 0.2 and len(out.iteration_scores) == 21
    with pytest.raises(ValueError, match="refine_top"):
        GradientConfig(refine_top=-1)


@pytest.mark.parametrize("method", ["mppi", "cem"])
def test_sampling_optimisers_stay_in_the_box(method: str) -> None:
    out = optimise(method, _proposals(), Bowl(_goal(outside=True)), CONFIGS[method], bound=0.7,
                   generator=torch.Generator().manual_seed(0))
    assert np.abs(out.best).max() <= 0.7 + 1e-6


def test_gradient_clip_bounds_each_candidates_step() -> None:
    objective = Bowl(_goal())
    props = _proposals(3)
    out = optimise_gradient(props, objective, GradientConfig(optimizer="sgd", lr=1.0, iterations=1, grad_clip=0.01,
                                                             target="probability"))
    # one SGD step of lr 1 with each candidate's gradient clipped to norm 0.01
    assert out.evaluations == 6 and len(out.iteration_scores) == 2
    steps = []
    x = props.clone().requires_grad_(True)
    objective.score(x).sum().backward()
    for i in range(3):
        g = x.grad[i]
        steps.append(float(g.norm()))
    assert min(steps) > 0.01                                 # clipping was active for every candidate
    best_step = np.linalg.norm(out.best - props.numpy(), axis=(1, 2)).min()
    assert best_step == pytest.approx(0.01, abs=1e-4)


def test_rank_keeps_the_best_proposal_unchanged() -> None:
    props = _proposals(6)
    goal = props[4].clone()
    out = optimise("rank", props, Bowl(goal), RankConfig())
    assert np.array_equal(out.best, props[4].numpy()) and out.best_score == pytest.approx(1.0)
    assert out.iteration_scores == [out.best_score] and out.final_scores.shape == (6,)


@pytest.mark.parametrize("method", ["grad", "mppi", "cem"])
def test_a_proposal_at_the_optimum_is_never_lost(method: str) -> None:
    props = _proposals(4)
    goal = props[2].clone()
    out = optimise(method, props, Bowl(goal), CONFIGS[method], generator=torch.Generator().manual_seed(0))
    assert out.best_score == pytest.approx(1.0, abs=1e-6) and out.base_score == pytest.approx(1.0, abs=1e-6)


def test_bad_inputs_and_budgets() -> None:
    with pytest.raises(ValueError, match="differentiable"):
        optimise_gradient(_proposals(), Bowl(_goal(), differentiable=False))
    bad = _proposals()
    bad[0, 3, 1] = float("nan")
    for method in ("grad", "mppi", "cem", "rank"):
        with pytest.raises(ValueError, match="NaN"):
            optimise(method, bad, Bowl(_goal()), CONFIGS[method])
        with pytest.raises(ValueError, match=r"\(N >= 1"):
            optimise(method, torch.zeros(0, H, A), Bowl(_goal()), CONFIGS[method])
    with pytest.raises(ValueError, match="unknown planning method"):
        optimise("lbfgs", _proposals(), Bowl(_goal()))
    # a wall-clock budget ends the loop after the first iteration that passes it
    out = optimise_gradient(_proposals(), Bowl(_goal()), GradientConfig(iterations=50, max_seconds=1e-9))
    assert len(out.iteration_scores) == 1
    out = optimise("mppi", _proposals(), Bowl(_goal()), MPPIConfig(iterations=50, max_seconds=1e-9))
    assert len(out.iteration_scores) == 2


def test_planner_configs_load_and_reject_unknown_keys(tmp_path) -> None:
    for method in ("grad", "mppi", "cem", "rank"):
        cfg = load_planner_config(method)
        assert cfg.method == method and cfg.objective.prefix_step == 8
    data = yaml.safe_load(planner_config_path("grad").read_text())
    for edit, error in [
        (lambda d: d["grad"].update(learning_rate=0.1), "unknown key"),
        (lambda d: d.update(method="newton"), "method must be one of"),
        (lambda d: d["grad"].update(optimizer="rmsprop"), "adam or sgd"),
        (lambda d: d["grad"].update(target="loss"), "probability or logit_margin"),
        (lambda d: d["objective"].update(prefix_step=0), "prefix_step"),
    ]:
        bad = yaml.safe_load(yaml.safe_dump(data))
        edit(bad)
        with pytest.raises(ConfigError, match=error):
            load_config(PlannerConfig, bad)
    with pytest.raises(ConfigError, match="elites"):
        load_config(PlannerConfig, {"method": "cem", "cem": {"samples": 4, "elites": 8}})
