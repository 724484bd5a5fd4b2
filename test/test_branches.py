"""`swm collect-branches`: the planner's candidates executed from one real MuJoCo state, stored as episodes."""
from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np
import pytest

from swm_ros.cli import main
from swm_ros.data.branches import BranchConfig, collect_branches
from swm_ros.data.collect import CollectError
from swm_ros.data.episodes import EpisodeReader
from swm_ros.saqa.build import build_saqa, load_saqa_config
from swm_ros.saqa.dataset import SAQADataset
from swm_ros.resources import config_path

os.environ.setdefault("MUJOCO_GL", "egl")


PROPOSALS, BRANCH_STEPS = 8, 16


def _cfg(out, **kw) -> BranchConfig:
    # 16 steps, 8 per replan: two replans, each branched into the planner's chunk + 8 proposals
    base = dict(out=str(out), episodes=1, tasks=("push",), num_proposals=PROPOSALS, execute_steps=8,
                branch_steps=BRANCH_STEPS, max_steps=16, image_size=(32, 32), seed=2)
    base.update(kw)
    return BranchConfig(**base)


@pytest.fixture(scope="module")
def branches(tmp_path_factory):
    out = tmp_path_factory.mktemp("branches") / "b"
    summary = collect_branches(_cfg(out), progress=False)
    return out, summary


def _read(out):
    manifest = json.loads((out / "manifest.json").read_text())
    eps = {}
    for e in manifest["episodes"]:
        with EpisodeReader(out / e["file"]) as ep:
            eps[e["episode_id"]] = dict(entry=e, meta=ep.meta, actions=ep.actions, image0=ep.image("overhead", 0),
                                        states=ep.states, n=ep.num_frames)
    return manifest, eps


def test_every_candidate_starts_from_the_same_state(branches):
    out, summary = branches
    assert summary["collected"] == 1 and summary["branches"] == 2 * (1 + PROPOSALS)
    manifest, eps = _read(out)
    by_replan = defaultdict(list)
    for eid, ep in sorted(eps.items()):
        by_replan[ep["entry"]["replan"]].append(ep)
    assert sorted(by_replan) == [0, 1]
    for replan, sibs in by_replan.items():
        assert [s["meta"].policy for s in sibs] == ["planner"] + ["proposal"] * PROPOSALS
        assert {s["entry"]["split"] for s in sibs} == {summary_split(summary)}
        first = sibs[0]
        for s in sibs:
            assert s["n"] == BRANCH_STEPS + 1 and s["actions"].shape == (BRANCH_STEPS, 5)
            assert np.all(np.abs(s["actions"]) <= 1.0)
            # the scene was restored between siblings: same frame, same state at t = 0
            np.testing.assert_array_equal(s["image0"], first["image0"])
            np.testing.assert_array_equal(s["states"].object_position[0], first["states"].object_position[0])
            np.testing.assert_array_equal(s["states"].effector_position[0], first["states"].effector_position[0])
        # different chunks, different futures: the effector ends in different places
        ends = np.array([s["states"].effector_position[-1] for s in sibs])
        assert len({tuple(np.round(e, 4)) for e in ends}) > 1
        assert len({s["actions"].tobytes() for s in sibs}) == len(sibs)


def summary_split(summary) -> str:
    (split,) = [s for s, n in summary["splits"].items() if n]
    return split


def test_the_source_episode_goes_on_with_the_planner_chunk(branches):
    """Replan 1 starts where the planner's branch of replan 0 is after the 8 executed actions:
    branching left no trace in the source episode (restore is exact)."""
    out, _ = branches
    _, eps = _read(out)
    chosen = eps["ep_000000_000_0"]["states"]
    nxt = eps["ep_000000_001_1"]["states"]
    np.testing.assert_allclose(nxt.object_position[0], chosen.object_position[8], atol=1e-9)
    np.testing.assert_allclose(nxt.effector_position[0], chosen.effector_position[8], atol=1e-9)


