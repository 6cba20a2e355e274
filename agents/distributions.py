"""Action distributions computed from the policy head's output, as pure TF functions.

Sampling takes a ``tf.random.Generator`` so that it is reproducible and its state can be
checkpointed, which ``tf.random.categorical`` (a stateless-seed-less op) would not allow.
"""

from __future__ import annotations

import math
from typing import Any

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


class DiagonalGaussian:
    """Independent normal per action dimension; parameters are [mean, log_std] concatenated.

    Sampled actions are unbounded; the caller clips them to the env's bounds when stepping the
    env, while log-probabilities are those of the unclipped sample (as in SB3 and CleanRL).
    """

    action_dtype = tf.float32

    def __init__(self, size: int) -> None:
        self.size = size

    def _split(self, parameters: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return parameters[..., : self.size], parameters[..., self.size:]

    def sample(self, parameters: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
        """mean + std * standard normal noise, per row."""
        mean, log_std = self._split(parameters)
        return mean + tf.exp(log_std) * generator.normal(tf.shape(mean))

    def mode(self, parameters: tf.Tensor) -> tf.Tensor:
        """The mean (the deterministic policy)."""
        return self._split(parameters)[0]

    def log_prob(self, parameters: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
        """Sum over dimensions of the normal log-density."""
        mean, log_std = self._split(parameters)
        z = (actions - mean) * tf.exp(-log_std)
        return tf.reduce_sum(-0.5 * tf.square(z) - log_std - 0.5 * math.log(2.0 * math.pi), axis=-1)

    def entropy(self, parameters: tf.Tensor) -> tf.Tensor:
        """Sum over dimensions of log_std + 0.5 log(2 pi e)."""
        _, log_std = self._split(parameters)
        return tf.reduce_sum(log_std + 0.5 * math.log(2.0 * math.pi * math.e), axis=-1)


class MultiCategorical:
    """One categorical per component (a MultiDiscrete action): logits side by side, log-probabilities and
    entropies summed over the components."""

    action_dtype = tf.int32

    def __init__(self, nvec: tuple[int, ...]) -> None:
        self.nvec = tuple(int(size) for size in nvec)

    def _parts(self, logits: tf.Tensor) -> list[tf.Tensor]:
        return tf.split(logits, self.nvec, axis=-1)

    def sample(self, logits: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
        """One index per component and row, by the Gumbel-max trick."""
        return tf.stack([Categorical(size).sample(part, generator)
                         for size, part in zip(self.nvec, self._parts(logits))], axis=-1)

    def mode(self, logits: tf.Tensor) -> tf.Tensor:
        """The most likely index of each component."""
        return tf.stack([tf.argmax(part, axis=-1, output_type=tf.int32) for part in self._parts(logits)], axis=-1)

    def log_prob(self, logits: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
        """Sum over components of log pi(component's index)."""
        actions = tf.cast(actions, tf.int32)
        return tf.add_n([Categorical(size).log_prob(part, actions[..., index])
                         for index, (size, part) in enumerate(zip(self.nvec, self._parts(logits)))])

    def entropy(self, logits: tf.Tensor) -> tf.Tensor:
        """Sum over components of their entropies."""
        return tf.add_n([Categorical(size).entropy(part) for size, part in zip(self.nvec, self._parts(logits))])


class Bernoulli:
    """Independent yes/no per component (a MultiBinary action), parameterised by logits."""

    action_dtype = tf.float32

    def __init__(self, size: int) -> None:
        self.size = size

    def sample(self, logits: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
        """1.0 with probability sigmoid(logit), else 0.0."""
        return tf.cast(generator.uniform(tf.shape(logits)) < tf.sigmoid(logits), tf.float32)

    def mode(self, logits: tf.Tensor) -> tf.Tensor:
        """1.0 where that is the more likely value."""
        return tf.cast(logits > 0.0, tf.float32)

    def log_prob(self, logits: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
        """Sum over components of a log sigmoid(l) + (1 - a) log sigmoid(-l) = a l - softplus(l)."""
        return tf.reduce_sum(actions * logits - tf.nn.softplus(logits), axis=-1)

    def entropy(self, logits: tf.Tensor) -> tf.Tensor:
        """Sum over components of softplus(l) - l sigmoid(l)."""
        return tf.reduce_sum(tf.nn.softplus(logits) - logits * tf.sigmoid(logits), axis=-1)


Distribution = Categorical | MultiCategorical | Bernoulli | DiagonalGaussian


def make_distribution(model: Any) -> Distribution:
    """The action distribution that matches an ActorCritic's policy head."""
    spec = model.spec
    if spec.action_kind == "continuous":
        return DiagonalGaussian(spec.action_size)
    if spec.action_kind == "multidiscrete":
        return MultiCategorical(spec.action_nvec)
    if spec.action_kind == "multibinary":
        return Bernoulli(spec.action_size)
    return Categorical(spec.action_size)
