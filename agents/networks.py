"""The actor-critic Keras model: observations -> encoders -> MLP torso(s) -> policy head + value head.

The model is the whole policy: saving its weights saves everything needed to act.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from champion.agents.config import ConfigError
from champion.agents.normalization import RunningNormalization
from champion.agents.numpy_policy import NumpyPolicy
from champion.agents.spec import ACTION_KINDS, NetworkSpec
from champion.agents.torso import find_torso
from champion.errors import first_line

__all__ = ["ActorCritic", "NetworkSpec", "assign_weight_arrays", "build_user_torso", "checkpointable_weights",
           "named_weights", "numpy_policy", "weight_arrays", "weight_name", "weight_reader", "with_torso_layout"]

if keras.backend.backend() != "tensorflow":
    raise ImportError(f"champion needs Keras' TensorFlow backend, but KERAS_BACKEND or ~/.keras/keras.json selects "
                      f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow")

class ActorCritic(keras.Model):
    """Encoders -> MLP torso(s) -> policy head + value head, orthogonally initialised (unless spec.ortho_init is off).

    The input is the flat observation vector (``champion.agents.spec``). Its vector leaves are normalised together
    (when on); each image leaf goes through its own CNN (scaled to [0, 1] first), shared by policy and
    value; one-hot and binary leaves pass as they are. The encoded features are concatenated in that
    order: vector leaves, images, the rest. Gains: sqrt(2) hidden, 0.01 policy, 1 value. The policy head
    gives logits (discrete, multidiscrete, multibinary) or the mean, concatenated with a learned
    state-independent log standard deviation (continuous).
    """

    def __init__(self, spec: NetworkSpec, seed: int = 0) -> None:
        super().__init__(name="actor_critic")
        if spec.action_kind not in ACTION_KINDS:
            raise ValueError(f"action kind {spec.action_kind!r} is not supported; supported: {', '.join(ACTION_KINDS)}")
        self.spec = spec
        self.flat_size = spec.observation_size
        self.vector_columns = spec.vector_columns()
        self.whole_vector = self.vector_columns == list(range(self.flat_size))
        self.normalizer = (RunningNormalization(len(self.vector_columns), spec.observation_clip)
                           if spec.normalize_observations and self.vector_columns else None)
        self.encoders = [_cnn(spec, seed + 400 + 10 * index, f"image_{index}")
                         for index, _ in enumerate(spec.leaf_columns("image"))]
        self.feature_size = self._feature_size()
        self.user_torsos: list[keras.layers.Layer] = []
        if spec.user_torso:  # the user's own network(s), built and checked (``build_user_torso``)
            policy_torso, policy_width = build_user_torso(spec.torso, self.feature_size, seed + 1_000)
            self.policy_torso, self.value_torso = [policy_torso], []
            value_width = policy_width
            if not spec.shared_torso:
                setting = "value_torso" if spec.value_torso else "torso"
                value_torso, value_width = build_user_torso(spec.value_torso or spec.torso, self.feature_size,
                                                            seed + 2_000, setting)
                if value_torso is policy_torso:
                    raise ConfigError(f"network.torso {spec.torso} returned the same model for the policy and the "
                                      "value function; return a new one on each call, or set network.shared_torso=true")
                self.value_torso = [value_torso]
            self.user_torsos = [*self.policy_torso, *self.value_torso]
        else:
            self.policy_torso = self._torso("policy_torso", seed, spec.hidden_sizes)
            self.value_torso = [] if spec.shared_torso else self._torso("value_torso", seed + 100, spec.value_sizes)
            policy_width = spec.hidden_sizes[-1] if spec.hidden_sizes else self.feature_size
            value_width = (spec.value_sizes or (self.feature_size,))[-1] if not spec.shared_torso else policy_width
        self.policy_width, self.value_width = policy_width, value_width
        self.policy_head = _dense(spec.action_size, None, 0.01, seed + 200, "policy_head", spec.ortho_init, policy_width)
        self.value_head = _dense(1, None, 1.0, seed + 300, "value_head", spec.ortho_init, value_width)
        self.log_std = (self.add_weight(shape=(spec.action_size,), name="log_std", trainable=True,
                                        initializer=keras.initializers.Constant(spec.log_std_init))
                        if spec.action_kind == "continuous" else None)
        self.build((None, *spec.observation_shape))

    def _feature_size(self) -> int:
        passthrough = sum(leaf.size for leaf in self.spec.observation_leaves if leaf.kind in ("onehot", "binary"))
        return len(self.vector_columns) + self.spec.cnn_features * len(self.encoders) + passthrough

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Create every layer's weights from the known widths. Without a ``build``, Keras traces ``call``
        symbolically to find the shapes, which costs more than building the model."""
        if self.normalizer is not None:
            self.normalizer.build((None, len(self.vector_columns)))
        for (leaf, _), layers in zip(self.spec.leaf_columns("image"), self.encoders):
            shape: tuple[int | None, ...] = (None, *leaf.image_shape)
            for layer in layers:
                if not layer.built:
                    layer.build(shape)
                shape = layer.compute_output_shape(shape)
        for layers, head, width in ((self.policy_torso, self.policy_head, self.policy_width),
                                    (self.value_torso or self.policy_torso, self.value_head, self.value_width)):
            inputs = self.feature_size
            for layer in layers:
                if not layer.built:  # a torso of the user's was built when it was checked
                    layer.build((None, inputs))
                inputs = getattr(layer, "units", inputs)
            head.build((None, width))
        self.built = True

    def named_weights(self) -> list[tuple[str, keras.Variable]]:
        """Every weight with the name it is saved and checkpointed under: layer/variable for champion's layers, and
        for a torso of the user's its place in that torso (``policy_torso/3_gamma``), since Keras names the user's
        layers by how many were made before in the process."""
        names = {id(variable): f"{prefix}/{index}_{variable.name}"
                 for prefix, torso in zip(("policy_torso", "value_torso"), self.user_torsos)
                 for index, variable in enumerate(torso.weights)}
        return [(names.get(id(variable)) or weight_name(variable), variable) for variable in self.weights]

    def _torso(self, prefix: str, seed: int, sizes: tuple[int, ...]) -> list[keras.layers.Dense]:
        inputs = (self.feature_size, *sizes[:-1])
        return [
            _dense(size, self.spec.activation, math.sqrt(2.0), seed + index, f"{prefix}_{index}", self.spec.ortho_init,
                   fan_in)
            for index, (size, fan_in) in enumerate(zip(sizes, inputs))
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
        flat = tf.reshape(tf.cast(observations, tf.float32), [-1, self.flat_size])
        if self.whole_vector:  # the common case: one vector observation
            return self.normalizer(flat) if self.normalizer is not None else flat
        parts = []
        if self.vector_columns:
            vector = self._vector(flat)
            parts.append(self.normalizer(vector) if self.normalizer is not None else vector)
        for (leaf, offset), layers in zip(self.spec.leaf_columns("image"), self.encoders):
            image = tf.reshape(flat[:, offset:offset + leaf.size], [-1, *leaf.shape])
            if leaf.channels_first:
                image = tf.transpose(image, [0, 2, 3, 1])
            parts.append(_run(layers, tf.reshape(image, [-1, *leaf.image_shape]) / 255.0))
        for kind in ("onehot", "binary"):
            parts += [flat[:, offset:offset + leaf.size] for leaf, offset in self.spec.leaf_columns(kind)]
        return tf.concat(parts, axis=-1)

    def _vector(self, flat: tf.Tensor) -> tf.Tensor:
        return flat if self.whole_vector else tf.gather(flat, self.vector_columns, axis=1)

    def update_normalizer(self, observations: tf.Tensor) -> None:
        """Fold rollout observations ([batch, *obs_shape]) into the running statistics of the vector leaves."""
        if self.normalizer is not None:
            self.normalizer.update(self._vector(tf.reshape(tf.cast(observations, tf.float32), [-1, self.flat_size])))


def _cnn(spec: NetworkSpec, seed: int, prefix: str) -> list[keras.layers.Layer]:
    """Convolutions (ReLU, no padding), flattened, then a dense ReLU layer: the Nature CNN by default."""
    layers: list[keras.layers.Layer] = [
        keras.layers.Conv2D(filters, kernel, strides=stride, activation="relu", name=f"{prefix}_conv_{index}",
                            kernel_initializer=keras.initializers.Orthogonal(gain=math.sqrt(2.0), seed=seed + index),
                            bias_initializer="zeros")
        for index, (filters, kernel, stride) in enumerate(spec.cnn_layers)]
    return [*layers, keras.layers.Flatten(name=f"{prefix}_flatten"),
            _dense(spec.cnn_features, "relu", math.sqrt(2.0), seed + 9, f"{prefix}_dense")]


def _dense(units: int, activation: str | None, gain: float, seed: int, name: str, orthogonal: bool = True,
           fan_in: int = 1) -> keras.layers.Dense:
    """A dense layer: an orthogonal kernel of this ``gain`` and zero biases, or (``orthogonal`` False) PyTorch's
    default for nn.Linear, which SB3's ortho_init=False keeps: kernel and bias uniform within 1/sqrt(fan_in)."""
    if orthogonal:
        kernel, bias = keras.initializers.Orthogonal(gain=gain, seed=seed), keras.initializers.Zeros()
    else:
        bound = 1.0 / math.sqrt(fan_in)
        kernel = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=seed)  # bound sqrt(1/fan_in)
        bias = keras.initializers.RandomUniform(-bound, bound, seed=seed + 50_000)
    return keras.layers.Dense(units, activation=activation, kernel_initializer=kernel, bias_initializer=bias, name=name)


