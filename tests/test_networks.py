"""ActorCritic computes what Keras' own Dense layer calls compute, outputs and gradients bit for bit, in
plain TensorFlow and under XLA (where it adds biases by AddV2, whose gradient XLA converts directly)."""

import numpy as np
import pytest
import tensorflow as tf

from agents.networks import ActorCritic, NetworkSpec


def keras_layer_calls(model: ActorCritic, observations: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The forward pass as it was written before, through each layer's ``__call__``."""
    features = model._features(observations)
    policy_features = value_features = features
    for layer in model.policy_torso:
        policy_features = layer(policy_features)
    for layer in model.value_torso or []:
        value_features = layer(value_features)
    if not model.value_torso:
        value_features = policy_features
    parameters = model.policy_head(policy_features)
    if model.log_std is not None:
        parameters = tf.concat([parameters, tf.zeros_like(parameters) + model.log_std], axis=-1)
    return parameters, tf.squeeze(model.value_head(value_features), axis=-1)


def outputs_and_gradients(model: ActorCritic, forward, observations: tf.Tensor, jit_compile: bool) -> list[np.ndarray]:
    def run() -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            parameters, values = forward(observations)
            loss = tf.reduce_sum(tf.sin(parameters)) + tf.reduce_sum(tf.square(values - 1.0))
        return [parameters, values, *tape.gradient(loss, model.trainable_variables)]

    return [tensor.numpy() for tensor in tf.function(run, jit_compile=jit_compile, autograph=False)()]


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("kind, activation, shared, normalize", [
    ("discrete", "tanh", False, False), ("continuous", "relu", True, True), ("discrete", "gelu", False, True),
])
def test_the_model_computes_what_keras_layer_calls_compute(jit_compile, kind, activation, shared, normalize):
    values = dict(observation_shape=(3,), action_kind=kind, action_size=2, hidden_sizes=(16, 8),
                  activation=activation, shared_torso=shared, normalize_observations=normalize)
    if kind == "continuous":
        values.update(action_low=(-1.0, -2.0), action_high=(1.0, 2.0))
    model = ActorCritic(NetworkSpec(**values), seed=3)
    observations = tf.constant(np.random.default_rng(1).normal(size=(64, 3)), tf.float32)
    ours = outputs_and_gradients(model, model, observations, jit_compile)
    reference = outputs_and_gradients(model, lambda batch: keras_layer_calls(model, batch), observations, jit_compile)
    assert len(ours) == 2 + len(model.trainable_variables)
    for mine, theirs in zip(ours, reference):
        np.testing.assert_array_equal(mine, theirs)
    assert all(np.abs(gradient).max() > 0 for gradient in ours[2:] if gradient.size > 1)  # every weight is in it
