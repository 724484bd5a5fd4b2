"""Training the tiny world model on real (tiny) SAQA data from `swm collect` + `swm saqa`."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from swm_ros.config import ConfigError

from swm_cli import run_swm, start_swm

REPO = Path(__file__).resolve().parents[1]


def _train_config(saqa: Path, **over) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "train" / "world_model_tiny.yaml").read_text())
    cfg["data"].update(path=str(saqa), val_splits=["test"], val_rows=128)
    cfg.update(steps=12, batch_size=8, warmup_steps=3, eval_every=6, log_every=3, checkpoint_every=6)
    cfg["model"].update(d_model=32, layers=1, heads=2, conv_channels=[8, 16, 16])     # small: CLI plumbing only
    cfg.update(over)
    return cfg


def test_tiny_overfits_64_real_samples(saqa_file):
    from swm_ros.models.registry import build_world_model
    from swm_ros.models.train import Batcher, forward_batch
    from swm_ros.saqa.dataset import SAQADataset

    torch.set_num_threads(2)
    torch.manual_seed(0)
    ds = SAQADataset(saqa_file, split="train", preload_images=True)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ds), size=64, replace=False, p=ds.sample_weights())   # a mix of families
    model = build_world_model("tiny", {})
    batch = Batcher(ds, model)(idx)
    assert 0.2 < batch["answer"].float().mean() < 0.8 and len(set(batch["family"].tolist())) >= 4
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    t0, acc, step = time.perf_counter(), 0.0, 0
    for step in range(1, 301):
        logits = forward_batch(model, batch)
        loss = F.cross_entropy(logits, batch["answer"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0:
            with torch.no_grad():
                model.eval()
                acc = float((forward_batch(model, batch).argmax(-1) == batch["answer"]).float().mean())
                model.train()
            if acc == 1.0:
                break
    print(f"overfit: {step} steps, {time.perf_counter() - t0:.1f} s, final loss {float(loss.detach()):.4f}")
    assert acc == 1.0, f"training accuracy {acc} after {step} steps"


def test_cli_train_writes_checkpoint_curves_metrics_and_resumes(saqa_file, tmp_path):
    from swm_ros.models.registry import load_world_model

    out = tmp_path / "run"
    cfg_path = tmp_path / "wm.yaml"
    cfg_path.write_text(yaml.safe_dump(_train_config(saqa_file, steps=12)))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--stop-at", "6", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("model.safetensors", "config.yaml", "optimizer.safetensors", "metrics.jsonl", "curves.png",
                 "train_config.yaml"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["split"] == "train"] == [3, 6]
    val = [m for m in metrics if m["split"] == "val"]
    assert [m["step"] for m in val] == [6] and 0.0 <= val[0]["accuracy"] <= 1.0 and val[0]["rows"] == 128
    model = load_world_model(out)
    assert model.training_summary["step"] == 6 and model.training_summary["val"]["rows"] == 128
    w6 = {k: v.clone() for k, v in model.state_dict().items()}

    # resume to 12 steps: continues at the saved step with the same schedule
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["split"] == "train"] == [3, 6, 9, 12]
    resumed = load_world_model(out)
    assert resumed.training_summary["step"] == 12
    assert any(not torch.equal(w6[k], v) for k, v in resumed.state_dict().items())

    # the same 12 steps in one go give the same weights (same batches, same schedule, restored optimizer)
    straight = tmp_path / "straight"
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(straight), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    ref = load_world_model(straight).state_dict()
    for k, v in resumed.state_dict().items():
        assert torch.allclose(v, ref[k], atol=1e-5), k


def test_sigint_ends_a_run_between_steps_with_a_checkpoint_that_resumes(saqa_file, tmp_path):
    """Ctrl-C on a long run: the step in progress finishes, weights and optimizer state are saved
    at that step (not at the last periodic checkpoint), the process exits 0, --resume continues."""
    from safetensors import safe_open

    from swm_ros.models.registry import load_world_model

    out = tmp_path / "run"
    cfg_path = tmp_path / "wm.yaml"
    cfg_path.write_text(yaml.safe_dump(_train_config(saqa_file, steps=100_000, checkpoint_every=100_000,
                                                     eval_every=100_000, log_every=1)))
    proc = start_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--no-progress")
    try:
        deadline = time.monotonic() + 120
        while not ((out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "SIGINT: stopping after this step" in err
    step = load_world_model(out).training_summary["step"]
    assert 3 <= step < 100_000
    with safe_open(str(out / "optimizer.safetensors"), "pt") as f:      # the step the optimizer state is from
        meta = json.loads(f.metadata()["metadata"])
    assert int(meta["step"]) == step
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--resume",
                "--stop-at", str(step + 2), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_world_model(out).training_summary["step"] == step + 2


def test_stop_request_first_signal_asks_second_aborts():
    from swm_ros.models.stop_request import StopRequest

    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop and stop.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt, match="SIGTERM again"):
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_resume_without_checkpoint_fails(saqa_file, tmp_path):
    from swm_ros.models.train import WorldModelTrainConfig, train_world_model
    from swm_ros.config import load_config

    cfg = load_config(WorldModelTrainConfig, _train_config(saqa_file))
    with pytest.raises(FileNotFoundError, match="optimizer.safetensors"):
        train_world_model(cfg, tmp_path / "empty", resume=True, progress=False)


def test_unknown_config_keys_fail(tmp_path):
    from swm_ros.models.train import load_train_config

    base = _train_config(Path("unused.h5"))
    for bad in ({**base, "learning_rate": 0.1}, {**base, "data": {**base["data"], "pth": "x"}},
                {**base, "model": {**base["model"], "d_modle": 64}}, {**base, "backend": "giant"}):
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(bad))
        with pytest.raises((ConfigError, ValueError)) as e:
            load_train_config(p)
        if bad.get("backend") != "giant":
            assert isinstance(e.value, ConfigError) and "unknown key" in str(e.value)
    r = run_swm("train", "world-model", "--config", str(p))
    assert r.returncode != 0


def test_mixed_source_fills_its_share_of_every_batch(saqa_file, tmp_path):
    """A `data.mix` file (here the test split, standing in for on-policy rows) gives a fixed
    share of each training batch; the metrics report each source's rows and accuracy."""
    from swm_ros.config import load_config
    from swm_ros.models.train import WorldModelTrainConfig, train_world_model

    raw = _train_config(saqa_file, steps=6, log_every=3, eval_every=6, checkpoint_every=6)
    raw["data"]["mix"] = [{"path": str(saqa_file), "fraction": 0.25, "train_splits": ["test"]}]
    summary = train_world_model(load_config(WorldModelTrainConfig, raw), tmp_path / "run", progress=False)
    main, mixed = f"{saqa_file} (train)", f"{saqa_file} (test)"
    assert [(m["source"], m["per_batch"]) for m in summary["mix"]] == [(main, 6), (mixed, 2)]
    train = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["split"] == "train"]
    assert [m["step"] for m in train] == [3, 6]
    for m in train:
        assert {k: v["rows"] for k, v in m["by_source"].items()} == {main: 18, mixed: 6}
        assert all(0.0 <= v["accuracy"] <= 1.0 for v in m["by_source"].values())
        both = sum(v["accuracy"] * v["rows"] for v in m["by_source"].values()) / 24
        assert both == pytest.approx(m["accuracy"])

    for fractions in ([0.6, 0.4], [0.0], [1.5]):
        bad = {**raw, "data": {**raw["data"], "mix": [{"path": str(saqa_file), "fraction": f} for f in fractions]}}
        with pytest.raises(ConfigError, match="fraction"):
            load_config(WorldModelTrainConfig, bad)


