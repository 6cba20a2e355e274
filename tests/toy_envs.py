"""Tiny environments with answers known in advance, registered for the tests."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv
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


class NoisyBandit(gym.Env):
    """One-step episodes with a context (which of two cues is on, from the seed) and eight arms: arm a pays
    ARM_MEANS[a] plus N(0, NOISE_STD) noise drawn from the seed. A deterministic policy that plays arm m(c) on
    cue c has the true expected return (ARM_MEANS[m(0)] + ARM_MEANS[m(1)]) / 2."""

    ARM_MEANS = (1.0, 1.0, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6)
    NOISE_STD = 1.5
    observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(len(ARM_MEANS))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(2))
        self.noise = self.np_random.normal(0.0, self.NOISE_STD, len(self.ARM_MEANS))
        return np.eye(2, dtype=np.float32)[self.cue], {}

    def step(self, action):
        reward = self.ARM_MEANS[int(action)] + float(self.noise[int(action)])
        return np.eye(2, dtype=np.float32)[self.cue], reward, True, False, {}


class RaceBandit(NoisyBandit):
    """NoisyBandit with arms far apart and close: a policy on arm pair (0, 1) holds 1.0, (2, 3) 0.8, (4, 5) 0.0 and
    (6, 7) -1.0, each episode's return off by N(0, 1) noise. The crown's race should stop the last two early and
    play the first two to the end."""

    ARM_MEANS = (1.0, 1.0, 0.8, 0.8, 0.0, 0.0, -1.0, -1.0)
    NOISE_STD = 1.0


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


class Unseeded(Counter):
    """A Counter whose observations carry an offset drawn from a generator seeded by the OS, not by reset's seed:
    not deterministic given its seed, as a user's env drawing from an unseeded RNG is."""

    def __init__(self):
        super().__init__(length=40)
        self.entropy = np.random.default_rng()

    def reset(self, *, seed=None, options=None):
        observation, info = super().reset(seed=seed, options=options)
        self.offset = float(self.entropy.random())
        return observation + self.offset, info

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        return observation + np.float32(self.offset), reward, terminated, truncated, info


class ChattyCounter(Counter):
    """Counter that reports its step count in ``info`` at every step, as MuJoCo envs report positions."""

    def reset(self, *, seed=None, options=None):
        observation, _ = super().reset(seed=seed, options=options)
        return observation, {"steps": 0}

    def step(self, action):
        observation, reward, terminated, truncated, _ = super().step(action)
        return observation, reward, terminated, truncated, {"steps": self.steps}


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


class NaNMidEpisode(Counter):
    """Counter of 10-step episodes whose reward is NaN from the 5th step of each episode: NaN rewards that depend
    only on the episode, so its journal replays."""

    def __init__(self):
        super().__init__(length=10)

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        return observation, float("nan") if self.steps >= 5 else reward, terminated, truncated, info


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


class DictAction(gym.Env):
    """An env whose Dict action space champion refuses (a policy head per key is not supported)."""

    observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Dict({"move": gym.spaces.Discrete(3), "speed": gym.spaces.Box(0.0, 1.0, (1,))})

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}


class CueTask(gym.Env):
    """Eight steps; each pays for answering the cue the observation shows, drawn afresh every step.

    The subclasses differ in where the cue is and what an answer is, so that each can be solved only if
    that observation or action space is handled right. The best return is ``8 * best_reward``.
    """

    episode_length = 8
    best_reward = 1.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        self.cue = self._draw()
        return self._observe(), {}

    def step(self, action):
        reward = self._reward(action)
        self.steps += 1
        self.cue = self._draw()
        return self._observe(), reward, self.steps >= self.episode_length, False, {}


class DictCue(CueTask):
    """Dict observation: "cue" (Discrete 4) says the paying action; "noise" (Box, large scale) says nothing."""

    observation_space = gym.spaces.Dict({"noise": gym.spaces.Box(-100.0, 100.0, (3,), np.float32),
                                         "cue": gym.spaces.Discrete(4)})
    action_space = gym.spaces.Discrete(4)

    def _draw(self):
        return int(self.np_random.integers(4))

    def _observe(self):
        return {"noise": self.np_random.uniform(-100.0, 100.0, 3).astype(np.float32), "cue": self.cue}

    def _reward(self, action):
        return float(action == self.cue)


class MultiCue(CueTask):
    """MultiDiscrete actions [3, 4] (from 1 and 0): component i pays 0.5 when it equals cue i, shown one-hot."""

    observation_space = gym.spaces.Box(0.0, 1.0, (7,), np.float32)
    action_space = gym.spaces.MultiDiscrete([3, 4], start=[1, 0])

    def _draw(self):
        return np.array([self.np_random.integers(1, 4), self.np_random.integers(4)])

    def _observe(self):
        observation = np.zeros(7, np.float32)
        observation[self.cue[0] - 1] = observation[3 + self.cue[1]] = 1.0
        return observation

    def _reward(self, action):
        return 0.5 * float(np.sum(np.asarray(action) == self.cue))


