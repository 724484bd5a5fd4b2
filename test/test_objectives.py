"""Task objectives and the early-reward objective: question rendering from the task files,
prefix scoring arithmetic on hand-made logits, and sub-goal stages in the planner."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from swm_ros.config import ConfigError
from swm_ros.envs.base import TaskSpec
from swm_ros.envs.tasks import TASKS
from swm_ros.models.base import WorldModel
from swm_ros.models.text import Tokenizer
from swm_ros.planning.objective import (ModelObjective, ModelScorer, ObjectiveConfig, QueryObjective, RemoteScorer,
                                        prefix_lengths)
from swm_ros.planning.planner import Planner, PlannerConfig
from swm_ros.planning.tasks import (RenderedQuestions, TaskObjective, load_task_objective, task_config_path,
                                    unknown_words)

TOUCH = "Is the red block touching the blue block?"
CLOSER = "Are the red and blue blocks closer together?"
GRASP = "Is the robot grasping the red block?"
ON_TOP = "Is the red block on top of the blue block?"
MOVED = "Did the red block move?"


class HandModel(WorldModel):
    """A hand-made world model: logit(yes) - logit(no) of a question is a known function of the
    actions (`rules[question](actions (B, T, A)) -> (B,)`); logits are [0, margin]. Like a real
    model it answers only for the steps `action_mask` keeps (a masked tail is not there)."""

    backend = "hand"

    def __init__(self, rules):
        super().__init__(Tokenizer.default(), 24)
        self.rules = rules
        self.calls = []

    def encode_image(self, images):
        return torch.zeros(1, 1, 1)

    def config_dict(self):
        return {}

    def answer_logits_from_features(self, features, actions, question_tokens, action_mask=None, proprio=None):
        self.calls.append(int(actions.shape[0]))
        texts = [self.tokenizer.decode(row) for row in question_tokens]
        if action_mask is None:
            margins = torch.stack([self.rules[t](actions) for t in texts], dim=1)     # (B, Q)
        else:                                # row by row, each cut to its kept steps
            margins = torch.stack([torch.stack([self.rules[t](actions[i:i + 1, :int(action_mask[i].sum())])[0]
                                                for t in texts]) for i in range(len(actions))])
        return torch.stack([torch.zeros_like(margins), margins], dim=-1)


def _key(q: str) -> str:
    return Tokenizer.default().decode(Tokenizer.default().encode_one(q))


def hand_model(**rules) -> HandModel:
    return HandModel({_key(q): f for q, f in rules.items()})


# ---- task files ---------------------------------------------------------------------------

def test_every_task_has_a_file_whose_questions_the_model_can_read() -> None:
    vocab = Tokenizer.default().vocabulary
    for task, spec in TASKS.items():
        obj = load_task_objective(task)
        assert obj.task == task and len(obj.config.roles) == spec.n_roles
        objects = ("red_block", "blue_block")[:spec.n_roles]
        for stage in obj.render(TaskSpec(task, objects, "x")):
            assert abs(sum(stage.objective.weights) - 1.0) < 1e-9, (task, stage.name)
            for qs in (stage.objective, stage.advance_when):
                assert unknown_words(qs, vocab) == [], (task, stage.name, qs.questions)


def test_push_renders_touching_and_closer_with_paper_weights() -> None:
    stages = load_task_objective("push").render(TaskSpec("push", ("red_block", "blue_block"), "push"))
    assert len(stages) == 1
    q = stages[0].objective
    assert q.questions == (TOUCH, CLOSER) and q.desired == (1.0, 1.0) and q.weights == (0.8, 0.2)
    # OOD colours come from the scene variant's table
    ood = load_task_objective("push").render(TaskSpec("push", ("purple_block", "cyan_block"), "p",
                                                      variant="ood_colors"))[0].objective
    assert ood.questions[0] == "Is the purple block touching the cyan block?"
    # an object no variant knows (a real scene) is named from its name
    real = load_task_objective("reach").render(TaskSpec("reach", ("white_block",), "r", variant="lab"))[0]
    assert real.objective.questions[0] == "Is the gripper touching the white block?"


def test_stack_stages_check_subgoals_without_actions() -> None:
    stages = load_task_objective("stack").render(TaskSpec("stack", ("red_block", "blue_block"), "s"))
    assert [s.name for s in stages] == ["grasp", "place", "release"]
    assert stages[0].advance_when.questions == (GRASP,) and stages[0].advance_threshold == 0.9
    assert stages[1].advance_when.questions == (ON_TOP,)
    assert stages[2].advance_when.questions == ()
    assert stages[2].objective.desired == (1.0, 0.0)        # on top: yes, still grasped: no


@pytest.mark.parametrize("edit, error", [
    (lambda d: d.update(colour="red"), "unknown key"),
    (lambda d: d["stages"][0]["questions"][0].update(family="hovering"), "unknown question family"),
    (lambda d: d["stages"][0]["questions"][0].update(subjects=["source"]), "asks about 2 object"),
    (lambda d: d["stages"][0]["questions"][0].update(subjects=["source", "goal"]), "not roles"),
    (lambda d: d["stages"][0]["questions"][0].update(weight=-1.0), "weight must be >= 0"),
    (lambda d: d["stages"][0]["questions"][0].update(family="moved", subjects=["source"]), "needs a direction"),
    (lambda d: d.update(roles=["source"]), "has 2 role"),
    (lambda d: d["stages"][0].update(advance_when=[{"family": "grasped", "subjects": ["source"]}]),
     "last stage"),
    (lambda d: d["stages"].insert(0, dict(d["stages"][0], name="first")), "no advance_when"),
])
def test_bad_task_files_are_rejected(tmp_path: Path, edit, error) -> None:
    data = yaml.safe_load(task_config_path("push").read_text())
    edit(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=error):
        load_task_objective(p)


def test_objective_refuses_a_task_of_another_kind() -> None:
    with pytest.raises(ValueError, match="given a 'reach' episode"):
        load_task_objective("push").render(TaskSpec("reach", ("red_block",), "r"))


# ---- objective arithmetic ----------------------------------------------------------------

def test_prefix_lengths() -> None:
    assert prefix_lengths(16, 8) == [8, 16]
    assert prefix_lengths(20, 8) == [8, 16, 20]
    assert prefix_lengths(5, 8) == [5]
    assert prefix_lengths(4, 1) == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        prefix_lengths(0, 8)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _prefix_model() -> HandModel:
    # margin of TOUCH = sum of dx over the prefix; of CLOSER = 0.5 x prefix length (shape only)
    return hand_model(**{TOUCH: lambda a: a[..., 0].sum(1), CLOSER: lambda a: 0.5 * a.shape[1] * torch.ones(len(a))})


@pytest.mark.parametrize("aggregate", ["mean", "sum", "max", "last"])
def test_weighted_prefix_score_on_hand_made_logits(aggregate: str) -> None:
    model = _prefix_model()
    qs = RenderedQuestions((TOUCH, CLOSER), desired=(1.0, 0.0), weights=(3.0, 1.0))   # normalised to 0.75 / 0.25
    obj = ModelObjective(model, torch.zeros(1, 1, 1), qs, ObjectiveConfig(prefix_step=4, aggregate=aggregate))
    chunk = torch.zeros(2, 10, 5)
    chunk[0, :, 0] = torch.linspace(-1, 1, 10)
    chunk[1, :, 0] = 0.3
    s = obj.scores(chunk)
    for i in range(2):
        per_prefix, margins = [], []
        for h in (4, 8, 10):                                # prefixes of a 10-step chunk, c = 4
            m_touch = float(chunk[i, :h, 0].sum())
            m_closer = -(0.5 * h)                          # desired "no": margin flips sign
            per_prefix.append(0.75 * _sig(m_touch) + 0.25 * _sig(m_closer))
            margins.append(0.75 * m_touch + 0.25 * m_closer)
        agg = {"mean": np.mean, "sum": np.sum, "max": np.max, "last": lambda v: v[-1]}[aggregate]
        assert float(s.probability[i]) == pytest.approx(agg(per_prefix), abs=1e-5)
        assert float(s.logit_margin[i]) == pytest.approx(agg(margins), abs=1e-4)
    assert torch.equal(obj.score(chunk), s.probability)
    p = obj.p_yes(chunk)                                    # (N, P, Q) raw p(yes), whatever is desired
    assert p.shape == (2, 3, 2) and float(p[1, 2, 1]) == pytest.approx(_sig(5.0), abs=1e-6)


def test_model_calls_are_batched_and_split_by_max_batch() -> None:
    model = _prefix_model()
    qs = RenderedQuestions((TOUCH,), (1.0,), (1.0,))
    chunks = torch.rand(10, 16, 5) * 2 - 1
    whole = ModelObjective(model, torch.zeros(1, 1, 1), qs, ObjectiveConfig(8, "mean", max_batch=64)).score(chunks)
    assert model.calls == [20]                              # 10 chunks x 2 prefixes in one call
    model.calls.clear()
    split = ModelObjective(model, torch.zeros(1, 1, 1), qs, ObjectiveConfig(8, "mean", max_batch=4)).score(chunks)
    assert model.calls == [4, 4, 4, 4, 4]                   # at most max_batch rows (chunk x prefix) a call
    assert torch.allclose(whole, split)
    model.calls.clear()
    many = torch.rand(40, 16, 5) * 2 - 1                    # 80 rows > MERGE_ROWS: one call per prefix
    per_prefix = ModelObjective(model, torch.zeros(1, 1, 1), qs, ObjectiveConfig(8, "mean", max_batch=64)).score(many)
    assert model.calls == [40, 40]
    merged = torch.cat([ModelObjective(model, torch.zeros(1, 1, 1), qs, ObjectiveConfig(8, "mean")).score(many[s:s + 10])
                        for s in range(0, 40, 10)])
    assert torch.allclose(per_prefix, merged, atol=1e-6)


def test_score_is_differentiable_in_the_actions() -> None:
    qs = RenderedQuestions((TOUCH,), (1.0,), (1.0,))
    obj = ModelObjective(_prefix_model(), torch.zeros(1, 1, 1), qs, ObjectiveConfig(8, "mean"))
    x = torch.zeros(1, 16, 5, requires_grad=True)
    obj.score(x).sum().backward()
    # d/d dx_t of mean(sig(sum_{<8}), sig(sum_{<16})) at 0: steps < 8 feed both prefixes
    g = x.grad[0, :, 0]
    assert torch.allclose(g[:8], torch.full((8,), 0.25)) and torch.allclose(g[8:], torch.full((8,), 0.125))
    assert torch.all(x.grad[0, :, 1:] == 0)


def test_query_objective_matches_the_model_objective() -> None:
    """The same answers through the p(yes) interface (the remote path) give the same scores."""
    model = _prefix_model()
    qs = RenderedQuestions((TOUCH, CLOSER), (1.0, 0.0), (0.8, 0.2))
    cfg = ObjectiveConfig(prefix_step=8, aggregate="mean", max_batch=3)
    feats = torch.zeros(1, 1, 1)

    def query(image, chunks, questions):
        assert questions == list(qs.questions) and image == "img"
        with torch.no_grad():
            out = [model.answer_logits_from_features(feats, torch.as_tensor(c)[None], model.tokenize(questions))
                   for c in chunks]
        return torch.cat(out).softmax(-1)[..., 1].numpy()

    chunks = (torch.rand(5, 12, 5) * 0.4 - 0.2)
    local = ModelObjective(model, feats, qs, cfg).scores(chunks)
    remote = RemoteScorer(query, "img").objective(qs, cfg)
    assert isinstance(remote, QueryObjective) and not remote.differentiable
    r = remote.scores(chunks)
    assert torch.allclose(local.probability, r.probability, atol=1e-5)
    assert torch.allclose(local.logit_margin, r.logit_margin, atol=1e-3)
    with pytest.raises(ValueError, match="expected"):
        QueryObjective(lambda chunks: np.zeros((len(chunks), 3)), qs, cfg).score(chunks)
    with pytest.raises(ValueError, match="outside"):
        QueryObjective(lambda chunks: np.full((len(chunks), 2), np.nan), qs, cfg).score(chunks)


def test_bad_objectives_are_rejected() -> None:
    feats = torch.zeros(1, 1, 1)
    with pytest.raises(ValueError, match="at least one question"):
        ModelObjective(_prefix_model(), feats, RenderedQuestions((), (), ()))
    with pytest.raises(ValueError, match="weights"):
        ModelObjective(_prefix_model(), feats, RenderedQuestions((TOUCH,), (1.0,), (0.0,)))
    with pytest.raises(ValueError, match="desired"):
        ModelObjective(_prefix_model(), feats, RenderedQuestions((TOUCH,), (0.5,), (1.0,)))
    obj = ModelObjective(_prefix_model(), feats, RenderedQuestions((TOUCH,), (1.0,), (1.0,)))
    with pytest.raises(ValueError, match=r"\(N, H, A\)"):
        obj.score(torch.zeros(16, 5))
    with pytest.raises(ValueError):
        ObjectiveConfig(aggregate="median")


# ---- stages in the planner ---------------------------------------------------------------

def test_planner_advances_a_stage_only_when_the_subgoal_is_met_now() -> None:
    grasp_p = {"value": 0.5}     # p(yes) of "grasping" with no actions, set by the test
    rules = {
        GRASP: lambda a: (torch.full((len(a),), math.log(grasp_p["value"] / (1 - grasp_p["value"])))
                          if a.shape[1] == 0 else a[..., 4].mean(1) * 3),
        "Is the gripper touching the red block?": lambda a: a[..., 0].mean(1),
        "Is the gripper closer to the red block?": lambda a: a[..., 1].mean(1),
        ON_TOP: lambda a: torch.full((len(a),), -5.0) if a.shape[1] == 0 else a[..., 2].mean(1),
    }
    model = hand_model(**rules)
    planner = Planner(PlannerConfig(method="rank"), model=model)
    stages = planner.set_task(TaskSpec("stack", ("red_block", "blue_block"), "stack"))
    assert [s.name for s in stages] == ["grasp", "place", "release"] and planner.stage.name == "grasp"
    image = np.zeros((8, 8, 3), np.uint8)
    props = np.zeros((3, 16, 5), np.float32)
    props[1, :, 2] = 1.0                                     # best for "on top"
    props[2, :, 0] = 1.0                                     # best for "touching" (stage grasp)

    r = planner.plan(image, props)
    assert r.stage == "grasp" and r.advanced_from == [] and np.array_equal(r.chunk, props[2])
    grasp_p["value"] = 0.95                                  # the model now says "grasped"
    r = planner.plan(image, props)
    assert r.stage == "place" and r.advanced_from == ["grasp"] and np.array_equal(r.chunk, props[1])
    assert r.questions.questions == (ON_TOP, GRASP)
    assert r.p_yes.shape == (2,) and r.p_yes[0] == pytest.approx(_sig(1.0), abs=1e-6)
    grasp_p["value"] = 0.1                                   # no way back: place stays until on top
    assert planner.plan(image, props).stage == "place"
    planner.set_task(TaskSpec("stack", ("red_block", "blue_block"), "stack"))   # a new episode restarts
    assert planner.stage.name == "grasp"


def test_a_stage_with_fall_back_is_returned_to_when_its_subgoal_is_lost(tmp_path) -> None:
    """With fall_back_below, the planner goes back to grasp when p(grasped) falls below it,
    stays in lift between that and the advance threshold, and advances again; without it a
    met sub-goal is final; a fall_back_below outside (0, advance_threshold) is refused."""
    task = {"task": "pick", "roles": ["block"], "stages": [
        {"name": "grasp", "questions": [{"family": "grasped", "subjects": ["block"], "desired": True, "weight": 1.0}],
         "advance_when": [{"family": "grasped", "subjects": ["block"], "desired": True}],
         "fall_back_below": 0.5},
        {"name": "lift", "questions": [{"family": "moved_any", "subjects": ["block"], "desired": True, "weight": 1.0}]}]}
    path = tmp_path / "pick.yaml"
    grasped = {"p": 0.95}      # p(grasped) now, set by the test

    def planner_for(task_file: dict) -> Planner:
        path.write_text(yaml.safe_dump(task_file))
        objective = load_task_objective(path)
        model = hand_model(**{GRASP: lambda a: torch.full((len(a),), math.log(grasped["p"] / (1 - grasped["p"]))),
                              MOVED: lambda a: a[..., 0].mean(1)})
        planner = Planner(PlannerConfig(method="rank"), model=model, task_objectives=lambda name: objective)
        planner.set_task(TaskSpec("pick", ("red_block",), "pick"))
        return planner

    image, props = np.zeros((8, 8, 3), np.uint8), np.zeros((2, 16, 5), np.float32)
    planner = planner_for(task)
    grasped["p"] = 0.95
    assert planner.plan(image, props).stage == "lift"
    grasped["p"] = 0.7                                       # less sure, not below 0.5: stays
    r = planner.plan(image, props)
    assert r.stage == "lift" and r.fell_back_to == []
    grasped["p"] = 0.1                                       # the block slipped: grasp it again
    r = planner.plan(image, props)
    assert r.stage == "grasp" and r.fell_back_to == ["grasp"] and r.advanced_from == []
    grasped["p"] = 0.95
    r = planner.plan(image, props)
    assert r.stage == "lift" and r.advanced_from == ["grasp"]

    del task["stages"][0]["fall_back_below"]
    planner = planner_for(task)
    grasped["p"] = 0.95
    assert planner.plan(image, props).stage == "lift"
    grasped["p"] = 0.1
    r = planner.plan(image, props)
    assert r.stage == "lift" and r.fell_back_to == []

    for bad in (0.95, 0.0):
        task["stages"][0]["fall_back_below"] = bad
        path.write_text(yaml.safe_dump(task))
        with pytest.raises(ValueError, match="fall_back_below"):
            load_task_objective(path)


def test_planner_refuses_grad_with_a_remote_model_and_unknown_words() -> None:
    with pytest.raises(ValueError, match="gradients do not cross"):
        Planner(PlannerConfig(method="grad"), query=lambda *a: None)
    with pytest.raises(ValueError, match="either a world model"):
        Planner(PlannerConfig(method="rank"))
    model = hand_model()
    model.tokenizer = Tokenizer([w for w in Tokenizer.default().vocabulary if w != "touching"])
    with pytest.raises(ValueError, match="touching"):
        Planner(PlannerConfig(method="rank"), model=model).set_task(TaskSpec("push", ("red_block", "blue_block"), "p"))


def test_model_scorer_encodes_the_image_once() -> None:
    model = _prefix_model()
    seen = []
    model.encode_image = lambda images: seen.append(tuple(images.shape)) or torch.zeros(1, 1, 1)
    scorer = ModelScorer(model, np.zeros((64, 64, 3), np.uint8))
    obj = scorer.objective(RenderedQuestions((TOUCH,), (1.0,), (1.0,)))
    for _ in range(3):
        obj.score(torch.zeros(4, 16, 5))
    assert seen == [(1, 64, 64, 3)]
    assert scorer.p_yes_now([CLOSER]) == pytest.approx([0.5])   # 0 actions: margin 0
