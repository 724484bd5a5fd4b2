"""Closed-loop benchmark: real MuJoCo episodes, the real planner on a (small, untrained) world model."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from swm_ros.evaluation.closed_loop import (SEED_BASE, ClosedLoopConfig, EpisodeResult, plot_results, read_episodes,
                                            run_closed_loop, summarise, to_markdown, wilson_interval, write_reports)
from swm_ros.planning.tasks import load_task_objective


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(25, 50)
    assert lo == pytest.approx(0.366, abs=1e-3) and hi == pytest.approx(0.634, abs=1e-3)
    lo, hi = wilson_interval(50, 50)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.9287, abs=1e-3)


def test_all_successes_report_and_plot(tmp_path):
    """50/50 has an upper bound of exactly 1 (rounding once made the bar chart's error negative)."""
    assert wilson_interval(50, 50)[1] == 1.0 and wilson_interval(0, 50)[0] == 0.0
    cfg = ClosedLoopConfig(tasks=("reach",), methods=("scripted",), splits=("id",), seeds=50)
    eps = [EpisodeResult("reach", "id", "nominal", "scripted", SEED_BASE + e, True, 20, [], 1.0) for e in range(50)]
    summary = summarise(cfg, eps)
    assert summary["results"][0]["success_rate"] == 1.0
    plot_results(summary, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_summary_groups_and_ignores_episodes_outside_the_grid():
    cfg = ClosedLoopConfig(tasks=("push",), methods=("base",), splits=("id",), seeds=2)
    eps = [EpisodeResult("push", "id", "nominal", "base", SEED_BASE + i, i == 0, 10 + i, [5.0, 7.0], 1.0)
           for i in range(3)]                                   # the third seed is not in a 2-seed grid
    eps.append(EpisodeResult("reach", "id", "nominal", "base", SEED_BASE, True, 5, [], 1.0))
    s = summarise(cfg, eps)
    assert len(s["results"]) == 1
    r = s["results"][0]
    assert r["episodes"] == 2 and r["success_rate"] == 0.5 and r["plan_ms_median"] == 6.0
    assert r["steps_mean"] == 10.5


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from swm_ros.models.checkpoint import save_checkpoint
    from swm_ros.models.tiny import TinyConfig, TinyWorldModel
    from swm_ros.processing.image import ImageProcessor, ImageProcessorConfig
    from swm_ros.robots.profile import load_robot_profile

    torch.manual_seed(0)
    model = TinyWorldModel(TinyConfig(d_model=32, layers=1, heads=2, conv_channels=[8, 16, 16]))
    roi = load_robot_profile("nicol").cameras["overhead"].roi
    model.image_processor = ImageProcessor(ImageProcessorConfig(roi=roi, size=64))
    return save_checkpoint(model, tmp_path_factory.mktemp("wm") / "tiny")


def test_grid_runs_resumes_and_reports(tmp_path, tiny_checkpoint):
    """scripted + a planner method on real episodes; a second run does nothing new (resume)."""
    cfg = ClosedLoopConfig(tasks=("reach",), methods=("scripted", "swm-rank"), splits=("id", "ood"), seeds=2,
                           num_proposals=4, world_model=str(tiny_checkpoint), base_policy="noisy", max_steps=24,
                           out=str(tmp_path / "cl"))
    summary = run_closed_loop(cfg, progress=False)
    eps = read_episodes(tmp_path / "cl" / "episodes.jsonl")
    assert len(eps) == 8
    assert {e.variant for e in eps if e.split == "ood"} <= {"ood_colors", "ood_table", "ood_distractor"}
    assert all(e.variant == "nominal" for e in eps if e.split == "id")
    # same scenes for every method: the seeds match pairwise
    assert sorted(e.seed for e in eps if e.method == "scripted") == sorted(e.seed for e in eps if e.method == "swm-rank")
    planned = [e for e in eps if e.method == "swm-rank"]
    assert all(len(e.plan_ms) >= 1 and e.steps <= 24 for e in planned)
    # the stage planned for is recorded with each plan; a policy alone has none
    assert all(len(e.stages) == len(e.plan_ms) and set(e.stages) == {"reach"} for e in planned)
    assert all(e.stages == [] for e in eps if e.method == "scripted")
    by = {(r["split"], r["method"]): r for r in summary["results"]}
    assert set(by) == {("id", "scripted"), ("id", "swm-rank"), ("ood", "scripted"), ("ood", "swm-rank")}
    assert all(r["episodes"] == 2 and 0.0 <= r["success_rate"] <= 1.0 for r in by.values())

    # resume: nothing left to run, the file does not grow
    run_closed_loop(cfg, progress=False)
    assert len(read_episodes(tmp_path / "cl" / "episodes.jsonl")) == 8
    write_reports(summary, tmp_path / "cl")
    assert json.loads((tmp_path / "cl" / "summary.json").read_text())["results"]
    assert (tmp_path / "cl" / "success.png").read_bytes()[:4] == b"\x89PNG"
    assert "| reach | id | scripted |" in (tmp_path / "cl" / "report.md").read_text()

    # other scenes: new episodes on the new seeds, and the summary counts only those
    other = replace(cfg, methods=("scripted",), splits=("id",), first_seed=SEED_BASE + 500)
    summary = run_closed_loop(other, progress=False)
    eps = read_episodes(tmp_path / "cl" / "episodes.jsonl")
    assert len(eps) == 10 and {e.seed for e in eps[-2:]} == {SEED_BASE + 500, SEED_BASE + 501}
    assert [(r["method"], r["episodes"]) for r in summary["results"]] == [("scripted", 2)]
    assert f"seeds {SEED_BASE + 500}..{SEED_BASE + 501}" in to_markdown(summary)


def test_planner_override_and_settings_guard(tmp_path, tiny_checkpoint):
    """--planner-config runs swm-grad with another YAML; an --out holding episodes of other
    settings refuses new ones instead of mixing them in."""
    import yaml

    from swm_ros.planning.planner import planner_config_path

    grad = yaml.safe_load(planner_config_path("grad").read_text())
    grad["grad"]["lr"] = 0.07
    mine = tmp_path / "my_grad.yaml"
    mine.write_text(yaml.safe_dump(grad))
    cfg = ClosedLoopConfig(tasks=("reach",), methods=("swm-grad",), splits=("id",), seeds=1, num_proposals=3,
                           world_model=str(tiny_checkpoint), base_policy="noisy", max_steps=8,
                           out=str(tmp_path / "cl"), planners={"swm-grad": str(mine)})
    summary = run_closed_loop(cfg, progress=False)
    assert summary["results"][0]["episodes"] == 1
    settings = json.loads((tmp_path / "cl" / "settings.json").read_text())
    assert settings["planners"]["swm-grad"]["grad"]["lr"] == 0.07 and settings["num_proposals"] == 3
    assert f"swm-grad planner `{mine}`" in to_markdown(summary)

    with pytest.raises(ValueError, match="planner of swm-grad"):          # the shipped grad.yaml: lr 0.02
        run_closed_loop(replace(cfg, planners={}), progress=False)
    with pytest.raises(ValueError, match="num_proposals"):
        run_closed_loop(replace(cfg, num_proposals=4), progress=False)
    assert len(read_episodes(tmp_path / "cl" / "episodes.jsonl")) == 1    # nothing was added
    # a method that plans nothing does not care which world model or planners were used
    run_closed_loop(replace(cfg, methods=("base",), planners={}, world_model=None), progress=False)
    after = json.loads((tmp_path / "cl" / "settings.json").read_text())
    assert after["planners"] == settings["planners"] and after["world_model"] == str(tiny_checkpoint)
    assert len(read_episodes(tmp_path / "cl" / "episodes.jsonl")) == 2

    with pytest.raises(ValueError, match="for a swm-\\* method"):
        replace(cfg, planners={"base": str(mine)})
    with pytest.raises(ValueError, match="is a 'rank' planner"):
        replace(cfg, planners={"swm-grad": str(planner_config_path("rank"))})
    with pytest.raises(ValueError, match="not found"):
        replace(cfg, planners={"swm-grad": str(tmp_path / "none.yaml")})


def test_task_objective_override_and_its_settings_guard(tmp_path):
    """--task-config plans a task with another objective (oracle-rank ranks by it: its stages
    are the override's); resuming with the shipped objective is refused, a method that plans
    nothing does not care."""
    import yaml

    from swm_ros.planning.tasks import task_config_path

    reach = yaml.safe_load(task_config_path("reach").read_text())
    reach["stages"][0]["name"] = "approach"
    reach["stages"][0]["questions"] = [{"family": "gripper_closer", "subjects": ["target"], "desired": True,
                                        "weight": 1.0}]
    mine = tmp_path / "my_reach.yaml"
    mine.write_text(yaml.safe_dump(reach))
    cfg = ClosedLoopConfig(tasks=("reach",), methods=("oracle-rank",), splits=("id",), seeds=1, num_proposals=3,
                           base_policy="noisy", max_steps=16, out=str(tmp_path / "cl"), objectives={"reach": str(mine)})
    summary = run_closed_loop(cfg, progress=False)
    (ep,) = read_episodes(tmp_path / "cl" / "episodes.jsonl")
    assert ep.stages == ["approach", "approach"]          # planned with the override, twice in 16 steps
    settings = json.loads((tmp_path / "cl" / "settings.json").read_text())
    assert settings["objectives"]["reach"]["stages"][0]["name"] == "approach"
    assert f"reach objective `{mine}`" in to_markdown(summary)

    with pytest.raises(ValueError, match="objective of reach"):          # the shipped reach.yaml
        run_closed_loop(replace(cfg, objectives={}), progress=False)
    assert len(read_episodes(tmp_path / "cl" / "episodes.jsonl")) == 1
    run_closed_loop(replace(cfg, methods=("base",), objectives={}), progress=False)
    assert len(read_episodes(tmp_path / "cl" / "episodes.jsonl")) == 2
    assert json.loads((tmp_path / "cl" / "settings.json").read_text())["objectives"] == settings["objectives"]

    with pytest.raises(ValueError, match="is an objective for task 'reach', not 'push'"):
        replace(cfg, tasks=("push",), objectives={"push": str(mine)})
    with pytest.raises(ValueError, match="not a task of env"):
        replace(cfg, objectives={"fly": str(mine)})
    with pytest.raises(ValueError, match="not found"):
        replace(cfg, objectives={"reach": str(tmp_path / "none.yaml")})


def test_oracle_rank_plans_with_the_simulator(tmp_path):
    """oracle-rank needs no world model: the proposals are ranked by executing them in the scene."""
    cfg = ClosedLoopConfig(tasks=("pick",), methods=("base", "oracle-rank"), splits=("id",), seeds=2,
                           num_proposals=4, base_policy="noisy", max_steps=24, out=str(tmp_path / "or"))
    summary = run_closed_loop(cfg, progress=False)
    eps = {(e.method, e.seed): e for e in read_episodes(tmp_path / "or" / "episodes.jsonl")}
    assert len(eps) == 4
    assert all(len(e.plan_ms) >= 1 for (m, _), e in eps.items() if m == "oracle-rank")
    stages = {st.name for st in load_task_objective("pick").config.stages}
    assert all(len(e.stages) == len(e.plan_ms) and set(e.stages) <= stages
               for (m, _), e in eps.items() if m == "oracle-rank")
    assert {r["method"] for r in summary["results"]} == {"base", "oracle-rank"}
    # its planner (config/planner/rank.yaml) is recorded, so an edited one does not resume here
    settings_file = tmp_path / "or" / "settings.json"
    settings = json.loads(settings_file.read_text())
    assert settings["planners"]["oracle-rank"]["method"] == "rank" and settings["world_model"] is None
    settings["planners"]["oracle-rank"]["seed"] += 1
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="planner of oracle-rank"):
        run_closed_loop(replace(cfg, seeds=3), progress=False)
    assert len(read_episodes(tmp_path / "or" / "episodes.jsonl")) == 4
    with pytest.raises(ValueError, match="needs an env with snapshot"):
        run_closed_loop(ClosedLoopConfig(env="ogbench-cube-single", tasks=("reach",), methods=("oracle-rank",),
                                         splits=("id",), seeds=1, out=str(tmp_path / "og")), progress=False)


def test_ogbench_reach_runs_with_the_envs_own_policies(tmp_path):
    """On OGBench the base policy, expert, camera and image size are OGBench's."""
    cfg = ClosedLoopConfig(env="ogbench-cube-single", tasks=("reach",), methods=("base", "scripted"), splits=("id",),
                           seeds=2, out=str(tmp_path / "og"))
    assert cfg.base_policy == "ogbench_misaligned" and tuple(cfg.render_size) == (64, 64)
    summary = run_closed_loop(cfg, progress=False)
    by = {r["method"]: r for r in summary["results"]}
    assert set(by) == {"base", "scripted"}
    assert by["scripted"]["success_rate"] == 1.0          # OGBench's oracle touches the cube every time
    assert all(e.steps <= 200 and e.variant == "nominal" for e in read_episodes(tmp_path / "og" / "episodes.jsonl"))
    assert summary["config"]["env"] == "ogbench-cube-single"


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown split 'ood' for env 'ogbench-cube-single'"):
        ClosedLoopConfig(env="ogbench-cube-single", tasks=("reach",), splits=("ood",))
    with pytest.raises(ValueError, match="unknown task 'push' for env"):
        ClosedLoopConfig(env="ogbench-cube-single", tasks=("push",), splits=("id",))
    with pytest.raises(ValueError, match="unknown env"):
        ClosedLoopConfig(env="langtable")
    with pytest.raises(ValueError, match="unknown method"):
        ClosedLoopConfig(methods=("swm-magic",))
    with pytest.raises(ValueError, match="unknown split"):
        ClosedLoopConfig(splits=("mars",))
    with pytest.raises(ValueError, match="first_seed must be >= 0"):
        ClosedLoopConfig(first_seed=-1)


def test_cli_runs_reports_and_refuses_bad_planner_configs(tmp_path):
    from swm_cli import run_swm
    from swm_ros.planning.planner import planner_config_path

    r = run_swm("eval", "closed-loop", "--tasks", "reach", "--methods", "scripted", "--seeds", "1", "--split", "id",
                "--max-steps", "8", "--out", str(tmp_path / "cl"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    (res,) = json.loads(r.stdout.strip().splitlines()[-1])["results"]
    assert res["method"] == "scripted" and res["episodes"] == 1
    assert {"summary.json", "report.md", "success.png", "episodes.jsonl", "settings.json"} <= \
        {p.name for p in (tmp_path / "cl").iterdir()}
    for bad, says in [("swm-grad", "METHOD=YAML"), ("swm-grad=/no/such.yaml", "not found"),
                      ("swm-rank=" + str(planner_config_path("grad")), "is a 'grad' planner")]:
        r = run_swm("eval", "closed-loop", "--tasks", "reach", "--methods", "swm-rank", "--seeds", "1",
                    "--split", "id", "--planner-config", bad, "--out", str(tmp_path / "bad"))
        assert r.returncode == 2 and says in r.stdout, r.stdout[-1000:]
    r = run_swm("eval", "closed-loop", "--tasks", "reach", "--methods", "oracle-rank", "--seeds", "1", "--split", "id",
                "--task-config", "reach", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "TASK=YAML" in r.stdout, r.stdout[-1000:]