def _run(layers: list[keras.layers.Layer], features: tf.Tensor) -> tf.Tensor:
    for layer in layers:
        features = layer(features)
    return features


def build_user_torso(reference: str, width: int, seed: int, setting: str = "torso") -> tuple[keras.layers.Layer, int]:
    """The user's torso ``reference`` names, built for ``width`` features and checked, with the width of its output.

    The function is called with ``width``; Python's random generator is seeded with ``seed`` meanwhile (and put back
    after), so that Keras initialisers without a seed of their own, which draw theirs from it, start the same run
    the same way. ConfigError (one line) when it fails, returns no Keras model, or its model does not map a
    [batch, width] batch to [batch, features]."""
    function, name = find_torso(reference), f"network.{setting} {reference}"
    state = random.getstate()
    random.seed(seed)
    try:
        torso = function(width)
    except Exception as error:  # the user's code can fail in any way
        raise ConfigError(f"{name} failed when called with the feature width {width}: {type(error).__name__}: "
                          f"{first_line(error, limit=200)}") from None
    finally:
        random.setstate(state)
    if not isinstance(torso, keras.layers.Layer):
        raise ConfigError(f"{name} returned {type(torso).__name__}, not a Keras model; it must return a keras.Model "
                          f"from [batch, {width}] features to [batch, features]")
    try:
        output = torso(np.zeros((2, width), np.float32))
    except Exception as error:  # noqa: BLE001 - the user's layers can fail in any way
        raise ConfigError(f"{name}: its model fails on a [2, {width}] batch of features ({type(error).__name__}: "
                          f"{first_line(error, limit=200)})") from None
    shape = tuple(getattr(output, "shape", ()))
    if not tf.is_tensor(output) or len(shape) != 2 or shape[0] != 2 or not output.dtype.is_floating or not shape[1]:
        given = f"shape {shape} ({output.dtype.name})" if tf.is_tensor(output) else type(output).__name__
        raise ConfigError(f"{name}: its model maps a [2, {width}] batch of features to {given}; a torso must give one "
                          "float tensor of shape [batch, features] (end it with a Dense or Flatten layer)")
    return torso, int(shape[1])


