"""Packing a RolloutBatch into two float32 arrays for a compiled call, and unpacking it in the graph."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from champion.agents.batch import RolloutBatch


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
