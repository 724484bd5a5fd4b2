"""`swm collect` and `swm saqa` on the real NicoL tabletop env: workers, manifest, resume, determinism."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from swm_ros.cli import main
from swm_ros.data.collect import CollectConfig, CollectError, collect, parse_policies, plan_episodes
from swm_ros.data.episodes import EpisodeReader
from swm_ros.saqa.build import build_saqa
from swm_ros.saqa.dataset import SAQADataset



def _cfg(out, **kw):
    base = dict(out=str(out), episodes=3, tasks=("push", "pick"), variants=("nominal", "ood_colors"),
                policies={"scripted": 1.0, "random": 1.0}, image_size=(16, 16), max_steps=12, seed=5,
                steps_after_success=-1)
    base.update(kw)
    return CollectConfig(**base)


def test_plan_is_seeded_and_stable():
    a = plan_episodes(_cfg("x", episodes=20))
    assert a == plan_episodes(_cfg("x", episodes=20))
    assert a[:5] == plan_episodes(_cfg("x", episodes=5))        # adding episodes keeps old ones
    assert {p.split for p in a if p.variant != "nominal"} == {"ood"}
    assert {p.split for p in a if p.variant == "nominal"} <= {"train", "val", "test"}
    assert a != plan_episodes(_cfg("x", episodes=20, seed=6))
    mix = plan_episodes(_cfg("x", episodes=30, policies={"scripted": 0.5, "noisy": 0.3, "random": 0.2}))
    counts = {n: sum(p.policy == n for p in mix) for n in ("scripted", "noisy", "random")}
    assert abs(counts["scripted"] - 15) <= 1 and abs(counts["noisy"] - 9) <= 1 and abs(counts["random"] - 6) <= 1
    assert parse_policies("scripted:0.5,noisy:0.3, random:0.2") == {"scripted": 0.5, "noisy": 0.3, "random": 0.2}


def test_collect_workers_manifest_resume(tmp_path):
    s = collect(_cfg(tmp_path / "c", workers=2), progress=False)
    assert s["collected"] == 3 and s["skipped"] == 0
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert [e["episode_id"] for e in manifest["episodes"]] == ["ep_000000", "ep_000001", "ep_000002"]
    for e in manifest["episodes"]:
        with EpisodeReader(tmp_path / "c" / e["file"]) as ep:
            assert ep.num_frames == 13 == e["num_frames"] and ep.actions.shape == (12, 5)
            assert ep.meta.task == e["task"] and ep.meta.seed == e["seed"]
    first = (tmp_path / "c" / "episodes" / "ep_000000.h5").stat().st_mtime_ns
    s2 = collect(_cfg(tmp_path / "c", workers=2, episodes=4), progress=False)   # resume + extend
    assert s2["skipped"] == 3 and s2["collected"] == 1
    assert (tmp_path / "c" / "episodes" / "ep_000000.h5").stat().st_mtime_ns == first
    # a lost manifest is rebuilt from the files; a truncated file is collected again
    (tmp_path / "c" / "manifest.json").unlink()
    bad = tmp_path / "c" / "episodes" / "ep_000003.h5"
    bad.write_bytes(bad.read_bytes()[:100])
    s3 = collect(_cfg(tmp_path / "c", episodes=4), progress=False)
    assert s3["skipped"] == 3 and s3["collected"] == 1
    # the same command elsewhere gives the same data
    collect(_cfg(tmp_path / "d", episodes=4), progress=False)
    for i in range(4):
        with EpisodeReader(tmp_path / "c" / "episodes" / f"ep_{i:06d}.h5") as a, \
                EpisodeReader(tmp_path / "d" / "episodes" / f"ep_{i:06d}.h5") as b:
            np.testing.assert_array_equal(a.actions, b.actions)
            np.testing.assert_array_equal(a.states.object_position, b.states.object_position)
    with pytest.raises(CollectError, match="other settings"):
        collect(_cfg(tmp_path / "c", episodes=4, seed=99), progress=False)


def test_collect_then_saqa(tmp_path):
    collect(_cfg(tmp_path / "c", episodes=4, max_steps=40), progress=False)
    report = build_saqa(tmp_path / "c", tmp_path / "c" / "saqa.h5")
    assert report.rows > 0
    for name, c in report.per_family.items():
        assert c["yes"] * 2 == c["rows"], name
    ds = SAQADataset(tmp_path / "c" / "saqa.h5", split=None)
    assert len(ds) == report.rows and ds[0]["image"].shape == (16, 16, 3)


@pytest.mark.slow
def test_swm_collect_and_saqa_real_env(tmp_path, capsys):
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = tmp_path / "real"
    args = ["collect", "--out", str(out), "--episodes", "3", "--tasks", "push", "--variants", "nominal",
            "--policies", "scripted:1,noisy:1,random:1", "--workers", "2", "--max-steps", "20", "--seed", "1"]
    assert main(args) == 0
    assert "3 episodes collected" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["episodes"]) == 3
    for e in manifest["episodes"]:
        with EpisodeReader(out / e["file"]) as ep:
            assert ep.images("overhead").shape[1:] == (64, 64, 3)
            assert ep.num_frames == ep.num_actions + 1 and ep.num_actions <= 20
            ep.state(ep.num_frames - 1)
    assert main(args) == 0
    assert "0 episodes collected, 3 already on disk" in capsys.readouterr().out
    assert main(["saqa", "--episodes", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rows/s" in printed
    ds = SAQADataset(out / "saqa.h5", split=None)
    assert len(ds) > 0 and ds.yes_fraction() == 0.5


def test_a_second_collection_in_the_same_process_gets_its_own_image_size(tmp_path):
    """The worker's cached env is rebuilt when the image pipeline changes (it used to be reused)."""
    from swm_ros.data.collect import CollectConfig, collect
    from swm_ros.data.episodes import EpisodeReader

    for size in (16, 32):
        out = tmp_path / f"c{size}"
        collect(CollectConfig(out=str(out), episodes=1, tasks=("reach",), max_steps=2, image_size=(size, size)),
                progress=False)
        with EpisodeReader(next((out / "episodes").glob("*.h5"))) as ep:
            assert ep.images("overhead").shape[1:] == (size, size, 3)
