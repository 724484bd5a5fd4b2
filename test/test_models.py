"""World-model protocol, the tiny backend and checkpoints (no data, no simulator)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from swm_ros.envs.base import ACTION_DIM
from swm_ros.models.base import WorldModel
from swm_ros.models.checkpoint import (CheckpointError, load_checkpoint, load_optimizer_state, save_checkpoint,
                                       save_optimizer_state)
from swm_ros.models.registry import BACKENDS, UnknownBackendError, build_world_model, load_world_model
from swm_ros.models.text import Tokenizer, default_vocabulary, words
from swm_ros.models.tiny import TinyConfig, TinyWorldModel
from swm_ros.saqa.families import FAMILIES, question_text

MODELS_DIR = Path(__file__).resolve().parents[1] / "swm_ros" / "models"
QUESTIONS = [
    question_text("touching", 0, "red block", "green block"),
    question_text("moved", 1, "blue block", direction="left"),
    question_text("gripper_closer", 2, "yellow block"),
]

torch.set_num_threads(2)


# late fusion only, with words grounded in the frame's colour map, and with the actions'
# running sums as features too
CONFIGS = {"late": TinyConfig(grounding=False), "grounded": TinyConfig(grounding=True),
           "sums": TinyConfig(grounding=True, action_sums=True),
           "paths": TinyConfig(grounding=True, action_sums=True, hand_paths=True)}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request) -> TinyWorldModel:
    torch.manual_seed(0)
    m = TinyWorldModel(CONFIGS[request.param]).eval()
    if m.action_sums is not None:        # zero at init: give them weights, so the tests see them act
        for layer in m.action_sums.values():
            torch.nn.init.normal_(layer.weight, std=0.2)
    if m.hand_paths is not None:
        _give_hand_paths_weights(m)
    return m


def _give_hand_paths_weights(m: TinyWorldModel) -> None:
    """Hand paths start at zero (M and the output layer): weights, so they act."""
    torch.nn.init.normal_(m.hand_paths.to_frame.weight, std=0.5)
    torch.nn.init.normal_(m.hand_paths.mlp[-1].weight, std=0.2)


def _images(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 64, 64, 3), dtype=torch.uint8, generator=g)


def _actions(b: int, t: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, ACTION_DIM, generator=g) * 2 - 1


# ---- tokenizer --------------------------------------------------------------------------
def test_tokenizer_covers_every_phrasing_and_maps_unknown_words():
    tok = Tokenizer.default()
    assert tok.vocabulary[:3] == ["<pad>", "<unk>", "<answer>"] and "yes" in tok.ids and "no" in tok.ids
    for fam in FAMILIES:
        for p in range(len(fam.phrasings)):
            d = 0 if fam.direction_words else None
            b = "green block" if fam.arity == 2 else ""
            q = question_text(fam.name, p, "red block", b, direction=d)
            assert tok.unknown_words(q) == [], q
    ids = tok.encode(["Is the zebra touching the red block?"], max_len=10)
    assert ids.shape == (1, 10) and ids[0, 2].item() == tok.unk_id and ids[0, 8:].eq(0).all() and ids[0, 7] != 0
    assert words("Is the robot's hand?") == ["is", "the", "robot", "'s", "hand", "?"]
    assert default_vocabulary() == default_vocabulary()          # deterministic order
    with pytest.raises(ValueError):
        Tokenizer(["yes", "no"])


# ---- shapes and gradients ---------------------------------------------------------------
@pytest.mark.parametrize("b,q,t", [(1, 1, 1), (3, 2, 7), (4, 3, 0), (2, 1, 16)])
def test_answer_logits_shapes(model, b, q, t):
    out = model.answer_logits(_images(b), _actions(b, t), QUESTIONS[:q])
    assert isinstance(model, WorldModel)
    assert out.shape == (b, q, 2) and torch.isfinite(out).all()
    p = model.p_yes(_images(b), _actions(b, t), QUESTIONS[:q])
    assert p.shape == (b, q) and ((p >= 0) & (p <= 1)).all()


def test_inputs_numpy_float_and_other_sizes(model):
    imgs = _images(2)
    a = model.answer_logits(imgs, _actions(2, 4), QUESTIONS[:1])
    b = model.answer_logits(imgs.numpy().astype(np.float32) / 255.0, _actions(2, 4).numpy(), QUESTIONS[:1])
    assert torch.allclose(a, b, atol=1e-5)
    big = torch.randint(0, 256, (2, 96, 96, 3), dtype=torch.uint8)
    assert model.answer_logits(big, _actions(2, 4), QUESTIONS[:1]).shape == (2, 1, 2)
    with pytest.raises(ValueError):
        model.answer_logits(imgs, torch.zeros(2, 4, ACTION_DIM + 1), QUESTIONS[:1])
    with pytest.raises(ValueError):
        model.answer_logits(imgs, torch.zeros(2, 65, ACTION_DIM), QUESTIONS[:1])


def test_gradients_wrt_actions_finite_and_nonzero(model):
    actions = _actions(4, 16).requires_grad_(True)
    p = model.answer_logits(_images(4), actions, QUESTIONS).log_softmax(-1)[..., 1]
    p.sum().backward()
    g = actions.grad
    assert g is not None and torch.isfinite(g).all()
    assert g.abs().sum(dim=(1, 2)).gt(0).all()                       # every candidate gets a signal
    assert g.abs().sum(dim=(0, 2)).gt(0).all()                       # and every step


def test_action_mask_ignores_padding(model):
    imgs = _images(2)
    short = _actions(2, 5)
    padded = torch.cat([short, torch.randn(2, 7, ACTION_DIM) * 3], dim=1)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, :5] = True
    a = model.answer_logits(imgs, short, QUESTIONS)
    b = model.answer_logits(imgs, padded, QUESTIONS, action_mask=mask)
    assert torch.allclose(a, b, atol=1e-5)
    # ... and the actions matter when they are not masked
    c = model.answer_logits(imgs, padded, QUESTIONS)
    assert not torch.allclose(a, c, atol=1e-4)


def test_cached_features_match_full_forward(model):
    n = 32
    image = _images(1, seed=5)
    chunks = _actions(n, 16, seed=6)
    tokens = model.tokenize(QUESTIONS)
    with torch.no_grad():
        feats = model.encode_image(image)
        cached = model.answer_logits_from_features(feats, chunks, tokens)
        full = model.answer_logits(image.expand(n, -1, -1, -1), chunks, QUESTIONS)
    assert cached.shape == (n, len(QUESTIONS), 2)
    assert (cached - full).abs().max().item() < 1e-5
    # per-row question tokens (B, Q, L) equal the shared (Q, L) form
    per_row = model.answer_logits_from_features(feats, chunks, tokens.unsqueeze(0).expand(n, -1, -1))
    assert (per_row - cached).abs().max().item() < 1e-5


def test_final_block_answering_only_the_last_position_equals_the_full_block(model):
    # the shortcut the final block takes (only <answer> queries and goes through the MLP)
    # must give that position exactly what the full block gives it, masked keys included
    blk = model.blocks[-1]
    x = torch.randn(3, 20, model.config.d_model)
    attend = torch.ones(3, 1, 1, 20, dtype=torch.bool)
    attend[1, ..., 5:9] = False
    with torch.no_grad():
        full = blk(x, attend)
        last = blk(x, attend, last_only=True)
    assert last.shape == (3, 1, model.config.d_model)
    assert (last[:, 0] - full[:, -1]).abs().max().item() < 1e-5
    # ... and the masked keys are still masked: changing them changes nothing
    y = x.clone()
    y[1, 5:9] += 10.0
    with torch.no_grad():
        assert (blk(y, attend, last_only=True)[1] - last[1]).abs().max().item() < 1e-5


def _grown(plain: TinyConfig, grown: TinyConfig, part: str) -> tuple[TinyWorldModel, TinyWorldModel]:
    """A model and one with a zero-initialised extra `part`, loaded from the first's weights:
    only that part is missing, and before it is trained the two answer alike."""
    torch.manual_seed(0)
    a, b = TinyWorldModel(plain).eval(), TinyWorldModel(grown).eval()
    missing, unexpected = b.load_state_dict(a.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(f"{part}.") for k in missing)
    if not b.reads_proprio:
        imgs, acts = _images(2), _actions(2, 12)
        with torch.no_grad():
            torch.testing.assert_close(b.answer_logits(imgs, acts, QUESTIONS), a.answer_logits(imgs, acts, QUESTIONS),
                                       atol=1e-6, rtol=0)
    return a, b


def test_action_sums_start_as_the_model_without_them_and_then_matter():
    plain, sums = _grown(TinyConfig(), TinyConfig(action_sums=True), "action_sums")
    imgs, acts = _images(2), _actions(2, 12)
    with torch.no_grad():
        torch.nn.init.normal_(sums.action_sums["total"].weight, std=0.2)
        assert not torch.allclose(sums.answer_logits(imgs, acts, QUESTIONS),
                                  plain.answer_logits(imgs, acts, QUESTIONS), atol=1e-4)
        # no actions (h = 0, "is it true now") answers too
        assert sums.answer_logits(imgs, torch.zeros(2, 0, ACTION_DIM), QUESTIONS).shape == (2, len(QUESTIONS), 2)


def test_proprio_starts_as_the_model_without_it_then_matters_and_checks_its_input():
    plain, robot = _grown(TinyConfig(), TinyConfig(proprio_dim=6), "proprio")
    robot.proprio.set_statistics(np.random.default_rng(0).normal(3.0, 2.0, (500, 6)))
    assert robot.proprio.mean.abs().min() > 2.5 and (robot.proprio.std - 2.0).abs().max() < 0.3
    imgs, acts, tokens = _images(2), _actions(2, 12), plain.tokenize(QUESTIONS)
    state = torch.randn(2, 6)
    with torch.no_grad():
        feats = plain.encode_image(imgs)
        before = plain.answer_logits_from_features(feats, acts, tokens)
        assert torch.allclose(robot.answer_logits_from_features(feats, acts, tokens, proprio=state), before, atol=1e-6)
        torch.nn.init.normal_(robot.proprio.proj.weight, std=0.2)
        after = robot.answer_logits_from_features(feats, acts, tokens, proprio=state)
        assert not torch.allclose(after, before, atol=1e-4)
        other = robot.answer_logits_from_features(feats, acts, tokens, proprio=state.flip(0))
        assert not torch.allclose(after, other, atol=1e-4)        # each row reads its own state
    for bad, match in ((None, "proprioception"), (torch.randn(2, 5), "proprio must be"),
                       (torch.full((2, 6), float("nan")), "NaN")):
        with pytest.raises(ValueError, match=match):
            robot.answer_logits_from_features(feats, acts, tokens, proprio=bad)


def test_hand_paths_start_as_the_model_without_them_then_follow_the_named_blocks():
    plain, paths = _grown(TinyConfig(action_sums=True), TinyConfig(action_sums=True, hand_paths=True), "hand_paths")
    imgs, acts = _images(2), _actions(2, 12)
    with torch.no_grad():
        _give_hand_paths_weights(paths)
        assert not torch.allclose(paths.answer_logits(imgs, acts, QUESTIONS),
                                  plain.answer_logits(imgs, acts, QUESTIONS), atol=1e-4)
        # the question's entities are where its colour words are found: a red square on grey
        frame = np.full((1, 64, 64, 3), 128, np.uint8)
        frame[0, 40:48, 8:16] = (255, 0, 0)
        feats = paths.encode_image(frame)
        anchors = paths.prepare_questions(feats, paths.tokenize(["Is the gripper touching the red block?"])).anchors
        gripper = paths._gripper_uv(paths.grounding.phi(feats[:, 16:, :3]))
    # entity 1 is "gripper" (offset 0), entity 2 "red" near the square's centre (u, v = 12/64, 44/64)
    assert anchors.shape == (1, 1, 8) and torch.allclose(anchors[0, 0, :2], torch.zeros(2), atol=1e-6)
    red = gripper[0] - anchors[0, 0, 2:4]
    assert torch.allclose(red, torch.tensor([12 / 64 * 2 - 1, 44 / 64 * 2 - 1]), atol=0.08)
    assert torch.equal(anchors[0, 0, 6:], torch.ones(2))                     # both named


def test_hand_path_features_follow_the_commanded_hand():
    """A path commanded straight at a block: the distance to it falls step by step to zero and
    grows again past it; the other entity's offset moves with the hand the same way."""
    from swm_ros.models.hand_paths import HandPaths

    hp = HandPaths(ACTION_DIM, 16)
    hp.reset_parameters()
    with torch.no_grad():
        hp.to_frame.weight.copy_(torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]))   # 0.1 uv per action unit
    gripper = torch.tensor([[0.0, 0.0]])
    entities = torch.tensor([[[0.5, 0.0, 0.0, -0.3, 0.9, 0.8, 1.0, 1.0]]])      # block 1 at u 0.5, block 2 below
    anchors = HandPaths.anchors(gripper, entities)
    acts = torch.zeros(1, 8, ACTION_DIM)
    acts[..., 0] = 1.0                                                           # +x every step: +0.1 u
    x = hp.features(torch.cumsum(acts, 1), anchors)[0, 0]
    dist1 = x[:, ACTION_DIM + 4]
    assert torch.allclose(dist1, (torch.arange(1, 9) * 0.1 - 0.5).abs(), atol=1e-3)
    assert int(dist1.argmin()) == 4                                               # step 5 reaches it
    assert torch.allclose(x[:, ACTION_DIM + 2:ACTION_DIM + 4], torch.stack([torch.arange(1, 9) * 0.1,
                                                                           torch.full((8,), 0.3)], -1), atol=1e-5)
    assert torch.equal(x[:, -4:], torch.tensor([0.9, 0.8, 1.0, 1.0]).expand(8, 4))
    out = hp(torch.cumsum(acts, 1), anchors)
    assert out.shape == (1, 1, 8, 16) and not out.any()                           # adds nothing until trained


