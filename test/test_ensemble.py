"""World-model ensembles: the combined answer, features, gradients, the planner's cache, ONNX,
checkpoints on disk and their errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from swm_ros.envs.base import ACTION_DIM
from swm_ros.models.checkpoint import CheckpointError, save_checkpoint
from swm_ros.models.ensemble import WorldModelEnsemble, write_ensemble
from swm_ros.models.registry import build_world_model, checkpoint_backends, load_world_model
from swm_ros.planning.objective import ModelScorer, ObjectiveConfig
from swm_ros.planning.tasks import RenderedQuestions
from swm_ros.saqa.families import question_text

QUESTIONS = [question_text("touching", 0, "red block", "green block"), question_text("gripper_closer", 2, "blue block")]
SMALL = {"d_model": 32, "layers": 1, "heads": 2, "action_sums": True}

torch.set_num_threads(1)


def _member(seed: int, vocabulary: list[str] | None = None, **changes):
    torch.manual_seed(seed)
    model = build_world_model("tiny", {**SMALL, **changes}, vocabulary).eval()
    for layer in model.action_sums.values():        # zero at init: let the actions matter
        torch.nn.init.normal_(layer.weight, std=0.3)
    return model


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def _actions(n: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (n, t, ACTION_DIM)).astype(np.float32))


def test_answer_is_the_members_mean_log_probability():
    a, b = _member(0), _member(1, d_model=48)                    # members may differ in architecture
    ensemble = WorldModelEnsemble([a, b]).eval()
    imgs, acts = _images(3), _actions(3, 10)
    with torch.no_grad():
        la, lb = (m.answer_logits(imgs, acts, QUESTIONS).log_softmax(-1) for m in (a, b))
        got = ensemble.answer_logits(imgs, acts, QUESTIONS)
    assert got.shape == (3, len(QUESTIONS), 2)
    assert torch.allclose(got.exp().sum(-1), torch.ones(3, len(QUESTIONS)), atol=1e-5)     # log-probabilities
    margin = got[..., 1] - got[..., 0]
    assert torch.allclose(margin, ((la[..., 1] - la[..., 0]) + (lb[..., 1] - lb[..., 0])) / 2, atol=1e-5)
    assert not torch.allclose(la, lb, atol=1e-3)                 # two different members were averaged
    with torch.no_grad():                                        # a model twice answers as itself
        alone = WorldModelEnsemble([a, a]).answer_logits(imgs, acts, QUESTIONS)
    assert torch.allclose(alone, la, atol=1e-5)


def test_gradients_features_and_the_planners_cache():
    ensemble = WorldModelEnsemble([_member(0), _member(1)]).eval()
    acts = _actions(4, 12).requires_grad_(True)
    ensemble.answer_logits(_images(4), acts, QUESTIONS)[..., 1].sum().backward()
    assert torch.isfinite(acts.grad).all() and acts.grad.abs().sum(dim=(0, 2)).gt(0).all()   # every step

    with torch.no_grad():
        feats = ensemble.encode_image(_images(1))
        assert feats.dim() == 2 and feats.shape[0] == 1          # one flat tensor, as callers cache it
        tokens = ensemble.tokenize(QUESTIONS)
        chunks = _actions(6, 8, seed=3)
        raw = ensemble.answer_logits_from_features(feats, chunks, tokens)
        prepared = ensemble.answer_logits_from_features(feats, chunks, ensemble.prepare_questions(feats, tokens))
        assert (raw - prepared).abs().max() < 1e-5
        members = ensemble.member_logits_from_features(feats, chunks, tokens)
        assert members.shape == (2, 6, len(QUESTIONS), 2)
        with pytest.raises(ValueError, match="ensemble features must be"):
            ensemble.answer_logits_from_features(feats[:, :-1], chunks, tokens)

    scorer = ModelScorer(ensemble, _images(1)[0])                # the planner's path
    questions = RenderedQuestions(questions=tuple(QUESTIONS), desired=(1.0, 0.0), weights=(0.5, 0.5))
    objective = scorer.objective(questions, ObjectiveConfig(prefix_step=4))
    with torch.no_grad():
        margins = objective.yes_margins(chunks)                  # (N, prefixes, Q)
    assert margins.shape == (6, 2, len(QUESTIONS)) and torch.isfinite(margins).all()
    assert torch.allclose(margins[:, -1], raw[..., 1] - raw[..., 0], atol=1e-4)


def test_members_must_ask_and_see_alike():
    a = _member(0)
    b = _member(1, vocabulary=a.vocabulary + ["zebra"])
    with pytest.raises(ValueError, match="member 1 has another vocabulary"):
        WorldModelEnsemble([a, b])
    with pytest.raises(ValueError, match="at least 2 members"):
        WorldModelEnsemble([a])


def test_onnx_export_of_an_ensemble_agrees(tmp_path):
    from swm_ros.models.onnx_scoring import OnnxScorer, export_scorer

    ensemble = WorldModelEnsemble([_member(0), _member(1)]).eval()
    scorer = OnnxScorer(export_scorer(ensemble, tmp_path / "ensemble.onnx"))   # checked against torch inside
    with torch.no_grad():
        feats = ensemble.encode_image(_images(1, seed=5))
        chunks = _actions(9, 16, seed=6)
        ref = ensemble.p_yes(np.repeat(_images(1, seed=5), 9, 0), chunks, QUESTIONS).numpy()
    assert np.abs(scorer.p_yes(feats, chunks, ensemble.tokenize(QUESTIONS)) - ref).max() < 1e-4


def test_written_ensemble_loads_and_answers_alike(tmp_path):
    a, b = _member(0), _member(1)
    save_checkpoint(a, tmp_path / "a")
    save_checkpoint(b, tmp_path / "b")
    out = write_ensemble([tmp_path / "a", tmp_path / "b"], tmp_path / "ens")
    assert checkpoint_backends(out) == ["tiny", "tiny"] and checkpoint_backends(tmp_path / "a") == ["tiny"]
    loaded = load_world_model(str(out))
    assert isinstance(loaded, WorldModelEnsemble) and loaded.config.members == 2
    imgs, acts = _images(2), _actions(2, 7)
    with torch.no_grad():
        ref = WorldModelEnsemble([a, b]).answer_logits(imgs, acts, QUESTIONS)
        assert (loaded.answer_logits(imgs, acts, QUESTIONS) - ref).abs().max() < 1e-6


def test_bad_ensembles_are_refused_clearly(tmp_path):
    a = _member(0)
    save_checkpoint(a, tmp_path / "a")
    save_checkpoint(_member(1, vocabulary=a.vocabulary + ["zebra"]), tmp_path / "b")
    with pytest.raises(ValueError, match="another vocabulary"):
        write_ensemble([tmp_path / "a", tmp_path / "b"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()                       # nothing half-written

    out = write_ensemble([tmp_path / "a", tmp_path / "a"], tmp_path / "ens")
    config = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(config.replace("- member_1", "- ../a"))
    with pytest.raises(CheckpointError, match="not a directory name inside the ensemble"):
        load_world_model(str(out))
    (out / "config.yaml").write_text(config.replace("- member_1", "- member_7"))
    with pytest.raises(FileNotFoundError, match="member_7"):
        load_world_model(str(out))
    (out / "config.yaml").write_text(config)
    (out / "member_1" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_world_model(str(out))


def test_swm_ensemble_cli_writes_a_loadable_ensemble(tmp_path):
    from swm_cli import run_swm

    save_checkpoint(_member(0), tmp_path / "a")
    save_checkpoint(_member(1), tmp_path / "b")
    r = run_swm("ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ens"), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert isinstance(load_world_model(str(tmp_path / "ens")), WorldModelEnsemble)
    r = run_swm("ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--average-weights", "--out",
                str(tmp_path / "soup"), timeout=120)
    assert r.returncode == 0 and "weights' average" in r.stdout, r.stderr[-2000:]
    assert checkpoint_backends(tmp_path / "soup") == ["tiny"]            # one ordinary checkpoint
    r = run_swm("ensemble", str(tmp_path / "a"), str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), timeout=120)
    assert r.returncode != 0 and "checkpoint directory not found" in r.stderr and not (tmp_path / "x").exists()


def test_average_of_checkpoints_is_their_mean_weights(tmp_path):
    from swm_ros.models.checkpoint import load_checkpoint
    from swm_ros.models.ensemble import average_checkpoints

    a, b = _member(0), _member(1)
    save_checkpoint(a, tmp_path / "a")
    save_checkpoint(b, tmp_path / "b")
    soup = load_checkpoint(average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "soup"))
    for name, w in soup.state_dict().items():
        assert torch.allclose(w, (a.state_dict()[name] + b.state_dict()[name]) / 2, atol=1e-6), name
    assert soup.training_summary["average_of"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    same = load_checkpoint(average_checkpoints([tmp_path / "a", tmp_path / "a"], tmp_path / "same"))
    imgs, acts = _images(2), _actions(2, 6)
    with torch.no_grad():
        assert torch.allclose(same.answer_logits(imgs, acts, QUESTIONS), a.answer_logits(imgs, acts, QUESTIONS), atol=1e-6)

    save_checkpoint(_member(2, d_model=48), tmp_path / "wide")
    with pytest.raises(ValueError, match="has another model than"):
        average_checkpoints([tmp_path / "a", tmp_path / "wide"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_disagreement_penalty_scores_mean_less_spread():
    from swm_ros.planning.objective import ModelObjective

    ensemble = WorldModelEnsemble([_member(0), _member(1)]).eval()
    questions = RenderedQuestions(questions=tuple(QUESTIONS), desired=(1.0, 0.0), weights=(0.5, 0.5))
    with torch.no_grad():
        feats = ensemble.encode_image(_images(1))
    chunks = _actions(5, 16, seed=7)
    plain = ModelObjective(ensemble, feats, questions, ObjectiveConfig(prefix_step=8))
    penalised = ModelObjective(ensemble, feats, questions, ObjectiveConfig(prefix_step=8, disagreement_penalty=0.5))
    with torch.no_grad():
        members = ensemble.member_logits_from_features(feats, chunks, ensemble.tokenize(QUESTIONS))
        m = (members[..., 1] - members[..., 0]) * torch.tensor([1.0, -1.0])          # (M, N, Q), desired
        full = penalised.desired_margins(chunks)[:, -1]                              # the whole chunk
        assert torch.allclose(full, m.mean(0) - 0.5 * m.std(0), atol=1e-4)
        assert torch.allclose(plain.desired_margins(chunks)[:, -1], m.mean(0), atol=1e-4)
        assert (penalised.score(chunks) < plain.score(chunks)).all()                # members disagree somewhat
        many = _actions(40, 16, seed=8)                                               # the per-prefix path
        assert torch.allclose(penalised.desired_margins(many), plain.desired_margins(many)
                              - 0.5 * (penalised._member_yes_margins(many)
                                       * penalised.sign).std(0), atol=1e-4)
    grad_chunks = chunks.clone().requires_grad_(True)
    penalised.score(grad_chunks).sum().backward()
    assert torch.isfinite(grad_chunks.grad).all() and grad_chunks.grad.abs().sum() > 0

    with pytest.raises(ValueError, match="needs an ensemble world model"):
        single = _member(0)
        ModelObjective(single, single.encode_image(_images(1)), questions, ObjectiveConfig(disagreement_penalty=0.5))
    with pytest.raises(ValueError, match="disagreement_penalty must be >= 0"):
        ObjectiveConfig(disagreement_penalty=-1.0)
