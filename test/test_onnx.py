"""ONNX export of the scoring path and the onnxruntime scorer agree with torch; `swm bench scoring`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from swm_ros.envs.base import ACTION_DIM
from swm_ros.models.onnx_scoring import ExportError, OnnxScorer, export_scorer
from swm_ros.models.registry import build_world_model
from swm_ros.saqa.families import question_text

QUESTIONS = [question_text("touching", 0, "red block", "green block"), question_text("moved", 1, "blue block",
                                                                                      direction="left")]

# one thread: on this shared, oversubscribed 2-core machine two OpenMP threads wait on each other and
# small matmuls ran ~6x slower than with one (measured); results do not depend on it
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)         # also after a test whose code set its own (the training loop does)
    yield


@pytest.fixture(scope="module", params=["late", "grounded", "sums", "paths"])
def tiny_export(tmp_path_factory, request):
    torch.manual_seed(0)
    model = build_world_model("tiny", {"grounding": request.param != "late",
                                       "action_sums": request.param in ("sums", "paths"),
                                       "hand_paths": request.param == "paths"}).eval()
    if model.action_sums is not None:     # zero at init: give them weights, so the export carries them
        for layer in model.action_sums.values():
            torch.nn.init.normal_(layer.weight, std=0.2)
    if model.hand_paths is not None:      # so do hand paths
        torch.nn.init.normal_(model.hand_paths.to_frame.weight, std=0.5)
        torch.nn.init.normal_(model.hand_paths.mlp[-1].weight, std=0.2)
    path = export_scorer(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return model, OnnxScorer(path, threads=1)


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)


def _candidates(c: int, t: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (c, t, ACTION_DIM)).astype(np.float32))


@pytest.mark.parametrize("candidates,steps", [(1, 16), (7, 16), (64, 16), (33, 5), (3, 40)])
def test_onnx_and_torch_scores_agree(tiny_export, candidates, steps):
    model, scorer = tiny_export
    with torch.no_grad():
        feats = model.encode_image(_frame(candidates))
    chunks = _candidates(candidates, steps, seed=steps)
    tokens = model.tokenize(QUESTIONS)
    with torch.no_grad():
        ref = model.p_yes(np.repeat(_frame(candidates), candidates, 0), chunks, QUESTIONS).numpy()
    got = scorer.p_yes(feats, chunks, tokens)
    assert got.shape == (candidates, len(QUESTIONS))
    assert np.abs(got - ref).max() < 1e-4
    assert not np.allclose(got[:, 0], got[:, 1])                        # the questions are not ignored


def test_onnx_masks_per_row_features_and_other_questions(tiny_export):
    model, scorer = tiny_export
    imgs = np.concatenate([_frame(1), _frame(2), _frame(3)])
    with torch.no_grad():
        feats = model.encode_image(imgs)                                 # one image per candidate
    chunks = _candidates(3, 12, seed=4)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, 6:] = False
    mask[2, 3:] = False
    tokens = model.tokenize([question_text("gripper_closer", 2, "yellow block")])   # 1 question, other length
    with torch.no_grad():
        ref = model.answer_logits_from_features(feats, chunks, tokens, mask).numpy()
    assert np.abs(scorer.logits(feats, chunks, tokens, mask) - ref).max() < 1e-4
    # padding is ignored: the masked tail of row 0 does not change its answer
    noisy = chunks.clone()
    noisy[0, 6:] = 5.0
    assert np.abs(scorer.logits(feats, noisy, tokens, mask)[0] - ref[0]).max() < 1e-4


def test_onnx_scorer_rejects_bad_input_clearly(tiny_export, tmp_path):
    model, scorer = tiny_export
    feats = model.encode_image(_frame(0)).detach()
    tokens = model.tokenize(QUESTIONS)
    with pytest.raises(ValueError, match="actions must be"):
        scorer.p_yes(feats, torch.zeros(4, 16, ACTION_DIM + 1), tokens)
    with pytest.raises(ValueError, match="max_steps"):
        scorer.p_yes(feats, torch.zeros(4, model.config.max_steps + 1, ACTION_DIM), tokens)
    with pytest.raises(ValueError, match="features must be"):
        scorer.p_yes(feats[:, :3], torch.zeros(4, 16, ACTION_DIM), tokens)
    with pytest.raises(ValueError, match="NaN"):
        scorer.p_yes(feats, torch.full((4, 16, ACTION_DIM), float("nan")), tokens)
    with pytest.raises(FileNotFoundError, match="export_scorer"):
        OnnxScorer(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxScorer(tmp_path / "junk.onnx")


@pytest.mark.parametrize("backend,config", [
    ("effnet", {"image_size": 64, "feature": "stride16", "d_model": 64, "layers": 2, "heads": 2}),
    ("paligemma", {}),
])
def test_other_backends_export_and_agree(tmp_path, backend, config):
    torch.manual_seed(0)
    model = build_world_model(backend, config).eval()
    scorer = OnnxScorer(export_scorer(model, tmp_path / f"{backend}.onnx"))      # checked inside, too
    assert scorer.meta["backend"] == backend
    with torch.no_grad():
        feats = model.encode_image(_frame(5))
        chunks = _candidates(9, 16, seed=6)
        ref = model.p_yes(np.repeat(_frame(5), 9, 0), chunks, QUESTIONS).numpy()
    assert np.abs(scorer.p_yes(feats, chunks, model.tokenize(QUESTIONS)) - ref).max() < 1e-4


def test_export_refuses_a_graph_that_disagrees(tmp_path, monkeypatch):
    """The export check compares against torch: a model whose torch output changes after tracing fails."""
    torch.manual_seed(0)
    model = build_world_model("tiny", {"d_model": 32, "layers": 1, "heads": 2}).eval()
    real, real_export = model.answer_logits_from_features, torch.onnx.export
    exporting = {"now": False}

    def export(*args, **kwargs):
        exporting["now"] = True
        try:
            return real_export(*args, **kwargs)
        finally:
            exporting["now"] = False

    def drifting(*args, **kwargs):        # torch's answers shift once the graph is traced
        return real(*args, **kwargs) + (0.0 if exporting["now"] else 0.1)
    monkeypatch.setattr(torch.onnx, "export", export)
    monkeypatch.setattr(model, "answer_logits_from_features", drifting)
    with pytest.raises(ExportError, match="differs from torch"):
        export_scorer(model, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_scoring_bench_reports_both_rates(tmp_path):
    from swm_ros.benchmarks.scoring_bench import run_scoring_bench
    from swm_ros.cli import build_parser

    torch.set_num_threads(3)
    out = run_scoring_bench(batch=8, steps=16, threads=1, repeats=2, warmup=1)
    for key in ("candidates_per_s_torch", "candidates_per_s_onnx"):
        assert out[key] > 0
    assert out["batch"] == 8 and out["threads"] == 1 and out["questions"] == 2 and out["max_abs_logit_diff"] < 1e-4
    assert torch.get_num_threads() == 3                                  # the caller's setting is restored
    assert out["model"]["backend"] == "tiny" and out["model"]["source"]
    json.dumps(out)
    args = build_parser().parse_args(["bench", "scoring", "--json", "--batch", "8"])
    assert args.batch == 8 and args.out == "runs/bench/scoring.json" and args.threads == 2
