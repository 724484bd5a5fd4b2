"""The `effnet` and `paligemma` world-model backends: real SAQA data, real training, checkpoints.

The SAQA rows come from real simulated episodes (`swm collect` + `swm saqa`). No real
PaliGemma-3B is loaded: PaliGemma runs as a tiny random config, and its "pretrained" path
is exercised with a tiny model + word-level tokenizer written to disk with `save_pretrained`.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from swm_ros.envs.base import ACTION_DIM
from swm_ros.models.checkpoint import load_checkpoint, save_checkpoint
from swm_ros.models.registry import build_world_model, load_world_model
from swm_ros.saqa.families import question_text

from swm_cli import run_swm

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [question_text("touching", 0, "red block", "green block"), question_text("gripper_closer", 2, "blue block")]
# small but real: effnet at 64x64 on the stride-16 map (4x4 tokens), a 2-layer transformer on top
EFFNET_SMALL = {"image_size": 64, "feature": "stride16", "d_model": 64, "layers": 2, "heads": 2}

# one thread: on this shared, oversubscribed 2-core machine two OpenMP threads wait on each other and
# small matmuls ran ~6x slower than with one (measured); results do not depend on it
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)         # also after a test whose code set its own (the training loop does)
    yield


def _batch_of_64(saqa_file: Path, model) -> dict[str, torch.Tensor]:
    from swm_ros.models.train import Batcher
    from swm_ros.saqa.dataset import SAQADataset

    ds = SAQADataset(saqa_file, split="train", preload_images=True)
    idx = np.random.default_rng(0).choice(len(ds), size=64, replace=False, p=ds.sample_weights())
    batch = Batcher(ds, model)(idx)
    ds.close()
    assert 0.2 < batch["answer"].float().mean() < 0.8 and len(set(batch["family"].tolist())) >= 4
    return batch


def _overfit(model, batch, logits_fn, lr: float, max_steps: int) -> tuple[float, int]:
    """Adam steps until every row is right. Accuracy is read from each step's own forward pass
    (the weights before that step's update): both models have no dropout, so train-mode logits
    are the eval-mode ones, and this CPU is too busy for a second forward pass per step."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    acc, step = 0.0, 0
    model.train()
    for step in range(1, max_steps + 1):
        logits = logits_fn()
        acc = float((logits.argmax(-1) == batch["answer"]).float().mean())
        if acc == 1.0:
            break
        loss = F.cross_entropy(logits, batch["answer"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((logits_fn().argmax(-1) == batch["answer"]).float().mean())
    return acc, step


def _images(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _actions(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, t, ACTION_DIM, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- overfitting 64 real samples ----------------------------------------------------------
def test_effnet_overfits_64_real_samples(saqa_file):
    """Frozen pretrained encoder (the default): its features are computed once and cached, which is
    exactly what training sees, since a frozen encoder is a fixed function of the image."""
    torch.manual_seed(0)
    model = build_world_model("effnet", EFFNET_SMALL)
    assert model.config.freeze_encoder and model.config.pretrained
    batch = _batch_of_64(saqa_file, model)
    t0 = time.perf_counter()
    feats = model.encode_image(batch["images"])
    assert not feats.requires_grad                                  # frozen: no graph through the encoder

    def logits():
        return model.answer_logits_from_features(feats, batch["actions"], batch["tokens"], batch["action_mask"])[:, 0]

    acc, step = _overfit(model, batch, logits, lr=2e-3, max_steps=300)
    print(f"effnet overfit: {step} steps, {time.perf_counter() - t0:.1f} s")
    assert acc == 1.0, f"training accuracy {acc} after {step} steps"


def test_paligemma_tiny_overfits_64_real_samples(saqa_file):
    from swm_ros.models.train import forward_batch

    torch.manual_seed(0)
    model = build_world_model("paligemma", {})
    batch = _batch_of_64(saqa_file, model)
    t0 = time.perf_counter()
    acc, step = _overfit(model, batch, lambda: forward_batch(model, batch), lr=3e-3, max_steps=300)
    print(f"paligemma overfit: {step} steps, {time.perf_counter() - t0:.1f} s")
    assert acc == 1.0, f"training accuracy {acc} after {step} steps"


def test_train_loop_trains_effnet_from_its_config(saqa_file, tmp_path):
    """`swm train world-model` with `backend: effnet` (the shipped config, made small and short)."""
    from swm_ros.models.train import load_train_config, train_world_model

    cfg = yaml.safe_load((REPO / "config" / "train" / "world_model_effnet.yaml").read_text())
    assert cfg["backend"] == "effnet"
    cfg["data"].update(path=str(saqa_file), val_splits=["test"], val_rows=32)
    cfg["model"].update(EFFNET_SMALL)
    cfg.update(steps=3, batch_size=8, warmup_steps=1, eval_every=3, log_every=1, checkpoint_every=3, num_threads=1)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = train_world_model(load_train_config(path), tmp_path / "run", progress=False)
    assert summary["step"] == 3 and np.isfinite(summary["train"]["loss"])
    loaded = load_world_model(str(tmp_path / "run"))
    assert loaded.backend == "effnet" and loaded.image_processor is not None


# ---- gradients, masks, caching -------------------------------------------------------------
@pytest.mark.parametrize("backend,config", [("effnet", EFFNET_SMALL),
                                            ("effnet", {**EFFNET_SMALL, "freeze_encoder": False}),
                                            ("paligemma", {})])
def test_gradients_wrt_actions_finite_and_nonzero(backend, config):
    torch.manual_seed(0)
    model = build_world_model(backend, config).eval()
    actions = _actions(4, 12).requires_grad_(True)
    out = model.answer_logits(_images(4), actions, QUESTIONS)
    assert out.shape == (4, len(QUESTIONS), 2) and torch.isfinite(out).all()
    out.log_softmax(-1)[..., 1].sum().backward()
    g = actions.grad
    assert g is not None and torch.isfinite(g).all()
    assert g.abs().sum(dim=(1, 2)).gt(0).all() and g.abs().sum(dim=(0, 2)).gt(0).all()   # every row, every step


@pytest.mark.parametrize("backend,config", [("effnet", EFFNET_SMALL), ("paligemma", {})])
def test_padding_cache_and_row_independence(backend, config):
    torch.manual_seed(0)
    model = build_world_model(backend, config).eval()
    imgs, short = _images(3), _actions(3, 5)
    padded = torch.cat([short, torch.randn(3, 4, ACTION_DIM) * 3], dim=1)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[:, :5] = True
    with torch.no_grad():
        a = model.answer_logits(imgs, short, QUESTIONS)
        assert torch.allclose(a, model.answer_logits(imgs, padded, QUESTIONS, action_mask=mask), atol=1e-5)
        assert not torch.allclose(a, model.answer_logits(imgs, padded, QUESTIONS), atol=1e-4)   # actions matter
        one = model.answer_logits(imgs[1:2], short[1:2], QUESTIONS[1:])                         # other padding
        assert torch.allclose(one[0, 0], a[1, 1], atol=1e-5)
        feats = model.encode_image(imgs[:1])                                                     # cached image
        cached = model.answer_logits_from_features(feats, _actions(6, 5, seed=4), model.tokenize(QUESTIONS))
        full = model.answer_logits(imgs[:1].expand(6, -1, -1, -1), _actions(6, 5, seed=4), QUESTIONS)
        assert (cached - full).abs().max() < 1e-5
        prepared = model.prepare_questions(feats, model.tokenize(QUESTIONS))                    # a planner's cache
        again = model.answer_logits_from_features(feats, _actions(6, 5, seed=4), prepared)
        assert (again - cached).abs().max() < 1e-5
    with pytest.raises(ValueError):
        model.answer_logits(imgs, torch.zeros(3, 4, ACTION_DIM + 1), QUESTIONS)
    with pytest.raises(ValueError):
        model.answer_logits(imgs, torch.zeros(3, model.config.max_steps + 1, ACTION_DIM), QUESTIONS)


# ---- effnet specifics ----------------------------------------------------------------------
def test_effnet_encoder_is_the_shipped_imagenet_lite0_and_stays_in_eval_mode():
    from swm_ros.models.effnet import pretrained_weights_path

    model = build_world_model("effnet", EFFNET_SMALL)
    shipped = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    enc = model.encoder.state_dict()
    assert torch.equal(enc["_conv_stem.weight"], shipped["_conv_stem.weight"])
    assert torch.equal(enc["_blocks.10._bn2.running_var"], shipped["_blocks.10._bn2.running_var"])
    assert not torch.allclose(enc["_bn0.running_var"], torch.ones_like(enc["_bn0.running_var"]))   # trained stats
    model.train()
    assert model.training and not any(m.training for m in model.encoder.modules())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    tuned = build_world_model("effnet", {**EFFNET_SMALL, "freeze_encoder": False}).train()
    assert all(p.requires_grad for p in tuned.encoder.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.training for m in tuned.encoder.modules())
    scratch = build_world_model("effnet", {**EFFNET_SMALL, "pretrained": False})
    assert not torch.equal(scratch.encoder.state_dict()["_conv_stem.weight"], shipped["_conv_stem.weight"])


def test_effnet_feature_maps_and_bad_config():
    from swm_ros.config import ConfigError

    head = build_world_model("effnet", {"image_size": 128, "d_model": 64, "layers": 1, "heads": 2}).eval()
    with torch.no_grad():
        # 64x64 frames upsampled to 128: 4x4 tokens, then the grounding's 32x32 colour map
        assert head.encode_image(_images(2)).shape == (2, 16 + 32 * 32, 1280)
        small = build_world_model("effnet", {**EFFNET_SMALL, "grounding": False})
        assert small.encode_image(_images(2)).shape == (2, 16, 112)
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_world_model("effnet", {"image_size": 100})
    with pytest.raises(ConfigError, match="feature"):
        build_world_model("effnet", {"feature": "stride8"})


def test_effnet_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_world_model("effnet", EFFNET_SMALL).eval()
    save_checkpoint(model, tmp_path / "e")
    loaded = load_checkpoint(tmp_path / "e")
    imgs, acts = _images(3), _actions(3, 6)
    with torch.no_grad():
        assert torch.equal(model.answer_logits(imgs, acts, QUESTIONS), loaded.answer_logits(imgs, acts, QUESTIONS))


# ---- paligemma specifics ---------------------------------------------------------------------
def test_paligemma_tiny_config_round_trips_save_load(tmp_path):
    torch.manual_seed(0)
    model = build_world_model("paligemma", {}).eval()
    with torch.no_grad():                                       # make it differ from any fresh init
        model.action_proj.weight.add_(0.5)
    d = save_checkpoint(model, tmp_path / "pg", training={"step": 1})
    loaded = load_world_model(str(d))
    assert loaded.backend == "paligemma" and loaded.config == model.config and not loaded.training
    imgs, acts = _images(2), _actions(2, 7)
    with torch.no_grad():
        assert torch.equal(model.answer_logits(imgs, acts, QUESTIONS), loaded.answer_logits(imgs, acts, QUESTIONS))
    assert torch.equal(model.tokenize(QUESTIONS), loaded.tokenize(QUESTIONS))


@pytest.fixture(scope="module")
def local_paligemma(tmp_path_factory) -> Path:
    """A directory shaped like a downloaded PaliGemma (config.json, model.safetensors, tokenizer
    files), holding a tiny random model and a word-level tokenizer with Gemma's special tokens."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PaliGemmaForConditionalGeneration, PreTrainedTokenizerFast

    from swm_ros.models.paligemma import PaliGemmaWMConfig, random_paligemma_config
    from swm_ros.models.text import default_vocabulary

    d = tmp_path_factory.mktemp("paligemma_local")
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = specials + ["\n"] + [w for w in default_vocabulary() if not w.startswith("<")] + ["<image>"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials + ["<image>"]])
    tok.add_tokens([AddedToken("\n", normalized=False)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(d)
    torch.manual_seed(1)
    PaliGemmaForConditionalGeneration(
        random_paligemma_config(PaliGemmaWMConfig(), len(vocab), vocab.index("<image>"))).save_pretrained(d)
    return d


def test_paligemma_from_local_weights_with_lora_saves_only_trainable_parts(local_paligemma, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model = build_world_model("paligemma", {"pretrained_path": str(local_paligemma), "lora": True, "lora_rank": 4})
    # <bos> question \n with the directory's tokenizer; <action> added to it
    ids = model.tokenize(["is the gripper open?"])[0].tolist()
    hf = model.prompt.hf
    assert ids[0] == hf.bos_token_id and hf.decode([ids[-1]]) == "\n" and hf.convert_ids_to_tokens(ids[1]) == "is"
    assert hf.convert_tokens_to_ids("<action>") == model.prompt.action_id
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("action_proj") for n in trainable)
    # a training step changes only LoRA and the projector
    acts = _actions(2, 6).requires_grad_(True)
    model.answer_logits(_images(2), acts, QUESTIONS)[..., 1].sum().backward()
    assert torch.isfinite(acts.grad).all() and acts.grad.abs().sum() > 0
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.eval()
    d = save_checkpoint(model, tmp_path / "lora")
    from safetensors.torch import load_file
    saved = load_file(str(d / "model.safetensors"))
    assert set(saved) == trainable                       # projector + LoRA only, not the base weights
    loaded = load_checkpoint(d)
    imgs, acts = _images(2), _actions(2, 6)
    with torch.no_grad():
        assert torch.equal(model.answer_logits(imgs, acts, QUESTIONS), loaded.answer_logits(imgs, acts, QUESTIONS))
        fresh = build_world_model("paligemma", {"pretrained_path": str(local_paligemma), "lora": True,
                                                "lora_rank": 4}).eval()
        assert not torch.allclose(fresh.answer_logits(imgs, acts, QUESTIONS),
                                  loaded.answer_logits(imgs, acts, QUESTIONS))


def test_paligemma_missing_local_weights_fail_clearly(tmp_path):
    from swm_ros.config import ConfigError

    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build_world_model("paligemma", {"pretrained_path": str(tmp_path / "paligemma-3b-pt-224")})
    with pytest.raises(ConfigError, match="dtype"):
        build_world_model("paligemma", {"dtype": "float8"})


# ---- shipped configs -------------------------------------------------------------------------
def test_shipped_backend_configs_load():
    from swm_ros.config import load_config
    from swm_ros.models.effnet import EffNetConfig
    from swm_ros.models.paligemma import PaliGemmaWMConfig
    from swm_ros.models.train import load_train_config

    assert load_config(EffNetConfig, REPO / "config" / "models" / "effnet.yaml") == EffNetConfig()
    assert load_config(PaliGemmaWMConfig, REPO / "config" / "models" / "paligemma_tiny.yaml") == PaliGemmaWMConfig()
    cfg = load_train_config(REPO / "config" / "train" / "world_model_effnet.yaml")
    # the default model, with tiny's stage-1 grounding (no gripper entities), for the comparison
    assert cfg.backend == "effnet"
    assert load_config(EffNetConfig, cfg.model) == dataclasses.replace(EffNetConfig(), grounding_entities=[])
