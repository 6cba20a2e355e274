"""The one record that flows from rollout collection to the learner."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

Array = np.ndarray | tf.Tensor


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


class BatchPacking:
    """Packs a RolloutBatch into two float32 arrays for a compiled call, and unpacks it in the graph.

    A compiled function spends Python time per input tensor on every call (conversion and
    signature checks), comparable to a small A2C gradient step with one input per field. Here
    the per-step fields sit side by side in one [T, N, width] array (category indices as float32,
    exact below 2**24) and last_values is the other.
    """

    SCALARS = ("log_probs", "values", "rewards", "terminated", "truncated", "truncation_values")

    def __init__(self, observation_shape: tuple[int, ...], action_shape: tuple[int, ...], num_steps: int,
                 num_envs: int, integer_actions: bool | None = None) -> None:
        self.observation_shape, self.action_shape = tuple(observation_shape), tuple(action_shape)
        self.integer_actions = self.action_shape == () if integer_actions is None else integer_actions
        self.num_steps, self.num_envs = num_steps, num_envs
        self.observation_size = int(np.prod(observation_shape))
        self.action_size = int(np.prod(action_shape))  # 1 for a discrete action (shape ())
        self.width = self.observation_size + self.action_size + len(self.SCALARS)

    def signature(self) -> list[tf.TensorSpec]:
        """TensorSpecs of the packed arrays (fixed, so a compiled update traces once)."""
        return [tf.TensorSpec([self.num_steps, self.num_envs, self.width], tf.float32),
                tf.TensorSpec([self.num_envs], tf.float32)]

    def pack(self, batch: RolloutBatch) -> tuple[np.ndarray, np.ndarray]:
        """(per-step array [T, N, width], last_values [N]) from a batch of numpy arrays."""
        shape = (self.num_steps, self.num_envs, -1)
        columns = [np.reshape(batch.observations, shape), np.reshape(batch.actions, shape),
                   np.stack([getattr(batch, name) for name in self.SCALARS], axis=-1)]
        return np.concatenate(columns, axis=-1, dtype=np.float32), np.asarray(batch.last_values, np.float32)

    def unpack(self, steps: tf.Tensor, last_values: tf.Tensor) -> RolloutBatch:
        """The RolloutBatch of tensors that ``pack`` packed (inside the graph)."""
        observation_end = self.observation_size
        action_end = observation_end + self.action_size
        observations = tf.reshape(steps[..., :observation_end], [self.num_steps, self.num_envs, *self.observation_shape])
        actions = steps[..., observation_end:action_end]
        if self.action_shape == ():
            actions = actions[..., 0]
        actions = tf.cast(actions, tf.int32) if self.integer_actions else actions
        scalars = {name: steps[..., action_end + index] for index, name in enumerate(self.SCALARS)}
        return RolloutBatch(observations=observations, actions=actions, last_values=last_values, **scalars)
