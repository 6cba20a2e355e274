"""Action distributions computed from the policy head's output, as pure TF functions.

Sampling takes a ``tf.random.Generator`` so that it is reproducible and its state can be
checkpointed, which ``tf.random.categorical`` (a stateless-seed-less op) would not allow.
"""

from __future__ import annotations

import tensorflow as tf


class Categorical:
    """Distribution over ``size`` discrete actions parameterised by unnormalised logits."""

    action_dtype = tf.int32

    def __init__(self, size: int) -> None:
        self.size = size

    def sample(self, logits: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
        """One action per row, by the Gumbel-max trick."""
        uniform = generator.uniform(tf.shape(logits), minval=1e-20, maxval=1.0)
        return tf.argmax(logits - tf.math.log(-tf.math.log(uniform)), axis=-1, output_type=tf.int32)

    def mode(self, logits: tf.Tensor) -> tf.Tensor:
        """The most likely action per row (the deterministic policy)."""
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    def log_prob(self, logits: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
        """log pi(action | observation) per row."""
        log_probs = tf.nn.log_softmax(logits)
        return tf.gather(log_probs, tf.cast(actions, tf.int32), batch_dims=1)

    def entropy(self, logits: tf.Tensor) -> tf.Tensor:
        """Entropy per row, in nats."""
        log_probs = tf.nn.log_softmax(logits)
        return -tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=-1)