def test_saqa_rows_start_at_the_shared_frame(branches, tmp_path):
    out, _ = branches
    cfg = load_saqa_config(config_path("saqa", "branches.yaml"))
    report = build_saqa(out, tmp_path / "saqa.h5", cfg)
    assert report.rows > 0
    ds = SAQADataset(tmp_path / "saqa.h5", split=None, preload_images=True)
    assert set(ds.columns["t"]) == {0}
    assert 0 < ds.columns["h"].max() <= BRANCH_STEPS
    row = ds[0]
    assert row["image"].shape == (32, 32, 3)
    # preloaded episodes keep no file open, and their states are still read on demand
    e = int(ds.columns["episode"][0])
    assert ds._episode(e)["reader"] is None
    # only the frame rows start at is held; another one (for a dataset sharing these
    # episodes) is read from the file when asked for
    assert list(ds._episode(e)["images"]) == [0]
    with EpisodeReader(ds.episode_files[e]) as ep:
        np.testing.assert_array_equal(ds.image(e, 5), ep.image("overhead", 5))
    assert ds.states(e).object_position.shape[0] == BRANCH_STEPS + 1


def test_resume_skips_and_other_settings_are_refused(branches):
    out, _ = branches
    again = collect_branches(_cfg(out), progress=False)
    assert again["collected"] == 0 and again["skipped"] == 1 and again["branches"] == 2 * (1 + PROPOSALS)
    with pytest.raises(CollectError, match="num_proposals"):
        collect_branches(_cfg(out, num_proposals=3), progress=False)


def test_config_is_checked():
    with pytest.raises(ValueError, match="planner method"):
        BranchConfig(out="x", method="base")
    with pytest.raises(ValueError, match="branch_every"):
        BranchConfig(out="x", branch_every=0)


def test_cli(tmp_path, capsys):
    args = ["collect-branches", "--out", str(tmp_path / "c"), "--episodes", "1", "--tasks", "reach",
            "--num-proposals", "2", "--max-steps", "8", "--branch-steps", "4", "--image-size", "16"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "1 source episodes run" in printed and "3 branches" in printed
    assert main([*args[:-2], "--image-size", "32"]) == 2
    assert "other settings" in capsys.readouterr().out
    more = [a if a != "1" else "2" for a in args]           # --episodes 2: the collection grows
    assert main(more) == 0
    assert "1 source episodes run, 1 already on disk" in capsys.readouterr().out
    assert main(["collect-branches", "--out", str(tmp_path / "d"), "--method", "base"]) == 2


def test_contrastive_rows_are_the_questions_siblings_answer_differently(branches, tmp_path):
    out, _ = branches
    cfg = load_saqa_config(config_path("saqa", "branches_contrastive.yaml"), balance=False)
    report = build_saqa(out, tmp_path / "c.h5", cfg)
    assert 0 < report.rows < report.candidates
    ds = SAQADataset(tmp_path / "c.h5", split=None)
    manifest = json.loads((out / "manifest.json").read_text())
    group = {i: f"{e['source']}/{e['replan']}" for i, e in enumerate(sorted(manifest["episodes"],
                                                                              key=lambda e: e["episode_id"]))}
    rows = defaultdict(lambda: defaultdict(list))   # group -> episode -> [(t, h, question, answer)]
    for r in range(len(ds)):
        c = {k: int(v[r]) for k, v in ds.columns.items()}
        rows[group[c["episode"]]][c["episode"]].append((c["t"], c["h"], c["question"], c["answer"]))
    assert rows
    for g, per_episode in rows.items():
        sibs = list(per_episode.values())
        assert len(sibs) == 1 + PROPOSALS           # every sibling is asked the same questions ...
        assert all([q[:3] for q in s] == [q[:3] for q in sibs[0]] for s in sibs)
        for answers in zip(*[[q[3] for q in s] for s in sibs]):
            assert 0 < sum(answers) < len(answers)  # ... and only those they answer differently


def test_contrastive_rows_need_a_branch_collection(tmp_path):
    from swm_ros.data.collect import CollectConfig, collect

    collect(CollectConfig(out=str(tmp_path / "c"), episodes=1, tasks=("reach",), max_steps=4, image_size=(16, 16)),
            progress=False)
    cfg = load_saqa_config(config_path("saqa", "branches_contrastive.yaml"))
    with pytest.raises(ValueError, match="branch collection"):
        build_saqa(tmp_path / "c", tmp_path / "s.h5", cfg)
