"""Evaluation: deterministic actions on fixed episode seeds, so any two evaluations compare."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import gymnasium as gym
import numpy as np

from agents.numpy_policy import NumpyPolicy
from envs.factory import as_float_batch


@dataclass(frozen=True)
class EvalResult:
    """Per-episode returns and lengths of one evaluation, with the seeds that produced them."""

    returns: tuple[float, ...]
    lengths: tuple[int, ...]
    seeds: tuple[int, ...]

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))

    @property
    def min_return(self) -> float:
        return float(np.min(self.returns))

    @property
    def max_return(self) -> float:
        return float(np.max(self.returns))

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths))

    @property
    def env_steps(self) -> int:
        """Environment steps the evaluation took (not counted as training steps)."""
        return int(np.sum(self.lengths))


def episode_seeds(eval_seed: int, episodes: int) -> list[int]:
    """The fixed seed list: episode i of every evaluation starts from seed eval_seed + i."""
    return [eval_seed + index for index in range(episodes)]


MAX_EPISODE_STEPS = 100_000


def evaluate(
    policy: NumpyPolicy, eval_envs: gym.vector.VectorEnv, seeds: Sequence[int], frames: list | None = None,
    max_steps: int = MAX_EPISODE_STEPS, frame_every: int = 1,
) -> EvalResult:
    """Play one episode per seed (env i gets seeds[i]) with the policy's deterministic action.

    An episode still running after ``max_steps`` steps (an env without a time limit) is cut there.

    Returns are summed until each env's first episode ends; the vector env may auto-reset an
    env that finished, and those steps are ignored. If ``frames`` is a list, the first env's
    rgb_array frames are appended to it (every ``frame_every``-th one: rendering costs more than stepping).
    """
    if len(seeds) != eval_envs.num_envs:
        raise ValueError(f"{len(seeds)} seeds for {eval_envs.num_envs} evaluation envs; give one seed per env")
    observations, _ = eval_envs.reset(seed=list(seeds))
    returns = np.zeros(len(seeds), np.float64)
    lengths = np.zeros(len(seeds), np.int64)
    done = np.zeros(len(seeds), bool)
    _record(eval_envs, frames)
    for step in range(1, max_steps + 1):
        if done.all():
            break
        actions = policy.env_actions(policy.mode(as_float_batch(observations)))
        observations, rewards, terminated, truncated, _ = eval_envs.step(actions)
        running = ~done
        returns[running] += rewards[running]
        lengths[running] += 1
        if running[0] and step % frame_every == 0:
            _record(eval_envs, frames)
        done |= terminated | truncated
    return EvalResult(tuple(returns.tolist()), tuple(lengths.tolist()), tuple(int(seed) for seed in seeds))


def _record(eval_envs: gym.vector.VectorEnv, frames: list | None) -> None:
    if frames is not None:
        first_frame = getattr(eval_envs, "first_frame", None)  # gymnasium's vectorised envs render every env
        frames.append(first_frame() if first_frame is not None else eval_envs.envs[0].render())
