"""Pieces of a gradient step that PPO and A2C share."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

from agents import graph_cache, losses, xla_cache, xla_unary
from agents.batch import BatchPacking, RolloutBatch
from agents.networks import checkpointable_weights



def scheduled(initial: float, schedule: str, progress_remaining: tf.Tensor) -> tf.Tensor:
    """The value of a hyperparameter now: constant, or linear from initial (start) to 0 (end)."""
    value = tf.constant(initial, tf.float32)
    return value * progress_remaining if schedule == "linear" else value


def apply_clipped_gradients(
    optimizer: keras.optimizers.Optimizer,
    tape: tf.GradientTape,
    loss: tf.Tensor,
    variables: Sequence[tf.Variable],
    max_grad_norm: float,
    kept_gradients: Sequence[tf.Variable] | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Clip gradients to a global norm and apply them, unless the loss or gradient is not finite.

    Returns (gradient norm before clipping, 1.0 if the step was skipped else 0.0). A skipped
    step leaves the weights and the optimizer state untouched. With ``kept_gradients`` (one
    variable per trainable variable), the applied, clipped gradients are also copied there, for
    histograms.
    """
    gradients = tape.gradient(loss, variables)
    clipped, norm = tf.clip_by_global_norm(gradients, max_grad_norm)
    finite = tf.logical_and(is_finite(loss), is_finite(norm))

    def apply() -> tf.Tensor:
        apply_gradients(optimizer, clipped, variables)
        for kept, gradient in zip(kept_gradients or (), clipped):
            kept.assign(gradient)
        return tf.constant(0.0)

    skipped = tf.cond(finite, apply, lambda: tf.constant(1.0))
    return norm, skipped


def apply_gradients(optimizer: keras.optimizers.Optimizer, gradients: Sequence[tf.Tensor],
                    variables: Sequence[tf.Variable]) -> None:
    """``optimizer.apply_gradients``, with the plain Adam and RMSprop the learners build done as a few TF ops.

    Keras routes each variable's update through its distribution-strategy plumbing and about twenty
    ``keras.ops`` calls: for PPO that was a quarter of tracing the graph engine's loop and most of its
    ops, which XLA then has to convert and compile. Adam is TensorFlow's fused ``ResourceApplyAdam``,
    one op per variable: Keras' formula, except that ``1 - beta_2`` comes from beta_2 in float32
    (0.9999871e-3 for 0.999, where Keras takes 1e-3 from a Python float). RMSprop is Keras' own
    arithmetic, bit for bit. Both work on the optimizer's own variables, so checkpoints are
    unchanged; tests/test_optimization.py checks them against ``apply_gradients``. Any other
    optimizer or option goes through Keras.
    """
    if not _plain(optimizer):
        optimizer.apply_gradients(zip(gradients, variables))
        return
    learning_rate = tf.cast(optimizer.learning_rate, tf.float32)
    if isinstance(optimizer, keras.optimizers.Adam):
        step = tf.cast(optimizer.iterations + 1, tf.float32)
        beta_1, beta_2 = tf.constant(optimizer.beta_1, tf.float32), tf.constant(optimizer.beta_2, tf.float32)
        beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
        epsilon = tf.constant(optimizer.epsilon, tf.float32)
        for gradient, variable in zip(gradients, variables):
            index = optimizer._get_variable_index(variable)
            momentum, velocity = optimizer._momentums[index], optimizer._velocities[index]
            tf.raw_ops.ResourceApplyAdam(var=_handle(variable), m=_handle(momentum), v=_handle(velocity),
                                         beta1_power=beta_1_power, beta2_power=beta_2_power, lr=learning_rate,
                                         beta1=beta_1, beta2=beta_2, epsilon=epsilon, grad=gradient)
    else:  # RMSprop without momentum or centring; Keras adds epsilon under the square root
        rho = optimizer.rho
        velocities = [optimizer._velocities[optimizer._get_variable_index(variable)] for variable in variables]
        for gradient, velocity in zip(gradients, velocities):
            velocity.assign(rho * velocity + (1.0 - rho) * tf.square(gradient))

        def step(gradient: tf.Tensor, velocity: tf.Tensor) -> tf.Tensor:
            return learning_rate * gradient / xla_unary.sqrt(velocity + optimizer.epsilon)

        steps = elementwise_together(step, gradients, [velocity.value for velocity in velocities])
        for variable, change in zip(variables, steps):
            variable.assign_sub(change)
    optimizer.iterations.assign_add(1)


def is_finite(tensor: tf.Tensor) -> tf.Tensor:
    """``tf.math.is_finite`` by two comparisons (NaN fails both), which XLA converts without an MLIR pipeline."""
    largest = tensor.dtype.max
    return tf.logical_and(tensor >= -largest, tensor <= largest)