def test_a_mixed_source_can_draw_its_rows_uniformly(saqa_file):
    """`balanced: false` on a mix entry: its rows drawn alike, not its (family, answer) strata."""
    from swm_ros.config import load_config
    from swm_ros.models.registry import build_world_model
    from swm_ros.models.train import WorldModelTrainConfig, _train_source

    raw = _train_config(saqa_file, aux_loss_weight=0.0)
    raw["data"]["mix"] = [{"path": str(saqa_file), "fraction": 0.25, "balanced": False}]
    cfg = load_config(WorldModelTrainConfig, raw)
    assert cfg.data.mix[0].balanced is False
    model = build_world_model("tiny", {})
    strata = _train_source(str(saqa_file), ["train"], 8, model, cfg, {})
    rows = _train_source(str(saqa_file), ["train"], 8, model, cfg, {}, balanced=cfg.data.mix[0].balanced)
    np.testing.assert_allclose(rows.weights, 1.0 / len(rows.weights))
    assert not np.allclose(strata.weights, rows.weights)


def test_proprio_model_trains_with_the_data_statistics_and_evaluates(saqa_file, tmp_path):
    """`proprio_dim`: each row's /proprio at its frame reaches the model, standardised with the
    training rows' statistics, which the checkpoint keeps; evaluation feeds it too."""
    from swm_ros.config import load_config
    from swm_ros.evaluation.world_model_eval import evaluate_world_model
    from swm_ros.models.registry import load_world_model
    from swm_ros.models.train import WorldModelTrainConfig, train_world_model
    from swm_ros.saqa.dataset import SAQADataset

    raw = _train_config(saqa_file, steps=6, log_every=3, eval_every=6, checkpoint_every=6)
    raw["model"]["proprio_dim"] = 14
    train_world_model(load_config(WorldModelTrainConfig, raw), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="proprioception"):      # e.g. a node that passes images and actions only
        load_world_model(tmp_path / "run")
    model = load_world_model(tmp_path / "run", proprio=True)
    ds = SAQADataset(saqa_file, split="train")
    rows = np.stack([ds.proprio(int(e), int(t)) for e, t in zip(ds.columns["episode"], ds.columns["t"])])
    assert np.allclose(model.proprio.mean.numpy(), rows.mean(0), atol=0.05)
    assert model.proprio.proj.weight.abs().sum() > 0                  # trained away from its zero start
    result = evaluate_world_model(model, saqa_file, split="test", progress=False)
    assert result["rows"] > 0 and 0.0 <= result["accuracy"] <= 1.0
    raw["model"]["proprio_dim"] = 13                                  # not the data's length
    with pytest.raises(ValueError, match="proprio"):
        train_world_model(load_config(WorldModelTrainConfig, raw), tmp_path / "bad", progress=False)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "config" / "train").glob("world_model_*.yaml")))