def test_hand_paths_need_the_gripper_grounded():
    with pytest.raises(ValueError, match="hand_paths"):
        TinyConfig(grounding=False, hand_paths=True)
    with pytest.raises(ValueError, match="hand_paths"):
        TinyConfig(grounding_entities=["hand"], hand_paths=True)


def test_questions_change_the_answer_and_rows_are_independent(model):
    imgs, acts = _images(3), _actions(3, 8)
    out = model.answer_logits(imgs, acts, QUESTIONS)
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-4)
    one = model.answer_logits(imgs[1:2], acts[1:2], QUESTIONS)
    assert torch.allclose(one[0], out[1], atol=1e-5)


def test_parameter_count_in_range(model):
    assert 200_000 <= model.num_parameters() <= 3_000_000


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_traces_without_data_dependent_control_flow(model):
    class Scorer(torch.nn.Module):
        def __init__(self, wm):
            super().__init__()
            self.wm = wm

        def forward(self, images, actions, mask, tokens):
            return self.wm.answer_logits_from_features(self.wm.encode_image(images), actions, tokens, mask)

    tokens = model.tokenize(QUESTIONS)
    scorer = Scorer(model).eval()
    with torch.no_grad():
        traced = torch.jit.trace(scorer, (_images(2), _actions(2, 8), torch.ones(2, 8, dtype=torch.bool), tokens),
                                 check_trace=False)
        # same shapes, different values (masks included): the trace must follow the data, not branch on it
        args = (_images(2, seed=3), _actions(2, 8, seed=9), torch.rand(2, 8) > 0.3, tokens.flip(0))
        assert torch.allclose(traced(*args), scorer(*args), atol=1e-5)


