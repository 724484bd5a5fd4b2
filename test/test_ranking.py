"""`swm eval ranking`: the world model's ranking of proposals against the simulator oracle's."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from swm_cli import run_swm
from swm_ros.evaluation.ranking import RankingConfig, ranking_metrics


def test_metrics_on_hand_made_scores():
    oracle = [np.array([0.1, 0.9, 0.5, 0.3]), np.array([0.8, 0.2, 0.2, 0.6]), np.array([0.5, 0.5, 0.5, 0.51])]
    perfect = ranking_metrics([o * 2 + 1 for o in oracle], oracle, min_spread=0.05)
    assert perfect["replans"] == 3 and perfect["informative"] == 2           # the flat third is not counted
    assert perfect["top1_agrees"] == 1.0 and perfect["regret"] == pytest.approx(0.0)
    assert perfect["recovered"] == pytest.approx(1.0) and perfect["spearman"] == pytest.approx(1.0)
    assert perfect["random_top1"] == pytest.approx(0.25)
    assert perfect["best_minus_mean"] == pytest.approx(np.mean([0.9 - 0.45, 0.8 - 0.45]))
    reversed_ = ranking_metrics([-o for o in oracle], oracle, min_spread=0.05)
    assert reversed_["top1_agrees"] == 0.0 and reversed_["spearman"] < -0.9
    assert reversed_["regret"] == pytest.approx(np.mean([0.9 - 0.1, 0.8 - 0.2]))
    assert reversed_["recovered"] < 0                                        # worse than a random pick
    # ties at the top: any of the oracle's best counts as agreeing
    tied = ranking_metrics([np.array([0.0, 1.0, 0.0])], [np.array([1.0, 1.0, 0.0])], min_spread=0.05)
    assert tied["top1_agrees"] == 1.0 and tied["random_top1"] == pytest.approx(2 / 3)
    assert ranking_metrics([np.ones(3)], [np.ones(3)], 0.05) == {"replans": 1, "informative": 0}


def test_planned_chunk_against_the_proposals():
    """The planner's own chunk: 0 at the proposals' mean, 1 at their best, above 1 beyond it."""
    oracle = [np.array([0.1, 0.9, 0.5, 0.3]), np.array([0.5, 0.5, 0.5, 0.51]), np.array([0.8, 0.2, 0.2, 0.6])]
    model = [o.copy() for o in oracle]
    gain = np.mean([0.9 - 0.45, 0.8 - 0.45])
    # the flat middle replan is left out, whatever the planner did there
    at_best = ranking_metrics(model, oracle, 0.05, planned_scores=[0.9, 0.0, 0.8])
    assert at_best["planned_recovered"] == pytest.approx(1.0) and at_best["planned_beats_best"] == 0.0
    beyond = ranking_metrics(model, oracle, 0.05, planned_scores=[1.0, 1.0, 0.8])
    assert beyond["planned_recovered"] == pytest.approx(1.0 + 0.1 / 2 / gain)
    assert beyond["planned_beats_best"] == 0.5
    at_mean = ranking_metrics(model, oracle, 0.05, planned_scores=[0.45, 1.0, 0.45])
    assert at_mean["planned_recovered"] == pytest.approx(0.0)
    assert "planned_recovered" not in ranking_metrics(model, oracle, 0.05)


def test_overrating_of_the_pick_and_the_planned_chunk():
    """What the model believes of its choice minus what the simulator says, on counted replans."""
    oracle = [np.array([0.1, 0.9, 0.5, 0.3]), np.array([0.5, 0.5, 0.5, 0.51]), np.array([0.8, 0.2, 0.2, 0.6])]
    honest = ranking_metrics([o.copy() for o in oracle], oracle, 0.05, planned_scores=[0.9, 0.0, 0.8],
                             planned_model_scores=[0.9, 0.7, 0.8])
    assert honest["pick_overrated"] == pytest.approx(0.0) and honest["planned_overrated"] == pytest.approx(0.0)
    # the model likes the worst proposal of the first replan at 0.7 (true 0.1), and believes
    # the planned chunks score 0.95 where the simulator gives 0.5 and 0.6
    fooled = ranking_metrics([np.array([0.7, 0.2, 0.2, 0.2]), oracle[1], oracle[2]], oracle, 0.05,
                             planned_scores=[0.5, 0.0, 0.6], planned_model_scores=[0.95, 0.0, 0.95])
    assert fooled["pick_overrated"] == pytest.approx(np.mean([0.7 - 0.1, 0.0]))
    assert fooled["planned_overrated"] == pytest.approx(np.mean([0.45, 0.35]))
    assert "planned_overrated" not in ranking_metrics(oracle, oracle, 0.05, planned_scores=[0.9, 0.0, 0.8])


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="at least 2 proposals"):
        RankingConfig(num_proposals=1)
    with pytest.raises(ValueError, match="min_spread"):
        RankingConfig(min_spread=-0.1)


def test_cli_ranks_real_proposals_against_the_simulator(tmp_path):
    """Shipped model and learned policy on a real scene: every replan scored both ways, here
    with a task objective of the user's (push asked only whether the blocks touch)."""
    from swm_ros.planning.tasks import task_config_path

    push = yaml.safe_load(task_config_path("push").read_text())
    push["stages"][0]["questions"] = push["stages"][0]["questions"][:1]
    mine = tmp_path / "touch_only.yaml"
    mine.write_text(yaml.safe_dump(push))
    r = run_swm("eval", "ranking", "--tasks", "push", "--seeds", "1", "--min-spread", "0",
                "--task-config", f"push={mine}", "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    (res,) = summary["results"]
    assert res["task"] == "push" and res["replans"] >= 2 and res["informative"] <= res["replans"]
    if res["informative"]:
        assert 0.0 <= res["top1_agrees"] <= 1.0 and 0.0 < res["random_top1"] <= 1.0
        assert res["regret"] >= 0.0 and res["best_minus_mean"] >= 0.0
        assert np.isfinite(res["planned_recovered"]) and 0.0 <= res["planned_beats_best"] <= 1.0
        assert -1.0 <= res["pick_overrated"] <= 1.0 and -1.0 <= res["planned_overrated"] <= 1.0
    assert json.loads((tmp_path / "ranking.json").read_text())["results"] == summary["results"]
    assert "| push |" in (tmp_path / "ranking.md").read_text()
    assert summary["config"]["objectives"] == {"push": str(mine)} and f"push objective `{mine}`" in \
        (tmp_path / "ranking.md").read_text()
    reach = run_swm("eval", "ranking", "--tasks", "push", "--seeds", "1", "--out", str(tmp_path / "bad"),
                    "--task-config", f"push={task_config_path('reach')}")
    assert reach.returncode == 2 and "is an objective for task 'reach', not 'push'" in reach.stdout
    bad = run_swm("eval", "ranking", "--tasks", "fly", "--seeds", "1", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "unknown task" in bad.stdout
    no_planner = run_swm("eval", "ranking", "--tasks", "push", "--seeds", "1", "--planner", "gradient-descent",
                         "--out", str(tmp_path / "bad"))
    assert no_planner.returncode == 2 and "gradient-descent" in no_planner.stdout
