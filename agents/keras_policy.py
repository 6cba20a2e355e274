"""A champion policy as a functional Keras model of built-in layers only (``champion export --format keras``).

``keras_policy(spec, weights)`` builds, from the weights by name (``champion.agents.networks.weight_arrays``, a
``NumpyPolicy``'s ``weights``, a best-policy entry), a ``keras.Model`` that computes what ``ActorCritic`` and
``NumpyPolicy`` compute, to float32 rounding, from the raw env observation:

- one input per leaf of the observation space, named ``ObservationLeaf.name`` (``observations`` for a space that is
  one leaf: the model then takes an array, else a dict), in ``export_dtype`` (float32 vectors, uint8 images, int64
  category values, int8 bits), batch first, in the env's shape;
- the encoders: Discrete / MultiDiscrete leaves one-hot (``CategoryEncoding``), images scaled to [0, 1] (exactly
  x / 255: a ``Normalization`` of mean 0 and variance 255**2) and through the CNN, vector leaves through the running
  observation normalisation and its clipping (a ``Normalization`` holding the statistics as its weights, then
  ``Maximum`` / ``Minimum`` with the clip bounds: exact, as in ``NumpyPolicy``);
- the torsos (shared or separate, the configured activation; or the user's own Keras torso, ``network.torso``, as
  its function builds it: its layers are then the user's) and the heads;
- the outputs, a dict: ``logits`` (discrete, multidiscrete, multibinary) or ``mean`` and ``log_std`` (continuous),
  ``value`` ([batch]), and ``actions``, the deterministic action ``champion replay`` sends to the env (argmax of each
  component's logits plus the space's start, int32; 1 where a logit is positive, int32; the mean clipped to the
  action bounds, float32), in the env's action shape.

Nothing here is a custom class or a Lambda layer: ``keras.saving.load_model("policy.keras")`` loads the saved model
in a Python with only TensorFlow and Keras (with a torso of the user's, one made of built-in layers too; a custom
layer of theirs must be importable there and registered with ``keras.saving.register_keras_serializable``). The
learned numbers (the layers' kernels and biases, the normaliser's statistics, log_std) are the model's weights, so
``policy.weights.h5`` loads into ``keras_policy(spec, weights)`` of any weights of the same spec; what follows from the spec alone (clip bounds, action bounds and starts) is in the
layers' configuration. The normaliser's weights are float32: its mean, and as its variance the square of
float32(sqrt(variance + 1e-8)), whose square root is that scale again, exactly.
"""

from __future__ import annotations

import keras
import numpy as np

from champion.agents.spec import (NORMALIZER_EPSILON, NORMALIZER_NAME, NetworkSpec, ObservationLeaf, export_dtype,
                                  weight_shapes)

__all__ = ["OUTPUT_NAMES", "keras_policy", "output_names"]

L = keras.layers
FLOAT32_MAX = float(np.finfo(np.float32).max)
SMALLEST_POSITIVE = float(np.finfo(np.float32).tiny)
"""A logit counts as positive (multibinary) from here: the smallest normal float32 (TensorFlow flushes subnormals)."""
OUTPUT_NAMES = {"discrete": ("logits", "value", "actions"), "multidiscrete": ("logits", "value", "actions"),
                "multibinary": ("logits", "value", "actions"), "continuous": ("mean", "log_std", "value", "actions")}
"""The model's outputs by action kind."""


def output_names(spec: NetworkSpec) -> tuple[str, ...]:
    """The keys of the model's output dict."""
    return OUTPUT_NAMES[spec.action_kind]


def keras_policy(spec: NetworkSpec, weights: dict[str, np.ndarray] | None = None) -> keras.Model:
    """The policy of ``spec`` with these ``weights`` (by name, as ``weight_arrays`` gives them) as a functional Keras
    model of built-in layers: raw observations in (one input per leaf), a dict out (``output_names``).

    Without ``weights``, the architecture with placeholder weights (zeros; the normaliser's variance ones), for
    ``model.load_weights("policy.weights.h5")``. ValueError when the weights do not fit the spec (a missing name or
    another shape).
    """
    if weights is None:
        weights = {name: (np.ones if name == f"{NORMALIZER_NAME}/variance" else np.zeros)(shape, np.float32)
                   for name, shape in weight_shapes(spec).items()}
    _check_weights(spec, weights)
    builder = _Builder(spec, weights)
    return builder.model()