def elementwise_together(function: Callable[..., tf.Tensor], *groups: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """``[function(*tensors) for tensors in zip(*groups)]`` for an elementwise ``function``; in code XLA
    compiles, as one call on each group's concatenated elements.

    TensorFlow converts some ops for XLA (Sqrt, Tanh, Exp, Abs...) through an MLIR pass pipeline of their
    own, about 7 ms per op in the graph at every run's first call, compile cache or not. Under XLA one op
    over all the elements gives the same numbers: for RMSprop on a two-tower MLP, 1 Sqrt instead of 12.
    Elsewhere it stays one call per tensor: TensorFlow's vectorised CPU kernels can round an element
    differently depending on where it sits in the buffer, and there is no conversion to save.
    """
    shapes = [tensor.shape for tensor in groups[0]]
    if len(shapes) <= 1 or not xla_cache.tracing_for_xla():
        return [function(*tensors) for tensors in zip(*groups)]
    flat = function(*(tf.concat([tf.reshape(tensor, [-1]) for tensor in group], axis=0) for group in groups))
    parts = tf.split(flat, [shape.num_elements() for shape in shapes])
    return [tf.reshape(part, shape) for part, shape in zip(parts, shapes)]


def _handle(variable: keras.Variable | tf.Variable) -> tf.Tensor:
    """The resource handle under a Keras or TensorFlow variable, for TensorFlow's fused optimizer ops."""
    return variable.value.handle if isinstance(variable, keras.Variable) else variable.handle


def _plain(optimizer: keras.optimizers.Optimizer) -> bool:
    """Adam or RMSprop with nothing on top (no clipping, decay, EMA, accumulation, loss scale, amsgrad, momentum)."""
    extras = (optimizer.clipnorm, optimizer.clipvalue, optimizer.global_clipnorm, optimizer.weight_decay,
              optimizer.gradient_accumulation_steps, optimizer.loss_scale_factor)
    if optimizer.use_ema or any(extra is not None for extra in extras):
        return False
    if type(optimizer) is keras.optimizers.Adam:
        return not optimizer.amsgrad
    return type(optimizer) is keras.optimizers.RMSprop and optimizer.momentum == 0 and not optimizer.centered


def gradient_keepers(model: keras.Model, keep: bool) -> list[tf.Variable] | None:
    """Variables that hold each trainable variable's last applied gradient, when ``keep`` (for histograms)."""
    if not keep:
        return None
    return [tf.Variable(tf.zeros_like(variable), trainable=False) for variable in model.trainable_variables]


def merge_time_and_envs(tensor: tf.Tensor) -> tf.Tensor:
    """[T, N, ...] -> [T * N, ...], keeping static shapes."""
    return tf.reshape(tensor, [-1, *tensor.shape[2:]])


class CompiledUpdate:
    """A learner's update as one graph of (batch, progress_remaining) -> metrics, built once.

    The input signature is fixed, so it traces once, and a later run with the same learner settings
    loads that trace from the compile cache instead (``agents.graph_cache``). The updates write their
    loops as tf.while_loop, so AutoGraph is off: converting the learner and, through it, Keras' own
    code took more than half of the first update's time. Calls skip tf.function's per-call signature
    matching (about 2 ms of Python per call here, as much as a whole A2C step), the batch goes in
    packed as two arrays (``BatchPacking``) and the metrics come back as one tensor.
    """

    def __init__(self, learner: Any, num_envs: int, keep_gradients: bool) -> None:
        config, spec = learner.config, learner.model.spec
        self.learner, self.jit_compile, self.names = learner, config.jit_compile, list(learner.metric_names)
        self.packing = BatchPacking(spec.observation_shape, spec.action_shape, config.num_steps, num_envs)
        self._signature = [*self.packing.signature(), tf.TensorSpec([], tf.float32)]
        self.key = graph_cache.cache_key("CompiledUpdate", {
            "learner": type(learner).__name__, "config": dataclasses.asdict(config), "spec": spec.to_dict(),
            "num_envs": num_envs, "keep_gradients": keep_gradients})
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
        result = xla_cache.first_call(run, self._build_function)
        self._compiled = True
        return result

    def _stacked(self, steps: tf.Tensor, last_values: tf.Tensor, progress_remaining: tf.Tensor) -> tf.Tensor:
        metrics = self.learner.update_ops(self.packing.unpack(steps, last_values), progress_remaining)
        return tf.stack([tf.cast(metrics[name], tf.float32) for name in self.names])

    def _build_function(self) -> None:
        function = tf.function(self._stacked, input_signature=self._signature, autograph=False,
                               jit_compile=self.jit_compile)
        self.call = graph_cache.CachedGraphFunction(function, lambda: learner_variables(self.learner), self.key)
        self._compiled = False

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


def batch_gae(batch: RolloutBatch, gamma: float, gae_lambda: float) -> tuple[tf.Tensor, tf.Tensor]:
    """losses.gae over a rollout batch: (advantages, returns), both [T, N]."""
    return losses.gae(batch.rewards, batch.values, batch.terminated, batch.truncated,
                      batch.truncation_values, batch.last_values, gamma, gae_lambda)
