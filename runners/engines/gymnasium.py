"""The gymnasium engine: a gymnasium vector env stepped in this process, one compiled update per rollout."""

from __future__ import annotations

from typing import Any, Callable

from champion.agents.config import TrainConfig
from champion.agents.numpy_policy import NumpyPolicy
from champion.envs.factory import EnvOptions, make_vector_env
from champion.runners.engines.base import Advance, EpisodeStats, build_graph
from champion.runners.rollout import RewardScaler, Rollout, VectorEnvCollector, env_checkpoint, restart_returns, restore_envs
from champion.runners.timing import Timings


class GymnasiumEngine:
    """A gymnasium vector env stepped from Python with the numpy policy; one compiled update per rollout."""

    kind = "gymnasium"

    def __init__(self, config: TrainConfig, policy: NumpyPolicy, learner: Any, timings: Timings) -> None:
        self.config, self.policy, self.learner, self.timings = config, policy, learner, timings
        self.collector: VectorEnvCollector | None = None
        self.reward_scaler: RewardScaler | None = None
        self.updated = False
        """Whether this engine has made an update yet (its first one compiles)."""
        self.inexact: dict[int, str] | None = None
        """Envs a resume cannot restore exactly, and why: found at this session's first checkpoint."""
        self.warn: Callable[[str], None] = lambda message: None  # the run's warner, from start

    def start(self, saved: dict[str, Any] | None, step: int, warn: Callable[[str], None]) -> list[str | None]:
        """Fresh envs, or a checkpoint's envs replayed from their journals and checked (``champion.envs.env_state``).
        Returns, per env, None when it was restored exactly, else why its current episode restarts."""
        config, self.warn = self.config, warn
        self.reward_scaler = RewardScaler(config.num_envs, config.algo_config.gamma) if config.reward_scaling else None
        envs = make_vector_env(config.env_id, config.num_envs, config.vectorization, EnvOptions.from_config(config))
        try:
            observations, noise, problems = restore_envs(envs, saved, config.env_id)
            if saved is not None:
                self.reward_scaler = saved.get("reward_scaler")
                restart_returns(self.reward_scaler, problems)
            self.collector = VectorEnvCollector(envs, config.algo_config.num_steps, config.seed + step, self.timings,
                                                observations=observations, noise=noise, env_id=config.env_id)
        except BaseException:  # the first reset failed: its worker processes, if any, must not outlive it
            envs.close()
            raise
        return problems

    def _prepare(self) -> None:
        """Trace the learner's compiled update, or load its trace from the cache."""
        if not self.learner.tracing_count():
            build_graph(self.learner.compiled_update.prepare, self.timings, "update")

    def advance(self, step: int, max_env_steps: int, total_steps: int) -> Advance:
        """One rollout and one update (``max_env_steps`` does not split a rollout)."""
        return self.learn(self.collector.collect(self.policy), step, total_steps)

    def learn(self, rollout: Rollout, step: int, total_steps: int, metrics: dict[str, float] | None = None) -> Advance:
        """Scale the rollout's rewards (if on), update the learner on it, and act with the new weights from now on;
        ``metrics`` (the engine's own) are reported beside the update's."""
        batch = self.reward_scaler.scale(rollout.batch) if self.reward_scaler is not None else rollout.batch
        step += rollout.env_steps
        first, self.updated = not self.updated, True
        if first:
            self._prepare()
        with self.timings.phase("first update" if first else "update"):  # the first one compiles, with XLA
            update_metrics = self.learner.update(batch, max(0.0, 1.0 - step / total_steps))
        with self.timings.phase("policy snapshot"):
            self.policy.refresh()  # the next rollout acts with the updated weights
        skipped = int(update_metrics.get("nonfinite_steps", 0))
        return Advance(rollout.env_steps, 1, {**update_metrics, **(metrics or {})},
                       EpisodeStats.from_arrays(rollout.episode_returns, rollout.episode_lengths),
                       skipped, (1, 1, 1) if skipped else (0, 0, 0))

    def tracing_count(self) -> int:
        """Times the learner's update was traced."""
        return self.learner.tracing_count()

    def checkpoint_objects(self) -> dict[str, Any]:
        """None: the envs are pickled (``checkpoint_state``)."""
        return {}

    def checkpoint_state(self) -> dict[str, Any]:
        """Each env's journal (``champion.envs.env_state``) and which envs a resume can restore exactly, the action noise
        and the reward scaler."""
        state, self.inexact = env_checkpoint(self.collector.envs, self.inexact, self.config.env_id, self.warn)
        return {"engine": self.kind, **state, "noise": self.collector.noise, "reward_scaler": self.reward_scaler}

    def report(self) -> dict[str, Any]:
        """The engine's kind (summary.json)."""
        return {"kind": self.kind}

    def close(self) -> None:
        """Close the training envs and drop the update's loaded graph."""
        self.learner.compiled_update.close()
        if self.collector is not None:
            self.collector.envs.close()
