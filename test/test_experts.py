"""Scripted experts solve every task (nominal variant), closed loop, without rendering."""
from __future__ import annotations

import numpy as np
import pytest

from swm_ros.envs import make_env
from swm_ros.envs.tasks import TASKS
from swm_ros.policies.scripted import make_policy

SEEDS = range(50)
EXECUTE = 8          # actions of each 16-step chunk run before replanning


def _run(env, policy, seed: int) -> bool:
    obs = env.reset(seed=seed)
    policy.reset(env.task, seed)
    while env.step_count < env.task.max_steps:
        chunk = policy.propose(obs, 1)
        assert chunk.shape == (1, policy.chunk_length, 5)
        assert np.all(np.abs(chunk) <= 1.0)
        for a in chunk[0, :EXECUTE]:
            obs = env.step(a)
            if env.success():
                return True
            if env.step_count >= env.task.max_steps:
                break
    return False


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_succeeds(task):
    env = make_env(task=task, cameras=())
    policy = make_policy("scripted")
    wins = [seed for seed in SEEDS if _run(env, policy, seed)]
    assert len(wins) >= 45, f"{task}: {len(wins)}/50, failed seeds {sorted(set(SEEDS) - set(wins))}"


def test_noisy_and_random_policies_are_seeded_and_bounded():
    env = make_env(task="push", cameras=())
    obs = env.reset(seed=0)
    for name in ("noisy", "random"):
        a1 = make_policy(name, seed=5)
        a2 = make_policy(name, seed=5)
        a1.reset(env.task, 5)
        a2.reset(env.task, 5)
        x, y = a1.propose(obs, 3), a2.propose(obs, 3)
        assert x.shape == (3, 16, 5) and np.all(np.abs(x) <= 1.0)
        np.testing.assert_array_equal(x, y)
        # temporally smoothed: consecutive steps differ less than independent samples would
        assert np.abs(np.diff(x[..., :3], axis=1)).mean() < 0.5
    with pytest.raises(ValueError, match="scripted"):
        make_policy("nope")
