"""What a network is built from (``NetworkSpec``), in plain Python: no TensorFlow, no gymnasium.

The numpy policy, the best-policy manifests and (later) remote workers read it without importing
TensorFlow. Observations reach the model as one flat float32 vector per step, laid out as gymnasium's
``spaces.flatten`` lays them out (Dict keys and Tuple items in order, Discrete and MultiDiscrete as
one-hot blocks); each ``ObservationLeaf`` says where one leaf of the env's space sits in that vector
and how the model encodes it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

IMAGE_LAYOUTS = ("auto", "channels_last", "channels_first", "none")
ACTION_KINDS = ("discrete", "multidiscrete", "multibinary", "continuous")
NORMALIZER_NAME, NORMALIZER_EPSILON = "observation_normalizer", 1e-8
"""The observation normaliser's layer name (its weights are read by name) and the epsilon under its variance."""
NATURE_CNN = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
"""(filters, kernel, stride) of each convolution of the Nature DQN encoder (Mnih et al., 2015)."""


@dataclass(frozen=True)
class ObservationLeaf:
    """One leaf of the observation space and its block of the flat observation vector."""

    path: tuple[str, ...]
    """Keys (Dict) and indices (Tuple) from the space's root to this leaf; () for a space that is one leaf."""
    kind: str
    """box (normalised when normalisation is on), image (a CNN), onehot (Discrete/MultiDiscrete), binary."""
    shape: tuple[int, ...]
    """The leaf's shape in the env (e.g. (84, 84, 4), or (3,) for a MultiDiscrete of three components)."""
    dtype: str = "float32"
    """The env's dtype for this leaf (an export takes observations in it, e.g. uint8 images)."""
    categories: tuple[int, ...] = ()
    """onehot: the number of values of each component (Discrete: (n,); MultiDiscrete: its nvec, flattened)."""
    start: tuple[int, ...] = ()
    """onehot: the lowest value of each component (gymnasium's ``start``)."""
    channels_first: bool = False
    """image: whether ``shape`` is (C, H, W) (else (H, W, C), or (H, W) for one channel)."""

    @property
    def size(self) -> int:
        """Width of this leaf's block in the flat observation vector."""
        return sum(self.categories) if self.kind == "onehot" else math.prod(self.shape)

    @property
    def name(self) -> str:
        """The leaf's name as an exported model's input (``observations`` for a space that is one leaf)."""
        return "_".join(self.path) if self.path else "observations"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """image: (H, W, C), as the CNN sees it."""
        if len(self.shape) == 2:
            return (*self.shape, 1)
        if self.channels_first:
            channels, height, width = self.shape
            return height, width, channels
        return tuple(self.shape)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ObservationLeaf":
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def box_leaf(shape: tuple[int, ...]) -> ObservationLeaf:
    """A plain vector observation of ``shape``."""
    return ObservationLeaf(path=(), kind="box", shape=tuple(shape))


