"""`swm eval label-floor`: SAQA rows replayed in the simulator from starts one frame cannot tell
apart (real episodes from `swm collect`, real MuJoCo)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from swm_cli import run_swm
from swm_ros.envs import make_env
from swm_ros.evaluation.label_floor import LabelFloorConfig, label_floor, row_floor


def test_row_floor_on_hand_made_labels():
    assert row_floor([1, 1, 0, 0, 1]) == pytest.approx(0.4)
    assert row_floor([1, 1, 1]) == 0.0
    assert row_floor([0, 1, -1, 1]) == pytest.approx(1 / 3)        # a start inside the ambiguity band is not asked
    assert row_floor([1, -1, -1]) == 0.0


def test_unperturbed_replays_reproduce_every_stored_answer(saqa_file, tmp_path):
    """Episodes are their seed and actions: replayed, every row gets its stored answer, and with
    no perturbation no start answers otherwise."""
    summary = label_floor(LabelFloorConfig(data=str(saqa_file), split="train", rows=40, sigma_mm=0.0,
                                           perturbations=2, out=str(tmp_path)), progress=False)
    floor = summary["by_sigma"][0]
    assert summary["rows"] == 40 and summary["replay_mismatch"] == 0
    assert floor["sigma_mm"] == 0.0 and floor["error_floor"] == 0.0 and floor["rows_with_a_flip"] == 0.0


@pytest.mark.parametrize("mode", ["blocks", "command"])
def test_perturbations_a_frame_would_show_change_answers(saqa_file, tmp_path, mode):
    """Shifted by 5 cm (eight pixels), the blocks or the arm's set-point change some answers: the
    floor is measured, not assumed (at a pixel's size it is what `swm eval label-floor` reports)."""
    summary = label_floor(LabelFloorConfig(data=str(saqa_file), split="train", rows=40, sigma_mm=50.0,
                                           perturbations=3, mode=mode, out=str(tmp_path)), progress=False)
    floor = summary["by_sigma"][0]
    assert summary["rows"] == 40 and summary["replay_mismatch"] == 0
    assert 0.0 < floor["error_floor"] <= 0.5 and floor["rows_with_a_flip"] > 0.0
    assert sum(f["rows"] for f in floor["by_family"].values()) == 40


def test_a_sweep_of_sigmas_shares_each_rows_draws(saqa_file, tmp_path):
    """Each sigma of a sweep scales the same noise: its floor is the one a run at that sigma alone
    reports, and sigma 0 beside it is still exactly 0."""
    def run(sigmas):
        return label_floor(LabelFloorConfig(data=str(saqa_file), split="train", rows=30, sigma_mm=sigmas,
                                            perturbations=2, out=str(tmp_path)), progress=False)

    sweep, alone = run((0.0, 50.0)), run((50.0,))
    assert [f["sigma_mm"] for f in sweep["by_sigma"]] == [0.0, 50.0]
    assert sweep["by_sigma"][0]["error_floor"] == 0.0 and sweep["by_sigma"][1]["error_floor"] > 0.0
    assert sweep["by_sigma"][1] == alone["by_sigma"][0]
    with pytest.raises(ValueError, match="every sigma_mm >= 0"):
        LabelFloorConfig(sigma_mm=(1.5, -1.0))


def test_shift_object_keeps_the_heading_and_set_command_is_clipped():
    env = make_env(task="push", cameras=())
    try:
        env.reset(seed=3, task="push")
        for _ in range(5):
            env.step_physics(np.array([1.0, 0.0, -1.0, 0.0, 1.0]))
        name = next(iter(env.privileged_state().objects))
        before = env.privileged_state().objects[name]
        env.shift_object(name, [0.01, -0.02])
        after = env.privileged_state().objects[name]
        assert np.allclose(np.asarray(after.position) - np.asarray(before.position), [0.01, -0.02, 0.0], atol=1e-9)
        assert np.allclose(after.quaternion, before.quaternion)
        with pytest.raises(ValueError, match="no object"):
            env.shift_object("unicorn", [0.0, 0.0])
        env.set_command([10.0, 10.0, 10.0])
        assert np.all(env._cmd_pos <= env._ws_hi)
    finally:
        env.close()


def test_cli_writes_its_report_and_refuses_bad_settings(saqa_file, tmp_path):
    r = run_swm("eval", "label-floor", "--data", str(saqa_file), "--split", "train", "--rows", "5",
                "--perturbations", "1", "--sigma-mm", "1.5,20", "--out", str(tmp_path / "lf"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["rows"] + summary["replay_mismatch"] == 5
    assert [f["sigma_mm"] for f in summary["by_sigma"]] == [1.5, 20.0]
    assert (tmp_path / "lf" / "label_floor.md").read_text().startswith("# Label floor")
    assert (tmp_path / "lf" / "label_floor.png").stat().st_size > 0
    garbled = run_swm("eval", "label-floor", "--data", str(saqa_file), "--sigma-mm", "1.5,x", "--out", str(tmp_path / "g"))
    assert garbled.returncode == 2 and "could not convert string to float" in garbled.stdout
    bad = run_swm("eval", "label-floor", "--data", str(saqa_file), "--rows", "0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "rows and perturbations" in bad.stdout
    unknown = run_swm("eval", "label-floor", "--data", str(saqa_file), "--split", "nowhere", "--out", str(tmp_path / "n"))
    assert unknown.returncode == 2 and "unknown split 'nowhere'" in unknown.stdout
    empty = run_swm("eval", "label-floor", "--data", str(saqa_file), "--split", "ood", "--out", str(tmp_path / "e"))
    assert empty.returncode == 2 and "no 'ood' rows" in empty.stdout            # nominal scenes only
