"""The learned base policy: processors, flow model, checkpoints, training CLI plumbing, and
the shipped weights on a real MuJoCo observation."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from swm_ros.config import ConfigError
from swm_ros.envs.base import TaskSpec
from swm_ros.models.checkpoint import CheckpointError
from swm_ros.policies.learned.checkpoint import load_policy_checkpoint, save_policy_checkpoint
from swm_ros.policies.learned.data import pad_chunks
from swm_ros.policies.learned.model import FlowChunkPolicy, FlowPolicyConfig
from swm_ros.policies.learned.policy import LearnedChunkPolicy, default_weights, load_policy
from swm_ros.policies.learned.processors import Normalizer, PolicyProcessor, TaskEncoder
from swm_ros.processing.image import ImageProcessorConfig

REPO = Path(__file__).resolve().parents[1]
PUSH = TaskSpec("push", ("red_block", "blue_block"), "push the red block to the blue block")
SMALL = dict(conv_channels=[8, 8, 16, 16], image_features=32, cond_dim=64, hidden=128, blocks=2, time_features=16)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def env():
    from swm_ros.envs import make_env

    return make_env(task="push", image_size=(240, 320), cameras=("overhead",))   # raw 4:3 frames, as collected


def _processor(proprio_dim: int = 14) -> PolicyProcessor:
    rng = np.random.default_rng(0)
    roi = (0.5002, 0.2858, 0.9687, 0.9104)
    return PolicyProcessor("overhead", ImageProcessorConfig(roi=roi, size=64),
                           Normalizer.fit("meanstd", rng.normal(size=(50, proprio_dim))),
                           Normalizer("minmax", [-1.0] * 5, [1.0] * 5))


def test_processors_normalise_and_invert_exactly() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(3.0, 2.0, size=(200, 6))
    data[:, 2] = 0.7                                   # a constant dimension: no division by zero
    for kind in Normalizer.KINDS:
        norm = Normalizer.fit(kind, data)
        y = norm.normalize(data)
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(norm.unnormalize(y), data, rtol=0, atol=1e-5)
        again = Normalizer.from_dict(yaml.safe_load(yaml.safe_dump(norm.to_dict())))   # as config.yaml stores it
        np.testing.assert_array_equal(again.normalize(data), y)
        if kind == "minmax":
            assert y.min() == pytest.approx(-1.0, abs=1e-6) and y.max() == pytest.approx(1.0, abs=1e-6)
        else:
            np.testing.assert_allclose(np.delete(y, 2, 1).mean(0), 0.0, atol=1e-5)
            np.testing.assert_allclose(np.delete(y, 2, 1).std(0), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="expected 6 values"):
        Normalizer.fit("minmax", data).normalize(np.zeros(5))
    with pytest.raises(ValueError, match="kind"):
        Normalizer("zscore", [0.0], [1.0])

    enc = TaskEncoder()
    f = enc(PUSH)
    assert f.shape == (enc.dim,) == (13,)
    assert f[:5].tolist() == [0, 1, 0, 0, 0]                              # push
    assert f[5:8].tolist() == pytest.approx(enc.colors["red"]) and f[8:11].tolist() == pytest.approx(enc.colors["blue"])
    assert f[11:].tolist() == [1, 1]
    reach = enc(TaskSpec("reach", ("green_block",), "reach the green block"))
    assert reach[8:11].tolist() == [0, 0, 0] and reach[11:].tolist() == [1, 0]
    with pytest.raises(ValueError, match="colour 'magenta' unknown"):
        enc(TaskSpec("push", ("magenta_block", "red_block"), ""))
    with pytest.raises(ValueError, match="task 'wipe' unknown"):
        enc(TaskSpec("wipe", ("red_block",), ""))
    p = _processor()
    assert PolicyProcessor.from_dict(p.to_dict()).to_dict() == p.to_dict()


def test_chunks_are_padded_by_holding() -> None:
    actions = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    chunks = pad_chunks(actions, 4)
    assert chunks.shape == (3, 4, 5)
    np.testing.assert_array_equal(chunks[0, :3], actions)
    np.testing.assert_array_equal(chunks[2, 0], actions[2])
    np.testing.assert_array_equal(chunks[2, 1:, :4], 0.0)                 # no motion past the end
    np.testing.assert_array_equal(chunks[2, 1:, 4], actions[-1, 4])       # the gripper command holds


def test_model_overfits_a_handful_of_chunks() -> None:
    torch.manual_seed(0)
    cfg = FlowPolicyConfig(**SMALL)
    model = FlowChunkPolicy(cfg)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8, generator=g)
    proprio, task = torch.randn(4, 14, generator=g), torch.randn(4, 13, generator=g)
    targets = torch.rand(4, 16, 5, generator=g) * 1.6 - 0.8                # four different chunks
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(150):
        loss = model.loss(model.condition(images, proprio, task), targets, generator=g, samples_per_cond=8)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = np.mean(losses[:10]), np.mean(losses[-20:])
    print(f"flow loss {first:.3f} -> {last:.4f}")
    assert last < first / 4, (first, last)
    model.eval()
    samples = model.sample(model.condition(images, proprio, task), 8, generator=g)    # (4, 8, 16, 5)
    err = (samples.mean(1) - targets).abs().mean(dim=(1, 2))
    assert torch.all(err < 0.12), err                                      # each condition gives its own chunk
    other = (samples.mean(1)[:, None] - targets[None]).abs().mean(dim=(2, 3))
    assert torch.all(other.argmin(1) == torch.arange(4))


def test_propose_shapes_diversity_and_checkpoint_round_trip(env, tmp_path) -> None:
    torch.manual_seed(0)
    model = FlowChunkPolicy(FlowPolicyConfig(**SMALL))
    policy = LearnedChunkPolicy(model, _processor(), seed=3)
    obs = env.reset(seed=5, task="push")
    assert obs.images["overhead"].shape == (240, 320, 3)
    with pytest.raises(RuntimeError, match="reset"):
        policy.propose(obs, 2)
    policy.reset(PUSH, seed=7)
    chunks = policy.propose(dataclasses.replace(obs, state=None), 6)       # no privileged state needed
    assert chunks.shape == (6, 16, 5) and chunks.dtype == np.float32
    assert np.all(np.isfinite(chunks)) and np.all(np.abs(chunks) <= 1.0)
    assert min(np.abs(chunks[i] - chunks[j]).mean() for i in range(6) for j in range(i)) > 1e-3   # distinct samples

    save_policy_checkpoint(model, policy.processor, tmp_path / "ckpt", training={"step": 0})
    loaded = load_policy(tmp_path / "ckpt", seed=3)
    for p in (policy, loaded):
        p.reset(PUSH, seed=11)
    np.testing.assert_array_equal(policy.propose(obs, 4), loaded.propose(obs, 4))
    loaded.reset(PUSH, seed=12)
    policy.reset(PUSH, seed=11)
    assert not np.array_equal(policy.propose(obs, 4), loaded.propose(obs, 4))

    short = load_policy(tmp_path / "ckpt", chunk_length=6)
    short.reset(PUSH, seed=0)
    assert short.propose(obs, 2).shape == (2, 6, 5)
    with pytest.raises(ValueError, match="1..16"):
        load_policy(tmp_path / "ckpt", chunk_length=20)
    with pytest.raises(ValueError, match="no 'overhead' image"):
        policy.propose(dataclasses.replace(obs, images={"head": obs.images["overhead"]}), 1)
    with pytest.raises(ValueError, match="proprio has 3 values"):
        policy.propose(dataclasses.replace(obs, proprio=np.zeros(3)), 1)


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path) -> None:
    from swm_ros.policies.scripted import make_policy

    with pytest.raises(FileNotFoundError, match=r"swm train policy --config config/train/policy_flow.yaml"):
        load_policy(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make_policy("learned", checkpoint=str(tmp_path / "nowhere"))

    ckpt = save_policy_checkpoint(FlowChunkPolicy(FlowPolicyConfig(**SMALL)), _processor(), tmp_path / "c")
    good_weights = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(good_weights[:200])
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        load_policy_checkpoint(ckpt)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_policy_checkpoint(ckpt)
    (ckpt / "model.safetensors").write_bytes(good_weights)

    cfg = yaml.safe_load((ckpt / "config.yaml").read_text())
    bigger = dict(cfg, model=dict(cfg["model"], hidden=2 * cfg["model"]["hidden"]))
    (ckpt / "config.yaml").write_text(yaml.safe_dump(bigger))
    with pytest.raises(CheckpointError, match="do not match|size mismatch"):
        load_policy_checkpoint(ckpt)
    (ckpt / "config.yaml").write_text(yaml.safe_dump(dict(cfg, model=dict(cfg["model"], hiden=64))))
    with pytest.raises(CheckpointError, match="unknown key"):
        load_policy_checkpoint(ckpt)
    (ckpt / "config.yaml").write_text(yaml.safe_dump(dict(cfg, format="swm_ros.world_model")))
    with pytest.raises(CheckpointError, match="not a policy checkpoint"):
        load_policy_checkpoint(ckpt)
    (ckpt / "config.yaml").write_text("model: [unclosed")
    with pytest.raises(CheckpointError, match="not valid YAML"):
        load_policy_checkpoint(ckpt)


def test_training_samples_carry_the_task_blocks_positions(tmp_path) -> None:
    """The auxiliary loss's targets: each frame's world position of every block the task
    names, in role order, from the episode's privileged state; absent roles masked."""
    from swm_ros.data.collect import CollectConfig, collect
    from swm_ros.data.episodes import EpisodeReader
    from swm_ros.policies.learned.data import PolicyDataConfig, load_samples, select_episodes
    from swm_ros.policies.learned.processors import TaskEncoder

    data = tmp_path / "demos"
    collect(CollectConfig(out=str(data), episodes=2, tasks=("push", "reach"), policies={"scripted": 1.0},
                          max_steps=12, fractions=(1.0, 0.0, 0.0)), progress=False)
    cfg = PolicyDataConfig(path=str(data), tasks=["push", "reach"], episodes_per_task={"scripted": 1})
    entries = select_episodes(cfg, "train", cfg.episodes_per_task)
    samples = load_samples(cfg, entries, 16, TaskEncoder(), progress=False)
    start = 0
    for e in entries:
        with EpisodeReader(data / e["file"]) as ep:
            n, names, states = ep.num_actions, ep.meta.task_objects, ep.states
            for r, name in enumerate(names):
                np.testing.assert_allclose(samples.role_positions[start:start + n, r],
                                           states.object_position[:n, states.object_names.index(name)], atol=1e-6)
            assert samples.role_mask[start:start + n].sum(1).tolist() == [len(names)] * n
        start += n
    assert start == len(samples) and not samples.role_positions[~samples.role_mask].any()