@dataclass(frozen=True)
class NetworkSpec:
    """What the model is built from; stored in every best-policy manifest."""

    observation_leaves: tuple[ObservationLeaf, ...]
    action_kind: str
    action_size: int
    """Width of the policy head: n (discrete), sum(nvec) (multidiscrete), n (multibinary), prod(shape) (continuous)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    shared_torso: bool = False
    value_hidden_sizes: tuple[int, ...] | None = None
    """The value torso's layers when they differ from the policy torso's (None: hidden_sizes)."""
    ortho_init: bool = True
    """Orthogonal initialisation (gains sqrt(2), 0.01, 1); False: PyTorch's default (uniform within 1/sqrt(fan_in))."""
    action_low: tuple[float, ...] = ()
    """Continuous actions only: the env's lower bounds, flattened (actions are clipped to them)."""
    action_high: tuple[float, ...] = ()
    log_std_init: float = 0.0
    normalize_observations: bool = False
    observation_clip: float = 10.0
    action_nvec: tuple[int, ...] = ()
    """multidiscrete: the number of values of each component, flattened."""
    action_start: tuple[int, ...] = ()
    """discrete and multidiscrete: the env's lowest action value(s), added to the sampled index."""
    action_env_shape: tuple[int, ...] = ()
    """The env's action shape (the flat action is reshaped to it before stepping the env)."""
    cnn_layers: tuple[tuple[int, int, int], ...] = NATURE_CNN
    """image leaves: (filters, kernel, stride) of each convolution (ReLU, no padding)."""
    cnn_features: int = 512
    """image leaves: units of the dense ReLU layer after the convolutions."""
    torso: str | None = None
    """A torso of the user's own ("module:function", ``champion.agents.torso``) in place of the MLP: the policy's, or
    the shared one with shared_torso (None: the MLP of hidden_sizes)."""
    value_torso: str | None = None
    """The value function's own torso ("module:function") when it differs from ``torso`` (None: ``torso`` built
    again, with weights of its own, unless shared_torso)."""
    torso_weights: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """With a torso of the user's: every weight of it (name, shape) as built when the run started, so that saved
    weights are checked against the network without building it."""
    torso_widths: tuple[int, ...] = ()
    """With a torso of the user's: the width of its output (policy, then value unless shared)."""

    @property
    def user_torso(self) -> bool:
        """Whether the torso is the user's own Keras network (acting then runs it in TensorFlow, not numpy)."""
        return self.torso is not None

    @property
    def torso_references(self) -> tuple[str, ...]:
        """The "module:function" names the network's torsos are built from (none for the MLP)."""
        return tuple(reference for reference in (self.torso, self.value_torso) if reference)

    @property
    def observation_size(self) -> int:
        """Width of the flat observation vector."""
        return sum(leaf.size for leaf in self.observation_leaves)

    @property
    def observation_shape(self) -> tuple[int, ...]:
        """Shape of one observation as the env gives it to the model: a Box keeps its own shape, anything else
        arrives flattened (the model flattens a Box itself)."""
        leaves = self.observation_leaves
        if len(leaves) == 1 and leaves[0].kind in ("box", "image"):
            return leaves[0].shape
        return (self.observation_size,)

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Shape of one action as the learner stores it: () for discrete, one flat axis otherwise."""
        if self.action_kind == "discrete":
            return ()
        if self.action_kind == "multidiscrete":
            return (len(self.action_nvec),)
        return (self.action_size,)

    @property
    def integer_actions(self) -> bool:
        """Whether actions are category indices (int32) rather than float32 values."""
        return self.action_kind in ("discrete", "multidiscrete")

    def leaf_columns(self, kind: str) -> list[tuple[ObservationLeaf, int]]:
        """The leaves of ``kind`` with the offset of each one's block in the flat observation vector."""
        found, offset = [], 0
        for leaf in self.observation_leaves:
            if leaf.kind == kind:
                found.append((leaf, offset))
            offset += leaf.size
        return found

    def vector_columns(self) -> list[int]:
        """Columns of the flat observation that are plain vector values (the ones normalisation applies to)."""
        return [offset + index for leaf, offset in self.leaf_columns("box") for index in range(leaf.size)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form. Without a torso of the user's its fields are left out, so that the manifests and
        checkpoints of such networks read and compare as those from before it existed."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["observation_leaves"] = [leaf.to_dict() for leaf in self.observation_leaves]
        data["cnn_layers"] = [list(layer) for layer in self.cnn_layers]
        data["torso_weights"] = [[name, list(shape)] for name, shape in self.torso_weights]
        if not self.user_torso:
            for name in USER_TORSO_FIELDS:
                del data[name]
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @property
    def value_sizes(self) -> tuple[int, ...]:
        """The value torso's hidden layers (the policy torso's unless value_hidden_sizes says otherwise)."""
        return self.hidden_sizes if self.value_hidden_sizes is None else self.value_hidden_sizes

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkSpec":
        """Inverse of to_dict. A manifest from before observation leaves (``observation_shape``) is one box leaf;
        fields it lacks take their defaults."""
        values = dict(data)
        if "observation_shape" in values:
            values["observation_leaves"] = [box_leaf(tuple(values.pop("observation_shape"))).to_dict()]
        values["observation_leaves"] = tuple(ObservationLeaf.from_dict(leaf) for leaf in values["observation_leaves"])
        if "cnn_layers" in values:
            values["cnn_layers"] = tuple(tuple(int(size) for size in layer) for layer in values["cnn_layers"])
        if "torso_weights" in values:
            values["torso_weights"] = tuple((str(name), tuple(int(size) for size in shape))
                                            for name, shape in values["torso_weights"])
        if values.get("value_hidden_sizes") is not None:
            values["value_hidden_sizes"] = tuple(values["value_hidden_sizes"])
        for key in ("hidden_sizes", "action_low", "action_high", "action_nvec", "action_start", "action_env_shape",
                    "torso_widths"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


USER_TORSO_FIELDS = ("torso", "value_torso", "torso_weights", "torso_widths")
"""NetworkSpec's fields for a torso of the user's (``to_dict`` leaves them out when there is none)."""


def cnn_output_size(height: int, width: int, layers: tuple[tuple[int, int, int], ...]) -> tuple[int, int] | None:
    """(height, width) after the convolutions (no padding), or None when the image is too small for them."""
    for _, kernel, stride in layers:
        height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
        if height < 1 or width < 1:
            return None
    return height, width


def export_dtype(leaf: ObservationLeaf) -> str:
    """The dtype an exported model takes this leaf in: images as uint8, category values as int64, binary as
    int8, vectors as float32."""
    return {"image": "uint8", "onehot": "int64", "binary": "int8"}.get(leaf.kind, "float32")


def flat_observations(spec: NetworkSpec, inputs: dict[str, Any]) -> Any:
    """The flat float32 observations ([batch, observation_size]) of a batch given leaf by leaf (by
    ``ObservationLeaf.name``), encoded as gymnasium's ``spaces.flatten`` encodes them."""
    import numpy as np

    parts = []
    for leaf in spec.observation_leaves:
        values = np.asarray(inputs[leaf.name])
        if leaf.kind != "onehot":
            parts.append(values.reshape(len(values), -1).astype(np.float32))
            continue
        indices = values.reshape(len(values), -1) - np.asarray(leaf.start)
        parts += [np.eye(size, dtype=np.float32)[indices[:, index]] for index, size in enumerate(leaf.categories)]
    return np.concatenate(parts, axis=-1)


def weight_shapes(spec: NetworkSpec) -> dict[str, tuple[int, ...]]:
    """The shape of every weight the network of ``spec`` has, by the name the saved weights use
    (``champion.agents.networks.weight_name``), worked out without building it: a saved file can be checked against the
    network it claims before it is read."""
    shapes: dict[str, tuple[int, ...]] = {}
    vector_size = sum(leaf.size for leaf in spec.observation_leaves if leaf.kind == "box")
    if spec.normalize_observations and vector_size:
        shapes.update({f"{NORMALIZER_NAME}/mean": (vector_size,), f"{NORMALIZER_NAME}/variance": (vector_size,),
                       f"{NORMALIZER_NAME}/count": ()})
    images = [leaf for leaf in spec.observation_leaves if leaf.kind == "image"]
    for index, leaf in enumerate(images):
        height, width, channels = leaf.image_shape
        for layer, (filters, kernel, _) in enumerate(spec.cnn_layers):
            shapes[f"image_{index}_conv_{layer}/kernel"] = (kernel, kernel, channels, filters)
            shapes[f"image_{index}_conv_{layer}/bias"] = (filters,)
            channels = filters
        out_height, out_width = cnn_output_size(height, width, spec.cnn_layers) or (0, 0)
        _dense_shapes(shapes, f"image_{index}_dense", out_height * out_width * channels, spec.cnn_features)
    features = feature_width(spec)
    if spec.user_torso:  # the user's layers, as recorded when the run started
        shapes.update(dict(spec.torso_weights))
        policy_width = spec.torso_widths[0] if spec.torso_widths else 0
        value_width = spec.torso_widths[-1] if spec.torso_widths else 0
    else:
        policy_width = _torso_shapes(shapes, "policy_torso", features, spec.hidden_sizes)
        value_width = (policy_width if spec.shared_torso
                       else _torso_shapes(shapes, "value_torso", features, spec.value_sizes))
    _dense_shapes(shapes, "policy_head", policy_width, spec.action_size)
    _dense_shapes(shapes, "value_head", value_width, 1)
    if spec.action_kind == "continuous":
        shapes["log_std"] = (spec.action_size,)
    return shapes


def feature_width(spec: NetworkSpec) -> int:
    """Width of what the encoders give the torso: the vector leaves, each image's CNN features, the one-hot and
    binary leaves."""
    vector_size = sum(leaf.size for leaf in spec.observation_leaves if leaf.kind == "box")
    images = sum(leaf.kind == "image" for leaf in spec.observation_leaves)
    passthrough = sum(leaf.size for leaf in spec.observation_leaves if leaf.kind in ("onehot", "binary"))
    return vector_size + spec.cnn_features * images + passthrough


def parameter_count(spec: NetworkSpec) -> int:
    """How many numbers the network of ``spec`` holds."""
    return sum(math.prod(shape) for shape in weight_shapes(spec).values())


def _dense_shapes(shapes: dict[str, tuple[int, ...]], name: str, inputs: int, units: int) -> None:
    shapes[f"{name}/kernel"], shapes[f"{name}/bias"] = (inputs, units), (units,)


def _torso_shapes(shapes: dict[str, tuple[int, ...]], prefix: str, inputs: int, sizes: tuple[int, ...]) -> int:
    """Add a torso's dense layers; return its output width."""
    for index, size in enumerate(sizes):
        _dense_shapes(shapes, f"{prefix}_{index}", inputs, size)
        inputs = size
    return inputs


BYTES_PER_PARAMETER_TRAINING = 24
"""What training holds per weight: the weights, their gradients and two Adam slots in float32, and the numpy copies
that act and evaluate."""


def check_network_size(spec: NetworkSpec) -> None:
    """ValueError (one line) when training the network of ``spec`` would take more than half of this machine's
    memory: it would swap or be killed after a long wait, so it is refused before anything is built."""
    needed = parameter_count(spec) * BYTES_PER_PARAMETER_TRAINING
    memory = _physical_memory()
    if memory and needed > memory // 2:
        raise ValueError(f"the network has {parameter_count(spec):,} weights; training it needs about "
                         f"{needed / 2**30:,.1f} GiB, more than half of this machine's {memory / 2**30:,.1f} GiB: "
                         "use smaller hidden sizes")


def _physical_memory() -> int:
    """This machine's memory in bytes (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
