"""Loss functions against numbers worked out by hand."""

import numpy as np
import pytest
import tensorflow as tf

from champion.agents import losses


def test_gae_by_hand_with_a_termination_and_a_truncation():
    # Two envs, four steps, gamma 0.9, lambda 0.8 (so gamma * lambda = 0.72).
    # Env 0 terminates at t=1 (no bootstrap) and is truncated at t=3 (bootstrap from V(final) = 2.0).
    # Env 1 never ends, so its last step bootstraps from last_values = 0.5.
    rewards = tf.constant([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    values = tf.constant([[0.5, 1.0], [0.4, 1.0], [0.3, 1.0], [0.2, 1.0]])
    terminated = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    truncated = tf.constant([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    truncation_values = tf.constant([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    last_values = tf.constant([9.0, 0.5])

    advantages, returns = losses.gae(rewards, values, terminated, truncated, truncation_values, last_values, 0.9, 0.8)

    # env 0: deltas 1+0.9*0.4-0.5=0.86, 1-0.4=0.6 (terminal), 1+0.9*0.2-0.3=0.88, 1+0.9*2.0-0.2=2.6
    #        A3=2.6, A2=0.88+0.72*2.6=2.752, A1=0.6 (chain cut), A0=0.86+0.72*0.6=1.292
    # env 1: deltas -0.1, -0.1, -0.1, 1+0.9*0.5-1=0.45
    #        A3=0.45, A2=-0.1+0.72*0.45=0.224, A1=-0.1+0.72*0.224=0.06128, A0=-0.1+0.72*0.06128=-0.0558784
    expected = np.array([[1.292, -0.0558784], [0.6, 0.06128], [2.752, 0.224], [2.6, 0.45]])
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns.numpy(), expected + values.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 5, 128])
def test_gae_loop_and_matrix_forms_agree(steps):
    rng = np.random.default_rng(steps)
    deltas = tf.constant(rng.normal(size=(steps, 6)), tf.float32)
    ends = rng.random((steps, 6)) < 0.15
    continues = tf.constant(np.where(ends, 0.0, 0.99 * 0.95), tf.float32)
    expected = np.zeros((steps, 6))
    following = np.zeros(6)
    for step in reversed(range(steps)):  # the recursion, written out
        following = deltas.numpy()[step] + continues.numpy()[step] * following
        expected[step] = following
    np.testing.assert_allclose(losses._discounted_sums_by_scan(deltas, continues).numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(losses._discounted_sums_by_matrix(deltas, continues).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_gae_with_lambda_one_gives_discounted_returns_minus_values():
    rewards = tf.constant([[1.0], [2.0], [3.0]])
    values = tf.constant([[0.0], [0.0], [0.0]])
    zeros = tf.zeros([3, 1])
    advantages, _ = losses.gae(rewards, values, zeros, zeros, zeros, tf.constant([10.0]), 0.5, 1.0)
    # 1 + 0.5*2 + 0.25*3 + 0.125*10 = 4.0; 2 + 0.5*3 + 0.25*10 = 6.0; 3 + 0.5*10 = 8.0
    np.testing.assert_allclose(advantages.numpy()[:, 0], [4.0, 6.0, 8.0], rtol=1e-6)


def test_ppo_clipping_on_hand_picked_ratios():
    ratios = np.array([0.5, 1.0, 1.5, 1.5], np.float32)
    advantages = tf.constant([1.0, -1.0, 1.0, -1.0])
    old = tf.zeros(4)
    new = tf.Variable(np.log(ratios))
    with tf.GradientTape() as tape:
        loss, clip_fraction, approx_kl = losses.ppo_policy_loss(new, old, advantages, 0.2)
    # min(r*A, clip(r)*A): min(0.5, 0.8)=0.5, -1, min(1.5, 1.2)=1.2, min(-1.5, -1.2)=-1.5 -> mean -0.2
    assert loss.numpy() == pytest.approx(0.2, abs=1e-6)
    assert clip_fraction.numpy() == pytest.approx(0.75)
    expected_kl = np.mean((ratios - 1) - np.log(ratios))
    assert approx_kl.numpy() == pytest.approx(expected_kl, rel=1e-5)
    gradient = tape.gradient(loss, new).numpy()
    # Unclipped terms pass -r*A/4; the clipped term with A>0 and r>1+eps passes nothing.
    assert gradient[0] == pytest.approx(-0.5 / 4, rel=1e-5)
    assert gradient[2] == 0.0
    assert gradient[3] == pytest.approx(1.5 / 4, rel=1e-5)


def test_value_loss_plain_and_clipped():
    values, old, returns = tf.constant([2.0, 0.0]), tf.constant([1.0, 0.0]), tf.constant([3.0, 1.0])
    # plain: ((3-2)^2 + (1-0)^2) / 2 = 1
    assert losses.value_loss(values, old, returns).numpy() == pytest.approx(1.0)
    # clipped at 0.5: first value clipped to 1.5 -> max(1, 2.25) = 2.25; second unchanged 1 -> mean 1.625
    assert losses.value_loss(values, old, returns, 0.5).numpy() == pytest.approx(1.625)


def test_explained_variance_perfect_and_constant():
    targets = tf.constant([1.0, 2.0, 3.0, 4.0])
    assert losses.explained_variance(targets, targets).numpy() == pytest.approx(1.0)
    assert losses.explained_variance(tf.fill([4], 2.5), targets).numpy() == pytest.approx(0.0)
    assert losses.explained_variance(targets, tf.fill([4], 1.0)).numpy() == 0.0


def test_normalize_gives_zero_mean_unit_std():
    normalized = losses.normalize(tf.constant([1.0, 2.0, 3.0, 6.0])).numpy()
    assert normalized.mean() == pytest.approx(0.0, abs=1e-6)
    assert normalized.std() == pytest.approx(1.0, rel=1e-5)


def test_gae_terminated_and_truncated_on_the_same_step_does_not_bootstrap():
    # A time limit that coincides with a terminal state: the terminal wins (nothing follows it).
    rewards, values = tf.constant([[1.0]]), tf.constant([[0.5]])
    advantages, _ = losses.gae(rewards, values, tf.constant([[1.0]]), tf.constant([[1.0]]),
                               tf.constant([[100.0]]), tf.constant([50.0]), 0.9, 0.95)
    assert advantages.numpy()[0, 0] == pytest.approx(1.0 - 0.5)