def with_torso_layout(spec: NetworkSpec, seed: int = 0) -> NetworkSpec:
    """``spec`` with the weights (names, shapes) and output widths of its user torso(s) recorded, as built now."""
    if not spec.user_torso:
        return spec
    model = ActorCritic(dataclasses.replace(spec, torso_weights=(), torso_widths=()), seed=seed)
    layout = tuple((name, tuple(int(size) for size in variable.shape)) for name, variable in named_weights(model)
                   if name.split("/")[0] in ("policy_torso", "value_torso"))
    widths = (model.policy_width,) if spec.shared_torso else (model.policy_width, model.value_width)
    return dataclasses.replace(spec, torso_weights=layout, torso_widths=widths)


def numpy_policy(model: ActorCritic, seed: int = 0) -> NumpyPolicy:
    """A NumpyPolicy that acts with ``model``'s weights (read again by its ``refresh``); ValueError for a torso of
    the user's, which numpy cannot compute (``champion.agents.acting.model_policy`` acts with either)."""
    if model.spec.user_torso:
        raise ValueError(f"numpy cannot compute network.torso {model.spec.torso}; act with "
                         "champion.agents.acting.model_policy(model)")
    policy = NumpyPolicy(model.spec, weight_reader(model), seed)
    policy.model = model
    return policy


def weight_reader(model: keras.Model) -> Callable[[], dict[str, np.ndarray]]:
    """A function giving the model's current weights by name (``named_weights``), all read by one graph call
    instead of one .numpy() call per variable."""
    named = named_weights(model)
    variables = [variable for _, variable in named]
    names = [name for name, _ in named]
    read_all = tf.function(lambda: [tf.identity(variable.value) for variable in variables], autograph=False)
    return lambda: {name: tensor.numpy() for name, tensor in zip(names, read_all())}


def named_weights(model: keras.Model) -> list[tuple[str, keras.Variable]]:
    """The model's weights with the names they are saved under (``ActorCritic.named_weights``; layer/variable for
    another model)."""
    if isinstance(model, ActorCritic):
        return model.named_weights()
    return [(weight_name(variable), variable) for variable in model.weights]


def checkpointable_weights(model: keras.Model) -> tf.train.Checkpoint:
    """Every model variable by name, as one tf.train.Checkpoint node.

    Keras 3 does not expose layers held in Python lists to TensorFlow's object tracking, so
    checkpointing the model object itself would silently miss the torso.
    """
    return tf.train.Checkpoint(**{name.replace("/", "__"): variable for name, variable in named_weights(model)})


def weight_arrays(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights by name (``named_weights``), independent of the model's own name."""
    return {name: variable.numpy() for name, variable in named_weights(model)}


def assign_weight_arrays(model: keras.Model, arrays: dict[str, np.ndarray]) -> None:
    """Load weights by name; refuse (ValueError) on missing, extra or differently shaped ones."""
    names = dict(named_weights(model))
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
