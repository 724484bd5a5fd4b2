"""ONNX export of a world model's scoring path and an onnxruntime scorer for sampling planners.

Sampling planners (MPPI, CEM) score many candidate chunks for one image. The image is
encoded once in torch; only `answer_logits_from_features` is exported:

    export_scorer(model, "runs/scorer.onnx")                   # tiny or effnet
    scorer = OnnxScorer("runs/scorer.onnx", threads=2)
    feats = model.encode_image(frame[None])                    # (1, N, D), once per image
    tokens = model.tokenize(questions)                         # (Q, L), once per task
    p = scorer.p_yes(feats, candidates, tokens)                # (C, Q) numpy, like model.p_yes

Inputs `features` (1 or C, N, D), `actions` (C, T, A), `question_tokens` (Q, L) int64,
`action_mask` (C, T) bool; output `logits` (C, Q, 2) for [no, yes]. The candidate, step,
question and token-length axes are dynamic.

The exporter is torch's TorchScript-based one (`dynamo=False`): the dynamo exporter needs
`onnxscript`, which is not a dependency; the legacy one still works in torch 2.13 (with a
deprecation warning) and the tiny model has no data-dependent control flow, so tracing is
exact. Every export is checked against torch on random candidates of two batch sizes and
fails loudly when they disagree (an HF PaliGemma, for example, "exports" with wrong
outputs). The weights are stored inside the .onnx file.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

INPUTS = ("features", "actions", "question_tokens", "action_mask")
OPSET = 18


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch model."""


class _ScoringPath(nn.Module):
    """`answer_logits_from_features` as a module with positional inputs (what the exporter traces)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features, actions, question_tokens, action_mask):
        return self.model.answer_logits_from_features(features, actions, question_tokens, action_mask)


CHECK_QUESTIONS = ("is the red block touching the green block?", "did the blue block move left?",
                   "is the gripper open?")


def _example_inputs(model, candidates: int, steps: int, seed: int, questions: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        feats = model.encode_image(image)
    actions = torch.rand(candidates, steps, model.action_dim, generator=g) * 2 - 1
    tokens = model.tokenize(list(CHECK_QUESTIONS[-questions:]))
    mask = torch.rand(candidates, steps, generator=g) > 0.2
    mask[:, 0] = True
    return feats, actions, tokens, mask


def export_scorer(model, path: str | Path, steps: int = 16, atol: float = 1e-4) -> Path:
    """Write `model`'s scoring path to `path` (.onnx) and check it against torch; returns the path."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    args = _example_inputs(model, candidates=4, steps=steps, seed=0)
    axes = {"features": {0: "images"}, "actions": {0: "candidates", 1: "steps"},
            "question_tokens": {0: "questions", 1: "length"}, "action_mask": {0: "candidates", 1: "steps"},
            "logits": {0: "candidates", 1: "questions"}}
    with warnings.catch_warnings(), torch.no_grad():
        # shape checks in the model are Python ifs: the tracer warns that they become constants
        warnings.simplefilter("ignore")
        torch.onnx.export(_ScoringPath(model), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(INPUTS), output_names=["logits"], dynamic_axes=axes)
    proto = onnx.load(str(path))
    meta = {"backend": model.backend, "action_dim": model.action_dim,
            "max_steps": model.config.max_steps, "feature_shape": list(args[0].shape[1:]),
            "config": model.config_dict()}
    onnx.helper.set_model_props(proto, {"swm_ros": json.dumps(meta)})
    onnx.save(proto, str(path))
    model.train(was_training)

    scorer = OnnxScorer(path, threads=1)
    # other batch sizes, chunk lengths and question sets than the traced ones
    for candidates, t, seed, questions in ((5, steps, 1, 1), (17, max(1, steps // 2), 2, 3)):
        feats, actions, tokens, mask = _example_inputs(model, candidates, t, seed, questions)
        with torch.no_grad():
            ref = model.answer_logits_from_features(feats, actions, tokens, mask).numpy()
        got = scorer.logits(feats, actions, tokens, mask)
        err = float(np.abs(got - ref).max())
        if not err <= atol:
            path.unlink(missing_ok=True)
            raise ExportError(f"exported {model.backend} scorer differs from torch by {err:.3g} > {atol} "
                              f"({candidates} candidates x {t} steps); nothing written")
    return path


def _numpy(x: Any, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


class OnnxScorer:
    """onnxruntime session over an exported scoring path; same call as the torch model's."""

    def __init__(self, path: str | Path, threads: int = 2, spin: bool = False):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX scorer not found: {path} (write one with export_scorer)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle worker threads sleep instead of spinning: the CPU is shared with the other nodes
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:      # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{path}: not a loadable ONNX model: {e}") from e
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUTS:
            raise ValueError(f"{path}: inputs {names}, expected {INPUTS} (not an exported world-model scorer)")
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta: dict[str, Any] = json.loads(props.get("swm_ros", "{}"))
        self.action_dim = int(self.meta.get("action_dim", self.session.get_inputs()[1].shape[2]))
        self.max_steps = self.meta.get("max_steps")
        self.feature_shape = tuple(self.meta.get("feature_shape", self.session.get_inputs()[0].shape[1:]))
        self.path = path

    def logits(self, features, actions, question_tokens, action_mask=None) -> np.ndarray:
        """(C, Q, 2) logits for [no, yes]."""
        f = _numpy(features, np.float32)
        a = _numpy(actions, np.float32)
        tok = _numpy(question_tokens, np.int64)
        if a.ndim != 3 or a.shape[2] != self.action_dim:
            raise ValueError(f"actions must be (C, T, {self.action_dim}), got {a.shape}")
        c, t = a.shape[:2]
        if self.max_steps is not None and t > self.max_steps:
            raise ValueError(f"{t} action steps > max_steps {self.max_steps} of this model")
        if f.ndim == 0 or f.shape[0] not in (1, c) or tuple(f.shape[1:]) != self.feature_shape:
            raise ValueError(f"features must be (1 or {c}, {', '.join(map(str, self.feature_shape))}), got {f.shape}")
        if tok.ndim != 2:
            raise ValueError(f"question tokens must be (Q, L), got {tok.shape}")
        mask = np.ones((c, t), dtype=bool) if action_mask is None else _numpy(action_mask, bool)
        if mask.shape != (c, t):
            raise ValueError(f"action_mask must be ({c}, {t}), got {mask.shape}")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or inf")
        return self.session.run(None, {"features": f, "actions": a, "question_tokens": tok, "action_mask": mask})[0]

    def p_yes(self, features, actions, question_tokens, action_mask=None) -> np.ndarray:
        """(C, Q) probability of "yes" (softmax over [no, yes])."""
        z = self.logits(features, actions, question_tokens, action_mask)
        return 1.0 / (1.0 + np.exp(z[..., 0] - z[..., 1]))
