"""ScaledCartPole-v0: CartPole-v1 whose observations are on very different scales.

Importing this module registers the env with gymnasium:

    cd benchmarks && champion train scaled_env:ScaledCartPole-v0 --no-preset
    python -c "import scaled_env, gymnasium as gym; gym.make('ScaledCartPole-v0')"   # from benchmarks/

The dynamics, rewards, termination, reward threshold (475) and 500-step time limit are CartPole-v1's;
only the observation changes: it is multiplied by ``SCALE`` = [1000, 0.001, 1000, 0.001], so the cart
position and pole angle are in the thousands (angle up to about 210 before termination, position up to
2400) and the two velocities in the thousandths. A learner that does not normalise its inputs sees two
features that swamp the others; one that does should learn as on CartPole-v1.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "ScaledCartPole-v0"
SCALE = np.array([1000.0, 0.001, 1000.0, 0.001], dtype=np.float32)
"""Multiplies (cart position, cart velocity, pole angle, pole angular velocity)."""


class ScaledObservation(gym.ObservationWrapper):
    """Multiplies each observation by ``SCALE`` and declares the matching Box (bounds scaled too)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Box) and space.shape == SCALE.shape, space
        self.observation_space = gym.spaces.Box(space.low * SCALE, space.high * SCALE, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return (np.asarray(observation, dtype=np.float32) * SCALE).astype(np.float32)


def make_scaled_cartpole(**kwargs: Any) -> gym.Env:
    """CartPole-v1's env (made by its registered id, without its time limit: gym.make adds the 500-step
    TimeLimit of this registration) with scaled observations."""
    return ScaledObservation(gym.make("CartPole-v1", max_episode_steps=None, **kwargs).unwrapped)


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=make_scaled_cartpole, max_episode_steps=500, reward_threshold=475.0)
