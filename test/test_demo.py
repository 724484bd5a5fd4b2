"""`swm demo`: the graph runs seeded episodes and writes a report a person can read."""
from __future__ import annotations

import json

import pytest

from swm_ros.demo import run_demo


@pytest.mark.slow
def test_demo_runs_an_episode_and_writes_the_report(tmp_path, ros_env):
    reports = run_demo(task="push", episodes=1, out=tmp_path, first_seed=4)
    assert len(reports) == 1 and reports[0].success, reports
    assert 0 < reports[0].steps <= 100 and reports[0].chunks > 0 and reports[0].trajectories > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 1 and summary["success_rate"] == 1.0
    assert (tmp_path / "contact_sheet.png").stat().st_size > 1000
    assert (tmp_path / "episode_seed4.gif").is_file()
    assert "| 4 |" in (tmp_path / "report.md").read_text()