def test_shipped_train_config_loads(name):
    from swm_ros.models.train import load_train_config
    from swm_ros.models.training_steps import lr_at

    cfg = load_train_config(REPO / "config" / "train" / f"{name}.yaml")
    assert cfg.backend in ("tiny", "effnet") and cfg.steps > cfg.warmup_steps
    lrs = [lr_at(s, cfg) for s in range(cfg.steps)]
    assert lrs[0] < lrs[cfg.warmup_steps - 1] == pytest.approx(cfg.lr)
    assert lrs[-1] == pytest.approx(cfg.lr * cfg.min_lr_ratio, rel=1e-2)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[cfg.warmup_steps:], lrs[cfg.warmup_steps + 1:]))


def test_checkpoint_carries_the_data_processor_and_eval_reports(saqa_file, tmp_path):
    """The crop + resize the frames were stored with goes into the checkpoint, and
    `swm eval world-model` scores the checkpoint on the test split with every report part."""
    from swm_ros.data.episodes import EpisodeReader
    from swm_ros.models.registry import load_world_model
    from swm_ros.robots.profile import load_robot_profile

    out = tmp_path / "run"
    cfg_path = tmp_path / "wm.yaml"
    cfg_path.write_text(yaml.safe_dump(_train_config(saqa_file, steps=6)))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    model = load_world_model(out)
    episode = next((saqa_file.parent / "episodes").glob("*.h5"))
    with EpisodeReader(episode) as ep:
        stored = ep.image_processing("overhead")
        assert ep.images("overhead").shape[1:] == (64, 64, 3)
    roi = load_robot_profile("nicol").cameras["overhead"].roi
    assert stored == {"roi": list(roi), "size": 64}
    assert model.image_processor is not None and model.image_processor.config.to_dict() == stored

    report = tmp_path / "eval"
    r = run_swm("eval", "world-model", "--checkpoint", str(out), "--data", str(saqa_file), "--split", "test",
             "--out", str(report), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0.0 <= result["accuracy"] <= 1.0 and result["rows"] > 0
    assert sum(v["rows"] for v in result["by_family"].values()) == result["rows"]
    assert sum(v["rows"] for v in result["by_horizon"].values()) == result["rows"]
    for family, by_h in result["by_family_horizon"].items():     # the cross table adds up to each family's
        fam = result["by_family"][family]
        assert sum(v["rows"] for v in by_h.values()) == fam["rows"]
        assert sum(v["accuracy"] * v["rows"] for v in by_h.values()) == pytest.approx(fam["accuracy"] * fam["rows"])
    assert sum(b["rows"] for b in result["reliability"]) == result["rows"] and 0.0 <= result["ece"] <= 1.0
    for suffix in (".json", ".md", ".png"):
        assert (report / f"world_model_eval_test{suffix}").is_file()
    assert "share of errors" in (report / "world_model_eval_test.md").read_text()

    missing = run_swm("eval", "world-model", "--checkpoint", str(tmp_path / "nope"), "--data", str(saqa_file))
    assert missing.returncode == 2 and "not found" in missing.stdout


def test_calibration_error_on_hand_made_predictions():
    from swm_ros.evaluation.world_model_eval import calibration

    y = np.array([1, 0] * 50)
    assert calibration(np.full(100, 0.5), y)["ece"] == pytest.approx(0.0)          # 50 % said, 50 % true
    # always 0.9 for "yes" while half are "no": |0.9 - 0.5| = 0.4
    assert calibration(np.full(100, 0.9), y)["ece"] == pytest.approx(0.4)
    perfect = calibration(y.astype(float), y)
    assert perfect["ece"] == pytest.approx(0.0) and perfect["brier"] == pytest.approx(0.0)


def test_block_targets_pick_the_one_block_of_each_colour_inside_the_frame():
    from swm_ros.models.localisation import block_targets

    uv = np.array([[0.2, 0.3], [0.7, 0.1], [1.4, 0.5], [0.5, 0.5]])
    tgt, mask = block_targets(["red", "blue", "green", "pink"], ["red", "blue", "green", "pink"], uv,
                              kinds=["block", "block", "block", "distractor"])
    assert mask.tolist() == [True, True, False, False]        # green is outside, pink is not a block
    np.testing.assert_allclose(tgt[:2], uv[:2])


def test_localisation_loss_trains_the_word_grounding(saqa_file, tmp_path):
    """aux_loss_weight > 0: block positions from the privileged state supervise where the
    colour words are grounded; the run logs the localisation error, the checkpoint keeps it."""
    from swm_ros.models.registry import load_world_model

    cfg = _train_config(saqa_file, steps=6, aux_loss_weight=1.0)
    cfg["model"].update(grounding=True, grounding_entities=["gripper", "hand"])
    cfg_path = tmp_path / "wm.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(tmp_path / "run"), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    train = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["split"] == "train"]
    assert all(0.0 <= m["localisation_mse"] < 2.0 for m in train)
    model = load_world_model(tmp_path / "run")
    uv = model.locate(model.encode_image(np.zeros((2, 64, 64, 3), np.uint8)), ["red", "purple", "gripper"])
    assert uv.shape == (2, 3, 2) and bool(((uv >= 0) & (uv <= 1)).all())

    cfg["model"]["grounding"] = False                     # nothing to supervise
    cfg_path.write_text(yaml.safe_dump(cfg))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(tmp_path / "bad"), "--no-progress")
    assert r.returncode != 0 and "grounding" in r.stderr