# ---- checkpoints ------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path, model):
    d = save_checkpoint(model, tmp_path / "ckpt", training={"step": np.int64(3), "acc": np.float32(0.5)})
    assert sorted(p.name for p in d.iterdir()) == ["config.yaml", "model.safetensors"]
    loaded = load_world_model(str(d))
    assert isinstance(loaded, TinyWorldModel) and not loaded.training
    assert loaded.vocabulary == model.vocabulary and loaded.training_summary["step"] == 3
    imgs, acts = _images(3), _actions(3, 10)
    with torch.no_grad():
        assert torch.equal(model.answer_logits(imgs, acts, QUESTIONS), loaded.answer_logits(imgs, acts, QUESTIONS))


def test_checkpoint_keeps_a_custom_config_and_vocabulary(tmp_path):
    vocab = default_vocabulary() + ["magenta"]
    m = build_world_model("tiny", {"d_model": 64, "layers": 2, "heads": 2}, vocab)
    save_checkpoint(m, tmp_path / "c")
    loaded = load_checkpoint(tmp_path / "c")
    assert loaded.config.d_model == 64 and "magenta" in loaded.tokenizer.ids


def test_missing_checkpoint_errors_name_the_path(tmp_path, model):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        load_world_model(tmp_path / "nope")
    d = save_checkpoint(model, tmp_path / "c")
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_checkpoint(d)
    (d / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        load_checkpoint(d)


def test_corrupt_checkpoint_raises_value_error(tmp_path, model):
    d = save_checkpoint(model, tmp_path / "c")
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[:len(data) // 2])                               # truncated
    with pytest.raises(ValueError, match="corrupt or not a safetensors file"):
        load_checkpoint(d)
    w.write_bytes(b"\x00" * 64)                                       # garbage
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(d)
    save_checkpoint(build_world_model("tiny", {"d_model": 64, "heads": 2}), tmp_path / "small")
    (d / "model.safetensors").write_bytes((tmp_path / "small" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="model.safetensors"):     # wrong shapes
        load_checkpoint(d)
    (d / "config.yaml").write_text("format: something_else\n")
    with pytest.raises(CheckpointError, match="not a world-model checkpoint"):
        load_checkpoint(d)


def test_unknown_backend_lists_known_ones(tmp_path, model):
    d = save_checkpoint(model, tmp_path / "c")
    cfg = (d / "config.yaml").read_text().replace("backend: tiny", "backend: giant")
    (d / "config.yaml").write_text(cfg)
    with pytest.raises(UnknownBackendError, match=r"giant.*tiny"):
        load_checkpoint(d)
    with pytest.raises(ValueError, match="known backends"):
        build_world_model("giant")
    assert "tiny" in BACKENDS


def test_unknown_model_config_key_is_rejected():
    from swm_ros.config import ConfigError
    with pytest.raises(ConfigError, match="unknown key"):
        build_world_model("tiny", {"d_modle": 64})


def test_grounded_features_of_the_wrong_size_are_refused():
    m = TinyWorldModel(CONFIGS["grounded"]).eval()
    feats = m.encode_image(_images(1))
    assert feats.shape == (1, 16 + 32 * 32, m.config.d_model)
    with pytest.raises(ValueError, match="features must be"):
        m.answer_logits_from_features(feats[:, :16], _actions(1, 4), m.tokenize(QUESTIONS[:1]))
    with pytest.raises(ValueError, match="grounding_cells"):
        TinyConfig(grounding=True, grounding_cells=0)


def test_grounding_finds_a_coloured_square_even_for_an_unseen_colour_name():
    """Untrained, the colour prior alone already points "red" at a red square and "purple"
    at a purple one (the CSS colour of the name against the pixels through the same phi)."""
    torch.manual_seed(0)
    m = TinyWorldModel(CONFIGS["grounded"]).eval()
    img = np.full((1, 64, 64, 3), 150, np.uint8)
    img[0, 8:16, 40:48] = (220, 30, 25)                   # red, top right
    img[0, 44:52, 10:18] = (128, 20, 170)                 # purple, bottom left
    with torch.no_grad():
        m.grounding.log_scale.fill_(4.0)                  # a sharp softmax, as training makes it
        uv = m.locate(m.encode_image(img), ["red", "purple"])[0].numpy()
    assert uv[0, 0] > 0.5 > uv[0, 1], uv                  # red: right, up
    assert uv[1, 0] < 0.5 < uv[1, 1], uv                  # purple: left, down


def test_entity_words_are_the_question_entities_for_relations():
    """With "gripper" an entity word, "is the gripper touching the red block" relates the
    gripper's grounded position to red's; without, red is the only entity and the relation
    features see red and nothing. Same weights, so only the entity marking differs."""
    from swm_ros.models.grounding import WordGrounding

    vocab = ["<pad>", "is", "the", "gripper", "touching", "red", "blue", "block"]
    torch.manual_seed(0)
    plain = WordGrounding(16, 4, vocab)
    entity = WordGrounding(16, 4, vocab, entity_words=["gripper"])
    entity.load_state_dict(plain.state_dict())
    assert entity.word_is_entity.tolist() == [False, False, False, True, False, True, True, False]
    assert plain.word_is_entity.tolist() == plain.word_is_colour.tolist()
    ids = torch.tensor([[1, 2, 3, 4, 2, 5, 7]])
    cells = entity.phi(torch.rand(1, 16, 3))
    vecs = torch.randn(1, 7, 16)
    with torch.no_grad():
        (a, a_entities), (b, b_entities) = plain(ids, vecs, cells), entity(ids, vecs, cells)
        two_colours = torch.tensor([[1, 2, 6, 4, 2, 5, 7]])               # "is the blue touching the red"
        same = plain(two_colours, vecs, cells), entity(two_colours, vecs, cells)
    assert not torch.allclose(a, b)
    assert a_entities[0, 6:].tolist() == [1.0, 0.0] and b_entities[0, 6:].tolist() == [1.0, 1.0]   # named
    torch.testing.assert_close(*same)                     # no gripper: the two agree


def test_one_frame_many_questions_grounds_each_word_once_with_the_same_answers():
    """Features of one frame (batch 1) with a different question per row take the shortcut
    (each distinct word grounded once); the answers equal those of the per-row path."""
    torch.manual_seed(0)
    m = TinyWorldModel(CONFIGS["grounded"]).eval()
    img = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    questions = QUESTIONS[:3] * 2
    tokens = m.tokenize(questions)[:, None, :]
    actions, mask = _actions(6, 5), torch.ones(6, 5, dtype=torch.bool)
    mask[::2, 3:] = False
    with torch.no_grad():
        feats = m.encode_image(img)
        one = m.answer_logits_from_features(feats, actions, tokens, mask)
        per_row = m.answer_logits_from_features(feats.expand(6, -1, -1), actions, tokens, mask)
    torch.testing.assert_close(one, per_row, atol=1e-5, rtol=1e-5)


def test_prepared_or_cut_questions_answer_as_the_padded_tokens(model):
    """What a planner caches per frame: embedded (and grounded) questions without the slots
    that are padding in every question; same answers and gradients, for any actions and masks."""
    tokens = model.tokenize(QUESTIONS)
    actions, mask = _actions(5, 16).requires_grad_(True), torch.ones(5, 16, dtype=torch.bool)
    mask[1, 8:] = False
    mask[2, :] = False
    feats = model.encode_image(_images(1))
    with torch.no_grad():
        prepared = model.prepare_questions(feats, tokens)
    longest = int((tokens != 0).sum(1).max())
    assert prepared.embeddings.shape[:3] == (1, len(QUESTIONS), longest + 1) < (1, len(QUESTIONS), tokens.shape[1] + 1)
    by_tokens = model.answer_logits_from_features(feats, actions, tokens, mask)
    (g_tokens,) = torch.autograd.grad(by_tokens[..., 1].sum(), actions)
    by_prepared = model.answer_logits_from_features(feats, actions, prepared, mask)
    (g_prepared,) = torch.autograd.grad(by_prepared[..., 1].sum(), actions)
    torch.testing.assert_close(by_prepared, by_tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_prepared, g_tokens, atol=1e-5, rtol=1e-4)
    cut = model.answer_logits_from_features(feats, actions, tokens[:, :longest], mask)   # padding cut by hand
    torch.testing.assert_close(cut, by_tokens, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        model.answer_logits_from_features(feats, actions, prepared._replace(
            embeddings=prepared.embeddings.expand(2, -1, -1, -1), keep=prepared.keep.expand(2, -1, -1)))


def test_shipped_config_matches_the_dataclass():
    from swm_ros.config import load_config
    cfg = load_config(TinyConfig, Path(__file__).resolve().parents[1] / "config" / "models" / "tiny.yaml")
    assert cfg == TinyConfig()


def test_load_by_name_without_shipped_weights_is_clear(monkeypatch, tmp_path):
    from swm_ros.models import registry
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="swm train world-model"):
        load_world_model("tiny")


def test_optimizer_state_round_trip(tmp_path, model):
    m = build_world_model("tiny", {"d_model": 64, "heads": 2, "layers": 1})
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    loss = m.answer_logits(_images(2), _actions(2, 3), QUESTIONS).sum()
    loss.backward()
    opt.step()
    rng = torch.get_rng_state()
    save_optimizer_state(opt, tmp_path / "opt.safetensors", extra={"rng": rng}, metadata={"step": 7})
    opt2 = torch.optim.AdamW(m.parameters(), lr=5.0)
    extra, meta = load_optimizer_state(opt2, tmp_path / "opt.safetensors")
    assert meta == {"step": 7}
    assert torch.equal(extra["rng"], rng)
    assert opt2.param_groups[0]["lr"] == 1e-3
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        for name in s1[k]:
            assert torch.equal(torch.as_tensor(s1[k][name]), torch.as_tensor(s2[k][name]))


def test_no_pickle_in_models_package():
    for path in MODELS_DIR.rglob("*.py"):
        text = path.read_text()
        assert "torch.load" not in text and "import pickle" not in text, path
