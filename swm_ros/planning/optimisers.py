"""Chunk optimisers: proposals + an objective + a budget -> the best chunk found.

    outcome = optimise("grad", proposals, objective, GradientConfig(iterations=10))

All four share one signature, `fn(proposals (N, H, A), objective, config, bound, generator)`,
and return a `PlanOutcome`. Every optimiser keeps the best chunk it has *scored* (the raw
proposals included), so the chosen chunk never scores below the best proposal.

* grad (`plan_model_gradient` in the paper's code): Adam or SGD on the chunks themselves,
  through the frozen world model; per-candidate gradient-norm clip; clamp to the action box
  after every step; optimise the probability or the logit-margin form; best of N.
* mppi (`plan_model_mppi`): softmax(score / temperature) weights -> weighted mean and std per
  step -> resample -> clamp -> re-score, for `iterations` rounds.
* cem: the `elites` best (of the new samples and the previous elites) -> mean and std ->
  resample, for `iterations` rounds.
* rank: score the proposals, keep the best (the budget is N model calls).

Each config has `max_seconds` (0 = none): a wall-clock budget checked between iterations.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from swm_ros.planning.objective import Objective


@dataclass
class GradientConfig:
    optimizer: str = "adam"         # adam | sgd
    lr: float = 0.05                # in action units ([-1, 1] box)
    iterations: int = 10
    grad_clip: float = 1.0          # max gradient norm per candidate chunk; 0 = no clipping
    target: str = "logit_margin"    # what the steps climb: probability | logit_margin
    max_seconds: float = 0.0
    # > 0: score every proposal once, then spend the gradient steps on the best `refine_top`
    # (the paper refines one chunk); 0: every proposal is refined (best of N)
    refine_top: int = 0

    def __post_init__(self) -> None:
        if self.refine_top < 0:
            raise ValueError(f"refine_top must be >= 0, got {self.refine_top}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.target not in ("probability", "logit_margin"):
            raise ValueError(f"target must be probability or logit_margin, got {self.target!r}")
        _check_common(self, lr=self.lr, iterations=self.iterations)
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0, got {self.grad_clip}")


@dataclass
class MPPIConfig:
    samples: int = 64               # population per iteration (proposals + perturbed copies at the start)
    iterations: int = 5
    temperature: float = 0.05       # scores lie in [0, 1] (mean aggregate): keep this well below 1
    init_std: float = 0.3           # noise of the copies that fill the first population
    min_std: float = 0.02           # floor of the refitted std, so the search never collapses
    max_seconds: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self, samples=self.samples, iterations=self.iterations, temperature=self.temperature)
        if self.init_std < 0 or self.min_std < 0:
            raise ValueError("init_std and min_std must be >= 0")


@dataclass
class CEMConfig:
    samples: int = 64
    elites: int = 8
    iterations: int = 5
    init_std: float = 0.3
    min_std: float = 0.02
    max_seconds: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self, samples=self.samples, elites=self.elites, iterations=self.iterations)
        if self.elites > self.samples:
            raise ValueError(f"elites {self.elites} > samples {self.samples}")
        if self.init_std < 0 or self.min_std < 0:
            raise ValueError("init_std and min_std must be >= 0")


@dataclass
class RankConfig:
    max_seconds: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self)


def _check_common(cfg: Any, **positive: float) -> None:
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if cfg.max_seconds < 0:
        raise ValueError(f"max_seconds must be >= 0, got {cfg.max_seconds}")


@dataclass
class PlanOutcome:
    best: np.ndarray                    # (H, A) float32, inside the action box
    best_score: float
    base_score: float                   # best raw proposal
    iteration_scores: list[float]       # best so far after each iteration; [0]: the raw proposals
    final_scores: np.ndarray            # (M,) scores of the last iterate / population
    evaluations: int                    # candidate chunks scored
    seconds: float = 0.0
    proposal_scores: np.ndarray | None = None   # (N,) the raw proposals' scores, in their order
    extra: dict[str, Any] = field(default_factory=dict)


class _Best:
    """The best scored chunk so far, and the running-best history."""

    def __init__(self, like: torch.Tensor):
        self.chunk = like[0].detach().clone()
        self.score = -math.inf
        self.history: list[float] = []

    def offer(self, candidates: torch.Tensor, scores: torch.Tensor) -> None:
        i = int(torch.argmax(scores))
        if float(scores[i]) > self.score:
            self.score = float(scores[i])
            self.chunk = candidates[i].detach().clone()

    def record(self) -> None:
        self.history.append(self.score)


def _check_inputs(proposals: torch.Tensor, bound: float) -> torch.Tensor:
    if not isinstance(proposals, torch.Tensor):
        proposals = torch.as_tensor(np.asarray(proposals), dtype=torch.float32)
    if proposals.dim() != 3 or proposals.shape[0] < 1 or proposals.shape[1] < 1:
        raise ValueError(f"proposals must be (N >= 1, H >= 1, A), got {tuple(proposals.shape)}")
    if not torch.isfinite(proposals).all():
        raise ValueError("proposals contain NaN or inf")
    if not bound > 0:
        raise ValueError(f"the action bound must be > 0, got {bound}")
    return proposals.detach().float().clamp(-bound, bound)


def _out_of_time(t0: float, max_seconds: float) -> bool:
    return max_seconds > 0 and time.perf_counter() - t0 > max_seconds


def _outcome(best: _Best, base: float, final: torch.Tensor, objective: Objective, t0: float,
             proposal_scores: torch.Tensor, **extra: Any) -> PlanOutcome:
    return PlanOutcome(best=best.chunk.cpu().numpy().astype(np.float32), best_score=best.score, base_score=base,
                       iteration_scores=best.history, final_scores=final.detach().cpu().numpy(),
                       evaluations=int(getattr(objective, "evaluations", 0)),
                       seconds=time.perf_counter() - t0,
                       proposal_scores=proposal_scores.detach().cpu().numpy().astype(np.float64), extra=extra)


# ---------------------------------------------------------------------------------------

def optimise_gradient(proposals: torch.Tensor, objective: Objective, config: GradientConfig | None = None,
                      bound: float = 1.0, generator: torch.Generator | None = None) -> PlanOutcome:
    cfg = config or GradientConfig()
    if not getattr(objective, "differentiable", False):
        raise ValueError("gradient planning needs a differentiable objective (the world model in this "
                         "process); a remote world model only answers probabilities: use mppi, cem or rank")
    t0 = time.perf_counter()
    x = _check_inputs(proposals, bound)
    best, base, ranked = _Best(x), None, None
    if 0 < cfg.refine_top < len(x):
        # rank all proposals without a graph, then climb from the best few: the gradient steps,
        # forward and backward, cost a fraction (refine_top / N) of refining all of them
        with torch.no_grad():
            ranked = objective.scores(x).probability
        best.offer(x, ranked)
        base = best.score
        x = x[torch.topk(ranked, cfg.refine_top).indices]
    x = x.clone().requires_grad_(True)
    opt = (torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD)([x], lr=cfg.lr)
    final = torch.zeros(0)
    for it in range(cfg.iterations + 1):
        s = objective.scores(x)
        prob = s.probability.detach()
        best.offer(x, prob)
        best.record()
        if base is None:                 # iteration 0 of refining every proposal: their raw scores
            base, ranked = best.score, prob
        final = prob
        if it == cfg.iterations or _out_of_time(t0, cfg.max_seconds):
            break
        target = s.logit_margin if cfg.target == "logit_margin" else s.probability
        opt.zero_grad(set_to_none=True)
        (-target.sum()).backward()       # candidates are independent: the sum's gradient is each one's own
        with torch.no_grad():
            if cfg.grad_clip > 0:        # per candidate, so one steep candidate does not shrink the others' steps
                norms = x.grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                x.grad.mul_((cfg.grad_clip / norms).clamp(max=1.0)[:, None, None])
        opt.step()
        with torch.no_grad():
            x.clamp_(-bound, bound)
    return _outcome(best, base, final, objective, t0, ranked)


def _randn(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Noise from a (CPU) generator, moved to the candidates' device: same samples on CPU and GPU."""
    return torch.randn(tuple(shape), generator=generator).to(device)


