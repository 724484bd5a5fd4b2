"""Episode files: round trip, reconstruction of PrivilegedState, clear errors on bad files."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from saqa_helpers import random_walk_states
from swm_ros.data.episodes import (
    FORMAT_VERSION, EpisodeFormatError, EpisodeMeta, EpisodeReader, EpisodeRecorder, StateArrays, is_complete,
    write_episode,
)
from swm_ros.envs.base import Observation


def _episode(n=12, seed=0):
    rng = np.random.default_rng(seed)
    states = random_walk_states(rng, n)
    images = {"overhead": rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
              "eye": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)}
    actions = rng.uniform(-1, 1, (n - 1, 5)).astype(np.float32)
    proprio = rng.normal(size=(n, 14)).astype(np.float32)
    meta = EpisodeMeta(episode_id="ep_000001", task="push", task_objects=("red_block", "blue_block"),
                       instruction="push the red block to the blue block", variant="nominal", seed=7,
                       policy="noisy", success=True, control_dt=0.05, max_steps=100, extra={"note": 1})
    return meta, images, actions, proprio, states


def _same_state(a, b):
    assert a.step == b.step and a.time == b.time and a.grasped == b.grasped and a.contacts == b.contacts
    assert list(a.objects) == list(b.objects)
    for n in a.objects:
        oa, ob = a.objects[n], b.objects[n]
        assert (oa.kind, oa.color, oa.half_size) == (ob.kind, ob.color, ob.half_size)
        np.testing.assert_array_equal(oa.position, ob.position)
        np.testing.assert_array_equal(oa.quaternion, ob.quaternion)
    np.testing.assert_array_equal(a.effector_position, b.effector_position)
    np.testing.assert_array_equal(a.joint_positions, b.joint_positions)
    assert (a.effector_yaw, a.gripper_opening, a.table_height) == (b.effector_yaw, b.gripper_opening, b.table_height)


def test_round_trip(tmp_path):
    meta, images, actions, proprio, states = _episode()
    path = write_episode(tmp_path / "ep.h5", meta, images, actions, proprio, states, compression="gzip:4")
    assert not list(tmp_path.glob(".*tmp"))   # no leftover temporary file
    with EpisodeReader(path) as ep:
        assert ep.meta == meta
        assert ep.num_frames == 12 and ep.num_actions == 11 and ep.cameras == ("overhead", "eye")
        for cam in images:
            np.testing.assert_array_equal(ep.images(cam), images[cam])
        np.testing.assert_array_equal(ep.image("overhead", 3), images["overhead"][3])
        np.testing.assert_array_equal(ep.actions, actions)
        np.testing.assert_array_equal(ep.proprio, proprio)
        for t in range(12):
            _same_state(ep.state(t), states[t])
        arr = ep.states
        assert arr.contacts.shape == (12, 5, 5) and arr.object_position.shape == (12, 3, 3)
        assert arr.bodies[-2:] == ("gripper", "table")
        assert np.array_equal(arr.contacts, arr.contacts.transpose(0, 2, 1))
    assert is_complete(path)


def test_recorder_matches_write(tmp_path):
    meta, images, actions, proprio, states = _episode(n=5)
    rec = EpisodeRecorder(tmp_path / "rec.h5", meta, cameras=["overhead"])
    for t in range(5):
        obs = Observation(images={c: images[c][t] for c in images}, proprio=proprio[t], step=t, time=0.0, state=states[t])
        rec.add(obs, None if t == 0 else actions[t - 1])
    path = rec.finish(success=False)
    with EpisodeReader(path) as ep:
        assert ep.cameras == ("overhead",) and ep.meta.success is False
        np.testing.assert_array_equal(ep.actions, actions[:4])
        _same_state(ep.state(4), states[4])


def test_state_arrays_take_and_errors():
    states = random_walk_states(np.random.default_rng(1), 6)
    arr = StateArrays.from_states(states)
    sub = arr.take([5, 0])
    _same_state(sub.state(0), states[5])
    with pytest.raises(IndexError):
        arr.state(6)


def test_corrupt_file_gives_clear_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(EpisodeFormatError, match="corrupt or truncated"):
        EpisodeReader(bad)
    meta, images, actions, proprio, states = _episode()
    good = write_episode(tmp_path / "good.h5", meta, images, actions, proprio, states)
    truncated = tmp_path / "trunc.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(EpisodeFormatError):
        r = EpisodeReader(truncated)
        r.images("overhead")
    assert not is_complete(truncated)
    with pytest.raises(EpisodeFormatError, match="no such episode file"):
        EpisodeReader(tmp_path / "missing.h5")


def test_wrong_version_and_incomplete(tmp_path):
    meta, images, actions, proprio, states = _episode()
    path = write_episode(tmp_path / "ep.h5", meta, images, actions, proprio, states)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(EpisodeFormatError, match="format_version 2 is not supported"):
        EpisodeReader(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["complete"] = False
    with pytest.raises(EpisodeFormatError, match="incomplete"):
        EpisodeReader(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(EpisodeFormatError, match="not a swm_ros episode file"):
        EpisodeReader(other)


def test_write_validates_shapes(tmp_path):
    meta, images, actions, proprio, states = _episode()
    with pytest.raises(ValueError, match="need 11 actions"):
        write_episode(tmp_path / "x.h5", meta, images, actions[:5], proprio, states)
    assert not (tmp_path / "x.h5").exists()
