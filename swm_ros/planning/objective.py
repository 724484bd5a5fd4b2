"""The planning objective: one score per candidate chunk, from the world model's answers.

Every optimiser sees one cost shape (stable-worldmodel's solver protocol):

    objective.score(candidates)    # (N, H, A) tensor -> (N,) tensor, higher is better

Early reward (the paper's temporal decomposition, research/anchors.md 1.5): each question is
asked about the current image and every prefix of the chunk, actions[:h] for
h in {c, 2c, ..., H} (and H itself when c does not divide it), so a chunk that reaches the
goal early scores too. For prefix h and question q with weight w_q (normalised to sum 1):

    p_qh   = p(desired answer of q | image, actions[:h])
    s_h    = sum_q w_q p_qh                     in [0, 1]
    score  = aggregate_h s_h                    mean (default), sum, max or last

The paper sums over prefixes; `mean` is that sum divided by the number of prefixes, so a
score stays in [0, 1] whatever the chunk length (the argmax and the gradient's direction are
the same; a gradient step size tuned for `sum` is P times larger here).

The logit-margin form replaces p_qh by m_qh = logit(desired) - logit(other) = log(p / (1 - p)),
which does not saturate: gradient planning can optimise it when probabilities sit near 0 or
1, while candidates are still ranked by the probability score.

Two ways to get the answers: `ModelObjective` runs a world model in this process
(differentiable w.r.t. the actions; the image is encoded once per plan), `QueryObjective`
calls a function that returns p(yes) for a list of chunks (the QueryWorldModel service;
not differentiable, so only the sampling optimisers can use it).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol, Sequence

import numpy as np
import torch

from swm_ros.models.base import YES_INDEX
from swm_ros.planning.tasks import RenderedQuestions

AGGREGATES = ("mean", "sum", "max", "last")
_P_EPS = 1e-6


@dataclass
class ObjectiveConfig:
    prefix_step: int = 8            # c: score the prefixes c, 2c, ..., H (the paper's action_skip)
    aggregate: str = "mean"         # over prefixes: mean | sum | max | last
    max_batch: int = 256            # rows (candidate chunk x prefix) per model call
    # with an ensemble world model: each desired-answer margin becomes the members' mean minus
    # this times their spread (std), so a chunk only some members believe in scores less; 0: the mean
    disagreement_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.prefix_step < 1:
            raise ValueError(f"prefix_step must be >= 1, got {self.prefix_step}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {list(AGGREGATES)}, got {self.aggregate!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not self.disagreement_penalty >= 0:
            raise ValueError(f"disagreement_penalty must be >= 0, got {self.disagreement_penalty}")


def prefix_lengths(horizon: int, step: int) -> list[int]:
    """[c, 2c, ..., H]: every multiple of `step` up to `horizon`, and `horizon` itself."""
    if horizon < 1:
        raise ValueError(f"a chunk needs at least one action, got horizon {horizon}")
    lengths = list(range(step, horizon + 1, step))
    if not lengths or lengths[-1] != horizon:
        lengths.append(horizon)
    return lengths


class Scores(NamedTuple):
    probability: torch.Tensor       # (N,) the objective: weighted p(desired), aggregated over prefixes
    logit_margin: torch.Tensor      # (N,) the same with logit margins in place of probabilities


class Objective(Protocol):
    """What an optimiser needs: `score(candidates (N, H, A)) -> (N,)`, higher is better."""

    differentiable: bool

    def score(self, candidates: torch.Tensor) -> torch.Tensor: ...
    def scores(self, candidates: torch.Tensor) -> Scores: ...


class PrefixObjective(abc.ABC):
    """Weighted questions scored on every chunk prefix (see the module docstring)."""

    differentiable: bool = False

    def __init__(self, questions: RenderedQuestions, config: ObjectiveConfig | None = None):
        if len(questions) == 0:
            raise ValueError("an objective needs at least one question")
        self.questions = questions
        self.config = config or ObjectiveConfig()
        w = torch.tensor(questions.weights, dtype=torch.float32)
        if torch.any(w < 0) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be >= 0 and sum to > 0, got {questions.weights}")
        self.weights = w / w.sum()
        desired = torch.tensor(questions.desired, dtype=torch.float32)
        if not torch.all((desired == 0) | (desired == 1)):
            raise ValueError(f"desired answers must be 1 (yes) or 0 (no), got {questions.desired}")
        self.sign = 2.0 * desired - 1.0            # +1: wants yes, -1: wants no
        self.evaluations = 0                       # candidate chunks scored so far

    @abc.abstractmethod
    def yes_margins(self, candidates: torch.Tensor) -> torch.Tensor:
        """(N, H, A) -> (N, P, Q): logit(yes) - logit(no) after each prefix (`prefix_lengths`)."""

    def desired_margins(self, candidates: torch.Tensor) -> torch.Tensor:
        """(N, P, Q) logit margin of the desired answer over the other one."""
        self._check(candidates)
        self.evaluations += int(candidates.shape[0])
        return self.yes_margins(candidates) * self.sign.to(candidates.device)

    def scores(self, candidates: torch.Tensor) -> Scores:
        m = self.desired_margins(candidates)
        w = self.weights.to(m.device)
        return Scores(self._aggregate((torch.sigmoid(m) * w).sum(-1)), self._aggregate((m * w).sum(-1)))

    def score(self, candidates: torch.Tensor) -> torch.Tensor:
        return self.scores(candidates).probability

    def p_yes(self, candidates: torch.Tensor) -> torch.Tensor:
        """(N, P, Q) p(yes) after each prefix, detached (for reports)."""
        with torch.no_grad():
            self._check(candidates)
            return torch.sigmoid(self.yes_margins(candidates))

    def _aggregate(self, per_prefix: torch.Tensor) -> torch.Tensor:
        agg = self.config.aggregate
        if agg == "mean":
            return per_prefix.mean(-1)
        if agg == "sum":
            return per_prefix.sum(-1)
        if agg == "max":
            return per_prefix.max(-1).values
        return per_prefix[..., -1]

    @staticmethod
    def _check(candidates: torch.Tensor) -> None:
        if not isinstance(candidates, torch.Tensor) or candidates.dim() != 3:
            raise ValueError(f"candidates must be an (N, H, A) tensor, got "
                             f"{tuple(candidates.shape) if hasattr(candidates, 'shape') else type(candidates)}")


class ModelObjective(PrefixObjective):
    """Answers from a world model in this process; the image features are computed once.
    With `disagreement_penalty` (an ensemble model only) every member's answer is kept, and the
    desired-answer margin is their mean less the penalty times their spread."""

    differentiable = True

    def __init__(self, model, features: torch.Tensor, questions: RenderedQuestions,
                 config: ObjectiveConfig | None = None, proprio: torch.Tensor | None = None):
        super().__init__(questions, config)
        if self.config.disagreement_penalty > 0 and not hasattr(model, "member_logits_from_features"):
            raise ValueError(f"disagreement_penalty needs an ensemble world model (`swm ensemble`), "
                             f"got a {model.backend!r} model")
        self.model = model
        self.features = features
        self.proprio = proprio          # (1, P) the robot's state at the image, for a model that reads it
        with torch.no_grad():           # the questions do not depend on the actions: embed them once
            self.tokens = model.prepare_questions(features, model.tokenize(list(questions.questions)))

    # below this many (candidate x prefix) rows every prefix goes into one model call: a few
    # rows cost little arithmetic and the call itself dominates (grad with one chunk: 2.1x
    # faster). Above it one call per prefix length: a prefix row padded to the full chunk
    # costs more than a call (64-sample MPPI measured 1.5x slower when merged).
    MERGE_ROWS = 32

    def yes_margins(self, candidates: torch.Tensor) -> torch.Tensor:
        return self._member_yes_margins(candidates).mean(0)

    def desired_margins(self, candidates: torch.Tensor) -> torch.Tensor:
        if self.config.disagreement_penalty == 0:
            return super().desired_margins(candidates)
        self._check(candidates)
        self.evaluations += int(candidates.shape[0])
        m = self._member_yes_margins(candidates) * self.sign.to(candidates.device)     # (M, N, P, Q)
        return m.mean(0) - self.config.disagreement_penalty * m.std(0)

    def _answer(self, actions: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """(M, rows, Q, 2): each member's logits with a penalty, else the model's as M = 1
        (an ensemble's answer is its members' mean margin, so both agree on the mean)."""
        if self.config.disagreement_penalty > 0:
            return self.model.member_logits_from_features(self.features, actions, self.tokens, masks, self.proprio)
        return self.model.answer_logits_from_features(self.features, actions, self.tokens, masks, self.proprio)[None]

    def _member_yes_margins(self, candidates: torch.Tensor) -> torch.Tensor:
        """(M, N, P, Q) logit(yes) - logit(no) after each prefix, per member (M = 1 without a penalty)."""
        n, h, a = candidates.shape
        lengths = prefix_lengths(h, self.config.prefix_step)
        p, step = len(lengths), self.config.max_batch
        if n * p > self.MERGE_ROWS:
            per_prefix = []
            for length in lengths:
                logits = torch.cat([self._answer(candidates[s:s + step, :length], None)
                                    for s in range(0, n, step)], dim=1)             # (M, N, Q, 2)
                per_prefix.append(logits[..., YES_INDEX] - logits[..., 1 - YES_INDEX])
            return torch.stack(per_prefix, dim=2)
        # every prefix of every candidate in one batch: the whole chunk with its later steps
        # masked out (masked action tokens are never attended to, so a prefix answers as if cut there)
        rows = candidates.unsqueeze(1).expand(n, p, h, a).reshape(n * p, h, a)
        kept = torch.tensor(lengths, device=candidates.device)
        masks = (torch.arange(h, device=candidates.device)[None, :] < kept[:, None]).repeat(n, 1)
        logits = torch.cat([self._answer(rows[s:s + step], masks[s:s + step])
                            for s in range(0, n * p, step)], dim=1)                 # (M, N * P, Q, 2)
        margins = logits[..., YES_INDEX] - logits[..., 1 - YES_INDEX]
        return margins.reshape(margins.shape[0], n, p, -1)


# chunks (each (T, A), T may differ) -> p(yes) (len(chunks), Q), for this objective's questions
QueryFn = Callable[[Sequence[np.ndarray]], np.ndarray]


class QueryObjective(PrefixObjective):
    """Answers from a function returning p(yes), e.g. a QueryWorldModel service client."""

    differentiable = False

    def __init__(self, query: QueryFn, questions: RenderedQuestions, config: ObjectiveConfig | None = None):
        super().__init__(questions, config)
        self.query = query

    def yes_margins(self, candidates: torch.Tensor) -> torch.Tensor:
        n, h, _ = candidates.shape
        lengths = prefix_lengths(h, self.config.prefix_step)
        c = candidates.detach().cpu().numpy()
        chunks = [c[i, :length] for i in range(n) for length in lengths]
        p = np.concatenate([np.asarray(self.query(chunks[s:s + self.config.max_batch]), dtype=np.float64)
                            for s in range(0, len(chunks), self.config.max_batch)])
        if p.shape != (len(chunks), len(self.questions)):
            raise ValueError(f"world model answered shape {p.shape}, expected {(len(chunks), len(self.questions))}")
        if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
            raise ValueError("world model answered probabilities outside [0, 1]")
        p = np.clip(p, _P_EPS, 1.0 - _P_EPS)
        margins = np.log(p) - np.log1p(-p)
        return torch.as_tensor(margins, dtype=torch.float32, device=candidates.device).reshape(n, len(lengths), -1)


# ---------------------------------------------------------------------------------------
# one observation, many questions: what a planner asks for one image
# ---------------------------------------------------------------------------------------

class ModelScorer:
    """A world model bound to one (processed) image, encoded once."""

    differentiable = True

    def __init__(self, model, image: np.ndarray | torch.Tensor, proprio: np.ndarray | None = None):
        self.model = model
        with torch.no_grad():
            self.features = model.encode_image(torch.from_numpy(np.array(image))[None])   # a copy: frames may be read-only
        self.proprio = (torch.as_tensor(np.asarray(proprio, dtype=np.float32)[None], device=self.features.device)
                        if proprio is not None else None)      # read by a model that reads_proprio, else ignored

    def objective(self, questions: RenderedQuestions, config: ObjectiveConfig | None = None) -> ModelObjective:
        return ModelObjective(self.model, self.features, questions, config, self.proprio)

    def p_yes_now(self, questions: Sequence[str]) -> np.ndarray:
        """(Q,) p(yes) with no actions (horizon 0): is it true in this image?"""
        with torch.no_grad():
            no_actions = torch.zeros(1, 0, self.model.action_dim, device=self.features.device)
            logits = self.model.answer_logits_from_features(self.features, no_actions,
                                                            self.model.tokenize(list(questions)), proprio=self.proprio)
        return logits.softmax(-1)[0, :, YES_INDEX].cpu().numpy()


# (image, chunks, questions) -> (len(chunks), Q) p(yes); chunks=None: one "now" query
RemoteQuery = Callable[[np.ndarray, "Sequence[np.ndarray] | None", Sequence[str]], np.ndarray]


class RemoteScorer:
    """A remote world model (QueryWorldModel) bound to one image."""

    differentiable = False

    def __init__(self, query: RemoteQuery, image: np.ndarray):
        self.query, self.image = query, image

    def objective(self, questions: RenderedQuestions, config: ObjectiveConfig | None = None) -> QueryObjective:
        qs = list(questions.questions)
        return QueryObjective(lambda chunks: self.query(self.image, chunks, qs), questions, config)

    def p_yes_now(self, questions: Sequence[str]) -> np.ndarray:
        p = np.asarray(self.query(self.image, None, list(questions)), dtype=np.float64)
        return p.reshape(-1)
