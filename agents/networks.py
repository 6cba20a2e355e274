"""The actor-critic Keras model: observations -> MLP torso(s) -> policy head + value head.

The model is the whole policy: saving its weights saves everything needed to act.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from agents.normalization import RunningNormalization

if keras.backend.backend() != "tensorflow":
    raise ImportError(f"champion needs Keras' TensorFlow backend, but KERAS_BACKEND or ~/.keras/keras.json selects "
                      f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow")

SUPPORTED_ACTION_KINDS = ("discrete", "continuous")


@dataclass(frozen=True)
class NetworkSpec:
    """What the model is built from; stored in every best-policy manifest."""

    observation_shape: tuple[int, ...]
    action_kind: str
    action_size: int
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    shared_torso: bool = False
    action_low: tuple[float, ...] = ()
    """Continuous actions only: the env's lower bounds (actions are clipped to them)."""
    action_high: tuple[float, ...] = ()
    log_std_init: float = 0.0
    normalize_observations: bool = False
    observation_clip: float = 10.0

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of one action: () for discrete, (size,) for continuous."""
        return () if self.action_kind == "discrete" else (self.action_size,)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        data = dataclasses.asdict(self)
        for key in ("observation_shape", "hidden_sizes", "action_low", "action_high"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkSpec":
        """Inverse of to_dict (fields missing from older manifests take their defaults)."""
        values = dict(data)
        for key in ("observation_shape", "hidden_sizes", "action_low", "action_high"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


class ActorCritic(keras.Model):
    """[normaliser ->] MLP torso(s) -> policy head + value head, orthogonally initialised.

    Gains: sqrt(2) hidden, 0.01 policy, 1 value. The policy head gives logits (discrete) or the
    mean, concatenated with a learned state-independent log standard deviation (continuous).
    """

    def __init__(self, spec: NetworkSpec, seed: int = 0) -> None:
        super().__init__(name="actor_critic")
        if spec.action_kind not in SUPPORTED_ACTION_KINDS:
            raise ValueError(f"action kind {spec.action_kind!r} is not supported; supported: {', '.join(SUPPORTED_ACTION_KINDS)}")
        self.spec = spec
        self.flat_size = int(np.prod(spec.observation_shape))
        self.normalizer = (RunningNormalization(self.flat_size, spec.observation_clip)
                           if spec.normalize_observations else None)
        self.policy_torso = self._torso("policy_torso", seed)
        self.value_torso = [] if spec.shared_torso else self._torso("value_torso", seed + 100)
        self.policy_head = _dense(spec.action_size, None, 0.01, seed + 200, "policy_head")
        self.value_head = _dense(1, None, 1.0, seed + 300, "value_head")
        self.log_std = (self.add_weight(shape=(spec.action_size,), name="log_std", trainable=True,
                                        initializer=keras.initializers.Constant(spec.log_std_init))
                        if spec.action_kind == "continuous" else None)
        self.build((None, *spec.observation_shape))

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Create every layer's weights from the known widths. Without a ``build``, Keras traces ``call``
        symbolically to find the shapes, which costs more than building the model."""
        if self.normalizer is not None:
            self.normalizer.build((None, self.flat_size))
        for layers, head in ((self.policy_torso, self.policy_head), (self.value_torso or self.policy_torso, self.value_head)):
            width = self.flat_size
            for layer in layers:
                if not layer.built:
                    layer.build((None, width))
                width = layer.units
            head.build((None, width))
        self.built = True

    def _torso(self, prefix: str, seed: int) -> list[keras.layers.Dense]:
        return [
            _dense(size, self.spec.activation, math.sqrt(2.0), seed + index, f"{prefix}_{index}")
            for index, size in enumerate(self.spec.hidden_sizes)
        ]

    def call(self, observations: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Return (policy parameters, state values) for a batch of observations."""
        features = self._features(observations)
        policy_features = _run(self.policy_torso, features)
        value_features = _run(self.value_torso, features) if self.value_torso else policy_features
        parameters = self.policy_head(policy_features)
        if self.log_std is not None:
            parameters = tf.concat([parameters, tf.zeros_like(parameters) + self.log_std], axis=-1)
        return parameters, tf.squeeze(self.value_head(value_features), axis=-1)

    def value(self, observations: tf.Tensor) -> tf.Tensor:
        """Only the state values (``call(observations)[1]``), for bootstrapping: a graph that needs no
        policy gets none, and XLA has that much less to convert."""
        features = self._features(observations)
        value_features = _run(self.value_torso or self.policy_torso, features)
        return tf.squeeze(self.value_head(value_features), axis=-1)

    def _features(self, observations: tf.Tensor) -> tf.Tensor:
        features = tf.reshape(tf.cast(observations, tf.float32), [-1, self.flat_size])
        return self.normalizer(features) if self.normalizer is not None else features

    def update_normalizer(self, observations: tf.Tensor) -> None:
        """Fold rollout observations ([batch, *obs_shape]) into the running statistics, if any."""
        if self.normalizer is not None:
            self.normalizer.update(tf.reshape(observations, [-1, self.flat_size]))


def _dense(units: int, activation: str | None, gain: float, seed: int, name: str) -> keras.layers.Dense:
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=keras.initializers.Orthogonal(gain=gain, seed=seed),
        bias_initializer="zeros",
        name=name,
    )


def _run(layers: list[keras.layers.Dense], features: tf.Tensor) -> tf.Tensor:
    for layer in layers:
        features = layer(features)
    return features


def checkpointable_weights(model: keras.Model) -> tf.train.Checkpoint:
    """Every model variable by name, as one tf.train.Checkpoint node.

    Keras 3 does not expose layers held in Python lists to TensorFlow's object tracking, so
    checkpointing the model object itself would silently miss the torso.
    """
    return tf.train.Checkpoint(**{weight_name(variable).replace("/", "__"): variable for variable in model.weights})


def weight_arrays(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights by name (layer/variable), independent of the model's own name."""
    return {weight_name(variable): variable.numpy() for variable in model.weights}


def assign_weight_arrays(model: keras.Model, arrays: dict[str, np.ndarray]) -> None:
    """Load weights by name; refuse (ValueError) on missing, extra or differently shaped ones."""
    names = {weight_name(variable): variable for variable in model.weights}
    missing = sorted(set(names) - set(arrays))
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise ValueError(f"the saved weights do not fit this network (missing {missing}, unexpected {extra})")
    for name, variable in names.items():
        if tuple(arrays[name].shape) != tuple(variable.shape):
            raise ValueError(f"the saved weights do not fit this network: {name} has shape {arrays[name].shape}, "
                             f"the network expects {tuple(variable.shape)}")
    for name, variable in names.items():
        variable.assign(arrays[name])


def weight_name(variable: keras.Variable) -> str:
    """A variable's name within the model (layer/variable), as weight_arrays keys it."""
    return variable.path.split("/", 1)[-1]
