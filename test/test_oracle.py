"""The simulator oracle: answers from executing chunks in a snapshot of a real MuJoCo scene."""
from __future__ import annotations

import numpy as np
import pytest

from swm_ros.envs.nicol_tabletop import NicolTabletopEnv
from swm_ros.evaluation.oracle import SimulatorOracle
from swm_ros.planning.tasks import load_task_objective


@pytest.fixture(scope="module")
def pick():
    env = NicolTabletopEnv(task="pick", cameras=("overhead",), image_size=(64, 64))
    env.reset(seed=7)
    oracle = SimulatorOracle(env)
    objective = load_task_objective("pick")
    oracle.set_task(env.task, objective)
    yield env, oracle, objective.render(env.task)
    env.close()


def _towards_block(env, sign: float) -> np.ndarray:
    s = env.privileged_state()
    v = s.objects[env.task.objects[0]].position[:2] - s.effector_position[:2]
    step = np.zeros(5)
    step[:2] = sign * v / np.linalg.norm(v)
    step[4] = -1.0                                     # keep the gripper open
    return np.tile(step, (8, 1))


def test_answers_come_from_what_the_chunk_does_and_leave_the_scene_as_it_was(pick):
    env, oracle, stages = pick
    questions = stages[0].objective.questions          # grasped, gripper touching, gripper closer
    before = env.privileged_state()
    p = oracle(np.zeros((64, 64, 3), np.uint8), [_towards_block(env, 1.0), _towards_block(env, -1.0)], questions)
    assert p.shape == (2, 3)
    assert p[0, 2] == 1.0 and p[1, 2] == 0.0           # closer when driven at the block, not when driven away
    assert p[0, 0] == p[1, 0] == 0.0                    # an open gripper grasps nothing
    after = env.privileged_state()
    # restore recomputes positions from the same joint state (mj_forward): equal to rounding
    np.testing.assert_allclose(after.effector_position, before.effector_position, atol=1e-9)
    assert after.step == before.step and oracle.rollouts == 2

    # the answer for "towards" is the label of really executing it
    snap = env.snapshot()
    for a in _towards_block(env, 1.0):
        env.step(a)
    d0 = np.linalg.norm(before.effector_position - before.objects[env.task.objects[0]].position)
    end = env.privileged_state()
    d1 = np.linalg.norm(end.effector_position - end.objects[env.task.objects[0]].position)
    assert d0 - d1 > 0.03                               # the family's "closer" margin
    env.restore(snap)


def test_prefixes_of_one_chunk_are_read_from_one_rollout(pick):
    env, oracle, stages = pick
    questions = stages[0].objective.questions
    chunk = _towards_block(env, 1.0)
    image = np.zeros((64, 64, 3), np.uint8)
    alone = oracle(image, [chunk[:1]], questions)
    n = oracle.rollouts
    both = oracle(image, [chunk[:1], chunk], questions)
    assert oracle.rollouts == n + 1                     # the short one is a prefix: read on the way
    np.testing.assert_array_equal(both[0], alone[0])
    np.testing.assert_array_equal(both[1], oracle(image, [chunk], questions)[0])
    assert both[0, 2] < 1.0 and both[1, 2] == 1.0       # one 2 cm step cannot close the 3 cm margin, 8 do


def test_now_questions_and_unknown_questions(pick):
    env, oracle, stages = pick
    now = oracle(np.zeros((64, 64, 3), np.uint8), None, stages[0].advance_when.questions)
    assert now.tolist() == [0.0]                        # nothing is grasped at the start
    with pytest.raises(ValueError, match="unknown"):
        oracle(np.zeros((64, 64, 3), np.uint8), None, ["is the sky blue?"])


def test_an_env_without_snapshots_is_refused():
    with pytest.raises(ValueError, match="needs an env with snapshot"):
        SimulatorOracle(object())
