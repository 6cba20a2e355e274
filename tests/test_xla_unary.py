"""Tanh, Exp and Sqrt as _UnaryOpsComposition under XLA: the same values and gradients, to the bit, as
TensorFlow's own ops, and the plain ops everywhere else."""

import numpy as np
import pytest
import tensorflow as tf

from agents import xla_unary


def _values_and_gradients(function, inputs: tf.Tensor, jit_compile: bool | None):
    def run(values):
        with tf.GradientTape() as tape:
            tape.watch(values)
            result = function(values)
            weights = tf.reshape(tf.range(1.0, 1.0 + tf.size(values, tf.float32)), tf.shape(values))
            loss = tf.reduce_sum(result * weights)  # uneven weights: every element's gradient differs
        return result, tape.gradient(loss, values)

    if jit_compile is None:
        return run(inputs)
    return tf.function(run, jit_compile=jit_compile, autograph=False)(inputs)


def _op_types(function, inputs: tf.Tensor, jit_compile: bool) -> set[str]:
    graph = tf.function(function, jit_compile=jit_compile, autograph=False).get_concrete_function(inputs).graph
    return {operation.type for operation in graph.get_operations()}


@pytest.mark.parametrize("name", ["Tanh", "Exp", "Sqrt"])
def test_values_and_gradients_are_those_of_tensorflows_op(name):
    inputs = tf.constant(np.random.default_rng(7).uniform(0.01, 3.0, size=(5, 37)).astype(np.float32))
    ours = getattr(xla_unary, name.lower())
    theirs = xla_unary.FUNCTIONS[name]
    for jit_compile in (True, False, None):  # XLA, a graph, eager
        our_values, our_gradient = _values_and_gradients(ours, inputs, jit_compile)
        their_values, their_gradient = _values_and_gradients(theirs, inputs, jit_compile)
        assert np.array_equal(our_values.numpy(), their_values.numpy()), (name, jit_compile)
        assert np.array_equal(our_gradient.numpy(), their_gradient.numpy()), (name, jit_compile)
    assert xla_unary.OP_TYPE in _op_types(ours, inputs, jit_compile=True)
    assert name in _op_types(ours, inputs, jit_compile=False) and xla_unary.OP_TYPE not in _op_types(ours, inputs, False)


def test_a_function_without_a_gradient_says_which():
    @tf.function(jit_compile=True, autograph=False)
    def cosine_gradient(values):
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = tf.reduce_sum(xla_unary.cos(values))
        return tape.gradient(loss, values)

    with pytest.raises(LookupError, match=r"no gradient for _UnaryOpsComposition of \['Cos'\]"):
        cosine_gradient(tf.constant([0.5, 1.0]))
