"""A perfect world model for the benchmark: answers from the simulator itself.

`SimulatorOracle` is a `RemoteQuery` (the planner's remote world-model interface): for each
action chunk it asks about, it snapshots the MuJoCo scene, executes the chunk (physics only,
no rendering), answers every question from the privileged state with the SAQA families' own
labels, and restores the scene. "Now" questions are labelled on the current state. The
image argument is ignored: the oracle reads the state, not pixels.

The closed-loop benchmark's `oracle-rank` runs the rank planner on it: the base policy's
proposals, ranked by what they really do to the task's questions. That is the most a better
world model can give a planner that ranks those proposals, so it splits the gap between
`base` and the expert into the world model's share (oracle-rank - swm-rank) and the
proposals' share (what no ranking of them reaches).

Labels follow SAQA: yes -> p 1, no -> p 0, and a row inside a family's ambiguity band (a
block that moved 3 cm for a 4 cm "moved") -> p 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from swm_ros.data.episodes import StateArrays
from swm_ros.envs.base import PrivilegedState, TaskSpec
from swm_ros.planning.tasks import QuestionTerm, TaskObjective
from swm_ros.saqa.families import DIRECTIONS, NO_DIRECTION, NO_OBJECT, QuestionFamily, get_family


@dataclass(frozen=True)
class _Labelled:
    family: QuestionFamily
    roles: tuple[int, ...]        # indices into TaskSpec.objects
    direction: int


class SimulatorOracle:
    """`oracle(image, chunks, questions) -> (len(chunks), Q)` p(yes) from simulated outcomes.

    `env` must offer `snapshot()`, `restore(snap)`, `step_physics(action)` and
    `privileged_state()` (NicolTabletopEnv does). `set_task(spec, objective)` tells it which
    questions it will be asked (the task objective's terms, rendered for this episode) and
    which objects they are about.
    """

    def __init__(self, env):
        for needed in ("snapshot", "restore", "step_physics", "privileged_state"):
            if not hasattr(env, needed):
                raise ValueError(f"the simulator oracle needs an env with {needed}(); {type(env).__name__} has none")
        self.env = env
        self._terms: dict[str, _Labelled] = {}
        self._objects: tuple[str, ...] = ()
        self.rollouts = 0             # chunks executed so far

    def set_task(self, spec: TaskSpec, objective: TaskObjective) -> None:
        terms: dict[str, _Labelled] = {}
        roles = list(objective.config.roles)
        for cfg_stage, stage in zip(objective.config.stages, objective.render(spec)):
            for term_list, rendered in ((cfg_stage.questions, stage.objective),
                                        (cfg_stage.advance_when, stage.advance_when)):
                for term, text in zip(term_list, rendered.questions):
                    terms[text] = self._labelled(term, roles)
        self._terms, self._objects = terms, tuple(spec.objects)

    @staticmethod
    def _labelled(term: QuestionTerm, roles: list[str]) -> _Labelled:
        d = DIRECTIONS.index(term.direction) if term.direction is not None else NO_DIRECTION
        return _Labelled(get_family(term.family), tuple(roles.index(s) for s in term.subjects), d)

    def __call__(self, image: np.ndarray, chunks: Sequence[np.ndarray] | None,
                 questions: Sequence[str]) -> np.ndarray:
        unknown = [q for q in questions if q not in self._terms]
        if unknown:
            raise ValueError(f"the oracle labels only its task's questions; unknown: {unknown}")
        now = self.env.privileged_state()
        if chunks is None:
            return self._p_yes(now, [now], questions)[0]
        chunks = [np.clip(np.asarray(c, dtype=float), -1.0, 1.0) for c in chunks]
        # The objective asks about every prefix of each candidate (8, 16 actions): execute
        # each longest chunk once and read the state after each prefix asked for on the way.
        roots: list[int] = []
        reads: dict[int, dict[int, list[int]]] = {}      # root -> {steps: [chunk indices]}
        for i in sorted(range(len(chunks)), key=lambda i: -len(chunks[i])):
            c = chunks[i]
            root = next((r for r in roots if np.array_equal(chunks[r][:len(c)], c)), None)
            if root is None:
                roots.append(root := i)
            reads.setdefault(root, {}).setdefault(len(c), []).append(i)
        ends: list[PrivilegedState | None] = [None] * len(chunks)
        snap = self.env.snapshot()
        for r in roots:
            try:
                for k, action in enumerate(chunks[r], start=1):
                    self.env.step_physics(action)
                    if k in reads[r]:
                        state = self.env.privileged_state()
                        for i in reads[r][k]:
                            ends[i] = state
            finally:
                self.env.restore(snap)
            self.rollouts += 1
        return self._p_yes(now, ends, questions)

    def _p_yes(self, start: PrivilegedState, ends: list[PrivilegedState], questions: Sequence[str]) -> np.ndarray:
        arrays = StateArrays.from_states([start, *ends])
        index = {name: i for i, name in enumerate(arrays.object_names)}
        subjects = [index[o] for o in self._objects]
        s0 = arrays.take(np.zeros(len(ends), dtype=np.int64))
        s1 = arrays.take(np.arange(1, len(ends) + 1))
        p = np.empty((len(ends), len(questions)))
        for j, q in enumerate(questions):
            t = self._terms[q]
            a = np.full(len(ends), subjects[t.roles[0]])
            b = np.full(len(ends), subjects[t.roles[1]] if len(t.roles) > 1 else NO_OBJECT)
            yes, valid = t.family.label(s0, s1, a, b, np.full(len(ends), t.direction))
            p[:, j] = np.where(valid, yes.astype(float), 0.5)
        return p
