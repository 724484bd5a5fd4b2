"""A tiny deterministic stand-in for the MuJoCo env and policies, for `swm collect` plumbing tests."""
from __future__ import annotations

import numpy as np

from saqa_helpers import REST_Z, make_state
from swm_ros.envs.base import Observation, TaskSpec


class FakeEnv:
    action_names = ("dx", "dy", "dz", "dyaw", "gripper")
    control_dt = 0.05
    camera_names = ("overhead",)

    def __init__(self, image_size=(16, 16), cameras=("overhead",), **_):
        self.size = tuple(image_size)
        self.cameras = cameras

    def reset(self, seed=None, task=None, variant=None):
        self.rng = np.random.default_rng(seed)
        self._task = TaskSpec(task, ("red_block", "blue_block"), f"{task} the red block", variant or "nominal", 12)
        self.eff = np.array([0.4, 0.0, 0.9])
        self.red = np.array([0.5, 0.0, REST_Z])
        self.t = 0
        return self.observe()

    @property
    def task(self):
        return self._task

    def step(self, action):
        self.eff = self.eff + 0.02 * np.asarray(action[:3])
        self.red = self.red + np.r_[0.01 * action[:2], 0.0]
        self.t += 1
        return self.observe()

    def privileged_state(self):
        return make_state({"red": tuple(self.red), "blue": (0.6, 0.2, REST_Z)}, step=self.t, effector=tuple(self.eff))

    def observe(self):
        img = np.full((*self.size, 3), self.t % 255, dtype=np.uint8)
        return Observation(images={c: img for c in self.cameras}, proprio=np.r_[self.eff, 0.0].astype(np.float32),
                           step=self.t, time=self.t * self.control_dt, state=self.privileged_state())

    def success(self):
        return self.red[0] > 0.56


def make_env(robot="nicol", task="push", variant="nominal", image_size=(16, 16), cameras=("overhead",), seed=0):
    return FakeEnv(image_size=image_size, cameras=cameras)


class FakePolicy:
    chunk_length = 4

    def __init__(self, name):
        self.name = name

    def reset(self, task, seed=None):
        self.rng = np.random.default_rng(seed)

    def propose(self, observation, n=1):
        a = self.rng.uniform(-1, 1, (n, self.chunk_length, 5))
        if self.name == "scripted":
            a[..., 0] = 1.0
        return a


def make_policy(name):
    return FakePolicy(name)