def _check_weights(spec: NetworkSpec, weights: dict[str, np.ndarray]) -> None:
    expected = weight_shapes(spec)
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ValueError(f"the weights do not fit this network: missing {missing}")
    for name, shape in expected.items():
        if tuple(np.shape(weights[name])) != tuple(shape):
            raise ValueError(f"the weights do not fit this network: {name} has shape {tuple(np.shape(weights[name]))}, "
                             f"the network expects {tuple(shape)}")


class _Builder:
    """Builds the layers one by one, keeping the ones whose weights are set after the model is made."""

    def __init__(self, spec: NetworkSpec, weights: dict[str, np.ndarray]) -> None:
        self.spec, self.weights = spec, weights
        self.taken = {leaf.name for leaf in spec.observation_leaves}
        self.assign: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
        self.normalizer: keras.layers.Normalization | None = None

    def name(self, wanted: str) -> str:
        """``wanted``, or with underscores appended when an input has that name."""
        while wanted in self.taken:
            wanted += "_"
        self.taken.add(wanted)
        return wanted

    def model(self) -> keras.Model:
        spec = self.spec
        inputs = {leaf.name: keras.Input(shape=leaf.shape, dtype=export_dtype(leaf), name=leaf.name)
                  for leaf in spec.observation_leaves}
        features = self.features(inputs)
        if spec.user_torso:
            policy = self.user_torso("policy_torso", spec.torso, features)
            value_features = (policy if spec.shared_torso
                              else self.user_torso("value_torso", spec.value_torso or spec.torso, features))
        else:
            policy = self.torso("policy_torso", features, spec.hidden_sizes)
            value_features = policy if spec.shared_torso else self.torso("value_torso", features, spec.value_sizes)
        head = self.dense("policy_head", policy, spec.action_size, None)
        value = L.Reshape((), name=self.name("value"))(self.dense("value_head", value_features, 1, None))
        if spec.action_kind == "continuous":
            log_std_layer = L.Dense(spec.action_size, name=self.name("log_std"), trainable=False)
            # a zero kernel on zeros: the learned log_std whatever the observation
            log_std = log_std_layer(self.constant(head, np.zeros(spec.action_size, np.float32), "log_std_zeros"))
            self.assign.append((log_std_layer, [np.zeros((spec.action_size, spec.action_size), np.float32),
                                                np.asarray(self.weights["log_std"], np.float32)]))
            outputs = {"mean": head, "log_std": log_std, "value": value, "actions": self.clipped(head)}
        else:
            outputs = {"logits": head, "value": value, "actions": self.actions(head)}
        single = len(spec.observation_leaves) == 1
        model = keras.Model(inputs=next(iter(inputs.values())) if single else inputs, outputs=outputs,
                            name="champion_policy")
        for layer, arrays in self.assign:
            layer.set_weights(arrays)
        if self.normalizer is not None:
            self.normalizer.finalize_state()  # its mean and variance tensors are read from its weights here
        return model

    # --- observations -> features --------------------------------------------------------------------------------

    def features(self, inputs: dict[str, keras.KerasTensor]) -> keras.KerasTensor:
        """The encoders' output in ActorCritic's order: vector leaves (normalised together), images, one-hot and
        binary leaves."""
        spec = self.spec
        parts = []
        boxes = [L.Reshape((leaf.size,), name=self.name(f"{leaf.name}_flat"))(inputs[leaf.name])
                 for leaf in spec.observation_leaves if leaf.kind == "box"]
        if boxes:
            vector = boxes[0] if len(boxes) == 1 else L.Concatenate(name=self.name("vector"))(boxes)
            parts.append(self.normalized(vector))
        for index, (leaf, _) in enumerate(spec.leaf_columns("image")):
            parts.append(self.image(index, leaf, inputs[leaf.name]))
        for leaf, _ in spec.leaf_columns("onehot"):
            parts.append(self.onehot(leaf, inputs[leaf.name]))
        for leaf, _ in spec.leaf_columns("binary"):
            flat = L.Reshape((leaf.size,), name=self.name(f"{leaf.name}_flat"))(inputs[leaf.name])
            parts.append(L.Rescaling(1.0, name=self.name(f"{leaf.name}_float"))(flat))  # int8 -> float32
        return parts[0] if len(parts) == 1 else L.Concatenate(name=self.name("features"))(parts)

    def normalized(self, vector: keras.KerasTensor) -> keras.KerasTensor:
        """clip((x - mean) / float32(sqrt(variance + epsilon)), -clip, clip), as NumpyPolicy computes it."""
        spec = self.spec
        if not spec.normalize_observations:
            return vector
        size = vector.shape[-1]
        self.normalizer = L.Normalization(axis=-1, name=self.name(NORMALIZER_NAME))
        normalized = self.normalizer(vector)
        # Normalization divides by sqrt(its variance): given the float32 square of champion's float32 scale, that
        # square root is the scale again, exactly (a correctly rounded sqrt of a correctly rounded square).
        scale = np.sqrt(np.asarray(self.weights[f"{NORMALIZER_NAME}/variance"], np.float64)
                        + NORMALIZER_EPSILON).astype(np.float32)
        self.assign.append((self.normalizer, [np.asarray(self.weights[f"{NORMALIZER_NAME}/mean"], np.float32),
                                              np.square(scale), np.asarray(0, np.int64)]))
        bound = float(np.float32(spec.observation_clip))
        low = self.constant(vector, np.full(size, -bound, np.float32), "observation_clip_low")
        high = self.constant(vector, np.full(size, bound, np.float32), "observation_clip_high")
        clipped = L.Maximum(name=self.name("observation_clip_above"))([normalized, low])
        return L.Minimum(name=self.name("observation_clip"))([clipped, high])

    def image(self, index: int, leaf: ObservationLeaf, pixels: keras.KerasTensor) -> keras.KerasTensor:
        """uint8 pixels / 255 (exactly: a Normalization of mean 0, variance 255**2), channels last, then the CNN."""
        prefix = f"image_{index}"
        image = L.Normalization(mean=0.0, variance=255.0 ** 2, axis=None, name=self.name(f"{prefix}_scale"))(pixels)
        if len(leaf.shape) == 2:
            image = L.Reshape(leaf.image_shape, name=self.name(f"{prefix}_channel"))(image)
        elif leaf.channels_first:
            image = L.Permute((2, 3, 1), name=self.name(f"{prefix}_channels_last"))(image)
        for number, (filters, kernel, stride) in enumerate(self.spec.cnn_layers):
            name = f"{prefix}_conv_{number}"
            layer = L.Conv2D(filters, kernel, strides=stride, activation="relu", name=self.name(name))
            image = layer(image)
            self.assign.append((layer, [self.weights[f"{name}/kernel"], self.weights[f"{name}/bias"]]))
        flat = L.Flatten(name=self.name(f"{prefix}_flatten"))(image)
        return self.dense(f"{prefix}_dense", flat, self.spec.cnn_features, "relu")

    def onehot(self, leaf: ObservationLeaf, values: keras.KerasTensor) -> keras.KerasTensor:
        """Each component one-hot, side by side: component i's value, minus its start, plus the width of the
        components before it, is a distinct token of one multi-hot encoding."""
        count = len(leaf.categories)
        offsets = np.concatenate([[0], np.cumsum(leaf.categories)[:-1]]) - np.asarray(leaf.start or (0,) * count)
        flat = L.Reshape((count,), name=self.name(f"{leaf.name}_flat"))(values)
        tokens = L.Rescaling(1.0, offset=offsets.astype(np.float32), name=self.name(f"{leaf.name}_tokens"))(flat)
        return L.CategoryEncoding(sum(leaf.categories), output_mode="multi_hot",
                                  name=self.name(f"{leaf.name}_onehot"))(tokens)

    def constant(self, like: keras.KerasTensor, values: np.ndarray, name: str) -> keras.KerasTensor:
        """``values`` (float32, [width]) on every row of ``like`` ([batch, width]), whatever ``like`` holds: 0 x
        (a step of ``like``, 0 or 1), plus ``values``. (0 x ``like`` itself would be NaN where ``like`` is infinite.)"""
        step = L.Discretization(bin_boundaries=[0.0], name=self.name(f"{name}_step"))(like)
        return L.Rescaling(0.0, offset=np.asarray(values, np.float32), name=self.name(name))(step)

    # --- torsos and heads ----------------------------------------------------------------------------------------

    def torso(self, prefix: str, features: keras.KerasTensor, sizes: tuple[int, ...]) -> keras.KerasTensor:
        for index, size in enumerate(sizes):
            features = self.dense(f"{prefix}_{index}", features, size, self.spec.activation)
        return features

    def user_torso(self, prefix: str, reference: str, features: keras.KerasTensor) -> keras.KerasTensor:
        """The user's torso as its function builds it (its module imported already), with the weights saved under
        ``prefix`` (``ActorCritic.named_weights``: its weights by their place in it), inside a model named ``prefix``:
        the policy's and the value function's copies of a torso have the same name, which a model may hold once."""
        from champion.agents.networks import build_user_torso

        torso, _ = build_user_torso(reference, features.shape[-1], seed=0)
        self.assign.append((torso, [self.weights[f"{prefix}/{index}_{variable.name}"]
                                    for index, variable in enumerate(torso.weights)]))
        inputs = keras.Input((features.shape[-1],), name=self.name(f"{prefix}_features"))
        return keras.Model(inputs, torso(inputs), name=self.name(prefix))(features)

    def dense(self, name: str, features: keras.KerasTensor, units: int, activation: str | None) -> keras.KerasTensor:
        layer = L.Dense(units, activation=activation, name=self.name(name))
        output = layer(features)
        self.assign.append((layer, [self.weights[f"{name}/kernel"], self.weights[f"{name}/bias"]]))
        return output

    # --- the deterministic env action ----------------------------------------------------------------------------

    def clipped(self, mean: keras.KerasTensor) -> keras.KerasTensor:
        """The mean clipped to the action bounds (infinite bounds as float32's largest), in the env's shape."""
        spec = self.spec
        low, high = (np.clip(np.asarray(bounds, np.float64), -FLOAT32_MAX, FLOAT32_MAX).astype(np.float32)
                     for bounds in (spec.action_low, spec.action_high))
        low_bound, high_bound = self.constant(mean, low, "action_low"), self.constant(mean, high, "action_high")
        actions = L.Minimum(name=self.name("action_clip"))([L.Maximum(name=self.name("action_clip_below"))(
            [mean, low_bound]), high_bound])
        return self.env_shaped(actions)

    def actions(self, logits: keras.KerasTensor) -> keras.KerasTensor:
        spec = self.spec
        if spec.action_kind == "multibinary":
            bits = L.Discretization(bin_boundaries=[SMALLEST_POSITIVE], name=self.name("action_bits"))(logits)
            return self.env_shaped(bits)
        sizes = spec.action_nvec if spec.action_kind == "multidiscrete" else (spec.action_size,)
        starts = spec.action_start or (0,) * len(sizes)
        column = L.Reshape((spec.action_size, 1), name=self.name("action_logit_column"))(logits)
        components, offset = [], 0
        for number, (size, start) in enumerate(zip(sizes, starts)):
            part = column
            if len(sizes) > 1:
                part = L.Cropping1D((offset, spec.action_size - offset - size),
                                    name=self.name(f"action_{number}_logits"))(column)
            components.append(self.argmax(f"action_{number}", part, size, int(start)))
            offset += size
        if spec.action_kind == "discrete":
            return L.Reshape((), name=self.name("action"))(components[0])
        joined = (components[0] if len(components) == 1
                  else L.Concatenate(name=self.name("action_components"), dtype="int32")(components))
        return self.env_shaped(joined)

    def argmax(self, prefix: str, column: keras.KerasTensor, size: int, start: int) -> keras.KerasTensor:
        """[batch, 1] int32: start + the index of the first largest of a [batch, size, 1] column (tf.argmax's and
        numpy's choice on ties), from exact steps: subtract the maximum (0 exactly where it is attained), mark
        those with a step (Discretization at 0), weigh mark j by size - j, take the maximum (size - first),
        turn it into first + start by counting bin boundaries."""
        largest = L.GlobalMaxPooling1D(keepdims=True, name=self.name(f"{prefix}_max"))(column)
        gaps = L.Subtract(name=self.name(f"{prefix}_gap"))([column, largest])
        marks = L.Discretization(bin_boundaries=[0.0], name=self.name(f"{prefix}_is_max"))(gaps)
        ranks = L.Rescaling(np.arange(size, 0, -1, dtype=np.float32).reshape(size, 1),
                            name=self.name(f"{prefix}_rank"))(marks)
        top = L.GlobalMaxPooling1D(name=self.name(f"{prefix}_top"))(ranks)
        first = L.Rescaling(-1.0, offset=float(size), name=self.name(f"{prefix}_index"))(top)
        # Discretization counts the boundaries at or below its input: max(start, 0) below 0, then one between
        # each two indices
        below = [float(value) for value in range(-max(start, 0), 0)]
        index = L.Discretization(bin_boundaries=below + [number + 0.5 for number in range(size - 1)],
                                 name=self.name(f"{prefix}_action"))(first)
        if start >= 0:
            return index
        shift = L.Discretization(bin_boundaries=[float(value) for value in range(start, 0)],
                                 name=self.name(f"{prefix}_minus_start"))(first)  # -start: every boundary is below
        return L.Subtract(name=self.name(f"{prefix}_shifted"), dtype="int32")([index, shift])

    def env_shaped(self, actions: keras.KerasTensor) -> keras.KerasTensor:
        shape = tuple(self.spec.action_env_shape or self.spec.action_shape)
        if tuple(actions.shape[1:]) == shape:
            return actions
        return L.Reshape(shape, name=self.name("action_shape"))(actions)
