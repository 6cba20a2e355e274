"""The in-graph engine: env, acting, rollouts and updates in one XLA-compiled call.

On a small network the time goes to per-call overhead, not arithmetic: a Python loop pays it
on every env step and every update. Here one call runs ``iterations`` x (a ``num_steps``
rollout of a TF-op env, then the learner's own update ops on it) as a ``tf.while_loop``,
compiled with XLA, and returns the metrics summed. The learner's update is the same ops its
``update`` compiles, so the algorithm and the number of gradient steps do not change. The env
state, the running episode returns and the sampling generator are variables, so a resume
checkpoint carries them and the next call continues where the last one stopped.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import tensorflow as tf

from champion.agents.batch import RolloutBatch
from champion.agents.compile import graph_cache, xla_cache
from champion.agents.compile.update import learner_variables
from champion.agents.config import ALGORITHMS, TrainConfig
from champion.agents.distributions import make_distribution
from champion.agents.networks import ActorCritic
from champion.envs.graph import make_graph_env
from champion.runners.engines.base import Advance, EpisodeStats, build_graph
from champion.runners.timing import Timings

EPISODE_FIELDS = ("episodes", "episode_return_sum", "episode_length_sum")
MAX_STEPS_PER_CALL = 100_000
"""Env steps one compiled call may take at most, so that Ctrl-C and the progress bar are answered within seconds."""
FIELDS_OUTSIDE_THE_GRAPH = ("seed", "total_steps", "schedule_steps", "eval_every", "eval_episodes", "eval_seed", "eval_in_background",
                            "results_dir", "run_name", "checkpoint_every", "checkpoint_keep", "max_nonfinite_updates",
                            "log_every", "media", "crown", "stop", "ray", "engine", "vectorization", "histogram_every")
"""TrainConfig fields the fused call's graph does not read, so runs that differ only in them share one traced
graph in the cache (tests/test_graph_cache.py traces with each of them changed and compares the graphs). The
engine runs only where engine is auto or graph and vectorization auto or sync, both meaning the same graph; of
histogram_every the graph reads only whether it is 0 (``graph_settings``)."""


def graph_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings the fused call's graph is traced from, its cache key's: the config without
    FIELDS_OUTSIDE_THE_GRAPH and the other algorithm's section, and whether the learner keeps its gradients for
    histograms (``make_learner``: histogram_every above 0)."""
    unused = set(FIELDS_OUTSIDE_THE_GRAPH) | (set(ALGORITHMS) - {config.algo})
    settings = {name: value for name, value in dataclasses.asdict(config).items() if name not in unused}
    return {**settings, "keep_gradients": config.histogram_every > 0}


