"""A learner's update as one compiled graph: fixed signature, traced once, its trace kept in the cache.

The learners (``champion.agents.ppo``, ``champion.agents.a2c``) write their update as TF ops and import
nothing of this package; ``CompiledLearner`` wraps one with its update compiled, and is what a run trains
with (``champion.agents.learners.make_learner``).
"""

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

    def __init__(self, learner: Any) -> None:
        """``learner``: what ``learner_variables`` reads, ``config`` (with ``num_steps`` and ``jit_compile``),
        ``num_envs``, ``metric_names`` and ``update_ops(batch, progress_remaining)``."""
        config, spec, num_envs = learner.config, learner.model.spec, learner.num_envs
        self.learner, self.names = learner, list(learner.metric_names)
        self.jit_compile = uses_xla(config, spec)
        self.packing = BatchPacking(spec.observation_shape, spec.action_shape, config.num_steps, num_envs,
                                    spec.integer_actions)
        self._signature = [*self.packing.signature(), tf.TensorSpec([], tf.float32)]
        self.key = graph_cache.cache_key("CompiledUpdate", {
            "learner": type(learner).__name__, "config": dataclasses.asdict(config), "spec": spec.to_dict(),
            "num_envs": num_envs, "keep_gradients": learner.kept_gradients is not None})
        self.cacheable = not spec.user_torso  # the key cannot tell a user's torso function from its edited self
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
                                                    self.key if use_cache and self.cacheable else None)
        self._compiled = False

    def close(self) -> None:
        """Drop the definitions loaded from the cache (a traced graph goes with its function)."""
        self.call.close()

    def tracing_count(self) -> int:
        """Times the update's graph was built, traced or loaded from the cache (1 once it has run)."""
        return self.call.build_count()


class CompiledLearner:
    """A learner with its update compiled: ``update(batch, progress_remaining)`` runs the learner's
    ``update_ops`` as one ``CompiledUpdate`` and returns the metrics as floats.

    The engines, the resume checkpoint and the logger read the rest through this object as they would read it
    from the learner (model, config, optimizer, metric names, kept gradients, checkpointed state, the update's
    ops for the graph engine's fused loop); ``learner`` is the learner itself.
    """

    def __init__(self, learner: Any) -> None:
        self.learner = learner
        self.compiled_update = CompiledUpdate(learner)

    @property
    def model(self) -> Any:
        """The ActorCritic the learner updates."""
        return self.learner.model

    @property
    def config(self) -> Any:
        """The learner's section of the config (``PPOConfig`` or ``A2CConfig``)."""
        return self.learner.config

    @property
    def optimizer(self) -> Any:
        """The learner's Keras optimizer."""
        return self.learner.optimizer

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric an update returns, in the compiled call's order."""
        return self.learner.metric_names

    @property
    def kept_gradients(self) -> list[tf.Variable] | None:
        """The last applied gradients, one variable per trainable variable, when kept for histograms."""
        return self.learner.kept_gradients

    def update(self, batch: RolloutBatch, progress_remaining: float) -> dict[str, float]:
        """One update on a rollout batch, compiled; its metrics as Python floats."""
        return self.compiled_update(batch, progress_remaining)

    def update_ops(self, batch: RolloutBatch, progress_remaining: tf.Tensor) -> dict[str, tf.Tensor]:
        """The learner's update as TF ops, for a caller that compiles it into a larger graph (the graph engine)."""
        return self.learner.update_ops(batch, progress_remaining)

    def checkpoint_objects(self) -> dict[str, object]:
        """The learner's TensorFlow state for a resume checkpoint."""
        return self.learner.checkpoint_objects()

    def tracing_count(self) -> int:
        """Times the compiled update was traced or loaded (stays 1 after the first update)."""
        return self.compiled_update.tracing_count()


def learner_variables(learner: Any) -> dict[str, tf.Variable]:
    """What a learner's update may capture, by path: the model's weights, the learner's checkpointed state
    (optimizer, generator) and the gradients it keeps for histograms."""
    kept = learner.kept_gradients
    return graph_cache.tracked_variables(tf.train.Checkpoint(
        model=checkpointable_weights(learner.model), **learner.checkpoint_objects(),
        **({"kept_gradients": list(kept)} if kept else {})))
