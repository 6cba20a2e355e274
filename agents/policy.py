"""Compiled acting functions around an ActorCritic model: one graph call per vector step."""

from __future__ import annotations

import tensorflow as tf

import numpy as np

from agents.distributions import Categorical, DiagonalGaussian
from agents.networks import ActorCritic


def make_distribution(model: ActorCritic) -> Categorical | DiagonalGaussian:
    """The action distribution that matches the model's policy head."""
    if model.spec.action_kind == "continuous":
        return DiagonalGaussian(model.spec.action_size)
    return Categorical(model.spec.action_size)


class Policy:
    """Acts with a model: stochastic ``sample`` for training, deterministic ``mode`` for evaluation.

    Each method is a tf.function with a fixed input signature (any batch size), so it traces
    once; sampling draws from this policy's own seeded ``tf.random.Generator``.
    """

    def __init__(self, model: ActorCritic, seed: int = 0) -> None:
        self.model = model
        self.distribution = make_distribution(model)
        self.generator = tf.random.Generator.from_seed(seed)
        signature = [tf.TensorSpec([None, *model.spec.observation_shape], tf.float32)]
        self.sample = tf.function(self._sample, input_signature=signature)
        self.mode = tf.function(self._mode, input_signature=signature)
        self.value = tf.function(self._value, input_signature=signature)
        spec = model.spec
        self._low = np.asarray(spec.action_low, np.float32) if spec.action_kind == "continuous" else None
        self._high = np.asarray(spec.action_high, np.float32) if spec.action_kind == "continuous" else None

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """What to send to the env: continuous actions clipped to its bounds, discrete ones as they are."""
        return actions if self._low is None else np.clip(actions, self._low, self._high)

    def _sample(self, observations: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(actions, their log-probabilities, state values) for a batch of observations."""
        parameters, values = self.model(observations)
        actions = self.distribution.sample(parameters, self.generator)
        return actions, self.distribution.log_prob(parameters, actions), values

    def _mode(self, observations: tf.Tensor) -> tf.Tensor:
        """The deterministic (most likely) action for each observation."""
        parameters, _ = self.model(observations)
        return self.distribution.mode(parameters)

    def _value(self, observations: tf.Tensor) -> tf.Tensor:
        """V(observation) for each observation."""
        return self.model.value(observations)

    def tracing_counts(self) -> dict[str, int]:
        """How often each compiled function was traced (1 each after first use)."""
        return {
            name: getattr(self, name).experimental_get_tracing_count() for name in ("sample", "mode", "value")
        }
