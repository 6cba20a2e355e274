"""agents.optimization.apply_gradients: the learners' Adam and RMSprop as a few TF ops give the numbers of
Keras' own apply_gradients (RMSprop bit for bit, Adam to float32 rounding), compiled or not, and anything
else goes through Keras."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from agents.a2c import make_optimizer
from agents.config import A2CConfig
from agents.optimization import _plain, apply_gradients, elementwise_together, is_finite


def train_a_layer(make_optimizer_now, fused: bool, jit_compile: bool, steps: int = 5) -> list[np.ndarray]:
    """Steps on a Dense layer with a learning rate that changes each step; every weight and slot after."""
    keras.utils.set_random_seed(0)
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    variables = layer.trainable_variables
    optimizer = make_optimizer_now()
    optimizer.build(variables)
    inputs = tf.constant(np.random.default_rng(0).normal(size=(5, 4)), tf.float32)

    @tf.function(jit_compile=jit_compile)
    def step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(inputs) - 1.0))
        gradients = tape.gradient(loss, variables)
        optimizer.learning_rate.assign(optimizer.learning_rate * 0.9)
        if fused:
            apply_gradients(optimizer, gradients, variables)
        else:
            optimizer.apply_gradients(zip(gradients, variables))

    for _ in range(steps):
        step()
    return [variable.numpy() for variable in [*variables, *optimizer.variables]]


@pytest.mark.parametrize("make_optimizer_now", [
    lambda: keras.optimizers.Adam(learning_rate=1e-2, epsilon=1e-5),  # PPO's
    lambda: make_optimizer(A2CConfig(learning_rate=1e-2)),  # A2C's RMSprop
    lambda: make_optimizer(A2CConfig(learning_rate=1e-2, optimizer="adam")),
], ids=["ppo-adam", "a2c-rmsprop", "a2c-adam"])
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_the_learners_optimizers_step_as_keras_does(make_optimizer_now, jit_compile):
    """RMSprop bit for bit. Adam is TensorFlow's fused op, which computes 1 - beta_2 from float32(0.999): 0.9999871e-3
    where Keras has 1e-3 from a Python float. Second moments differ by about 1e-5 relative, and so do the weights."""
    assert _plain(make_optimizer_now())
    adam = isinstance(make_optimizer_now(), keras.optimizers.Adam)
    ours, keras_own = (train_a_layer(make_optimizer_now, fused, jit_compile) for fused in (True, False))
    assert len(ours) == 2 + 1 + 2 * (2 if adam else 1) + 1
    for mine, theirs in zip(ours, keras_own):
        if adam:
            np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)
        else:
            np.testing.assert_array_equal(mine, theirs)
    assert ours[2] == 5  # the iteration count (the first of the optimizer's variables)
    initial_kernel = train_a_layer(make_optimizer_now, True, jit_compile, steps=0)[0]
    assert np.abs(ours[0] - initial_kernel).min() > 1e-3  # every weight moved


@pytest.mark.parametrize("optimizer", [
    keras.optimizers.Adam(amsgrad=True), keras.optimizers.AdamW(), keras.optimizers.Adam(clipnorm=1.0),
    keras.optimizers.RMSprop(momentum=0.9), keras.optimizers.RMSprop(centered=True), keras.optimizers.SGD(),
], ids=["amsgrad", "adamw", "clipnorm", "momentum", "centered", "sgd"])
def test_any_other_optimizer_or_option_goes_through_keras(optimizer):
    assert not _plain(optimizer)


@pytest.mark.parametrize("shapes", [[(4, 3), (3,), (2, 5, 2), ()], [(3, 2)], []], ids=["several", "one", "none"])
@pytest.mark.parametrize("jit_compile", [None, False, True], ids=["eager", "graph", "xla"])
def test_elementwise_together_gives_each_tensors_own_result(shapes, jit_compile):
    rng = np.random.default_rng(0)
    numerators = [tf.constant(rng.normal(size=shape), tf.float32) for shape in shapes]
    denominators = [tf.constant(rng.uniform(0.1, 3.0, size=shape), tf.float32) for shape in shapes]

    def step(numerator: tf.Tensor, denominator: tf.Tensor) -> tf.Tensor:
        return 0.1 * numerator / tf.sqrt(denominator)

    def together() -> list[tf.Tensor]:
        return elementwise_together(step, numerators, denominators)

    def one_by_one() -> list[tf.Tensor]:  # the same mode: grappler and XLA turn / sqrt into * rsqrt, eager does not
        return [step(numerator, denominator) for numerator, denominator in zip(numerators, denominators)]

    run = (lambda function: function()) if jit_compile is None else (
        lambda function: tf.function(function, jit_compile=jit_compile, autograph=False)())
    steps, expected = run(together), run(one_by_one)
    assert len(steps) == len(expected) == len(shapes)
    for result, reference in zip(steps, expected):
        assert result.shape == reference.shape
        np.testing.assert_array_equal(result, reference)


def test_is_finite_agrees_with_tensorflows():
    values = tf.constant([0.0, -0.0, 1.5, -2.0, 3.4028235e38, -3.4028235e38, 1e-45, np.inf, -np.inf, np.nan])
    np.testing.assert_array_equal(is_finite(values), tf.math.is_finite(values))
    assert is_finite(values).numpy().tolist() == [True] * 7 + [False] * 3
