"""The one record that flows from rollout collection to the learner.

It imports no TensorFlow: rollout workers (``runners/workers.py``) build it without loading TensorFlow;
``agents/compile/packing.py`` packs it for the compiled update."""

from __future__ import annotations

from typing import Any, NamedTuple

Array = Any
"""A numpy array where the batch is collected, a tf.Tensor inside the compiled update."""


class RolloutBatch(NamedTuple):
    """num_steps x num_envs transitions, time-major ([T, N, ...]).

    Whoever collects rollouts (gymnasium vector envs, the in-graph engine, later remote workers)
    fills exactly these fields and nothing else.
    """

    observations: Array
    """[T, N, *obs_shape] float32: the observation each action was taken in."""
    actions: Array
    """[T, N] int32 (discrete), [T, N, components] int32 (multidiscrete) or [T, N, size] float32 (multibinary as
    0/1, continuous before clipping and flattened) actions."""
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
