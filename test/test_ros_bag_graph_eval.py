"""`swm bag eval --graph`: a simulated episode's bag played through config/graphs/replay.yaml
(player -> policy -> planner -> controller in shadow mode), separate processes over DDS."""
from __future__ import annotations

import json

import pytest

from swm_ros.bags.episodes import BagTopics, episodes_to_bag
from swm_ros.bags.graph_eval import replay_topics
from swm_ros.bags.reader import BagReader

from swm_cli import run_swm

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _expert_bag(saqa_file, out):
    manifest = json.loads((saqa_file.parent / "manifest.json").read_text())
    entry = next(e for e in manifest["episodes"] if e["policy"] == "scripted")
    episodes_to_bag([saqa_file.parent / entry["file"]], out)
    return out


def test_graph_replay_plans_in_shadow_mode_and_follows_the_recorded_expert(ros_env, saqa_file, tmp_path):
    """Every plan the graph makes is matched to the recorded frame it was made at; the
    controller turns plans into shadow trajectories and never publishes on the arm's topic;
    the scripted expert's proposals head where the scripted expert's recording went."""
    bag = _expert_bag(saqa_file, tmp_path / "bag")
    out = tmp_path / "eval"
    r = run_swm("bag", "eval", str(bag), "--graph", "--planner", "rank", "--policy", "scripted", "--proposals", "4",
                "--max-frames", "4", "--max-horizon", "4", "--out", str(out), "--json", timeout=400)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((out / "logs").glob("*.log")))
    assert r.returncode == 0, r.stderr[-3000:] + logs
    g = json.loads(r.stdout)["graph"]
    assert g["available"] and g["plans"] >= 2 and g["plans_unmatched"] == 0, (g, logs)
    assert g["player_exit_code"] == 0 and not g["nodes_exited_early"], (g, logs)
    assert g["shadow_trajectories"] >= 1 and g["arm_commands"] == 0, (g, logs)
    assert g["plan_ms"]["p50"] > 0
    # the same expert from the replayed state pushes the way the recording does (plans fall
    # between the recording's own replanning points, so the chunks' later steps differ: no L2 bound)
    assert g["xy_cosine"]["base_proposal"] > 0.7, g
    assert g["xy_cosine"]["planned"] is not None and g["l2_per_step"]["planned"] is not None
    report = (out / "report.md").read_text()
    assert "controller in shadow mode" in report and "arm commands" in report


def test_replay_graph_needs_camera_joints_and_task(tmp_path, saqa_file):
    bag = _expert_bag(saqa_file, tmp_path / "bag")
    topics = BagTopics.for_robot("nicol")
    assert replay_topics(BagReader(bag), topics) == [topics.image, topics.joint_states, topics.task_info,
                                                     topics.world_state]
    with pytest.raises(ValueError, match=r"needs \['/other_task'\]; the bag has .*/task_info"):
        replay_topics(BagReader(bag), BagTopics(**{**topics.__dict__, "task_info": "/other_task"}))