def test_block_targets_point_entity_words_at_the_effector(saqa_file):
    """Colour columns come from the blocks, one column per entity word ("gripper", "hand")
    from the effector; an effector outside the frame is masked out."""
    from swm_ros.models.train import BlockTargets
    from swm_ros.saqa.dataset import SAQADataset

    ds = SAQADataset(saqa_file, split=["train"])
    # the projector's geometry is tested with the camera; here the columns' assembly is:
    # a top-down map of world x, y (effector at x > 10 m would leave the frame)
    def projector(points):
        return np.asarray(points)[..., :2] * 0.1 + 0.5

    targets = BlockTargets(ds, projector, ["gripper", "hand"])
    e, t = int(ds.columns["episode"][0]), int(ds.columns["t"][0])
    uv, mask = targets(np.array([e]), np.array([t]))
    n = len(ds.colors)
    assert uv.shape == (1, n + 2, 2) and targets.names == list(ds.colors) + ["gripper", "hand"]
    effector = ds.states(e).effector_position[t]
    np.testing.assert_allclose(uv[0, n], effector[:2] * 0.1 + 0.5, atol=1e-6)
    np.testing.assert_allclose(uv[0, n + 1], uv[0, n])
    assert mask[0, n:].all()

    far = BlockTargets(ds, lambda p: np.asarray(p)[..., :2] * 0.1 + 5.0, ["gripper"])
    assert not far(np.array([e]), np.array([t]))[1][0, n:].any()


