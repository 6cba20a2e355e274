"""Running observation normalisation as a Keras layer, so the statistics live in the model's weights."""

from __future__ import annotations

import keras
import tensorflow as tf

from champion.agents.spec import NORMALIZER_EPSILON, NORMALIZER_NAME


class RunningNormalization(keras.layers.Layer):
    """(x - running mean) / running std, clipped; statistics are non-trainable float64 weights.

    The statistics change only through ``update`` (called by the learner with rollout
    observations), never in ``call``: evaluation and replay see exactly the saved statistics.
    """

    def __init__(self, size: int, clip: float = 10.0, epsilon: float = NORMALIZER_EPSILON, name: str = NORMALIZER_NAME) -> None:
        super().__init__(name=name)
        self.size, self.clip, self.epsilon = size, clip, epsilon

    def build(self, input_shape: tuple) -> None:
        """Create the statistics (in build, so that their names carry this layer's name)."""
        size = self.size
        self.mean = self.add_weight(shape=(size,), initializer="zeros", trainable=False, name="mean", dtype="float64")
        self.variance = self.add_weight(shape=(size,), initializer="ones", trainable=False, name="variance", dtype="float64")
        # A tiny prior count, as in OpenAI baselines, keeps the first update from dividing by zero.
        self.count = self.add_weight(shape=(), initializer=keras.initializers.Constant(1e-4), trainable=False,
                                     name="count", dtype="float64")

    def call(self, observations: tf.Tensor) -> tf.Tensor:
        """Normalise a [batch, size] float32 tensor with the current statistics."""
        mean = tf.cast(self.mean, observations.dtype)
        scale = tf.cast(tf.sqrt(self.variance + self.epsilon), observations.dtype)
        return tf.clip_by_value((observations - mean) / scale, -self.clip, self.clip)

    def update(self, observations: tf.Tensor) -> None:
        """Merge a [batch, size] batch into the running mean and variance (Chan et al.'s parallel formula)."""
        batch = tf.cast(observations, tf.float64)
        batch_mean, batch_variance = tf.nn.moments(batch, axes=[0])
        batch_count = tf.cast(tf.shape(batch)[0], tf.float64)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * batch_count / total
        combined = self.variance * self.count + batch_variance * batch_count + tf.square(delta) * self.count * batch_count / total
        self.mean.assign(new_mean)
        self.variance.assign(combined / total)
        self.count.assign(total)
