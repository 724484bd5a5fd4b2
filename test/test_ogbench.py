"""OGBench cube worlds behind the Env protocol, OGBench's oracles as policies, collection + SAQA on them.

Real OGBench MuJoCo scenes throughout (the `visual-cube-*` / `cube-*` gymnasium envs).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from swm_ros.data import collect as collect_mod   # noqa: E402
from swm_ros.data.collect import CollectConfig, collect   # noqa: E402
from swm_ros.data.episodes import EpisodeReader   # noqa: E402
from swm_ros.envs import make_env   # noqa: E402
from swm_ros.envs.base import GRIPPER, TABLE, Env, Policy   # noqa: E402
from swm_ros.envs.ogbench_cube import OGBenchCubeEnv, OGBenchCubeState   # noqa: E402
from swm_ros.policies.ogbench_oracle import (CubeSequencer, OGBenchOraclePolicy, load_physics_state,   # noqa: E402
                                             shadow_env)
from swm_ros.policies.scripted import make_policy   # noqa: E402
from swm_ros.saqa.build import SAQAConfig, build_saqa   # noqa: E402
from swm_ros.saqa.families import DIRECTIONS, get_family   # noqa: E402

RIGHT, LEFT = DIRECTIONS.index("right"), DIRECTIONS.index("left")
HIGH = np.array([0.425, 0.0, 0.3])      # an effector position clear of every cube


@pytest.fixture(scope="module")
def visual_env():
    env = make_env("ogbench-cube-single", task="task1", cameras=("front_pixels",), seed=0)
    yield env
    env.close()


@pytest.fixture(scope="module")
def state_env():
    env = make_env(robot="ogbench-cube-single", task="task1", cameras=())   # what `swm collect --robot` does
    yield env
    env.close()


def run_oracle(env, policy, seed: int, task: str, max_steps: int | None = None) -> tuple[int | None, list]:
    """Whole chunks from `policy` until success; (success step or None, observations)."""
    obs = env.reset(seed=seed, task=task)
    policy.reset(env.task, seed=seed)
    seen = [obs]
    limit = max_steps or env.task.max_steps
    while env.step_count < limit:
        for a in policy.propose(obs, 1)[0]:
            obs = env.step(a)
            seen.append(obs)
            if env.success():
                return env.step_count, seen
            if env.step_count >= limit:
                break
    return None, seen


# ---- the adapter -------------------------------------------------------------------------------

def test_reset_step_render_and_seeding(visual_env):
    env = visual_env
    assert isinstance(env, OGBenchCubeEnv) and isinstance(env, Env)
    obs = env.reset(seed=7, task="task1")
    img = obs.images["front_pixels"]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.std() > 5
    assert obs.proprio.shape == (6 + 1 + 3 + 2,) and np.all(np.isfinite(obs.proprio))
    assert env.render("front", width=48, height=32).shape == (32, 48, 3)
    # OGBench's own pixel observation is what our renderer gives for that camera
    np.testing.assert_array_equal(env.render("front_pixels"), img)
    assert env.task.name == "task1" and env.task.objects == ("red_block",) and env.task.max_steps == 200
    assert env.goal_image().shape == (64, 64, 3)
    actions = np.random.default_rng(0).uniform(-1, 1, (12, 5))
    run1 = [env.step(a) for a in actions]
    again = env.reset(seed=7)
    np.testing.assert_array_equal(again.images["front_pixels"], img)
    run2 = [env.step(a) for a in actions]
    for o1, o2 in zip(run1, run2):
        np.testing.assert_array_equal(o1.images["front_pixels"], o2.images["front_pixels"])
        np.testing.assert_array_equal(o1.state.physics_state, o2.state.physics_state)
    other = env.reset(seed=8).state.objects["red_block"].position
    assert not np.allclose(other, again.state.objects["red_block"].position)
    assert np.abs(run1[-1].state.effector_position - obs.state.effector_position).max() > 0.02   # the arm moved


def test_bad_input_is_refused(visual_env):
    env = visual_env
    env.reset(seed=1, task="task2")
    before = env.privileged_state().physics_state
    for bad in (np.zeros(4), np.array([0, 0, np.nan, 0, 0]), np.array([0, 0, 1.5, 0, 0])):
        with pytest.raises(ValueError):
            env.step(bad)
    np.testing.assert_array_equal(env.privileged_state().physics_state, before)   # nothing moved
    assert env.step_count == 0
    with pytest.raises(ValueError, match="unknown OGBench cube task"):
        env.reset(task="push")
    with pytest.raises(ValueError, match="nominal"):
        env.reset(variant="ood_colors")
    with pytest.raises(ValueError, match="unknown camera"):
        env.render("overhead")
    with pytest.raises(ValueError, match="unknown OGBench env"):
        make_env("ogbench-cube-sextuple")


def test_privileged_state_matches_ogbench_info(state_env):
    env = state_env
    env.reset(seed=3, task="task4")
    policy = make_policy("ogbench_oracle")
    policy.reset(env.task, seed=3)
    u = env.ogbench_env.unwrapped
    grasped_frames, top = 0, 0.0
    obs = env.observe()
    for _ in range(3):
        for a in policy.propose(obs, 1)[0]:
            obs = env.step(a)
            s, info = obs.state, u.compute_ob_info()
            assert isinstance(s, OGBenchCubeState)
            np.testing.assert_allclose(s.objects["red_block"].position, info["privileged/block_0_pos"])
            np.testing.assert_allclose(s.objects["red_block"].quaternion, info["privileged/block_0_quat"])
            np.testing.assert_allclose(s.effector_position, info["proprio/effector_pos"])
            assert s.effector_yaw == pytest.approx(info["proprio/effector_yaw"][0])
            assert s.gripper_opening == pytest.approx(1.0 - info["proprio/gripper_opening"][0])
            np.testing.assert_allclose(s.goal_positions["red_block"], u.cur_task_info["goal_xyzs"][0])
            grasped_frames += s.grasped == "red_block"
            top = max(top, s.objects["red_block"].position[2])
            if s.grasped == "red_block":
                assert s.touching("red_block", GRIPPER) and not s.touching("red_block", TABLE)
                assert info["proprio/gripper_contact"][0] > 0.1
    assert grasped_frames > 3                    # the oracle grasped the cube within 48 steps
    assert top > 0.025                           # and lifted it off the floor (resting centre z = 0.02)


def test_joint_level_interface(state_env):
    env = state_env
    env.reset(seed=0, task="task1")
    q0 = env.joint_positions()
    assert len(env.joint_names) == len(q0) == 7
    target = q0.copy()
    target[0] += 0.2
    target[-1] = 0.8                            # close the gripper
    env.set_joint_targets(target)
    env.advance(0.5)
    q1 = env.joint_positions()
    assert q1[0] - q0[0] > 0.1 and q1[-1] > 0.5
    with pytest.raises(ValueError):
        env.set_joint_targets(np.zeros(3))


# ---- the oracle policies -----------------------------------------------------------------------

def test_oracle_reaches_success_on_single_cube_tasks(state_env):
    policy = make_policy("ogbench_oracle")
    assert isinstance(policy, OGBenchOraclePolicy) and isinstance(policy, Policy)
    results = {task: run_oracle(state_env, policy, seed, task)[0]
               for seed, task in enumerate(("task1", "task2", "task3", "task4", "task5"))}
    print("oracle success steps:", results)
    assert sum(s is not None for s in results.values()) >= 4, results


def test_chunks_follow_the_simulator_and_noise_varies_them(state_env):
    env = state_env
    obs = env.reset(seed=2, task="task2")
    policy = make_policy("ogbench_noisy_high", chunk_length=8)
    policy.reset(env.task, seed=2)
    chunks = policy.propose(obs, 3)
    assert chunks.shape == (3, 8, 5) and np.all(np.abs(chunks) <= 1.0)
    assert not np.allclose(chunks[0], chunks[1])          # proposals differ by their noise
    # executed open loop, the first chunk lands where the look-ahead said it would
    u = shadow_env(1).unwrapped
    load_physics_state(u, obs.state.physics_state)
    predicted = [u.step(a)[4]["proprio/effector_pos"] for a in chunks[0]]
    executed = [env.step(a).state.effector_position for a in chunks[0]]
    np.testing.assert_allclose(executed, predicted, atol=1e-3)
    with pytest.raises(ValueError, match="privileged state"):
        policy.propose(type(obs)(images={}, proprio=obs.proprio, step=0, time=0.0, state=None))


def test_reach_task_succeeds_on_pad_contact_with_the_target(state_env):
    env = state_env
    obs = env.reset(seed=3, task="reach")
    assert env.task.name == "reach" and env.task.objects == ("red_block",) and env.task.max_steps == 200
    assert not env.success()
    # OGBench's oracle goes for a grasp; a pad touches the cube on the way, and that ends a reach
    step, seen = run_oracle(env, make_policy("ogbench_oracle"), seed=3, task="reach")
    assert step is not None and step < 100, step
    assert env.success() and seen[-1].state.touching("red_block", GRIPPER)
    assert not any(o.state.touching("red_block", GRIPPER) for o in seen[:-1] if o.state.grasped is None
                   and o.state.effector_position[2] > 0.15)       # nothing counted from high above
    env.reset(seed=3, task="reach")
    assert not env.success() and env.step_count == 0            # a new episode starts untouched


def test_misaligned_oracle_aims_beside_the_cube(state_env):
    """`ogbench_misaligned` descends 6 cm from the cube (in a direction drawn per episode); the
    oracle descends onto it. Both without noise, so only the believed position differs."""
    env = state_env

    def miss_at_lowest_point(target_error: float, seed: int) -> float:
        policy = OGBenchOraclePolicy(target_error=target_error)
        obs = env.reset(seed=5, task="reach")
        policy.reset(env.task, seed=seed)
        lowest = (np.inf, np.inf)
        for _ in range(3):
            for a in policy.propose(obs, 1)[0]:
                obs = env.step(a)
                s = obs.state
                miss = float(np.linalg.norm(s.effector_position[:2] - s.objects["red_block"].position[:2]))
                lowest = min(lowest, (float(s.effector_position[2]), miss))
        return lowest[1]

    assert make_policy("ogbench_misaligned").target_error == pytest.approx(0.06)
    assert miss_at_lowest_point(0.0, seed=0) < 0.02
    misses = [miss_at_lowest_point(0.06, seed) for seed in (0, 1)]
    assert all(0.035 < m < 0.10 for m in misses), misses
    with pytest.raises(ValueError, match="target_error"):
        OGBenchOraclePolicy(target_error=-0.01)


def test_sequencer_orders_stacks_and_breaks_swaps():
    goals_stack = np.array([[0.425, 0.0, 0.06], [0.425, 0.0, 0.02]])   # red goes on top of blue
    pos = np.array([[0.425, -0.2, 0.02], [0.425, 0.2, 0.02]])
    assert CubeSequencer().choose(pos, goals_stack, HIGH, released=True).block == 1    # the base first
    goals_swap = np.array([[0.425, 0.1, 0.02], [0.425, -0.1, 0.02]])
    pos = np.array([[0.425, -0.1, 0.02], [0.425, 0.1, 0.02]])
    seq = CubeSequencer()
    first = seq.choose(pos, goals_swap, HIGH, released=True)
    assert not first.final                                   # one cube goes to a free spot first
    assert min(np.linalg.norm(first.goal[:2] - p[:2]) for p in np.concatenate([pos, goals_swap])) > 0.08
    assert seq.choose(pos, goals_swap, HIGH, released=True) == first    # sticky until placed
    moved = pos.copy()
    moved[first.block] = first.goal
    low = np.array([*first.goal[:2], 0.05])                  # the hand still right above the cube
    assert seq.choose(moved, goals_swap, low, released=True) == first
    nxt = seq.choose(moved, goals_swap, HIGH, released=True)
    assert nxt.final and nxt.block != first.block            # now the other goal is free


# ---- collection and SAQA -----------------------------------------------------------------------

def test_collect_and_saqa_on_ogbench(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_mod, "_WORKER", {})    # collect's per-process env cache: build ours afresh
    cfg = CollectConfig(out=str(tmp_path / "og"), episodes=2, tasks=("task1",), robot="ogbench-cube-single",
                        policies={"ogbench_oracle": 1.0}, cameras=("front_pixels",), max_steps=60,
                        steps_after_success=2, seed=1)
    summary = collect(cfg, progress=False)
    assert summary["collected"] == 2 and summary["success_rate"] == 1.0
    with EpisodeReader(tmp_path / "og" / "episodes" / "ep_000000.h5") as ep:
        assert ep.meta.robot == "ogbench-cube-single" and ep.meta.task == "task1" and ep.meta.success
        assert ep.images("front_pixels").shape == (ep.num_frames, 64, 64, 3)
        st = ep.states
    assert st.object_names == ("red_block",) and st.object_colors == ("red",) and st.half_sizes[0] == 0.02
    assert (st.grasped == 0).any() and (st.grasped[0] == -1)
    # task1 carries the cube from y = +0.1 to y = -0.1: to the robot's right
    first, last = st.take([0]), st.take([len(st) - 1])
    a = np.array([0])
    assert get_family("moved").label(first, last, a, direction=[RIGHT]) == (True, True)
    assert get_family("moved").label(first, last, a, direction=[LEFT])[0] == False   # noqa: E712
    assert get_family("moved_any").label(first, last, a) == (True, True)
    t_grasp = int(np.argmax(st.grasped == 0))
    assert get_family("grasped").label(first, st.take([t_grasp]), a)[0]
    assert get_family("gripper_touching").label(first, st.take([t_grasp]), a)[0]
    assert get_family("gripper_closer").label(first, st.take([t_grasp]), a) == (True, True)
    report = build_saqa(tmp_path / "og", tmp_path / "og" / "saqa.h5", SAQAConfig(seed=0))
    for family in ("moved", "moved_any", "grasped", "gripper_touching", "gripper_closer"):
        assert report.per_family[family]["rows"] > 0, family


# ---- the shipped OGBench world model -----------------------------------------------------------

def test_shipped_ogbench_world_model_sees_and_predicts_the_touch(visual_env):
    """`tiny-ogbench` on frames it never saw (seeds outside its data), averaged over the episodes
    in which OGBench's oracle touches the cube: no touch at the start, a touch once the pads are
    on the cube, and, from the start frame, a touch likelier with the oracle's actions than with
    the hand held still (what a planner ranks by)."""
    import torch

    from swm_ros.models.registry import load_world_model

    model = load_world_model("tiny-ogbench").eval()
    questions = ["Is the gripper touching the red block?", "Does the gripper touch the red block?"]
    p_yes = lambda o, actions: float(model.p_yes(model.process_frames(o.images["front_pixels"]), actions,
                                                 questions).mean())
    rows = []
    for seed in range(10, 18):
        obs = first = visual_env.reset(seed=seed, task="reach")
        policy = make_policy("ogbench_oracle")
        policy.reset(visual_env.task, seed=seed)
        executed = []
        while not visual_env.success() and len(executed) < 60:
            for a in policy.propose(obs, 1)[0]:
                obs = visual_env.step(a)
                executed.append(a)
                if visual_env.success():
                    break
        if not visual_env.success():
            continue
        executed = np.asarray(executed, np.float32)[None]
        with torch.no_grad():
            rows.append((p_yes(first, executed[:, :0]), p_yes(obs, executed[:, :0]),
                         p_yes(first, executed), p_yes(first, np.zeros_like(executed))))
    assert len(rows) >= 5
    p_start, p_touch, p_future, p_still = np.mean(rows, axis=0)
    assert p_start < 0.1 and p_touch > 0.6, rows
    assert p_future > p_still + 0.2, rows
