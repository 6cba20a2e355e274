"""champion.agents.optimization: gradient clipping to a global norm, the skip of a non-finite step, the kept gradients
and the schedules, each against numbers worked out by hand (plain SGD, so that the step is the gradient)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from champion.agents.optimization import apply_clipped_gradients, scheduled


def sgd_step(loss_of, initial: list[float], max_grad_norm: float, jit_compile: bool, keep: bool = False):
    """One clipped SGD step (learning rate 1) on a vector variable; (weights after, norm, skipped, kept)."""
    variable = tf.Variable(initial, dtype=tf.float32)
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    optimizer.build([variable])
    kept = [tf.Variable(tf.zeros_like(variable))] if keep else None

    @tf.function(jit_compile=jit_compile, autograph=False)
    def step():
        with tf.GradientTape() as tape:
            loss = loss_of(variable)
        return apply_clipped_gradients(optimizer, tape, loss, [variable], max_grad_norm, kept)

    norm, skipped = step()
    return variable.numpy(), float(norm), float(skipped), (kept[0].numpy() if keep else None), optimizer


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_a_gradient_over_the_norm_is_scaled_down_to_it_and_kept(jit_compile):
    # loss = 3 w0 + 4 w1: gradient (3, 4), norm 5; clipped to norm 1 it is (0.6, 0.8)
    weights, norm, skipped, kept, optimizer = sgd_step(lambda w: 3.0 * w[0] + 4.0 * w[1], [1.0, 2.0], 1.0,
                                                       jit_compile, keep=True)
    assert (norm, skipped) == (pytest.approx(5.0), 0.0)
    np.testing.assert_allclose(weights, [1.0 - 0.6, 2.0 - 0.8], rtol=1e-6)
    np.testing.assert_allclose(kept, [0.6, 0.8], rtol=1e-6)
    assert int(optimizer.iterations.numpy()) == 1


def test_a_gradient_under_the_norm_is_applied_as_it_is():
    weights, norm, skipped, _, _ = sgd_step(lambda w: 0.3 * w[0] + 0.4 * w[1], [1.0, 2.0], 1.0, jit_compile=False)
    assert (norm, skipped) == (pytest.approx(0.5), 0.0)
    np.testing.assert_allclose(weights, [0.7, 1.6], rtol=1e-6)


@pytest.mark.parametrize("loss_of", [lambda w: w[0] * np.inf, lambda w: tf.sqrt(w[0] - 10.0)], ids=["inf", "nan"])
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_a_non_finite_loss_or_gradient_skips_the_step_and_touches_nothing(loss_of, jit_compile):
    weights, _, skipped, kept, optimizer = sgd_step(loss_of, [1.0, 2.0], 1.0, jit_compile, keep=True)
    assert skipped == 1.0
    np.testing.assert_array_equal(weights, [1.0, 2.0])
    np.testing.assert_array_equal(kept, [0.0, 0.0])
    assert int(optimizer.iterations.numpy()) == 0


def test_a_linear_schedule_falls_from_its_initial_value_to_zero():
    assert float(scheduled(3e-4, "linear", tf.constant(1.0))) == pytest.approx(3e-4)
    assert float(scheduled(3e-4, "linear", tf.constant(0.25))) == pytest.approx(7.5e-5)
    assert float(scheduled(3e-4, "constant", tf.constant(0.25))) == pytest.approx(3e-4)
