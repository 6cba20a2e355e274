"""Tanh, Exp and Sqrt as _UnaryOpsComposition under XLA: the same values and gradients, to the bit, as
TensorFlow's own ops, and the plain ops everywhere else."""

import numpy as np
import pytest
import tensorflow as tf

from agents import xla_unary

pytestmark = pytest.mark.skipif(not xla_unary.AVAILABLE, reason="this TensorFlow has no _UnaryOpsComposition op")


def _values_and_gradients(function, inputs: tf.Tensor, jit_compile: bool | None):
    def run(values):
        with tf.GradientTape() as tape:
            tape.watch(values)
            result = function(values)
            weights = tf.reshape(tf.range(1, 1 + tf.size(values)), tf.shape(values))
            weights = tf.cast(weights, values.dtype) / 64
            loss = tf.reduce_sum(result * weights)  # uneven weights: every element's gradient differs
        return result, tape.gradient(loss, values)

    if jit_compile is None:
        return run(inputs)
    return tf.function(run, jit_compile=jit_compile, autograph=False)(inputs)


def _op_types(function, inputs: tf.Tensor, jit_compile: bool) -> set[str]:
    graph = tf.function(function, jit_compile=jit_compile, autograph=False).get_concrete_function(inputs).graph
    return {operation.type for operation in graph.get_operations()}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("name", ["Tanh", "Exp", "Sqrt"])
def test_values_and_gradients_are_those_of_tensorflows_op(name, dtype):
    low = 0.01 if name == "Sqrt" else -3.0
    inputs = tf.constant(np.random.default_rng(7).uniform(low, 3.0, size=(5, 37)).astype(dtype))
    ours = getattr(xla_unary, name.lower())
    theirs = xla_unary.FUNCTIONS[name]
    for jit_compile in (True, False, None):  # XLA, a graph, eager
        our_values, our_gradient = _values_and_gradients(ours, inputs, jit_compile)
        their_values, their_gradient = _values_and_gradients(theirs, inputs, jit_compile)
        assert np.array_equal(our_values.numpy(), their_values.numpy()), (name, jit_compile)
        assert np.array_equal(our_gradient.numpy(), their_gradient.numpy()), (name, jit_compile)
    assert xla_unary.OP_TYPE in _op_types(ours, inputs, jit_compile=True)
    assert name in _op_types(ours, inputs, jit_compile=False) and xla_unary.OP_TYPE not in _op_types(ours, inputs, False)


def test_a_composition_champion_does_not_make_has_no_gradient_and_says_so():
    from tensorflow.python.eager import execute
    from tensorflow.python.framework import op_def_library

    @tf.function(jit_compile=True, autograph=False)
    def sine_gradient(values):
        with tf.GradientTape() as tape:
            tape.watch(values)
            _, _, operation, _ = op_def_library._apply_op_helper(xla_unary.OP_TYPE, x=values, op_names=["Sin"],
                                                                 name="Sin")
            attributes = ("T", tf.float32.as_datatype_enum, "op_names", [b"Sin"])
            execute.record_gradient(xla_unary.OP_TYPE, operation.inputs, attributes, operation.outputs)
            loss = tf.reduce_sum(operation.outputs[0])
        return tape.gradient(loss, values)

    with pytest.raises(LookupError, match=r"no gradient for _UnaryOpsComposition of \['Sin'\]"):
        sine_gradient(tf.constant([0.5, 1.0]))