def _assert_same_answers(a, b, atol: float) -> None:
    """Two models give the same logits on random frames and chunks, for questions of known words."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (3, 12, 5)).astype(np.float32)
    questions = ["is the red block touching the blue block?", "has the gripper moved left?"]
    torch.testing.assert_close(a.answer_logits(images, actions, questions), b.answer_logits(images, actions, questions),
                               atol=atol, rtol=0)


def test_init_from_starts_a_new_run_from_trained_weights(saqa_file, tmp_path):
    """init_from loads a checkpoint's weights (the first run here) into a new run with its own
    schedule; a checkpoint whose weights do not fit the model is refused by name."""
    from swm_ros.models.registry import load_world_model

    first = tmp_path / "first"
    cfg = _train_config(saqa_file, steps=3, eval_every=3, log_every=3, checkpoint_every=3)
    cfg["model"]["grounding_entities"] = ["gripper", "hand"]              # hand paths start from the gripper
    cfg_path = tmp_path / "wm.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(first), "--no-progress").returncode == 0

    second = tmp_path / "second"
    cfg_path.write_text(yaml.safe_dump({**cfg, "lr": 0.0, "init_from": str(first)}))     # lr 0: weights kept
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(second), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_world_model(first).state_dict(), load_world_model(second).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # a model with zero-initialised extra parts (action sums, hand paths) may start from one
    # without them, and answers as it did
    sums = tmp_path / "sums"
    cfg_path.write_text(yaml.safe_dump({**cfg, "lr": 0.0, "init_from": str(first),
                                        "model": {**cfg["model"], "action_sums": True, "hand_paths": True}}))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(sums), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    c = load_world_model(sums).state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert all(not v.any() for k, v in c.items() if k.startswith(("action_sums.", "hand_paths.mlp.2")))
    _assert_same_answers(load_world_model(sums).eval(), load_world_model(first).eval(), atol=1e-6)

    # ensemble members: one config, the seed from the command line; another seed, another member
    cfg_path.write_text(yaml.safe_dump({**cfg, "init_from": str(first)}))
    for seed in (5, 6):
        r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(tmp_path / f"seed{seed}"),
                    "--seed", str(seed), "--no-progress")
        assert r.returncode == 0, r.stderr[-3000:]
        assert yaml.safe_load((tmp_path / f"seed{seed}" / "train_config.yaml").read_text())["seed"] == seed
    s5, s6 = (load_world_model(tmp_path / f"seed{seed}").state_dict() for seed in (5, 6))
    assert any(not torch.equal(s5[k], s6[k]) for k in s5)

    # a deeper model may start from a shallower one: its extra blocks begin as identities, so it
    # answers exactly as the checkpoint did
    deeper = tmp_path / "deeper"
    layers = cfg["model"]["layers"]
    cfg_path.write_text(yaml.safe_dump({**cfg, "lr": 0.0, "init_from": str(first),
                                        "model": {**cfg["model"], "layers": layers + 2}}))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(deeper), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    shallow, deep = load_world_model(first).eval(), load_world_model(deeper).eval()
    assert len(deep.blocks) == layers + 2
    d = deep.state_dict()
    assert all(torch.equal(a[k], d[k]) for k in a)
    assert not d[f"blocks.{layers}.qkv.weight"].eq(0).all(), "a grown block's own weights are initialised"
    _assert_same_answers(deep, shallow, atol=1e-5)

    wider = {**cfg, "init_from": str(first), "model": {**cfg["model"], "d_model": 48, "heads": 2}}
    cfg_path.write_text(yaml.safe_dump(wider))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(tmp_path / "bad"), "--no-progress")
    assert r.returncode != 0 and "do not fit" in r.stderr and str(first) in r.stderr


def test_init_from_grows_the_vocabulary_by_new_words(saqa_file, tmp_path):
    """A model whose vocabulary adds words (a new question family) starts from a checkpoint
    without them: known words keep their rows, so known questions get the same answers; a
    checkpoint with a word the model lacks is refused."""
    from safetensors.torch import load_file, save_file

    from swm_ros.models.checkpoint import read_checkpoint_config
    from swm_ros.models.registry import load_world_model

    first = tmp_path / "first"
    cfg = _train_config(saqa_file, steps=3, eval_every=3, log_every=3, checkpoint_every=3)
    cfg_path = tmp_path / "wm.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(first), "--no-progress").returncode == 0

    # the same checkpoint as it would be without the words "nearer" and "somewhere"
    config, tensors = read_checkpoint_config(first), load_file(str(first / "model.safetensors"))
    vocab = config["vocabulary"]
    keep = [i for i, w in enumerate(vocab) if w not in ("nearer", "somewhere")]
    assert len(keep) == len(vocab) - 2
    smaller = tmp_path / "smaller"
    smaller.mkdir()
    save_file({**tensors, "word_emb.weight": tensors["word_emb.weight"][keep], "lm_bias": tensors["lm_bias"][keep]},
              str(smaller / "model.safetensors"))
    (smaller / "config.yaml").write_text(yaml.safe_dump({**config, "vocabulary": [vocab[i] for i in keep]}))

    grown = tmp_path / "grown"
    cfg_path.write_text(yaml.safe_dump({**cfg, "lr": 0.0, "init_from": str(smaller)}))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(grown), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    old, new = load_world_model(smaller).eval(), load_world_model(grown).eval()
    assert new.vocabulary == vocab and len(old.vocabulary) == len(vocab) - 2
    w_old, w_new = old.state_dict(), new.state_dict()
    assert all(torch.equal(w_old[k], w_new[k]) for k in w_old if k not in ("word_emb.weight", "lm_bias"))
    for word in old.vocabulary:
        assert torch.equal(w_new["word_emb.weight"][new.tokenizer.ids[word]], w_old["word_emb.weight"][old.tokenizer.ids[word]])
    assert w_new["word_emb.weight"][new.tokenizer.ids["nearer"]].abs().sum() > 0, "a new word gets a fresh init"
    _assert_same_answers(new, old, atol=1e-6)

    # a checkpoint that knows a word the model does not: refused, by name
    (smaller / "config.yaml").write_text(yaml.safe_dump({**config, "vocabulary": [*vocab[:-1], "zebra"]}))
    save_file(tensors, str(smaller / "model.safetensors"))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(tmp_path / "bad"), "--no-progress")
    assert r.returncode != 0 and "lacks ['zebra']" in r.stderr


def test_weight_average_is_saved_validated_and_resumed(saqa_file, tmp_path):
    """With ema_decay d, model.safetensors holds d * (weights after step 1) + (1 - d) * (after
    step 2), the trained weights go to train_weights.safetensors, and --resume continues both."""
    from safetensors.torch import load_file

    out, d = tmp_path / "run", 0.75
    cfg_path = tmp_path / "wm.yaml"
    cfg = {**_train_config(saqa_file, steps=2, eval_every=1, log_every=1, checkpoint_every=1), "ema_decay": d}
    cfg_path.write_text(yaml.safe_dump(cfg))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--stop-at", "1", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    w1 = load_file(str(out / "train_weights.safetensors"))
    assert all(torch.equal(v, w1[k]) for k, v in load_file(str(out / "model.safetensors")).items()), \
        "the average starts at the first step's weights"

    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    w2, averaged = load_file(str(out / "train_weights.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)
    for k, v in averaged.items():
        torch.testing.assert_close(v, d * w1[k] + (1 - d) * w2[k], atol=1e-6, rtol=0)
    val = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert [m["step"] for m in val] == [1, 2] and all(0.0 <= m["accuracy_trained"] <= 1.0 for m in val)

    # a run started without the average cannot be resumed with it (nor the other way round)
    cfg_path.write_text(yaml.safe_dump({**cfg, "ema_decay": None, "steps": 3}))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(out), "--resume", "--no-progress")
    assert r.returncode != 0 and "ema_decay" in r.stderr
    cfg_path.write_text(yaml.safe_dump({**cfg, "ema_decay": 1.0}))
    r = run_swm("train", "world-model", "--config", str(cfg_path), "--out", str(tmp_path / "x"), "--no-progress")
    assert r.returncode != 0 and "ema_decay" in r.stderr
