"""Tanh, Exp and Sqrt in the form TensorFlow converts for XLA cheaply, with the same numbers.

Before it can look up a compiled step in the cache, every process converts the step's graph to
XLA. TensorFlow converts Tanh, Exp, Sqrt and Cos (among others) through an MLIR pass pipeline that
it builds afresh for each op: about 7 ms per op, 12 Tanh alone in the graph engine's A2C step.
``_UnaryOpsComposition``, the op grappler fuses chains of unary ops into, applies the same functions
and has a direct XLA kernel (tensorflow/compiler/tf2xla/kernels/unary_ops_composition.cc) that
builds the same HLO ops: the same numbers, converted in microseconds (20 Tanh: 95 ms -> 5 ms).

It is an internal op, so it is used only while tracing for XLA (``xla_cache.tracing_for_xla``), only
while TensorFlow registers it, and only for the functions below, whose gradients are those of
TensorFlow's own ops (tests/test_xla_unary.py compares values and gradients bit for bit). Should a
TensorFlow release keep the op but drop its XLA kernel, the first compiled call fails and says so
(tests/test_xla_unary.py fails first); the compile cache it clears on the way is that release's own.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.eager import execute
from tensorflow.python.framework import op_def_library, op_def_registry, ops
from tensorflow.python.ops import gen_math_ops

from agents import xla_cache

OP_TYPE = "_UnaryOpsComposition"
FUNCTIONS = {"Tanh": tf.math.tanh, "Exp": tf.math.exp, "Sqrt": tf.math.sqrt}
"""The functions this module applies, by TensorFlow op name, with the op used outside XLA."""
AVAILABLE = op_def_registry.get(OP_TYPE) is not None


def tanh(values: tf.Tensor) -> tf.Tensor:
    """tf.math.tanh, converted for XLA without an MLIR pipeline when it will be."""
    return apply("Tanh", values)


def exp(values: tf.Tensor) -> tf.Tensor:
    """tf.math.exp, converted for XLA without an MLIR pipeline when it will be."""
    return apply("Exp", values)


def sqrt(values: tf.Tensor) -> tf.Tensor:
    """tf.math.sqrt, converted for XLA without an MLIR pipeline when it will be."""
    return apply("Sqrt", values)


def apply(name: str, values: tf.Tensor) -> tf.Tensor:
    """FUNCTIONS[name](values): as one ``_UnaryOpsComposition`` op in code XLA compiles, else the plain op."""
    values = tf.convert_to_tensor(values)
    if not (AVAILABLE and values.dtype in (tf.float16, tf.float32, tf.float64) and xla_cache.tracing_for_xla()):
        return FUNCTIONS[name](values)
    # what a generated op wrapper does: make the op, then let a GradientTape record it
    _, _, operation, _ = op_def_library._apply_op_helper(OP_TYPE, x=values, op_names=[name], name=name)
    result = operation.outputs[0]
    if execute.must_record_gradient():
        attributes = ("T", operation._get_attr_type("T"), "op_names", operation.get_attr("op_names"))
        execute.record_gradient(OP_TYPE, operation.inputs, attributes, [result])
    return result


def _gradient(op: tf.Operation, gradient: tf.Tensor) -> tf.Tensor:
    """The gradient TensorFlow's own op has (Tanh: TanhGrad; Exp: gradient * y; Sqrt: SqrtGrad)."""
    names = [name.decode() for name in op.get_attr("op_names")]
    result = op.outputs[0]
    if names == ["Tanh"]:
        return gen_math_ops.tanh_grad(result, gradient)
    if names == ["Exp"]:
        return gradient * result
    if names == ["Sqrt"]:
        return gen_math_ops.sqrt_grad(result, gradient)
    raise LookupError(f"no gradient for {OP_TYPE} of {names}: champion makes it only for Tanh, Exp and Sqrt")


if AVAILABLE:
    try:
        ops.RegisterGradient(OP_TYPE)(_gradient)
    except KeyError:  # registered already (TensorFlow's own, or this module imported twice under two names)
        pass
