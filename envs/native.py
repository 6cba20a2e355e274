"""gymnasium's own vectorised environments (one numpy step for all envs), used where champion can.

gymnasium ships CartPole as ``CartPoleVectorEnv``: one numpy call steps every env, instead of a
Python ``step`` per env through four wrappers. It resets finished envs one step late
(``AutoresetMode.NEXT_STEP``: the step after an episode ends ignores its action and returns
reward 0), while training needs every step to be a real transition, with the final
observation at hand to bootstrap truncations (``SAME_STEP``). ``SameStepCartPole`` resets the
finished envs right away, drawing the new start states from the env's own generator and
bounds exactly as its late reset would, and reports ``final_obs`` as SyncVectorEnv does.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode


def has_native_vector_env(env_id: str) -> bool:
    """Whether ``env_id`` has a gymnasium vectorised implementation that champion can step same-step."""
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return False
    return spec.vector_entry_point == "gymnasium.envs.classic_control.cartpole:CartPoleVectorEnv"


def make_native_vector_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """gymnasium's vectorised ``env_id`` with same-step autoreset (see the module docstring)."""
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    return SameStepCartPole(env)


class _CartPoleWrapper(gym.vector.VectorWrapper):
    """A wrapper that reaches into gymnasium's CartPoleVectorEnv (its state, steps and generator)."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        if not isinstance(env.unwrapped, CartPoleVectorEnv):
            raise TypeError(f"{type(self).__name__} wraps gymnasium's CartPoleVectorEnv, got {type(env.unwrapped).__name__}")


class SameStepCartPole(_CartPoleWrapper):
    """CartPoleVectorEnv whose finished envs restart in the step that ends them."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env; the finished ones come back already reset, their last observation in info."""
        observations, rewards, terminated, truncated, info = self.env.step(actions)
        done = terminated | truncated
        if not done.any():
            return observations, rewards, terminated, truncated, info
        cartpole = self.env.unwrapped
        final_observations = np.empty(self.num_envs, dtype=object)
        for index in np.flatnonzero(done):
            final_observations[index] = observations[index].copy()
        cartpole.state[:, done] = cartpole.np_random.uniform(low=cartpole.low, high=cartpole.high, size=(4, int(done.sum())))
        cartpole.steps[done] = 0
        cartpole.prev_done[:] = False  # reset here, so its own late reset must not happen again
        observations = cartpole.state.T.astype(np.float32)
        info = dict(info, final_obs=final_observations, _final_obs=done.copy(),
                    final_info={}, _final_info=done.copy())
        return observations, rewards, terminated, truncated, info


def make_native_eval_env(env_id: str, num_episodes: int, render_mode: str | None = None) -> gym.vector.VectorEnv:
    """gymnasium's vectorised ``env_id`` for evaluation: env i starts where ``gym.make`` reset with seeds[i] would."""
    env = gym.make_vec(env_id, num_envs=num_episodes, vectorization_mode="vector_entry_point", render_mode=render_mode)
    return SeededCartPoleStarts(env)


class SeededCartPoleStarts(_CartPoleWrapper):
    """CartPoleVectorEnv that takes one seed per env, like SyncVectorEnv.

    ``reset(seed=[s0, s1, ...])`` puts env i in the start state that CartPoleEnv draws from seed
    s_i (a fresh generator seeded with it, the same uniform draw), so an evaluation's episode
    seeds mean the same here as with single envs. Finished envs reset one step late
    (NEXT_STEP), which evaluation ignores: it counts each env's first episode only.
    """

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; a list of seeds gives env i the start state of seed i."""
        if not isinstance(seed, (list, tuple)):
            return self.env.reset(seed=seed, options=options)
        if len(seed) != self.num_envs:
            raise ValueError(f"{len(seed)} seeds for {self.num_envs} envs; give one seed per env")
        _, info = self.env.reset(seed=int(seed[0]), options=options)
        cartpole = self.env.unwrapped
        for index, episode_seed in enumerate(seed):
            generator, _ = gym.utils.seeding.np_random(int(episode_seed))
            cartpole.state[:, index] = generator.uniform(low=cartpole.low, high=cartpole.high, size=(4,))
        return cartpole.state.T.astype(np.float32), info

    def first_frame(self) -> np.ndarray:
        """The rgb_array frame of env 0 (the one a replay video shows)."""
        return self.env.render()[0]
