"""Pieces of a gradient step that PPO and A2C share."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf



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
) -> tf.Tensor:
    """Clip gradients to a global norm, apply them, and return the norm before clipping."""
    gradients = tape.gradient(loss, variables)
    clipped, norm = tf.clip_by_global_norm(gradients, max_grad_norm)
    optimizer.apply_gradients(zip(clipped, variables))
    return norm


def merge_time_and_envs(tensor: tf.Tensor) -> tf.Tensor:
    """[T, N, ...] -> [T * N, ...], keeping static shapes."""
    return tf.reshape(tensor, [-1, *tensor.shape[2:]])