def test_train_cli_trains_resumes_stops_on_a_signal_and_rejects_unknown_keys(tmp_path) -> None:
    from swm_ros.data.collect import CollectConfig, collect
    from swm_ros.policies.learned.train import load_train_config, train_policy

    data = tmp_path / "demos"
    collect(CollectConfig(out=str(data), episodes=4, tasks=("push",), policies={"scripted": 1.0, "noisy": 1.0},
                          max_steps=20, fractions=(1.0, 0.0, 0.0)), progress=False)
    cfg = yaml.safe_load((REPO / "config" / "train" / "policy_flow.yaml").read_text())
    cfg["data"].update(path=str(data), tasks=["push"], episodes_per_task={"scripted": 1, "noisy": 1},
                       val_episodes_per_task=0)
    cfg["model"].update(SMALL)
    cfg.update(steps=6, batch_size=4, samples_per_cond=2, warmup_steps=2, log_every=2, checkpoint_every=3)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    tc = load_train_config(tmp_path / "cfg.yaml")
    out = tmp_path / "run"
    first = train_policy(tc, out, progress=False, stop_at=3)
    assert first["step"] == 3 and first["episodes"] == 2
    summary = train_policy(tc, out, resume=True, progress=False)
    assert summary["step"] == 6
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(np.isfinite(r["position_loss"]) and r["position_loss"] > 0 for r in rows)   # the auxiliary loss ran
    assert (out / "loss.png").stat().st_size > 1000
    policy = load_policy(out)
    assert policy.processor.image.config.roi is not None      # the episodes' crop travels with the weights
    assert policy.training["step"] == 6

    # SIGTERM mid-run (sent once the loop has logged, so the handler is in): a checkpoint at the
    # step in progress, not at the last periodic one, which --resume continues
    endless = dataclasses.replace(tc, steps=1_000_000, checkpoint_every=1_000_000)
    stopped = tmp_path / "stopped"

    def signal_once_logging() -> None:
        while not ((stopped / "metrics.jsonl").is_file() and (stopped / "metrics.jsonl").read_text()):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_once_logging, daemon=True).start()
    summary = train_policy(endless, stopped, progress=False)
    assert 2 <= summary["step"] < 1_000_000
    assert load_policy(stopped).training["step"] == summary["step"]
    again = train_policy(endless, stopped, resume=True, progress=False, stop_at=summary["step"] + 1)
    assert again["step"] == summary["step"] + 1

    bad = dict(cfg, learning_rate=0.1)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(tmp_path / "bad.yaml")
    headless = dict(cfg, model=dict(cfg["model"], position_roles=0))          # aux loss without its head
    (tmp_path / "headless.yaml").write_text(yaml.safe_dump(headless))
    with pytest.raises(ConfigError, match="position_roles"):
        load_train_config(tmp_path / "headless.yaml")
    never = dict(cfg, data=dict(cfg["data"], episodes_per_task={"scripted": 5}))
    (tmp_path / "never.yaml").write_text(yaml.safe_dump(never))
    with pytest.raises(ValueError, match=r"only 2 scripted push episodes in split 'train'.*5 asked for"):
        train_policy(load_train_config(tmp_path / "never.yaml"), tmp_path / "x", progress=False)


def test_shipped_policy_loads_and_proposes_on_a_real_observation(env) -> None:
    from swm_ros.policies.scripted import make_policy

    path = default_weights()
    size = sum(f.stat().st_size for f in path.glob("*")) if path.is_dir() else 0
    assert path.is_dir() and 0 < size <= 20 * 2**20, f"shipped weights missing or too large at {path} ({size} B)"
    policy = make_policy("learned", seed=0)
    assert policy.chunk_length == 16 and (path / "MODEL_CARD.md").is_file()
    obs = env.reset(seed=21, task="push")
    policy.reset(env.task, seed=0)
    chunks = policy.propose(dataclasses.replace(obs, state=None), 8)
    assert chunks.shape == (8, 16, 5) and np.all(np.isfinite(chunks)) and np.all(np.abs(chunks) <= 1.0)
    assert np.abs(chunks - chunks.mean(0)).max() > 1e-3
