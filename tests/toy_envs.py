"""Tiny environments with answers known in advance, registered for the tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class Bandit(gym.Env):
    """One-step episodes: action 1 pays 1, action 0 pays 0. The best return is exactly 1."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action):
        return np.ones(1, np.float32), float(action == 1), True, False, {}


class Counter(gym.Env):
    """Observation = steps taken so far, reward 1 per step, terminates after ``length`` steps.

    With ``length_from_seed`` the length of a seeded episode is 2 + seed % 5, so evaluation
    returns are known from the seeds alone.
    """

    observation_space = gym.spaces.Box(0.0, 1000.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 3, length_from_seed: bool = False):
        self.length = length
        self.length_from_seed = length_from_seed
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.length_from_seed and seed is not None:
            self.length = 2 + seed % 5
        self.steps = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.steps += 1
        return np.array([float(self.steps)], np.float32), 1.0, self.steps >= self.length, False, {}


class NaNAfter(Counter):
    """Counter whose rewards turn NaN after ``healthy_steps`` steps of this env instance."""

    def __init__(self, healthy_steps: int = 150):
        super().__init__(length=10)
        self.healthy_steps = healthy_steps
        self.total_steps = 0

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        self.total_steps += 1
        return observation, float("nan") if self.total_steps > self.healthy_steps else reward, terminated, truncated, info


class FailsAfter(Counter):
    """Counter whose step raises after ``healthy_steps`` steps of this env instance (a user env's bug)."""

    def __init__(self, healthy_steps: int = 150):
        super().__init__(length=10)
        self.healthy_steps = healthy_steps
        self.total_steps = 0

    def step(self, action):
        self.total_steps += 1
        if self.total_steps > self.healthy_steps:
            raise ValueError(f"the simulator lost its state at step {self.total_steps}")
        return super().step(action)


class Target(gym.Env):
    """Continuous actions in [-1, 1]: reward -|action - 0.5| for 8 steps; observations on a large scale.

    The best return is 0 (always act 0.5). Every action the env receives is recorded, so a test
    can check that it was clipped into bounds.
    """

    observation_space = gym.spaces.Box(-1000.0, 1000.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    received: list = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.array([500.0, -300.0], np.float32), {}

    def step(self, action):
        Target.received.append(np.array(action, copy=True))
        self.steps += 1
        reward = -abs(float(action[0]) - 0.5)
        return np.array([500.0 + self.steps, -300.0], np.float32), reward, self.steps >= 8, False, {}


class Grid(gym.Env):
    """An env whose MultiDiscrete action space the agents do not support."""

    observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([3, 3])

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}


def register() -> None:
    """Register the toy envs under champion-test/ (idempotent)."""
    specs = {
        "champion-test/Bandit-v0": dict(entry_point=Bandit),
        "champion-test/Counter-v0": dict(entry_point=Counter, kwargs={"length": 3}, max_episode_steps=100),
        "champion-test/Counter-v1": dict(entry_point=Counter, kwargs={"length": 10}, max_episode_steps=4),
        "champion-test/SeededCounter-v0": dict(entry_point=Counter, kwargs={"length_from_seed": True}),
        "champion-test/NaNAfter-v0": dict(entry_point=NaNAfter),
        "champion-test/FailsAfter-v0": dict(entry_point=FailsAfter),
        "Target-v0": dict(entry_point=Target),  # made as "toy_envs:Target-v0", which imports this module first
        "champion-test/Grid-v0": dict(entry_point=Grid),
    }
    for env_id, spec in specs.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, **spec)


register()  # so that "toy_envs:Target-v0" works: gymnasium imports this module, which registers it
