"""Rollout collection from a gymnasium vector env stepped in this process (``GymnasiumEngine``'s half).

The train loop does not call this directly: it advances an engine (``runners/engines/``), of
which collecting here and then updating is one kind; the in-graph engine collects inside its
compiled call instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from champion.agents.batch import RolloutBatch
from champion.agents.numpy_policy import EnvNoise, NumpyPolicy
from champion.envs import env_state
from champion.envs.factory import as_float_batch, env_call
from champion.runners.timing import Timings


@dataclass
class Rollout:
    """A batch for the learner plus what the logger wants to know about finished episodes."""

    batch: RolloutBatch
    episode_returns: np.ndarray
    episode_lengths: np.ndarray

    @property
    def env_steps(self) -> int:
        """Environment steps in this rollout (num_steps x num_envs)."""
        return int(np.prod(np.shape(self.batch.rewards)))


class RewardScaler:
    """Divides rewards by a running std of each env's discounted return (as VecNormalize does).

    It keeps the scale of the value targets steady across envs whose rewards are large or
    drifting; its state is plain numpy, so resume checkpoints carry it.
    """

    def __init__(self, num_envs: int, gamma: float, epsilon: float = 1e-8) -> None:
        self.gamma, self.epsilon = gamma, epsilon
        self.returns = np.zeros(num_envs, np.float64)
        self.mean, self.variance, self.count = 0.0, 1.0, 1e-4

    def scale(self, batch: RolloutBatch) -> RolloutBatch:
        """The batch with its [T, N] rewards scaled step by step, as if each step had been scaled as it came."""
        ended = (np.asarray(batch.terminated) + np.asarray(batch.truncated)) > 0
        rewards = np.stack([self(batch.rewards[step], ended[step]) for step in range(len(batch.rewards))])
        return batch._replace(rewards=rewards)

    def __call__(self, rewards: np.ndarray, episode_ended: np.ndarray) -> np.ndarray:
        """Scaled rewards for one vector step; returns of ended episodes restart at zero."""
        self.returns = self.returns * self.gamma + rewards
        self._update(self.returns)
        self.returns[episode_ended] = 0.0
        return (rewards / np.sqrt(self.variance + self.epsilon)).astype(np.float32)

    def _update(self, values: np.ndarray) -> None:
        batch_mean, batch_variance, batch_count = float(values.mean()), float(values.var()), values.size
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean += delta * batch_count / total
        self.variance = (self.variance * self.count + batch_variance * batch_count
                         + delta**2 * self.count * batch_count / total) / total
        self.count = total


class VectorEnvCollector:
    """Steps a gymnasium vector env (same-step autoreset), acting with the numpy policy.

    It is the whole of collection in the gymnasium engine and on each Ray rollout worker; rewards come out
    unscaled (the engine scales a whole batch, so that W workers scale as one process does).
    """

    def __init__(self, envs: gym.vector.VectorEnv, num_steps: int, seed: int, timings: Timings | None = None,
                 observations: np.ndarray | None = None, noise: EnvNoise | None = None,
                 env_id: str = "the environment") -> None:
        """Reset the envs with ``seed`` (env i with seed + i), or, when resuming, continue from ``observations``.
        ``noise`` draws the actions (by default one stream per env from ``seed``); ``env_id`` names the env in
        the error raised when it fails (``EnvStepError``)."""
        self.envs, self.env_id = envs, env_id
        self.num_steps = num_steps
        self.num_envs = envs.num_envs
        self.noise = noise or EnvNoise(seed, range(self.num_envs))
        self.timings = timings or Timings()
        if observations is None:
            observations, _ = env_call(env_id, "reset()", envs.reset, seed=seed)
        self.observations = as_float_batch(observations)

    def collect(self, policy: NumpyPolicy) -> Rollout:
        """Run num_steps vector steps; the episode state carries over to the next call."""
        shape = (self.num_steps, self.num_envs)
        observations = np.empty((*shape, *self.observations.shape[1:]), np.float32)
        action_shape = policy.spec.action_shape
        actions = np.empty((*shape, *action_shape), np.int32 if policy.spec.integer_actions else np.float32)
        log_probs, values, rewards, terminated, truncated, truncation_values = (
            np.zeros(shape, np.float32) for _ in range(6))
        episode_returns: list[np.ndarray] = []
        episode_lengths: list[np.ndarray] = []
        for step in range(self.num_steps):
            observations[step] = self.observations
            with self.timings.phase("acting"):
                actions[step], log_probs[step], values[step] = policy.sample(self.observations, self.noise)
            with self.timings.phase("env_stepping"):
                next_observations, reward, terminal, truncation, info = env_call(
                    self.env_id, "step()", self.envs.step, policy.env_actions(actions[step]))
            rewards[step], terminated[step], truncated[step] = reward, terminal, truncation
            if truncation.any():
                truncation_values[step] = self._final_values(policy, info, truncation)
            if "_episode" in info and info["_episode"].any():
                done = info["_episode"]
                episode_returns.append(info["episode"]["r"][done])
                episode_lengths.append(info["episode"]["l"][done])
            self.observations = as_float_batch(next_observations)
        with self.timings.phase("acting"):
            last_values = policy.value(self.observations)
        batch = RolloutBatch(observations, actions, log_probs, values, rewards, terminated, truncated,
                             truncation_values, last_values)
        return Rollout(batch, _concat(episode_returns, np.float64), _concat(episode_lengths, np.int64))

    def _final_values(self, policy: NumpyPolicy, info: dict, truncation: np.ndarray) -> np.ndarray:
        """V(final observation) for the envs whose episode was truncated this step, 0 elsewhere."""
        values = np.zeros(self.num_envs, np.float32)
        indices = np.flatnonzero(truncation)
        final = as_float_batch(np.stack([info["final_obs"][index] for index in indices]))
        with self.timings.phase("acting"):
            values[indices] = policy.value(final)
        return values


def restore_envs(envs: gym.vector.VectorEnv, saved: dict[str, Any] | None, env_id: str
                 ) -> tuple[np.ndarray | None, EnvNoise | None, list[str | None]]:
    """Fresh ``envs`` brought to a checkpoint's state (``saved``: what ``env_checkpoint`` wrote, or None for a fresh
    start): their observations and action noise (None, None: reset them afresh) and, per env, None when it was
    replayed and checked exactly, else why its episode restarts. An env's own error names it (EnvStepError)."""
    if saved is None:
        return None, None, []
    state = saved.get("env_state")
    if state is None or len(state.journals) != envs.num_envs:
        reason = saved.get("envs_problem") or "the checkpoint, written by an older champion, holds no record of them"
        return None, None, [reason] * envs.num_envs
    observations, problems = env_call(env_id, "a resume's replay", env_state.restore, envs, state, saved["envs_exact"])
    return as_float_batch(observations), saved["noise"], problems