class GraphEngine:
    """Trains ``learner`` on a TF-op version of ``config.env_id`` (see ``champion.envs.graph``)."""

    kind = "graph"

    def __init__(self, model: ActorCritic, learner: Any, config: TrainConfig, timings: Timings) -> None:
        self.model, self.learner, self.timings = model, learner, timings
        self.num_steps, self.num_envs = config.algo_config.num_steps, config.num_envs
        self.rollout_size = self.num_steps * self.num_envs
        self.distribution = make_distribution(model)
        self.generator = tf.random.Generator.from_seed(config.seed + 2)  # env starts and action sampling
        self.env = make_graph_env(config.env_id, self.num_envs, self.generator)
        start = self.env.reset()
        self.env_state = type(start)(*[tf.Variable(tensor, trainable=False) for tensor in start])
        self.episode_returns = tf.Variable(tf.zeros([self.num_envs]), trainable=False, name="episode_returns")
        self.episode_lengths = tf.Variable(tf.zeros([self.num_envs]), trainable=False, name="episode_lengths")
        self.metric_names = [*learner.metric_names, *EPISODE_FIELDS]
        self.cache_key = graph_cache.cache_key("GraphEngine._advance", graph_settings(config))
        self.call: graph_cache.CachedGraphFunction | None = None
        self._build_function()

    def advance(self, step: int, max_env_steps: int, total_steps: int) -> Advance:
        """As many whole rollouts (each followed by an update) as fit in ``max_env_steps``, at least one."""
        iterations = max(1, min(max_env_steps, MAX_STEPS_PER_CALL) // self.rollout_size)
        arguments = (tf.constant(iterations), tf.constant(step, tf.int64), tf.constant(total_steps, tf.int64))
        self._prepare()
        if self._compiled:
            with self.timings.phase("rollout+update (graph)"):
                values = self.call(*arguments).numpy().tolist()
        else:
            with self.timings.phase("compile+first call (graph)"):
                values = xla_cache.first_call(lambda: self.call(*arguments).numpy().tolist(),
                                              lambda: self._build_function(use_cache=False))
            self._compiled = True
        sums = dict(zip(self.metric_names, values))
        count, return_sum, length_sum = (sums.pop(name) for name in EPISODE_FIELDS)
        nonfinite_runs = tuple(int(value) for value in values[len(self.metric_names):])
        metrics = {name: value / iterations for name, value in sums.items()}
        return Advance(iterations * self.rollout_size, iterations, metrics, EpisodeStats(int(count), return_sum, length_sum),
                       int(sums["nonfinite_steps"]), nonfinite_runs)

    def _prepare(self) -> None:
        """Trace the fused call, or load its trace from the cache."""
        if not self.call.prepared:
            build_graph(self.call.prepare, self.timings, "graph")

    def _build_function(self, use_cache: bool = True) -> None:
        """The fused call as a tf.function with a fixed signature, traced (or its trace loaded from the cache)
        and compiled at its first call; a rebuild (after a damaged compiled entry) drops the previous one."""
        if self.call is not None:
            self.call.close()
        signature = [tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)]
        function = tf.function(self._advance, input_signature=signature, autograph=False, jit_compile=True)
        cacheable = use_cache and not self.model.spec.user_torso  # the key cannot tell an edited torso function
        self.call = graph_cache.CachedGraphFunction(function, self._variables, self.cache_key if cacheable else None)
        self._compiled = False

    def _variables(self) -> dict[str, tf.Variable]:
        """The variables the fused call may capture, by path: what a resume checkpoint holds, and the copies
        of the gradients kept for histograms."""
        engine_variables = graph_cache.tracked_variables(tf.train.Checkpoint(**self.checkpoint_objects()))
        return {**learner_variables(self.learner), **engine_variables}

    def _advance(self, iterations: tf.Tensor, step: tf.Tensor, total_steps: tf.Tensor) -> tf.Tensor:
        """``iterations`` rollouts and updates; returns the sums of the metrics and episode statistics, then
        the runs of updates with a skipped (non-finite) step: at the start, at the end, longest."""
        nonfinite_index = self.metric_names.index("nonfinite_steps")

        def body(index: tf.Tensor, sums: tf.Tensor, runs: tf.Tensor, seen_finite: tf.Tensor) -> tuple[tf.Tensor, ...]:
            done_steps = step + tf.cast(index + 1, tf.int64) * self.rollout_size
            fraction_done = tf.cast(done_steps, tf.float64) / tf.cast(total_steps, tf.float64)
            progress_remaining = tf.maximum(0.0, 1.0 - tf.cast(fraction_done, tf.float32))
            values = self._iteration(progress_remaining)
            nonfinite = values[nonfinite_index] > 0
            leading, trailing, longest = tf.unstack(runs)
            leading = tf.where(nonfinite & ~seen_finite, leading + 1.0, leading)
            trailing = tf.where(nonfinite, trailing + 1.0, 0.0)
            runs = tf.stack([leading, trailing, tf.maximum(longest, trailing)])
            return index + 1, sums + values, runs, seen_finite | ~nonfinite

        initial = (tf.constant(0), tf.zeros([len(self.metric_names)]), tf.zeros([3]), tf.constant(False))
        _, sums, runs, _ = tf.while_loop(lambda index, *_: index < iterations, body, initial)
        return tf.concat([sums, runs], axis=0)

    def _iteration(self, progress_remaining: tf.Tensor) -> tf.Tensor:
        """One rollout from the variables' state, the learner's update on it, the state written back."""
        batch, episodes = self._rollout()
        metrics = self.learner.update_ops(batch, progress_remaining)
        values = [tf.cast(metrics[name], tf.float32) for name in self.learner.metric_names]
        return tf.stack([*values, *episodes])

    def _rollout(self) -> tuple[RolloutBatch, list[tf.Tensor]]:
        """``num_steps`` vector steps from the variables' state (written back after): the batch and episode sums."""
        # Every element shape known: XLA converts a loop whose arrays' shapes are unknown twice (once to find them).
        fields = [(tf.float32, [self.num_envs, *self.env.observation_shape]),
                  (self.distribution.action_dtype, [self.num_envs, *self.model.spec.action_shape])]
        arrays = [tf.TensorArray(dtype, self.num_steps, element_shape=shape) for dtype, shape in fields]
        arrays += [tf.TensorArray(tf.float32, self.num_steps, element_shape=[self.num_envs]) for _ in range(6)]
        env_state = type(self.env_state)(*[variable.read_value() for variable in self.env_state])
        initial = (tf.constant(0), env_state, self.episode_returns.read_value(), self.episode_lengths.read_value(),
                   tuple(arrays), tf.zeros([3]))
        _, env_state, returns, lengths, arrays, episodes = tf.while_loop(
            lambda time, *_: time < self.num_steps, self._step, initial)
        for variable, tensor in zip(self.env_state, env_state):
            variable.assign(tensor)
        self.episode_returns.assign(returns)
        self.episode_lengths.assign(lengths)
        last_values = self.model.value(self.env.observe(env_state))
        return RolloutBatch(*[array.stack() for array in arrays], last_values), tf.unstack(episodes)

    def _step(self, time: tf.Tensor, state: Any, returns: tf.Tensor, lengths: tf.Tensor,
              arrays: tuple[tf.TensorArray, ...], episodes: tf.Tensor) -> tuple[Any, ...]:
        """Act, step the env, record the transition, count finished episodes."""
        observations = self.env.observe(state)
        parameters, values = self.model(observations)
        actions = self.distribution.sample(parameters, self.generator)
        log_probs = self.distribution.log_prob(parameters, actions)
        state, transition = self.env.step(state, actions)
        truncation_values = tf.where(transition.truncated, self.model.value(transition.final_observations), 0.0)
        returns, lengths = returns + transition.rewards, lengths + 1.0
        done = transition.terminated | transition.truncated
        ended = tf.cast(done, tf.float32)
        episodes = episodes + tf.stack([tf.reduce_sum(ended), tf.reduce_sum(ended * returns),
                                        tf.reduce_sum(ended * lengths)])
        columns = (observations, actions, log_probs, values, transition.rewards,
                   tf.cast(transition.terminated, tf.float32), tf.cast(transition.truncated, tf.float32),
                   truncation_values)
        arrays = tuple(array.write(time, column) for array, column in zip(arrays, columns))
        return time + 1, state, returns * (1.0 - ended), lengths * (1.0 - ended), arrays, episodes

    def start(self, saved: dict[str, Any] | None, step: int, warn: Callable[[str], None]) -> list[str | None]:
        """Nothing to do: a checkpoint's env state is in the variables, which the restore has filled exactly."""
        return [] if saved is None else [None] * self.num_envs

    def tracing_count(self) -> int:
        """Times the fused call's graph was built, traced or loaded from the cache (1 once it has run)."""
        return self.call.build_count()

    def checkpoint_objects(self) -> dict[str, Any]:
        """The env state, the running episodes' returns and lengths, and the sampling generator."""
        env_state = dict(zip(self.env_state._fields, self.env_state))
        return {"engine": tf.train.Checkpoint(**env_state, episode_returns=self.episode_returns,
                                              episode_lengths=self.episode_lengths, generator=self.generator)}

    def checkpoint_state(self) -> dict[str, Any]:
        """The engine's kind; the env state is in ``checkpoint_objects``, so every env resumes exactly."""
        return {"engine": self.kind, "envs_exact": [True] * self.num_envs}

    def report(self) -> dict[str, Any]:
        """The engine's kind (summary.json)."""
        return {"kind": self.kind}

    def close(self) -> None:
        """Drop the fused call's definitions if they were loaded from the cache."""
        self.call.close()
