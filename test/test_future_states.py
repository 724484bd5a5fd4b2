"""The auxiliary dynamics loss (models/future_states.py): targets from the real privileged state
of `swm collect` episodes, the action tokens it reads, and a training run that uses it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from swm_cli import run_swm

REPO = Path(__file__).resolve().parents[1]


def _small_train_config(saqa: Path, **over) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "train" / "world_model_tiny.yaml").read_text())
    cfg["data"].update(path=str(saqa), val_splits=["test"], val_rows=64)
    cfg.update(steps=4, batch_size=8, warmup_steps=1, eval_every=2, log_every=1, checkpoint_every=2)
    cfg["model"].update(d_model=32, layers=2, heads=2, conv_channels=[8, 16, 16])
    cfg.update(over)
    return cfg


def test_targets_are_displacements_after_each_step_from_the_privileged_state(saqa_file):
    from swm_ros.models.future_states import POSITION_SCALE, FutureStateTargets
    from swm_ros.saqa.dataset import SAQADataset

    ds = SAQADataset(saqa_file, split=["train"])
    cols = ds.columns
    i = int(np.flatnonzero(cols["h"] >= 3)[0])
    e, t, h = int(cols["episode"][i]), int(cols["t"][i]), int(cols["h"][i])
    targets = FutureStateTargets(ds, colours=["red", "green", "blue", "yellow", "purple"])
    steps = h + 2                      # a batch padded past this row's horizon
    tgt, mask = targets(np.array([e]), np.array([t]), np.array([h]), steps)
    assert tgt.shape == mask.shape == (1, steps, 3 * 5 + 4)

    st = ds.states(e)
    for k in (1, h):                   # after the first action and after the last
        red = st.object_colors.index("red")
        np.testing.assert_allclose(tgt[0, k - 1, 0:3], (st.object_position[t + k, red] - st.object_position[t, red])
                                   * POSITION_SCALE, atol=1e-5)
        np.testing.assert_allclose(tgt[0, k - 1, -4:-1], (st.effector_position[t + k] - st.effector_position[t])
                                   * POSITION_SCALE, atol=1e-5)
        assert tgt[0, k - 1, -1] == pytest.approx(st.gripper_opening[t + k] - st.gripper_opening[t], abs=1e-6)
    assert not mask[0, h:].any(), "no target after the row's horizon"
    assert "purple" not in st.object_colors and not mask[0, :h, 12:15].any(), "an absent colour is masked"
    assert mask[0, :h, -4:].all()

    h0 = int(np.flatnonzero(cols["h"] == 0)[0])     # "is it true now": nothing to predict
    _, none = targets(cols["episode"][[h0]].astype(int), cols["t"][[h0]].astype(int), np.array([0]), 4)
    assert not none.any()


def test_last_block_input_holds_the_action_tokens():
    """With one transformer block, its input is the embeddings: the action tokens' part must be
    the action projection + step positions + the action type, at the action positions."""
    from swm_ros.models.future_states import LastBlockInput
    from swm_ros.models.registry import build_world_model

    torch.manual_seed(0)
    model = build_world_model("tiny", {"layers": 1, "d_model": 32, "heads": 2}).eval()
    feats = model.encode_image(np.zeros((2, 64, 64, 3), np.uint8))
    actions = torch.randn(2, 6, model.action_dim).clamp(-1, 1)
    tokens = model.tokenize(["is the red block touching the blue block", "is the gripper closer to red"])
    width = int((tokens != 0).sum(1).max())
    with LastBlockInput(model) as tap:
        model.answer_logits_from_features(feats, actions, tokens[None, :1, :width].expand(2, -1, -1))
    expected = model.action_proj(actions) + model.step_pos[:, :6] + model.type_emb[1]
    torch.testing.assert_close(tap.action_states(6, width), expected)
    assert not model.blocks[-1]._forward_pre_hooks, "the hook is removed on exit"
    with pytest.raises(RuntimeError, match="no forward pass"):
        with LastBlockInput(model) as idle:
            pass
        idle.action_states(6, width)


def test_the_head_learns_the_dynamics_of_real_rows(saqa_file):
    """A few optimiser steps on one batch of real rows: the loss through the action tokens falls,
    and its gradient reaches the model's action projection."""
    from swm_ros.models.future_states import FutureStateHead, FutureStateTargets, LastBlockInput, future_state_loss
    from swm_ros.models.registry import build_world_model
    from swm_ros.models.train import Batcher, forward_batch
    from swm_ros.saqa.dataset import SAQADataset

    torch.manual_seed(0)
    ds = SAQADataset(saqa_file, split=["train"], preload_images=True)
    model = build_world_model("tiny", {"layers": 2, "d_model": 32, "heads": 2, "conv_channels": [8, 16, 16]})
    rows = np.flatnonzero(ds.columns["h"] >= 10)[:16]
    batch = Batcher(ds, model, future_states=FutureStateTargets(ds))(rows)
    assert batch["future_mask"].any()
    head = FutureStateHead(32, batch["future"].shape[-1])
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(40):
        with LastBlockInput(model) as tap:
            forward_batch(model, batch)
        states = tap.action_states(batch["actions"].shape[1], batch["tokens"].shape[-1])
        loss = future_state_loss(head(states), batch["future"], batch["future_mask"])
        opt.zero_grad()
        loss.backward()
        if not losses:
            assert float(model.action_proj.weight.grad.abs().sum()) > 0
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_training_with_the_dynamics_loss_logs_it_saves_its_head_and_resumes(saqa_file, tmp_path):
    from swm_ros.models.registry import load_world_model

    out = tmp_path / "run"
    cfg = _small_train_config(saqa_file, future_state_loss_weight=1.0)
    cfg_path = tmp_path / "wm.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--stop-at", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "future_state_head.safetensors").is_file()
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert [m["step"] for m in train] == [1, 2, 3, 4]
    assert all(np.isfinite(m["future_state_mse"]) and m["future_state_mse"] > 0 for m in train)
    # the answering model carries no training-only weights
    model = load_world_model(out)
    assert not any("future" in k for k in model.state_dict())

    # what the run's action tokens predict, against predicting no motion
    r = run_swm("eval", "future-states", "--run", str(out), "--data", str(saqa_file), "--split", "train",
                "--rows", "48", "--out", str(tmp_path / "probe"), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 48 and {"blocks", "hand", "gripper_opening"} <= set(summary["parts"])
    hand = summary["parts"]["hand"]
    assert hand["entries"] > 0 and hand["no_motion_mse"] > 0 and np.isfinite(hand["head_mse"])
    assert (tmp_path / "probe" / "future_states.md").is_file()
    r = run_swm("eval", "future-states", "--run", str(REPO / "swm_ros" / "models" / "weights" / "tiny"),
                "--data", str(saqa_file))
    assert r.returncode == 2 and "future_state_loss_weight" in r.stdout

    cfg_path.write_text(yaml.safe_dump({**cfg, "future_state_loss_weight": 0.0, "steps": 6}))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--resume", "--no-progress")
    assert r.returncode != 0 and "future_state_loss_weight" in r.stderr
    cfg_path.write_text(yaml.safe_dump({**cfg, "future_state_loss_weight": -1.0}))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(tmp_path / "x"), "--no-progress")
    assert r.returncode != 0 and "future_state_loss_weight" in r.stderr