class DictMultiCue(MultiCue):
    """MultiCue with its cues in a Dict observation: "cue" (MultiDiscrete [3, 4], from 1 and 0) and "noise"."""

    observation_space = gym.spaces.Dict({"cue": gym.spaces.MultiDiscrete([3, 4], start=[1, 0]),
                                         "noise": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)})

    def _observe(self):
        return {"cue": self.cue.copy(), "noise": self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)}


class BinaryCue(CueTask):
    """MultiBinary(4) actions: each bit pays 0.25 when it equals the sign bit of its observation (+-1)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.MultiBinary(4)

    def _draw(self):
        return self.np_random.integers(2, size=4)

    def _observe(self):
        return (2.0 * self.cue - 1.0).astype(np.float32)

    def _reward(self, action):
        return 0.25 * float(np.sum(np.asarray(action) == self.cue))


class MatrixCue(CueTask):
    """Box(2, 2) actions: reward -mean squared distance to the observation read as a 2x2 matrix (best 0)."""

    observation_space = gym.spaces.Box(-0.5, 0.5, (4,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)
    best_reward = 0.0
    received_shapes: set = set()

    def _draw(self):
        return self.np_random.uniform(-0.5, 0.5, 4).astype(np.float32)

    def _observe(self):
        return self.cue.copy()

    def _reward(self, action):
        MatrixCue.received_shapes.add(np.shape(action))
        return -float(np.mean(np.square(np.asarray(action) - self.cue.reshape(2, 2))))


class QuadrantCue(CueTask):
    """A 32x32x1 uint8 image with one lit quadrant (and dim noise elsewhere): Discrete(4) names the quadrant."""

    observation_space = gym.spaces.Box(0, 255, (32, 32, 1), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def _draw(self):
        return int(self.np_random.integers(4))

    def _observe(self):
        image = self.np_random.integers(0, 40, (32, 32, 1), dtype=np.uint8)
        row, column = divmod(self.cue, 2)
        image[16 * row:16 * row + 16, 16 * column:16 * column + 16] = 255
        return image

    def _reward(self, action):
        return float(action == self.cue)


class FaultyCartPole(CartPoleEnv):
    """CartPole whose process dies, or hangs, once, when a test asks for it (tests/test_ray.py).

    A test writes the file ``kill`` or ``hang`` into the folder named by CHAMPION_TEST_FAULTS, holding the pid
    of a process to spare (the driver, which also steps this env when it evaluates). The first env in any
    other process to take its 50th step claims the file (deletes it) and then SIGKILLs its own process, or
    sleeps for an hour: a Ray rollout worker killed by its process id, or one that stops answering.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps_taken = 0

    def step(self, action):
        self.steps_taken += 1
        if self.steps_taken == 50:
            _fault_once()
        return super().step(action)


def _fault_once() -> None:
    folder = os.environ.get("CHAMPION_TEST_FAULTS")
    for kind in ("kill", "hang") if folder else ():
        path = Path(folder) / kind
        try:
            spared = int(path.read_text())
        except (FileNotFoundError, ValueError):
            continue
        if spared == os.getpid():
            continue
        try:
            path.unlink()  # the one env that deletes it does the fault
        except FileNotFoundError:
            continue
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(3600)


def register() -> None:
    """Register the toy envs under champion-test/ (idempotent)."""
    specs = {
        "champion-test/Bandit-v0": dict(entry_point=Bandit),
        "champion-test/Counter-v0": dict(entry_point=Counter, kwargs={"length": 3}, max_episode_steps=100),
        "champion-test/Counter-v1": dict(entry_point=Counter, kwargs={"length": 10}, max_episode_steps=4),
        "champion-test/ChattyCounter-v0": dict(entry_point=ChattyCounter, kwargs={"length": 10}, max_episode_steps=4),
        "champion-test/SeededCounter-v0": dict(entry_point=Counter, kwargs={"length_from_seed": True}),
        "champion-test/NaNAfter-v0": dict(entry_point=NaNAfter),
        "champion-test/Unseeded-v0": dict(entry_point=Unseeded),
        "champion-test/NaNMidEpisode-v0": dict(entry_point=NaNMidEpisode),
        "champion-test/FailsAfter-v0": dict(entry_point=FailsAfter),
        "Target-v0": dict(entry_point=Target),
        "NoisyBandit-v0": dict(entry_point=NoisyBandit),
        "RaceBandit-v0": dict(entry_point=RaceBandit),  # as toy_envs:NoisyBandit-v0 in spawned processes too  # made as "toy_envs:Target-v0", which imports this module first
        "champion-test/DictAction-v0": dict(entry_point=DictAction),
        "champion-test/DictCue-v0": dict(entry_point=DictCue),
        "champion-test/MultiCue-v0": dict(entry_point=MultiCue),
        "champion-test/BinaryCue-v0": dict(entry_point=BinaryCue),
        "champion-test/DictMultiCue-v0": dict(entry_point=DictMultiCue),
        "champion-test/MatrixCue-v0": dict(entry_point=MatrixCue),
        "champion-test/QuadrantCue-v0": dict(entry_point=QuadrantCue),
        "FaultyCartPole-v0": dict(entry_point=FaultyCartPole, max_episode_steps=500),  # as toy_envs:FaultyCartPole-v0
    }
    for env_id, spec in specs.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, **spec)


register()  # so that "toy_envs:Target-v0" works: gymnasium imports this module, which registers it
