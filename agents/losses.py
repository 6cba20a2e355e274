"""Pure loss functions shared by PPO and A2C. Every input and output is a tf.Tensor."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def gae(
    rewards: tf.Tensor,
    values: tf.Tensor,
    terminated: tf.Tensor,
    truncated: tf.Tensor,
    truncation_values: tf.Tensor,
    last_values: tf.Tensor,
    gamma: float | tf.Tensor,
    gae_lambda: float | tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Generalised advantage estimates and value targets for a [time, env] rollout.

    ``values[t]`` is V(obs[t]); the value of the state after step t is ``values[t + 1]`` (or
    ``last_values`` after the final step), except where the episode was truncated at step t:
    then it is ``truncation_values[t]``, V of the final observation, so a time limit still
    bootstraps. A termination bootstraps nothing. Either end stops the lambda-chain.
    Returns (advantages, returns) with returns = advantages + values.
    """
    terminated = tf.cast(terminated, tf.float32)
    truncated = tf.cast(truncated, tf.float32)
    next_values = tf.concat([values[1:], last_values[tf.newaxis]], axis=0)
    next_values = tf.where(truncated > 0, truncation_values, next_values)
    deltas = rewards + gamma * next_values * (1.0 - terminated) - values
    continues = (1.0 - tf.maximum(terminated, truncated)) * gamma * gae_lambda
    if deltas.shape[0] is not None and deltas.shape[0] <= MATRIX_GAE_MAX_STEPS:
        advantages = _discounted_sums_by_matrix(deltas, continues)
    else:
        advantages = _discounted_sums_by_scan(deltas, continues)
    return advantages, advantages + values


MATRIX_GAE_MAX_STEPS = 128
"""Rollouts up to this many steps get GAE as one [T, T, N] product instead of a T-step loop."""


def _discounted_sums_by_scan(deltas: tf.Tensor, continues: tf.Tensor) -> tf.Tensor:
    """A[t] = deltas[t] + continues[t] * A[t + 1], as a reverse tf.scan (any T, one loop step per t)."""

    def backward(next_advantage: tf.Tensor, step: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        delta, carry = step
        return delta + carry * next_advantage

    return tf.scan(backward, (deltas, continues), initializer=tf.zeros_like(deltas[0]), reverse=True)


def _discounted_sums_by_matrix(deltas: tf.Tensor, continues: tf.Tensor) -> tf.Tensor:
    """The same sums without a loop: A[t] = sum over k >= t of (continues[t] ... continues[k-1]) deltas[k].

    Each step of a graph loop has a fixed cost far above a short rollout's arithmetic (A2C's 5
    steps), so short rollouts take the matrix form. Zeros in ``continues`` (episode ends) stay exact zeros.
    """
    steps = deltas.shape[0]
    later = tf.constant(np.triu(np.ones([steps, steps], np.float32)))  # later[t, j] = 1 where j >= t
    factors = later[:, :, tf.newaxis] * continues[tf.newaxis] + (1.0 - later)[:, :, tf.newaxis]  # c[j] if j >= t else 1
    products = tf.math.cumprod(factors, axis=1, exclusive=True)  # [t, k]: c[t] ... c[k-1] for k >= t
    return tf.einsum("tkn,tk,kn->tn", products, later, deltas)


def ppo_policy_loss(
    log_probs: tf.Tensor, old_log_probs: tf.Tensor, advantages: tf.Tensor, clip_range: float | tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Clipped surrogate loss (to minimise), the fraction of clipped ratios, and approximate KL.

    The KL estimate is E[(r - 1) - log r], unbiased and never negative (Schulman, 2020).
    """
    log_ratio = log_probs - old_log_probs
    ratio = tf.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = tf.clip_by_value(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    loss = -tf.reduce_mean(tf.minimum(unclipped, clipped))
    clip_fraction = tf.reduce_mean(tf.cast(tf.abs(ratio - 1.0) > clip_range, tf.float32))
    approx_kl = tf.reduce_mean((ratio - 1.0) - log_ratio)
    return loss, clip_fraction, approx_kl


def policy_gradient_loss(log_probs: tf.Tensor, advantages: tf.Tensor) -> tf.Tensor:
    """Vanilla policy-gradient loss -E[A log pi] (A2C)."""
    return -tf.reduce_mean(tf.stop_gradient(advantages) * log_probs)


def value_loss(
    values: tf.Tensor, old_values: tf.Tensor, returns: tf.Tensor, clip_range: float | tf.Tensor | None = None
) -> tf.Tensor:
    """Mean squared error to the returns; with clip_range, the pessimistic clipped form (OpenAI baselines)."""
    squared = tf.square(returns - values)
    if clip_range is None:
        return tf.reduce_mean(squared)
    clipped_values = old_values + tf.clip_by_value(values - old_values, -clip_range, clip_range)
    return tf.reduce_mean(tf.maximum(squared, tf.square(returns - clipped_values)))


def normalize(advantages: tf.Tensor) -> tf.Tensor:
    """Zero mean, unit standard deviation (epsilon-guarded for constant inputs)."""
    mean, variance = tf.nn.moments(advantages, axes=[0])
    return (advantages - mean) / (tf.sqrt(variance) + 1e-8)


def explained_variance(predictions: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """1 - Var[target - prediction] / Var[target]: 1 is perfect, 0 no better than a constant."""
    target_variance = tf.math.reduce_variance(targets)
    residual_variance = tf.math.reduce_variance(targets - predictions)
    return tf.where(target_variance > 0, 1.0 - residual_variance / tf.maximum(target_variance, 1e-12), 0.0)
