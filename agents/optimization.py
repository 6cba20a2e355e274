"""Pieces of a gradient step that PPO and A2C share."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

from agents import losses
from agents.batch import RolloutBatch, batch_signature



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
) -> tuple[tf.Tensor, tf.Tensor]:
    """Clip gradients to a global norm and apply them, unless the loss or gradient is not finite.

    Returns (gradient norm before clipping, 1.0 if the step was skipped else 0.0). A skipped
    step leaves the weights and the optimizer state untouched.
    """
    gradients = tape.gradient(loss, variables)
    clipped, norm = tf.clip_by_global_norm(gradients, max_grad_norm)
    finite = tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(norm))

    def apply() -> tf.Tensor:
        optimizer.apply_gradients(zip(clipped, variables))
        return tf.constant(0.0)

    skipped = tf.cond(finite, apply, lambda: tf.constant(1.0))
    return norm, skipped


def merge_time_and_envs(tensor: tf.Tensor) -> tf.Tensor:
    """[T, N, ...] -> [T * N, ...], keeping static shapes."""
    return tf.reshape(tensor, [-1, *tensor.shape[2:]])


def compile_update(update: Callable[[RolloutBatch, tf.Tensor], Any], spec: Any, num_steps: int, num_envs: int) -> Any:
    """A tf.function of (batch, progress_remaining) with a fixed input signature, so it traces once.

    The updates write their loops as tf.while_loop, so AutoGraph is off: converting the learner
    and, through it, Keras' own code took more than half of the first update's time.
    """
    signature = [batch_signature(spec.observation_shape, spec.action_shape, num_steps, num_envs),
                 tf.TensorSpec([], tf.float32)]
    return tf.function(update, input_signature=signature, autograph=False)


def run_update(compiled_update: Any, batch: RolloutBatch, progress_remaining: float) -> dict[str, float]:
    """Call a compiled update and bring its metrics back as Python floats."""
    metrics = compiled_update(batch, tf.constant(progress_remaining, tf.float32))
    return {name: float(value) for name, value in metrics.items()}


def batch_gae(batch: RolloutBatch, gamma: float, gae_lambda: float) -> tuple[tf.Tensor, tf.Tensor]:
    """losses.gae over a rollout batch: (advantages, returns), both [T, N]."""
    return losses.gae(batch.rewards, batch.values, batch.terminated, batch.truncated,
                      batch.truncation_values, batch.last_values, gamma, gae_lambda)