def _first_population(x: torch.Tensor, samples: int, init_std: float, bound: float,
                      generator: torch.Generator | None) -> torch.Tensor:
    """The proposals, then perturbed copies of them (round robin) up to `samples` rows."""
    n = x.shape[0]
    if n >= samples:
        return x[:samples] if n > samples else x
    src = x[torch.arange(samples - n) % n]
    noise = _randn(src.shape, generator, x.device) * init_std
    return torch.cat([x, (src + noise).clamp(-bound, bound)])


def _score_first_population(x: torch.Tensor, samples: int, init_std: float, bound: float,
                            generator: torch.Generator | None, objective: Objective, best: "_Best"
                            ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The proposals plus noisy copies up to `samples`, scored; the raw proposals' best is
    recorded as iteration 0 and returned as the base score (their scores are the first N)."""
    n = x.shape[0]
    pop = _first_population(x, max(samples, n), init_std, bound, generator)
    scores = objective.score(pop)
    best.offer(pop[:n], scores[:n])
    best.record()                                           # [0]: the raw proposals
    base = best.score
    best.offer(pop, scores)
    return pop, scores, base


def optimise_mppi(proposals: torch.Tensor, objective: Objective, config: MPPIConfig | None = None,
                  bound: float = 1.0, generator: torch.Generator | None = None) -> PlanOutcome:
    cfg = config or MPPIConfig()
    t0 = time.perf_counter()
    x = _check_inputs(proposals, bound)
    best = _Best(x)
    with torch.no_grad():
        pop, scores, base = _score_first_population(x, cfg.samples, cfg.init_std, bound, generator, objective, best)
        ranked = scores[:len(x)]
        for _ in range(cfg.iterations):
            w = torch.softmax(scores / cfg.temperature, dim=0)[:, None, None]
            mean = (w * pop).sum(0)
            std = ((w * (pop - mean) ** 2).sum(0) + 1e-9).sqrt().clamp_min(cfg.min_std)
            pop = (mean + std * _randn((cfg.samples, *mean.shape), generator, x.device)).clamp(-bound, bound)
            scores = objective.score(pop)
            best.offer(pop, scores)
            best.record()
            if _out_of_time(t0, cfg.max_seconds):
                break
    return _outcome(best, base, scores, objective, t0, ranked)


def optimise_cem(proposals: torch.Tensor, objective: Objective, config: CEMConfig | None = None,
                 bound: float = 1.0, generator: torch.Generator | None = None) -> PlanOutcome:
    cfg = config or CEMConfig()
    t0 = time.perf_counter()
    x = _check_inputs(proposals, bound)
    best = _Best(x)
    with torch.no_grad():
        pop, scores, base = _score_first_population(x, cfg.samples, cfg.init_std, bound, generator, objective, best)
        ranked = scores[:len(x)]
        k = min(cfg.elites, len(pop))
        top = torch.topk(scores, k).indices
        elites, elite_scores = pop[top], scores[top]
        for _ in range(cfg.iterations):
            mean = elites.mean(0)
            std = elites.std(0, unbiased=False).clamp_min(cfg.min_std) if k > 1 else \
                torch.full_like(mean, max(cfg.init_std, cfg.min_std))
            pop = (mean + std * _randn((cfg.samples, *mean.shape), generator, x.device)).clamp(-bound, bound)
            scores = objective.score(pop)
            best.offer(pop, scores)
            best.record()
            # elitism: the previous elites compete with the new samples
            both, both_scores = torch.cat([elites, pop]), torch.cat([elite_scores, scores])
            top = torch.topk(both_scores, k).indices
            elites, elite_scores = both[top], both_scores[top]
            if _out_of_time(t0, cfg.max_seconds):
                break
    return _outcome(best, base, scores, objective, t0, ranked)


def optimise_rank(proposals: torch.Tensor, objective: Objective, config: RankConfig | None = None,
                  bound: float = 1.0, generator: torch.Generator | None = None) -> PlanOutcome:
    t0 = time.perf_counter()
    x = _check_inputs(proposals, bound)
    best = _Best(x)
    with torch.no_grad():
        scores = objective.score(x)
    best.offer(x, scores)
    best.record()
    return _outcome(best, best.score, scores, objective, t0, scores)


Optimiser = Callable[..., PlanOutcome]

OPTIMISERS: dict[str, tuple[type, Optimiser]] = {
    "grad": (GradientConfig, optimise_gradient),
    "mppi": (MPPIConfig, optimise_mppi),
    "cem": (CEMConfig, optimise_cem),
    "rank": (RankConfig, optimise_rank),
}


def optimise(method: str, proposals: torch.Tensor, objective: Objective, config: Any = None, bound: float = 1.0,
             generator: torch.Generator | None = None) -> PlanOutcome:
    try:
        _, fn = OPTIMISERS[method]
    except KeyError:
        raise ValueError(f"unknown planning method {method!r}; valid: {sorted(OPTIMISERS)}") from None
    return fn(proposals, objective, config, bound=bound, generator=generator)
