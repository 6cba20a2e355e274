"""Pieces of a gradient step that PPO and A2C share."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from champion.agents import losses
from champion.agents.batch import RolloutBatch


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
    finite = tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(norm))

    def apply() -> tf.Tensor:
        optimizer.apply_gradients(zip(clipped, variables))
        for kept, gradient in zip(kept_gradients or (), clipped):
            kept.assign(gradient)
        return tf.constant(0.0)

    skipped = tf.cond(finite, apply, lambda: tf.constant(1.0))
    return norm, skipped


def gradient_keepers(model: keras.Model, keep: bool) -> list[tf.Variable] | None:
    """Variables that hold each trainable variable's last applied gradient, when ``keep`` (for histograms)."""
    if not keep:
        return None
    return [tf.Variable(tf.zeros_like(variable), trainable=False) for variable in model.trainable_variables]


def merge_time_and_envs(tensor: tf.Tensor) -> tf.Tensor:
    """[T, N, ...] -> [T * N, ...], keeping static shapes."""
    return tf.reshape(tensor, [-1, *tensor.shape[2:]])


def batch_gae(batch: RolloutBatch, gamma: float, gae_lambda: float) -> tuple[tf.Tensor, tf.Tensor]:
    """losses.gae over a rollout batch: (advantages, returns), both [T, N]."""
    return losses.gae(batch.rewards, batch.values, batch.terminated, batch.truncated,
                      batch.truncation_values, batch.last_values, gamma, gae_lambda)