def restart_returns(reward_scaler: RewardScaler | None, problems: list[str | None]) -> None:
    """The reward scaler's running returns start again at zero for the envs whose episodes restarted."""
    if reward_scaler is not None and problems:
        reward_scaler.returns[[problem is not None for problem in problems]] = 0.0


def env_checkpoint(envs: gym.vector.VectorEnv, inexact: dict[int, str] | None, env_id: str,
                   warn: Callable[[str], None], first_index: int = 0) -> tuple[dict[str, Any], dict[int, str]]:
    """The envs' part of a resume checkpoint: their journals and which ones a resume can restore exactly.

    ``inexact`` None (a session's first checkpoint): each env's journal is replayed on a fresh copy first, and
    those that do not arrive where the env is are warned about in one line and recorded as not exact (the check
    is not repeated: an env that replays once is taken to be deterministic; a resume checks again). Returns the
    state and ``inexact`` (keyed by env index, counted from ``first_index``).
    """
    if inexact is None:
        checks = env_call(env_id, "a check of its replay", env_state.check_replays, envs)
        inexact = {first_index + index: problem for index, problem in enumerate(checks)
                   if problem is not None and problem != env_state.TOO_LONG}  # an overlong episode ends, in time
        if inexact:
            warn(not_exact_line(env_id, inexact, "a resume restarts"))
    state = env_state.capture(envs)
    exact = [first_index + index not in inexact and journal.observation is not None
             for index, journal in enumerate(state.journals)]
    return {"env_state": state, "envs_exact": exact}, inexact


def not_exact_line(env_id: str, problems: dict[int, str], what: str) -> str:
    """One line naming the envs that are not restored exactly and why (the first reason), and what follows."""
    indices = sorted(problems)
    names = f"env {indices[0]}" if len(indices) == 1 else f"envs {', '.join(map(str, indices))}"
    whose = "its current episode" if len(indices) == 1 else "their current episodes"
    return (f"{env_id} {names} cannot be resumed exactly ({problems[indices[0]]}); {what} {whose}, so a resumed run "
            "is not bit-exact")


def stack_fragments(fragments: list[Rollout]) -> Rollout:
    """One rollout of the fragments' envs side by side, in the order given (worker order): what one vector env
    of all those envs would have collected."""
    fields = [np.concatenate([getattr(fragment.batch, name) for fragment in fragments],
                             axis=0 if name == "last_values" else 1) for name in RolloutBatch._fields]
    return Rollout(RolloutBatch(*fields), np.concatenate([fragment.episode_returns for fragment in fragments]),
                   np.concatenate([fragment.episode_lengths for fragment in fragments]))


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
