"""Acting with a network numpy cannot compute: a torso of the user's own, run by Keras in TensorFlow.

``NumpyPolicy`` computes champion's own layers in numpy; a user's torso can hold any layer, so its policy acts
through the Keras model instead: ``KerasActingPolicy`` is a NumpyPolicy whose forward pass is one compiled
TensorFlow call, and everything after it (sampling from the per-env noise, the deterministic action, the env's
action) is NumpyPolicy's own, so training, evaluation, the crown and replay act through the same code either way.

The call takes the weights as arguments (``keras.Model.stateless_call``), packed into one flat array per dtype,
so a snapshot playing an evaluation beside training holds its own weights, never the variables the update is
changing. Rows are computed one at a time inside it (``tf.map_fn``), so that a row's result does not depend on the
batch it is in, as NumpyPolicy's row-by-row products ensure for champion's layers: TensorFlow's kernels gave the
same row up to 1.2e-7 apart in a batch of 8 and alone, and evaluation steps only the episodes still running, so a
replay of fewer episodes would otherwise act differently.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from champion.agents.networks import ActorCritic, named_weights, weight_reader
from champion.agents.numpy_policy import NumpyPolicy
from champion.agents.spec import NetworkSpec

__all__ = ["ActingFunction", "KerasActingPolicy", "keras_acting_policy", "model_acting_policy"]

_NOTED: list[str] = []
"""The torsos this process has said it acts with in TensorFlow (once each)."""
_MODELS: dict[str, tuple[ActorCritic, "ActingFunction"]] = {}
"""Models built to act with saved weights, by spec, so that a crown's rounds build and trace each once."""


class ActingFunction:
    """(packed weights, flat observations) -> (policy head output, values) of ``model``, compiled once."""

    def __init__(self, model: ActorCritic) -> None:
        self.model, spec = model, model.spec
        variables = [*model.trainable_variables, *model.non_trainable_variables]
        by_id = {id(variable): name for name, variable in named_weights(model)}
        self.names = [by_id[id(variable)] for variable in variables]
        self.trainable_count = len(model.trainable_variables)
        self.shapes = [tuple(variable.shape) for variable in variables]
        dtypes = [np.dtype(variable.dtype) for variable in variables]
        self.dtypes = sorted(set(dtypes), key=str)
        self.groups = [[index for index, dtype in enumerate(dtypes) if dtype == group] for group in self.dtypes]
        self.head_size = spec.action_size  # a continuous policy's output ends with log_std: not the head's
        signature = [*(tf.TensorSpec([None], tf.as_dtype(dtype)) for dtype in self.dtypes),
                     tf.TensorSpec([None, spec.observation_size], tf.float32)]
        self.function = tf.function(self._forward, input_signature=signature, autograph=False)
        empty = [np.zeros(sum(int(np.prod(self.shapes[index])) for index in group), dtype)
                 for group, dtype in zip(self.groups, self.dtypes)]
        self.function(*empty, np.zeros((1, spec.observation_size), np.float32))  # traced here, not on a thread

    def pack(self, weights: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The weights (by name) as one flat array per dtype, in the order the compiled call unpacks them."""
        return [np.concatenate([np.asarray(weights[self.names[index]], dtype).ravel() for index in group])
                for group, dtype in zip(self.groups, self.dtypes)]

    def __call__(self, packed: list[np.ndarray], observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = np.asarray(observations, np.float32).reshape(len(observations), -1)
        head, values = self.function(*packed, flat)
        return head.numpy(), values.numpy()

    def _forward(self, *arguments: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        *packed, observations = arguments
        values: list[Any] = [None] * len(self.shapes)
        for group, flat in zip(self.groups, packed):
            sizes = [int(np.prod(self.shapes[index])) for index in group]
            for index, part in zip(group, tf.split(flat, sizes)):
                values[index] = tf.reshape(part, self.shapes[index])
        trainable, non_trainable = values[:self.trainable_count], values[self.trainable_count:]

        def row(observation: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            (parameters, value), _ = self.model.stateless_call(trainable, non_trainable, observation[None])
            return parameters[0, :self.head_size], value[0]

        return tf.map_fn(row, observations, fn_output_signature=(tf.float32, tf.float32))


class KerasActingPolicy(NumpyPolicy):
    """A NumpyPolicy whose forward pass runs the Keras model (``ActingFunction``); the rest is NumpyPolicy's.

    Made by ``model_acting_policy`` to act with a model's own weights (training), and by ``keras_acting_policy``
    with saved ones (evaluation, crown, replay); ``champion.agents.acting`` chooses it over a NumpyPolicy. Says
    once per process, on stderr, that it acts in TensorFlow.
    """

    def __init__(self, model: ActorCritic, read_weights: Callable[[], dict[str, np.ndarray]] | None = None,
                 seed: int = 0, weights: dict[str, np.ndarray] | None = None,
                 acting: ActingFunction | None = None) -> None:
        self._acting = acting or ActingFunction(model)
        _note_once(model.spec)
        super().__init__(model.spec, read_weights, seed, weights)
        self.model = model

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Act with these weights (by name, as ``champion.agents.networks.weight_arrays`` gives them)."""
        self.weights = weights  # the best store saves these
        self._packed = self._acting.pack(weights)
        self._log_std = weights.get("log_std")  # a continuous policy's sampling reads it

    def forward(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(policy head output, values) for a batch, computed by the Keras model row by row."""
        return self._acting(self._packed, observations)

    def features(self, observations: np.ndarray) -> np.ndarray:
        raise NotImplementedError("a torso of the user's is computed by Keras as a whole (forward)")


def keras_acting_policy(spec: NetworkSpec, weights: dict[str, np.ndarray], seed: int = 0) -> KerasActingPolicy:
    """A policy acting with these saved ``weights`` of a network with a torso of the user's (its module imported
    already). ValueError when the weights do not fit the network the torso builds now."""
    from champion.agents.networks import assign_weight_arrays

    key = json.dumps(spec.to_dict(), sort_keys=True)
    if key not in _MODELS:
        model = ActorCritic(spec)
        assign_weight_arrays(model, weights)  # checks names and shapes against the torso as built now
        _MODELS[key] = (model, ActingFunction(model))
    model, acting = _MODELS[key]
    missing = sorted(set(acting.names) - set(weights))
    if missing:
        raise ValueError(f"the saved weights do not fit this network (missing {missing})")
    return KerasActingPolicy(model, seed=seed, weights=weights, acting=acting)


def model_acting_policy(model: ActorCritic, seed: int = 0) -> KerasActingPolicy:
    """A policy acting with ``model``'s weights, read again by its ``refresh``."""
    return KerasActingPolicy(model, weight_reader(model), seed)


def _note_once(spec: NetworkSpec) -> None:
    if spec.torso not in _NOTED:
        _NOTED.append(spec.torso)
        print(f"note: network.torso {spec.torso} is your own Keras network, so champion acts with it in TensorFlow "
              "(one call per step), not in numpy", file=sys.stderr, flush=True)
