"""The planner: (processed image, task, base-policy proposals) -> the chunk to execute.

    planner = Planner(load_planner_config("grad"), model=load_world_model("runs/wm"))
    planner.set_task(spec)                              # renders the task's questions
    report = planner.plan(image, proposals)             # (N, H, A) proposals -> PlanReport

Per call: encode the image once; while the stage before the active one has a
`fall_back_below` and the model says one of its sub-goals no longer holds *now*, go back to
it; while the active stage has sub-goal checks and the model says each is met *now* (no
actions, p(desired) > threshold), advance to the next stage;
build the stage's objective; run the configured optimiser; report the chosen chunk with the
scores per iteration and p(yes) of each question for it. Receding horizon is the caller's
loop: execute k actions of the chunk (controller_node `execute_steps`), then plan again.

With `query=` instead of `model=` the answers come from a remote world model (the
QueryWorldModel service); gradients do not cross it, so `grad` is refused there.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from swm_ros.config import load_config
from swm_ros.envs.base import TaskSpec
from swm_ros.planning.objective import ModelScorer, ObjectiveConfig, RemoteQuery, RemoteScorer
from swm_ros.planning.optimisers import (OPTIMISERS, CEMConfig, GradientConfig, MPPIConfig, PlanOutcome, RankConfig,
                                         optimise)
from swm_ros.planning.tasks import RenderedQuestions, RenderedStage, TaskObjective, load_task_objective
from swm_ros.resources import config_path


@dataclass
class PlannerConfig:
    method: str = "grad"                       # grad | mppi | cem | rank
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    action_bound: float = 1.0                  # the action box is [-bound, bound] in every dimension
    seed: int = 0                              # sampling optimisers' noise
    grad: GradientConfig = field(default_factory=GradientConfig)
    mppi: MPPIConfig = field(default_factory=MPPIConfig)
    cem: CEMConfig = field(default_factory=CEMConfig)
    rank: RankConfig = field(default_factory=RankConfig)

    def __post_init__(self) -> None:
        if self.method not in OPTIMISERS:
            raise ValueError(f"method must be one of {sorted(OPTIMISERS)}, got {self.method!r}")
        if not self.action_bound > 0:
            raise ValueError(f"action_bound must be > 0, got {self.action_bound}")

    @property
    def method_config(self):
        return getattr(self, self.method)


def planner_config_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    return p if p.suffix in (".yaml", ".yml") else config_path("planner", f"{name_or_path}.yaml")


def load_planner_config(name_or_path: str | Path) -> PlannerConfig:
    """`load_planner_config("grad")` reads config/planner/grad.yaml; a .yaml path reads that file."""
    return load_config(PlannerConfig, planner_config_path(name_or_path))


@dataclass
class PlanReport:
    chunk: np.ndarray                  # (H, A) float32, the chosen chunk, inside the action box
    method: str
    stage: str                         # the task stage planned for
    stage_index: int
    advanced_from: list[str]           # stages left behind during this call (sub-goals met)
    fell_back_to: list[str]            # stages returned to during this call (a met sub-goal lost)
    questions: RenderedQuestions       # the stage's objective
    p_yes: np.ndarray                  # (Q,) p(yes) of each question for the chosen chunk, full length
    outcome: PlanOutcome
    num_proposals: int
    planning_ms: float


class Planner:
    def __init__(self, config: PlannerConfig, model=None, query: RemoteQuery | None = None,
                 image_processor: Callable[[np.ndarray], np.ndarray] | None = None,
                 task_objectives: Callable[[str], TaskObjective] = load_task_objective):
        if (model is None) == (query is None):
            raise ValueError("give the planner either a world model (model=) or a remote query function (query=)")
        if query is not None and config.method == "grad":
            raise ValueError("method 'grad' needs the world model in this process: gradients do not cross the "
                             "QueryWorldModel service (use mppi, cem or rank with a remote world model)")
        self.config = config
        self.model = model
        self.query = query
        self.image_processor = image_processor
        self.task_objectives = task_objectives
        if model is not None:
            model.eval()
            model.requires_grad_(False)      # gradients flow to the actions only
        self.generator = torch.Generator().manual_seed(config.seed)
        self.spec: TaskSpec | None = None
        self.stages: list[RenderedStage] = []
        self.stage_index = 0

    # ---- task --------------------------------------------------------------------------
    def set_task(self, spec: TaskSpec) -> list[RenderedStage]:
        """Render the task's questions for this episode's objects and start at its first stage."""
        stages = self.task_objectives(spec.name).render(spec)
        if self.model is not None:
            from swm_ros.planning.tasks import unknown_words

            for st in stages:
                for qs in (st.objective, st.advance_when):
                    bad = unknown_words(qs, self.model.vocabulary)
                    if bad:
                        raise ValueError(f"task {spec.name!r} stage {st.name!r}: the world model does not know "
                                         f"the word(s) {bad} (questions {list(qs.questions)})")
        self.spec, self.stages, self.stage_index = spec, stages, 0
        return stages

    @property
    def stage(self) -> RenderedStage:
        if not self.stages:
            raise RuntimeError("no task: call set_task(spec) first")
        return self.stages[self.stage_index]

    # ---- planning ----------------------------------------------------------------------
    def plan(self, image: np.ndarray, proposals: np.ndarray, proprio: np.ndarray | None = None) -> PlanReport:
        """Choose a chunk for `image`; `proprio` (the robot's state then) for a world model that reads it."""
        t0 = time.perf_counter()
        stage = self.stage
        props = np.asarray(proposals, dtype=np.float32)
        if props.ndim != 3 or props.shape[0] < 1 or props.shape[1] < 1:
            raise ValueError(f"proposals must be (N >= 1, H >= 1, A), got {props.shape}")
        if not np.all(np.isfinite(props)):
            raise ValueError("proposals contain NaN or inf")
        if self.model is not None and props.shape[2] != self.model.action_dim:
            raise ValueError(f"proposals have {props.shape[2]} action dims, the world model takes "
                             f"{self.model.action_dim}")
        if self.model is not None:
            frame = self.image_processor(image) if self.image_processor is not None else image
            scorer = ModelScorer(self.model, frame, proprio)
        else:
            scorer = RemoteScorer(self.query, image)

        def p_desired_now(checks: RenderedQuestions) -> np.ndarray:
            p = scorer.p_yes_now(checks.questions)
            return np.where(np.asarray(checks.desired) == 1.0, p, 1.0 - p)

        fell_back = []
        while self.stage_index > 0:
            before = self.stages[self.stage_index - 1]
            if before.fall_back_below is None or \
                    np.all(p_desired_now(before.advance_when) >= before.fall_back_below):
                break
            self.stage_index -= 1
            stage = before
            fell_back.append(stage.name)
        advanced = []
        while stage.advance_when.questions:
            if not np.all(p_desired_now(stage.advance_when) > stage.advance_threshold):
                break
            advanced.append(stage.name)
            self.stage_index += 1
            stage = self.stages[self.stage_index]

        objective = scorer.objective(stage.objective, self.config.objective)
        device = scorer.features.device if self.model is not None else torch.device("cpu")
        outcome = optimise(self.config.method, torch.from_numpy(props).to(device), objective,
                           self.config.method_config, bound=self.config.action_bound, generator=self.generator)
        p_yes = objective.p_yes(torch.from_numpy(outcome.best).to(device)[None])[0, -1].cpu().numpy()
        return PlanReport(chunk=outcome.best, method=self.config.method, stage=stage.name,
                          stage_index=self.stage_index, advanced_from=advanced, fell_back_to=fell_back,
                          questions=stage.objective,
                          p_yes=p_yes, outcome=outcome, num_proposals=int(props.shape[0]),
                          planning_ms=(time.perf_counter() - t0) * 1e3)
