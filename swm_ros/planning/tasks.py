"""Task objectives: weighted (question, desired answer) lists per task, with sub-goal stages.

A task file (config/tasks/<task>.yaml) names the task's roles in `TaskSpec.objects` order and
lists one or more stages. Each stage is what the planner maximises while it is active; a
stage with `advance_when` checks is left for the next one when every check's desired answer
has probability > `advance_threshold` *now* (a no-action question, horizon 0), as the paper's
StackBlocksGoal does (grasp, then stack, at p > 0.9). With `fall_back_below`, a sub-goal
stays checked after it is met: when the desired answer's probability falls below that value
(the block slipped out of the hand, the stacked block fell), the planner returns to the
stage that reaches it, rather than plan the next stage from a state that no longer holds:

    task: stack
    roles: [top, bottom]
    stages:
      - name: grasp
        questions:
          - {family: grasped, subjects: [top], desired: yes, weight: 0.7}
          - {family: gripper_closer, subjects: [top], desired: yes, weight: 0.3}
        advance_when:
          - {family: grasped, subjects: [top], desired: yes}
      - name: place
        ...

Questions are rendered with the SAQA families' own templates (swm_ros.saqa.families), so
they are phrased in the world model's vocabulary; subjects are role names, replaced by the
noun phrase of the object that plays the role in this episode ("red block").
`desired: yes` / `no` are YAML booleans.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from swm_ros.config import load_config
from swm_ros.envs.base import TaskSpec
from swm_ros.envs.tasks import get_task
from swm_ros.resources import config_path
from swm_ros.saqa.families import DIRECTIONS, get_family, noun_phrases


@dataclass
class QuestionTerm:
    family: str                         # a SAQA family name (swm_ros.saqa.families.FAMILIES)
    subjects: list[str]                 # role names, as many as the family's arity
    desired: bool = True                # the answer the task wants (yes / no)
    weight: float = 1.0
    direction: str | None = None        # for families with a direction: left | right | forward | backward
    phrasing: int = 0                   # which of the family's templates

    def __post_init__(self) -> None:
        try:
            fam = get_family(self.family)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if len(self.subjects) != fam.arity:
            raise ValueError(f"family {self.family!r} asks about {fam.arity} object(s), got subjects {self.subjects}")
        if fam.direction_words and self.direction not in DIRECTIONS:
            raise ValueError(f"family {self.family!r} needs a direction in {list(DIRECTIONS)}, got {self.direction!r}")
        if not fam.direction_words and self.direction is not None:
            raise ValueError(f"family {self.family!r} takes no direction")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if not 0 <= self.phrasing < len(fam.phrasings):
            raise ValueError(f"family {self.family!r} has phrasings 0..{len(fam.phrasings) - 1}, got {self.phrasing}")


@dataclass
class Stage:
    name: str
    questions: list[QuestionTerm]
    advance_when: list[QuestionTerm] = field(default_factory=list)   # empty: the final stage
    advance_threshold: float = 0.9
    # after advancing: come back to this stage when a check's desired answer has p below this
    # now (None: never come back)
    fall_back_below: float | None = None

    def __post_init__(self) -> None:
        if not self.questions:
            raise ValueError(f"stage {self.name!r} has no questions")
        if sum(q.weight for q in self.questions) <= 0:
            raise ValueError(f"stage {self.name!r}: the question weights sum to 0")
        if not 0.0 < self.advance_threshold < 1.0:
            raise ValueError(f"advance_threshold must lie in (0, 1), got {self.advance_threshold}")
        if self.fall_back_below is not None:
            if not self.advance_when:
                raise ValueError(f"stage {self.name!r}: fall_back_below needs advance_when checks")
            if not 0.0 < self.fall_back_below < self.advance_threshold:
                raise ValueError(f"stage {self.name!r}: fall_back_below must lie in (0, advance_threshold "
                                 f"{self.advance_threshold}), got {self.fall_back_below}")


@dataclass
class TaskObjectiveConfig:
    task: str                           # an env task family (swm_ros.envs.tasks.TASKS)
    roles: list[str]                    # names of TaskSpec.objects, in order
    stages: list[Stage]

    def __post_init__(self) -> None:
        n = get_task(self.task).n_roles
        if len(self.roles) != n:
            raise ValueError(f"task {self.task!r} has {n} role(s), got roles {self.roles}")
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"duplicate role names {self.roles}")
        if not self.stages:
            raise ValueError("a task objective needs at least one stage")
        for st in self.stages:
            for q in [*st.questions, *st.advance_when]:
                unknown = [s for s in q.subjects if s not in self.roles]
                if unknown:
                    raise ValueError(f"stage {st.name!r}: subject(s) {unknown} are not roles {self.roles}")
        for st in self.stages[:-1]:
            if not st.advance_when:
                raise ValueError(f"stage {st.name!r} is not the last one but has no advance_when checks")
        if self.stages[-1].advance_when:
            raise ValueError(f"the last stage {self.stages[-1].name!r} cannot advance (remove advance_when)")


@dataclass(frozen=True)
class RenderedQuestions:
    """Concrete questions for one episode: text, the answer each wants (1 yes, 0 no), weight."""

    questions: tuple[str, ...]
    desired: tuple[float, ...]
    weights: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.questions)


@dataclass(frozen=True)
class RenderedStage:
    name: str
    objective: RenderedQuestions
    advance_when: RenderedQuestions        # empty for the last stage
    advance_threshold: float
    fall_back_below: float | None = None


def task_config_path(task_or_path: str | Path) -> Path:
    p = Path(task_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p
    return config_path("tasks", f"{task_or_path}.yaml")


def load_task_objective(task_or_path: str | Path) -> "TaskObjective":
    """`load_task_objective("push")` reads config/tasks/push.yaml; a .yaml path reads that file."""
    path = task_config_path(task_or_path)
    return TaskObjective(load_config(TaskObjectiveConfig, path))


def subject_phrases(spec: TaskSpec) -> list[str]:
    """How questions name each role's object: the SAQA noun phrase ("red block").

    Colours and kinds come from the scene variant's object table; an object the variant does
    not know (a real scene) is named from its name, "red_block" -> "red block", the convention
    the variants follow.
    """
    from swm_ros.envs.variants import VARIANTS

    variant = VARIANTS.get(spec.variant)
    if variant is not None and all(o in {s.name for s in variant.objects} for o in spec.objects):
        objs = variant.objects
        phrases = noun_phrases([o.kind for o in objs], [o.color for o in objs], [o.name for o in objs])
        by_name = dict(zip((o.name for o in objs), phrases))
        return [by_name[o] for o in spec.objects]
    return [o.replace("_", " ") for o in spec.objects]


class TaskObjective:
    """A task's stages, rendered into question strings for one episode's objects."""

    def __init__(self, config: TaskObjectiveConfig):
        self.config = config

    @property
    def task(self) -> str:
        return self.config.task

    def render(self, spec: TaskSpec) -> list[RenderedStage]:
        if spec.name != self.config.task:
            raise ValueError(f"objective for task {self.config.task!r} given a {spec.name!r} episode")
        if len(spec.objects) != len(self.config.roles):
            raise ValueError(f"task {spec.name!r} needs {len(self.config.roles)} objects, got {list(spec.objects)}")
        phrase = dict(zip(self.config.roles, subject_phrases(spec)))
        return [RenderedStage(st.name, self._render(st.questions, phrase), self._render(st.advance_when, phrase),
                              st.advance_threshold, st.fall_back_below) for st in self.config.stages]

    @staticmethod
    def _render(terms: list[QuestionTerm], phrase: dict[str, str]) -> RenderedQuestions:
        texts = []
        for t in terms:
            fam = get_family(t.family)
            a = phrase[t.subjects[0]]
            b = phrase[t.subjects[1]] if fam.arity == 2 else ""
            d = DIRECTIONS.index(t.direction) if t.direction is not None else -1
            texts.append(fam.render(t.phrasing, a, b, d))
        return RenderedQuestions(tuple(texts), tuple(1.0 if t.desired else 0.0 for t in terms),
                                 tuple(float(t.weight) for t in terms))


def unknown_words(questions: RenderedQuestions, vocabulary: list[str]) -> list[str]:
    """Words of the questions a model's tokenizer does not know (they would read as <unk>)."""
    from swm_ros.models.text import words

    known = set(vocabulary)
    return sorted({w for q in questions.questions for w in words(q) if w not in known})

