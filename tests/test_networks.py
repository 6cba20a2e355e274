"""ActorCritic: orthogonal initialisation with the published gains, separate or shared torsos, the learned
log standard deviation, and the normaliser applied inside the model."""

import math

import numpy as np
import pytest
import tensorflow as tf

from champion.agents.networks import ActorCritic, NetworkSpec, weight_arrays
from champion.agents.spec import box_leaf


def spec(**changes) -> NetworkSpec:
    values = dict(observation_leaves=(box_leaf((3,)),), action_kind="discrete", action_size=2, hidden_sizes=(16, 8))
    values.update(changes)
    return NetworkSpec(**values)


def test_kernels_are_orthogonal_with_gain_sqrt2_hidden_001_policy_1_value():
    weights = weight_arrays(ActorCritic(spec(), seed=3))
    expected_gains = {"policy_torso_0": math.sqrt(2), "policy_torso_1": math.sqrt(2), "value_torso_0": math.sqrt(2),
                      "policy_head": 0.01, "value_head": 1.0}
    for layer, gain in expected_gains.items():
        kernel = weights[f"{layer}/kernel"]
        # the shorter side's vectors are orthogonal with norm `gain`
        gram = kernel.T @ kernel if kernel.shape[0] >= kernel.shape[1] else kernel @ kernel.T
        np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=1e-5 * max(1.0, gain**2))
        assert not weights[f"{layer}/bias"].any()


@pytest.mark.parametrize("shared", [False, True])
def test_the_value_uses_the_policy_torso_only_when_it_is_shared(shared):
    model = ActorCritic(spec(shared_torso=shared), seed=1)
    observations = tf.constant(np.random.default_rng(0).normal(size=(32, 3)), tf.float32)
    policy_torso = [variable for layer in model.policy_torso for variable in layer.trainable_variables]

    @tf.function(autograph=False)
    def value_and_gradients():
        with tf.GradientTape() as tape:
            values = model(observations)[1]
            total = tf.reduce_sum(values)
        return values, tape.gradient(total, policy_torso)

    values, gradients = value_and_gradients()
    if shared:
        assert all(gradient is not None and np.abs(gradient).max() > 0 for gradient in gradients)
        assert model.value_torso == []
    else:
        assert all(gradient is None for gradient in gradients)
    np.testing.assert_allclose(model.value(observations).numpy(), values.numpy(), rtol=1e-5, atol=1e-6)


def test_a_continuous_head_appends_the_learned_log_std_to_every_row():
    model = ActorCritic(spec(action_kind="continuous", action_size=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0),
                             log_std_init=-0.5), seed=0)
    parameters, _ = model(np.zeros((4, 3), np.float32))
    assert parameters.shape == (4, 4)
    np.testing.assert_array_equal(parameters.numpy()[:, 2:], np.full((4, 2), -0.5, np.float32))


def test_the_normaliser_inside_the_model_makes_the_running_mean_look_like_zeros():
    model = ActorCritic(spec(normalize_observations=True), seed=2)
    rng = np.random.default_rng(0)
    batch = rng.normal([100.0, -50.0, 3.0], [10.0, 5.0, 1.0], size=(4096, 3)).astype(np.float32)
    model.update_normalizer(tf.constant(batch))
    mean = weight_arrays(model)["observation_normalizer/mean"]
    np.testing.assert_allclose(mean, batch.mean(axis=0), rtol=1e-4)
    at_mean = model(mean[np.newaxis].astype(np.float32))
    at_zero_without_normaliser = ActorCritic(spec(), seed=2)(np.zeros((1, 3), np.float32))
    for normalised, reference in zip(at_mean, at_zero_without_normaliser):
        np.testing.assert_allclose(normalised.numpy(), reference.numpy(), atol=1e-6)
