"""The one record that flows from rollout collection to the learner."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

Array = np.ndarray | tf.Tensor


class RolloutBatch(NamedTuple):
    """num_steps x num_envs transitions, time-major ([T, N, ...]).

    Whoever collects rollouts (vectorised gymnasium here; later an in-graph engine or remote
    workers) fills exactly these fields and nothing else.
    """

    observations: Array
    """[T, N, *obs_shape] float32: the observation each action was taken in."""
    actions: Array
    """[T, N] int32 (discrete) or [T, N, action_size] float32 (continuous, before clipping) actions."""
    log_probs: Array
    """[T, N] float32 log-probability of each action under the acting policy."""
    values: Array
    """[T, N] float32 value estimates V(observation)."""
    rewards: Array
    """[T, N] float32 rewards received."""
    terminated: Array
    """[T, N] float32 1.0 where the episode ended in a terminal state (no bootstrap)."""
    truncated: Array
    """[T, N] float32 1.0 where the episode was cut short (time limit: bootstrap)."""
    truncation_values: Array
    """[T, N] float32 V(final observation) where truncated, else 0."""
    last_values: Array
    """[N] float32 V(observation after the last step), to bootstrap the rollout's end."""


def batch_signature(observation_shape: tuple[int, ...], action_shape: tuple[int, ...], num_steps: int,
                    num_envs: int) -> RolloutBatch:
    """Fixed TensorSpecs for a compiled update (so it traces exactly once)."""
    matrix = tf.TensorSpec([num_steps, num_envs], tf.float32)
    action_dtype = tf.int32 if action_shape == () else tf.float32
    return RolloutBatch(
        observations=tf.TensorSpec([num_steps, num_envs, *observation_shape], tf.float32),
        actions=tf.TensorSpec([num_steps, num_envs, *action_shape], action_dtype),
        log_probs=matrix,
        values=matrix,
        rewards=matrix,
        terminated=matrix,
        truncated=matrix,
        truncation_values=matrix,
        last_values=tf.TensorSpec([num_envs], tf.float32),
    )
