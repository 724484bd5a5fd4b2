"""SAQA: every family's oracle on hand-built states, horizons, balancing, phrasings, the file + dataset."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from saqa_helpers import HALF, REST_Z, block, make_state, random_walk_states
from swm_ros.config import ConfigError
from swm_ros.data.episodes import EpisodeMeta, StateArrays, write_episode
from swm_ros.saqa.build import QuestionTable, SAQAConfig, balance_rows, build_saqa, episode_rows, load_saqa_config
from swm_ros.saqa.dataset import SAQADataset
from swm_ros.saqa.families import DIRECTIONS, FAMILIES, Thresholds, get_family, noun_phrases
from swm_ros.saqa.horizons import sample_horizons

REPO = Path(__file__).resolve().parents[1]
R, B, G = 0, 1, 2   # object indices in insertion order red, blue, green


def ask(family, s0, s1, a, b=-1, direction=None):
    """One question on a (t, t+h) pair of hand-built states -> (answer, valid)."""
    arr = StateArrays.from_states([s0, s1])
    d = None if direction is None else [DIRECTIONS.index(direction)]
    ans, valid = get_family(family).label(arr.take([0]), arr.take([1]), [a], [b], d)
    return bool(ans[0]), bool(valid[0])


def yes(*args, **kw):
    return ask(*args, **kw) == (True, True)


def no(*args, **kw):
    return ask(*args, **kw) == (False, True)


def still(s):
    return s, s


# ---- oracle labels, family by family ------------------------------------------------------------

def test_touching():
    touching = make_state({"red": (0.5, 0.0, REST_Z), "blue": (0.5 + 2 * HALF, 0.0, REST_Z), "green": (0.7, 0.2, REST_Z)},
                          contacts={(block("red"), block("blue"))})
    assert yes("touching", *still(touching), R, B)
    assert no("touching", *still(touching), R, G)
    far = make_state({"red": (0.5, 0.0, REST_Z), "blue": (0.7, 0.0, REST_Z), "green": (0.7, 0.2, REST_Z)})
    assert no("touching", *still(far), R, B)
    # a 1 mm gap without a reported contact still reads as touching
    near = make_state({"red": (0.5, 0.0, REST_Z), "blue": (0.5 + 2 * HALF + 0.001, 0.0, REST_Z), "green": (0.7, 0.2, REST_Z)})
    assert yes("touching", *still(near), R, B)
    # answered at t+h, not at t
    assert yes("touching", far, touching, R, B) and no("touching", touching, far, R, B)


def test_closer():
    s0 = make_state({"red": (0.4, 0.0, REST_Z), "blue": (0.6, 0.0, REST_Z), "green": (0.7, 0.2, REST_Z)})
    s1 = make_state({"red": (0.5, 0.0, REST_Z), "blue": (0.6, 0.0, REST_Z), "green": (0.7, 0.2, REST_Z)})
    assert yes("closer", s0, s1, R, B)
    assert no("closer", s1, s0, R, B)          # farther apart
    assert no("closer", *still(s0), R, B)      # h = 0: nothing changed
    s_amb = make_state({"red": (0.42, 0.0, REST_Z), "blue": (0.6, 0.0, REST_Z), "green": (0.7, 0.2, REST_Z)})
    assert ask("closer", s0, s_amb, R, B)[1] is False   # 2 cm: inside the ambiguity band, dropped


def test_moved_directions():
    base = {"blue": (0.6, 0.2, REST_Z), "green": (0.7, -0.2, REST_Z)}
    s0 = make_state({"red": (0.5, 0.0, REST_Z), **base})
    left = make_state({"red": (0.5, 0.10, REST_Z), **base})      # +y = robot's left
    fwd = make_state({"red": (0.62, 0.0, REST_Z), **base})       # +x = away from the robot
    assert yes("moved", s0, left, R, direction="left")
    assert no("moved", s0, left, R, direction="right")
    assert no("moved", s0, left, R, direction="forward")
    assert yes("moved", left, s0, R, direction="right")
    assert yes("moved", s0, fwd, R, direction="forward") and yes("moved", fwd, s0, R, direction="backward")
    assert no("moved", s0, fwd, R, direction="backward")
    assert no("moved", *still(s0), R, direction="left")
    diag = make_state({"red": (0.58, 0.08, REST_Z), **base})     # 45 degrees: ambiguous, dropped
    assert ask("moved", s0, diag, R, direction="left")[1] is False
    assert yes("moved_any", s0, left, R) and no("moved_any", *still(s0), R)
    assert no("moved_any", s0, left, B)


def test_gripper_touching_and_closer():
    blocks = {"red": (0.5, 0.0, REST_Z), "blue": (0.6, 0.2, REST_Z), "green": (0.7, -0.2, REST_Z)}
    by_contact = make_state(blocks, effector=(0.5, 0.0, REST_Z + 0.05), contacts={("gripper", block("red"))})
    around = make_state(blocks, effector=(0.5, 0.0, REST_Z))
    above = make_state(blocks, effector=(0.5, 0.0, REST_Z + 0.15))
    assert yes("gripper_touching", *still(by_contact), R)
    assert yes("gripper_touching", *still(around), R)
    assert no("gripper_touching", *still(above), R) and no("gripper_touching", *still(around), B)
    assert yes("gripper_closer", above, around, R)
    assert no("gripper_closer", around, above, R)
    assert no("gripper_closer", *still(above), R)


def test_grasped():
    lifted = make_state({"red": (0.5, 0.0, REST_Z + 0.1), "blue": (0.6, 0.2, REST_Z), "green": (0.7, -0.2, REST_Z)},
                        effector=(0.5, 0.0, REST_Z + 0.1), grasped=block("red"), opening=0.4,
                        contacts={("gripper", block("red"))})
    resting = make_state({"red": (0.5, 0.0, REST_Z), "blue": (0.6, 0.2, REST_Z), "green": (0.7, -0.2, REST_Z)})
    assert yes("grasped", resting, lifted, R)
    assert no("grasped", *still(lifted), B)
    assert no("grasped", lifted, resting, R)


def test_on_top():
    stacked = make_state({"red": (0.5, 0.0, REST_Z + 2 * HALF), "blue": (0.5, 0.0, REST_Z), "green": (0.7, -0.2, REST_Z)},
                         contacts={(block("red"), block("blue"))})
    assert yes("on_top", *still(stacked), R, B)
    assert no("on_top", *still(stacked), B, R)          # blue is below red, not on top
    assert no("on_top", *still(stacked), R, G)
    side = make_state({"red": (0.5 + 2 * HALF, 0.0, REST_Z), "blue": (0.5, 0.0, REST_Z), "green": (0.7, -0.2, REST_Z)},
                      contacts={(block("red"), block("blue"))})
    assert no("on_top", *still(side), R, B)              # touching side by side
    hover = make_state({"red": (0.5, 0.0, REST_Z + 0.1), "blue": (0.5, 0.0, REST_Z), "green": (0.7, -0.2, REST_Z)},
                       grasped=block("red"))
    assert no("on_top", *still(hover), R, B)             # held high above
    assert yes("on_top", hover, stacked, R, B)


def near_miss(family, s0, s1, a, b=-1):
    arr = StateArrays.from_states([s0, s1])
    fam = get_family(family)
    s0a, s1a = arr.take([0]), arr.take([1])
    answer, _ = fam.label(s0a, s1a, [a], [b])
    return bool(fam.near_misses(s0a, s1a, np.array([a]), np.array([b]), np.array([-1]), answer, Thresholds())[0])


def test_near_misses_are_no_answers_close_to_yes():
    others = {"green": (0.7, -0.2, REST_Z)}
    hover = make_state({"red": (0.505, 0.0, REST_Z + 0.08), "blue": (0.5, 0.0, REST_Z), **others},
                       effector=(0.505, 0.0, REST_Z + 0.08), grasped=block("red"), opening=0.4,
                       contacts={("gripper", block("red"))})
    stacked = make_state({"red": (0.5, 0.0, REST_Z + 2 * HALF), "blue": (0.5, 0.0, REST_Z), **others},
                         contacts={(block("red"), block("blue"))})
    beside = make_state({"red": (0.6, 0.0, REST_Z + 0.08), "blue": (0.5, 0.0, REST_Z), **others}, grasped=block("red"))
    # on_top: held above the other block is a near miss; resting on it is a yes, beside it a plain no
    assert no("on_top", *still(hover), R, B) and near_miss("on_top", *still(hover), R, B)
    assert yes("on_top", *still(stacked), R, B) and not near_miss("on_top", *still(stacked), R, B)
    assert no("on_top", *still(beside), R, B) and not near_miss("on_top", *still(beside), R, B)
    assert not near_miss("on_top", *still(hover), B, R)          # blue is below red
    # grasped: an open hand around the block is a near miss, a hand far away is not, holding it is a yes
    around = make_state({"red": (0.5, 0.0, REST_Z), "blue": (0.6, 0.2, REST_Z), **others}, effector=(0.5, 0.0, REST_Z))
    away = make_state({"red": (0.5, 0.0, REST_Z), "blue": (0.6, 0.2, REST_Z), **others}, effector=(0.3, 0.0, 1.0))
    assert no("grasped", *still(around), R) and near_miss("grasped", *still(around), R)
    assert not near_miss("grasped", *still(away), R) and not near_miss("grasped", *still(hover), R)
    # touching: 1.5 cm apart is a near miss, 10 cm apart is not
    close = make_state({"red": (0.5, 0.0, REST_Z), "blue": (0.5 + 2 * HALF + 0.015, 0.0, REST_Z), **others})
    far = make_state({"red": (0.5, 0.0, REST_Z), "blue": (0.5 + 2 * HALF + 0.1, 0.0, REST_Z), **others})
    assert no("touching", *still(close), R, B) and near_miss("touching", *still(close), R, B)
    assert not near_miss("touching", *still(far), R, B)
    # a family without near misses marks none
    assert not near_miss("closer", *still(close), R, B)


def test_relative_position():
    s = make_state({"red": (0.5, 0.15, REST_Z), "blue": (0.5, 0.0, REST_Z), "green": (0.3, 0.0, REST_Z)})
    assert yes("relative_position", *still(s), R, B, direction="left")
    assert no("relative_position", *still(s), R, B, direction="right")
    assert yes("relative_position", *still(s), B, R, direction="right")
    # green is closer to the robot than blue ("in front of" it), blue farther ("behind")
    assert yes("relative_position", *still(s), G, B, direction="backward")
    assert yes("relative_position", *still(s), B, G, direction="forward")
    assert no("relative_position", *still(s), G, B, direction="forward")
    assert no("relative_position", *still(s), R, B, direction="forward")   # same depth


def test_every_family_has_label_tests():
    tested = {"touching", "closer", "moved", "moved_any", "gripper_touching", "gripper_closer", "grasped", "on_top",
              "relative_position"}
    assert {f.name for f in FAMILIES} == tested


# ---- phrasings -----------------------------------------------------------------------------------

def test_phrasings_distinct_and_filled():
    for fam in FAMILIES:
        assert len(fam.phrasings) >= 4 and len(set(fam.phrasings)) == len(fam.phrasings), fam.name
        d = 0 if fam.directions else -1
        texts = [fam.render(p, "red block", "blue block" if fam.arity == 2 else "", d) for p in range(len(fam.phrasings))]
        assert len(set(texts)) == len(texts)
        for t in texts:
            assert "{" not in t and "  " not in t and t.endswith("?"), t
            assert "red" in t and (fam.arity == 1 or "blue" in t), t
        if fam.directions:
            assert len({fam.render(0, "red block", "blue block", di) for di in range(4)}) == 4


def test_noun_phrases_disambiguate_repeated_colours():
    assert noun_phrases(["block", "block"], ["red", "blue"], ["a", "b"]) == ["red block", "blue block"]
    assert noun_phrases(["block", "block"], ["red", "red"], ["red_block_1", "red_block_2"]) == ["red block 1", "red block 2"]


# ---- horizons ------------------------------------------------------------------------------------

def test_horizon_statistics():
    rng = np.random.default_rng(0)
    left = np.full(20_000 // 7 + 1, 200)
    h = sample_horizons(rng, left, n=8, max_horizon=60)
    assert h.shape == (len(left), 8)
    assert np.all(h[:, 0] == 0)
    frac = h[:, 1:].ravel() / 60.0
    assert frac.size >= 20_000
    assert abs(frac.mean() - 1.6 / 2.6) < 0.02


def test_horizons_short_episode_end():
    rng = np.random.default_rng(1)
    left = np.arange(30)[::-1]          # a 30-frame episode: 29 .. 0 actions left
    h = sample_horizons(rng, left, n=8, max_horizon=60)
    assert h.shape == (30, 8) and np.all(h[:, 0] == 0)
    assert np.all(h <= left[:, None]) and np.all(h >= 0)
    assert np.all(h[-1] == 0)


# ---- building rows -------------------------------------------------------------------------------

def _write_synthetic(directory, n_eps=4, n=60, seed=0, variant_of=lambda i: "nominal"):
    rng = np.random.default_rng(seed)
    for i in range(n_eps):
        states = random_walk_states(rng, n)
        images = {"overhead": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)}
        meta = EpisodeMeta(episode_id=f"ep_{i:06d}", task="push", variant=variant_of(i), seed=i, policy="random")
        write_episode(directory / f"ep_{i:06d}.h5", meta, images, rng.uniform(-1, 1, (n - 1, 5)),
                      np.zeros((n, 4)), states)


def test_episode_rows_are_vectorised_and_consistent():
    states = StateArrays.from_states(random_walk_states(np.random.default_rng(3), 80))
    cfg = SAQAConfig()
    table = QuestionTable()
    cols, _, drawn = episode_rows(states, cfg, np.random.default_rng(0), table)
    assert drawn == 80 * 8 * len(cfg.families)
    assert np.all(cols["t"] + cols["h"] <= 79) and np.all(cols["h"] <= 60)
    # every (t) has an h = 0 row in some family; rows re-label the same when asked one by one
    assert set(cols["t"][cols["h"] == 0]) == set(range(80))
    for i in np.random.default_rng(1).choice(len(cols["t"]), 50, replace=False):
        fam = FAMILIES[cols["family"][i]]
        t, h = int(cols["t"][i]), int(cols["h"][i])
        ans, valid = fam.label(states.take([t]), states.take([t + h]), [cols["subject_a"][i]], [cols["subject_b"][i]],
                               [cols["direction"][i]], cfg.thresholds)
        assert valid[0] and ans[0] == cols["answer"][i]
        text = table.texts[cols["question"][i]]
        assert text in {fam.render(p, *_phr(states, cols, i), int(cols["direction"][i])) for p in range(len(fam.phrasings))}


def _phr(states, cols, i):
    ph = noun_phrases(states.object_kinds, states.object_colors, states.object_names)
    b = int(cols["subject_b"][i])
    return ph[int(cols["subject_a"][i])], (ph[b] if b >= 0 else "")


def test_balance_rows():
    rng = np.random.default_rng(0)
    cols = {"split": np.repeat([0, 3], 500).astype(np.int8), "family": np.tile(np.repeat([0, 1], 250), 2).astype(np.int8),
            "answer": (rng.random(1000) < 0.2).astype(np.uint8)}
    keep = balance_rows(cols, rng)
    for s in (0, 3):
        for f in (0, 1):
            sel = keep[(cols["split"][keep] == s) & (cols["family"][keep] == f)]
            assert len(sel) > 0 and cols["answer"][sel].mean() == 0.5


def test_balance_rows_draws_the_asked_share_of_near_misses():
    rng = np.random.default_rng(0)
    n = 4000
    cols = {"split": np.zeros(n, np.int8), "family": np.repeat([0, 1], n // 2).astype(np.int8),
            "answer": (rng.random(n) < 0.3).astype(np.uint8)}
    near = (cols["answer"] == 0) & (rng.random(n) < 0.1)         # about 7 % of all rows
    plain = balance_rows(cols, np.random.default_rng(5))
    assert np.array_equal(plain, balance_rows(cols, np.random.default_rng(5), near, {}))   # no share: same rows
    keep = balance_rows(cols, np.random.default_rng(5), near, {0: 0.2, 1: 0.9})
    for fam, share in ((0, 0.2), (1, 0.9)):
        sel = keep[cols["family"][keep] == fam]
        no_rows = sel[cols["answer"][sel] == 0]
        assert cols["answer"][sel].mean() == 0.5
        pool = near[(cols["family"] == fam)].sum()
        assert near[no_rows].sum() == min(round(share * len(no_rows)), pool)      # all of them when too few
    f0 = keep[cols["family"][keep] == 0]
    assert abs(near[f0].sum() / (cols["answer"][f0] == 0).sum() - 0.2) < 0.01   # against ~0.14 at random


def test_near_miss_share_config_is_checked():
    with pytest.raises(ValueError, match="near misses"):
        SAQAConfig(near_miss_share={"closer": 0.5})                  # closer has none
    with pytest.raises(ValueError, match="near misses"):
        SAQAConfig(families=["touching"], near_miss_share={"on_top": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SAQAConfig(near_miss_share={"on_top": 1.5})
    cfg = load_saqa_config(REPO / "config/saqa/near_miss.yaml")
    assert cfg.families == ["on_top"] and cfg.near_miss_share == {"on_top": 0.5}


def test_build_saqa_file_dataset_and_throughput(tmp_path):
    eps = tmp_path / "eps"
    _write_synthetic(eps, n_eps=12, n=150, variant_of=lambda i: "ood_colors" if i == 11 else "nominal")
    report = build_saqa(eps, tmp_path / "saqa.h5", SAQAConfig(seed=1))
    assert report.rows > 0 and report.per_split["ood"] > 0
    print(f"\nSAQA build: {report.rows} rows, {report.rows_per_s:,.0f} rows/s")
    assert report.rows_per_s >= 5000
    for name, c in report.per_family.items():
        if c["rows"]:
            assert c["yes"] * 2 == c["rows"], name
    ds = SAQADataset(tmp_path / "saqa.h5", split="train", max_horizon=60)
    assert len(ds) > 0 and ds.yes_fraction() == 0.5
    item = ds[0]
    assert item["image"].shape == (8, 8, 3) and item["actions"].shape == (60, 5)
    assert item["action_mask"].sum() == item["horizon"]
    assert np.all(item["actions"][item["horizon"]:] == 0)
    assert item["question"].endswith("?") and item["structured"].shape == (4,)
    w = ds.sample_weights()
    assert np.isclose(w.sum(), 1.0)
    per_family = [w[ds.columns["family"] == f].sum() for f in np.unique(ds.columns["family"])]
    assert np.allclose(per_family, per_family[0])
    batch = ds.batch(np.arange(min(16, len(ds))))
    assert batch["image"].shape[0] == len(batch["question"]) == min(16, len(ds))
    ood = SAQADataset(tmp_path / "saqa.h5", split="ood", families=["touching"])
    assert set(ood.columns["split"]) == {3} and set(ood.columns["family"]) == {0}


def test_first_episodes_rebuild_a_smaller_collection(tmp_path):
    eps = tmp_path / "eps"
    _write_synthetic(eps, n_eps=6, n=80)
    small = tmp_path / "small"
    small.mkdir()
    for f in sorted(eps.rglob("*.h5"))[:4]:
        shutil.copy(f, small / f.name)
    a = build_saqa(eps, tmp_path / "first4.h5", SAQAConfig(seed=2), first_episodes=4)
    b = build_saqa(small, tmp_path / "small.h5", SAQAConfig(seed=2))
    assert a.episodes == b.episodes == 4 and a.rows == b.rows
    with h5py.File(tmp_path / "first4.h5") as fa, h5py.File(tmp_path / "small.h5") as fb:
        assert set(fa["rows"]) == set(fb["rows"])
        for key in fa["rows"]:
            assert np.array_equal(fa["rows"][key][()], fb["rows"][key][()]), key
    assert build_saqa(eps, tmp_path / "all.h5", SAQAConfig(seed=2)).rows > a.rows
    with pytest.raises(ValueError, match="first_episodes must lie in 1..6"):
        build_saqa(eps, tmp_path / "x.h5", first_episodes=7)


def test_config_yaml_and_unknown_family(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("horizons_per_start: 4\nthresholds:\n  move_threshold: 0.05\n")
    cfg = load_saqa_config(p, seed=3)
    assert cfg.horizons_per_start == 4 and cfg.thresholds.move_threshold == 0.05 and cfg.seed == 3
    with pytest.raises(ConfigError, match="unknown question family"):
        load_saqa_config(None, families=["nope"])


def test_two_files_on_one_collection_share_its_frames(tmp_path):
    """A training mix built on the same episodes reads them through the main file's cache:
    one copy of each preloaded frame, one open file per episode."""
    eps = tmp_path / "eps"
    _write_synthetic(eps, n_eps=4, n=60, variant_of=lambda i: "nominal")
    build_saqa(eps, tmp_path / "all.h5", SAQAConfig(seed=1))
    build_saqa(eps, tmp_path / "some.h5", SAQAConfig(seed=2, families=["relative_position", "moved_any"]))
    main = SAQADataset(tmp_path / "all.h5", split=None, preload_images=True)
    mix = SAQADataset(tmp_path / "some.h5", split=None, preload_images=True)
    assert mix.share_episodes(main) == 4
    row = mix.columns
    e, t = int(row["episode"][0]), int(row["t"][0])
    frame = mix.image(e, t)
    assert len(mix._cache) == 0 and len(main._cache) == 1            # loaded once, in main's cache
    same = main.episode_files.index(mix.episode_files[e])
    assert np.shares_memory(frame, main.image(same, t))
    assert np.array_equal(mix.actions(e, t, 5)[0], main.actions(same, t, 5)[0])

    other = tmp_path / "other"
    _write_synthetic(other, n_eps=2, n=60, variant_of=lambda i: "nominal")
    build_saqa(other, tmp_path / "other.h5", SAQAConfig(seed=1))
    assert SAQADataset(tmp_path / "other.h5", split=None, preload_images=True).share_episodes(main) == 0
    with pytest.raises(ValueError, match="camera and preload_images"):
        SAQADataset(tmp_path / "some.h5", split=None).share_episodes(main)
