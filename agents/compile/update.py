"""A learner's update as one compiled graph: fixed signature, traced once, its trace kept in the cache."""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from champion.agents.batch import RolloutBatch
from champion.agents.compile import graph_cache, xla_cache
from champion.agents.compile.packing import BatchPacking
from champion.agents.networks import checkpointable_weights


def uses_xla(config: Any, spec: Any) -> bool:
    """Whether the update is compiled with XLA: when the config asks for it and the model has no CNN. XLA's CPU
    convolutions ran a Breakout PPO update (Nature CNN, 1,024 transitions) in 171 s where TensorFlow's own
    kernels took 1.5 s, so a model with image observations is never handed to it."""
    return bool(config.jit_compile) and not spec.leaf_columns("image")


class CompiledUpdate:
    """A learner's update as one graph of (batch, progress_remaining) -> metrics, built once.

    The input signature is fixed, so it traces once, and a later run with the same learner settings
    loads that trace from the compile cache instead (``graph_cache``). The learners write their loops
    as tf.while_loop, so AutoGraph is off: it would convert the learner and Keras' code through it. The
    batch goes in packed as two arrays (``BatchPacking``) and the metrics come back as one tensor, since
    every input and output of a compiled call costs Python time on each call.
    """

    def __init__(self, learner: Any, num_envs: int, keep_gradients: bool) -> None:
        config, spec = learner.config, learner.model.spec
        self.learner, self.names = learner, list(learner.metric_names)
        self.jit_compile = uses_xla(config, spec)
        self.packing = BatchPacking(spec.observation_shape, spec.action_shape, config.num_steps, num_envs,
                                    spec.integer_actions)
        self._signature = [*self.packing.signature(), tf.TensorSpec([], tf.float32)]
        self.key = graph_cache.cache_key("CompiledUpdate", {
            "learner": type(learner).__name__, "config": dataclasses.asdict(config), "spec": spec.to_dict(),
            "num_envs": num_envs, "keep_gradients": keep_gradients})
        self.call: graph_cache.CachedGraphFunction | None = None
        self._build_function()

    def prepare(self) -> str:
        """Trace the update, or load its trace from the cache, if not done yet: "traced" or "loaded"."""
        return self.call.source or self.call.prepare()

    def __call__(self, batch: RolloutBatch, progress_remaining: float) -> dict[str, float]:
        """Run the update on a rollout batch; the metrics as Python floats."""
        steps, last_values = self.packing.pack(batch)
        inputs = (tf.constant(steps), tf.constant(last_values), tf.constant(progress_remaining, tf.float32))

        def run() -> dict[str, float]:
            return dict(zip(self.names, self.call(*inputs).numpy().tolist()))

        if self._compiled or not self.jit_compile:
            return run()
        result = xla_cache.first_call(run, lambda: self._build_function(use_cache=False))
        self._compiled = True
        return result

    def _stacked(self, steps: tf.Tensor, last_values: tf.Tensor, progress_remaining: tf.Tensor) -> tf.Tensor:
        metrics = self.learner.update_ops(self.packing.unpack(steps, last_values), progress_remaining)
        return tf.stack([tf.cast(metrics[name], tf.float32) for name in self.names])

    def _build_function(self, use_cache: bool = True) -> None:
        if self.call is not None:  # a rebuild after a damaged compiled entry
            self.call.close()
        function = tf.function(self._stacked, input_signature=self._signature, autograph=False,
                               jit_compile=self.jit_compile)
        self.call = graph_cache.CachedGraphFunction(function, lambda: learner_variables(self.learner),
                                                    self.key if use_cache else None)
        self._compiled = False

    def close(self) -> None:
        """Drop the definitions loaded from the cache (a traced graph goes with its function)."""
        self.call.close()

    def tracing_count(self) -> int:
        """Times the update's graph was built, traced or loaded from the cache (1 once it has run)."""
        return self.call.build_count()


def learner_variables(learner: Any) -> dict[str, tf.Variable]:
    """What a learner's update may capture, by path: the model's weights, the learner's checkpointed state
    (optimizer, generator) and the gradients it keeps for histograms."""
    kept = learner.kept_gradients
    return graph_cache.tracked_variables(tf.train.Checkpoint(
        model=checkpointable_weights(learner.model), **learner.checkpoint_objects(),
        **({"kept_gradients": list(kept)} if kept else {})))
