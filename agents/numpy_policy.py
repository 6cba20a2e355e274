"""The policy's forward pass in numpy, for acting on the CPU without a TensorFlow call per step.

A small network on a handful of observations is microseconds of arithmetic, while every TensorFlow
call has a fixed dispatch cost many times that; acting once per vector step, the dispatch would
dominate (docs/architecture-notes.md has the figures). ``NumpyPolicy`` takes the Keras model's weights
by name (``refresh`` after an update or load, before acting with them) and computes the same function
to float32 rounding: the same normaliser, convolutions, layers, activations and distributions.
Evaluation and replay both act through it, so a replay reproduces the recorded return exactly. It
imports no TensorFlow, so a process that only acts (a remote worker) does not load it.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from champion.agents.spec import NORMALIZER_EPSILON, NORMALIZER_NAME, NetworkSpec

LOG_2PI = math.log(2.0 * math.pi)
FUSE_MAX_WIDTH = 128
"""Policy and value torsos up to this wide act as one side-by-side network (one product per layer, the
zero blocks of the block-diagonal kernel computed too). Wider ones act one after the other: for 256-wide
torsos the 512x512 block-diagonal product took 13.0 us for one env against 8.3 us for two 256x256 ones;
for 64-wide, 1.7 against 2.3 us (one BLAS thread, 2026-12-06)."""
Layer = tuple[np.ndarray, np.ndarray]


def single_threaded_numpy() -> None:
    """numpy's BLAS on one thread for the rest of the process. Acting and evaluation multiply small matrices,
    where threads cost more than they bring and fight TensorFlow's own for the cores: the Nature CNN acting
    for 8 Atari envs took 2.1 ms per step on one BLAS thread, 5.6 ms on two, and up to 160 ms beside a
    training process (docs/architecture-notes.md), and a crown's Breakout episodes 25 times as long on its
    default threads. TensorFlow does not use this BLAS. threadpoolctl is imported here, not at the top:
    importing it sets KMP_DUPLICATE_LIB_OK, and importing champion changes nothing."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _erf(values: np.ndarray) -> np.ndarray:
    """erf to within 1.5e-7 (Abramowitz and Stegun 7.1.26); numpy has none."""
    sign = np.sign(values)
    magnitude = np.abs(values)
    t = 1.0 / (1.0 + 0.3275911 * magnitude)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-magnitude * magnitude))).astype(values.dtype)


def _relu(values: np.ndarray) -> np.ndarray:
    return np.maximum(values, 0.0)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": _relu,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x * (0.5 + 0.5 * np.tanh(0.5 * x)),  # x * sigmoid(x), without overflow
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0)))),
}


class EnvNoise:
    """The random draws for action sampling, one stream per env.

    Env ``i``'s draws depend only on the run seed, ``i`` and how many steps it has taken, never on which
    other envs share its batch: W workers of M envs draw exactly what one process with W*M envs draws.
    Each stream is drawn ``BLOCK`` steps at a time (one call per env per block instead of one per step:
    per-step calls cost about 10 microseconds a step for 8 envs). It pickles, so resume checkpoints
    carry it.
    """

    BLOCK = 256

    def __init__(self, seed: int, env_indices: range | list[int]) -> None:
        self.env_indices = list(env_indices)
        self.generators = [np.random.default_rng([seed, index]) for index in self.env_indices]
        self._kind: tuple[str, tuple[int, ...]] | None = None
        self._block = np.zeros(0)
        self._position = 0

    @property
    def num_envs(self) -> int:
        """How many envs (rows) each draw is for."""
        return len(self.generators)

    def draw(self, kind: str, shape: tuple[int, ...]) -> np.ndarray:
        """One step's draws of ``kind`` (a ``numpy.random.Generator`` method: gumbel, random, standard_normal),
        ``shape`` = [num_envs, ...]."""
        if shape[0] != self.num_envs:
            raise ValueError(f"noise for {self.num_envs} envs asked for a batch of {shape[0]}")
        key = (kind, tuple(shape[1:]))
        if key != self._kind or self._position == len(self._block):
            self._kind, self._position = key, 0  # a new kind of draw starts a fresh block from each stream
            self._block = np.stack([getattr(generator, kind)(size=(self.BLOCK, *key[1])) for generator in self.generators],
                                   axis=1)
        self._position += 1
        return self._block[self._position - 1]


class NumpyPolicy:
    """Acts with a weight snapshot of an ActorCritic (sample / mode / value, numpy in and out).

    ``read_weights`` gives the model's current weights by name (``champion.agents.networks.numpy_policy`` passes
    the model's); without it, ``set_weights`` loads them. Sampling uses this policy's own
    ``numpy.random.Generator``, whose state goes into resume checkpoints (``random_state``), so a resumed
    run draws the same actions.
    """

    def __init__(self, spec: NetworkSpec, read_weights: Callable[[], dict[str, np.ndarray]] | None = None,
                 seed: int = 0, weights: dict[str, np.ndarray] | None = None) -> None:
        self.spec = spec
        self.model: Any = None  # the Keras model, when made from one (export reads it)
        self.random = np.random.default_rng(seed)
        self._read_weights = read_weights
        self._activation = ACTIVATIONS[spec.activation]
        continuous = spec.action_kind == "continuous"
        self._low = np.asarray(spec.action_low, np.float32) if continuous else None
        self._high = np.asarray(spec.action_high, np.float32) if continuous else None
        self._vector_columns = np.asarray(spec.vector_columns(), np.intp)
        self._whole_vector = len(self._vector_columns) == spec.observation_size
        if weights is not None:
            self.set_weights(weights)
        elif read_weights is not None:
            self.refresh()

    def refresh(self) -> None:
        """Take the model's current weights (after an update, restore or load, before acting or a snapshot)."""
        if self._read_weights is None:
            raise ValueError("this NumpyPolicy was made without a model; give it weights with set_weights")
        self.set_weights(self._read_weights())

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Act with these weights (by name, as ``champion.agents.networks.weight_arrays`` gives them)."""
        self.weights = weights  # the best store saves these
        spec = self.spec

        def layer(name: str) -> Layer:
            return weights[f"{name}/kernel"], weights[f"{name}/bias"]

        self._encoders = [([layer(f"image_{index}_conv_{number}") for number in range(len(spec.cnn_layers))],
                           layer(f"image_{index}_dense")) for index, _ in enumerate(spec.leaf_columns("image"))]
        policy_layers = [layer(f"policy_torso_{index}") for index in range(len(spec.hidden_sizes))] + [layer("policy_head")]
        self._value_path: list[Layer] | None = None
        if spec.shared_torso:
            value_head = layer("value_head")
            self._torso = policy_layers[:-1]
            self._head = (np.concatenate([policy_layers[-1][0], value_head[0]], axis=1),
                          np.concatenate([policy_layers[-1][1], value_head[1]]))
            self._set_normalizer_and_log_std(weights)
            return
        value_layers = [layer(f"value_torso_{index}") for index in range(len(spec.value_sizes))] + [layer("value_head")]
        widest = max((*spec.hidden_sizes, *spec.value_sizes), default=0)
        if len(value_layers) == len(policy_layers) and widest <= FUSE_MAX_WIDTH:  # side by side: half the calls
            fused = [_side_by_side(policy, value, first=index == 0)
                     for index, (policy, value) in enumerate(zip(policy_layers, value_layers))]
            self._torso, self._head = fused[:-1], fused[-1]
        else:  # torsos of different depths: one after the other
            self._torso, self._head, self._value_path = policy_layers[:-1], policy_layers[-1], value_layers
        self._set_normalizer_and_log_std(weights)

    def _set_normalizer_and_log_std(self, weights: dict[str, np.ndarray]) -> None:
        spec = self.spec
        self._log_std = weights["log_std"] if "log_std" in weights else None
        self._normalize = spec.normalize_observations and len(self._vector_columns) > 0
        if self._normalize:
            self._mean = weights[f"{NORMALIZER_NAME}/mean"].astype(np.float32)
            self._scale = np.sqrt(weights[f"{NORMALIZER_NAME}/variance"] + NORMALIZER_EPSILON).astype(np.float32)
            self._clip = np.float32(spec.observation_clip)

    def snapshot(self) -> "NumpyPolicy":
        """This policy as of now, unchanged by later refreshes: evaluation plays it beside training.

        ``set_weights`` replaces the arrays instead of writing into them, so a shallow copy is a snapshot.
        It samples from its own generator, never from the training policy's.
        """
        frozen = copy.copy(self)
        frozen.random = np.random.default_rng(0)
        return frozen

    def features(self, observations: np.ndarray) -> np.ndarray:
        """The encoders' output for a batch of flat observations, as the Keras model computes it."""
        flat = np.asarray(observations, np.float32).reshape(len(observations), -1)
        if self._whole_vector:
            return self._normalized(flat)
        parts = [self._normalized(flat[:, self._vector_columns])] if len(self._vector_columns) else []
        for (leaf, offset), (convolutions, dense) in zip(self.spec.leaf_columns("image"), self._encoders):
            image = flat[:, offset:offset + leaf.size].reshape(len(flat), *leaf.shape)
            if leaf.channels_first:
                image = image.transpose(0, 2, 3, 1)
            image = image.reshape(len(flat), *leaf.image_shape) / np.float32(255.0)
            for (kernel, bias), (_, size, stride) in zip(convolutions, self.spec.cnn_layers):
                image = _relu(_convolve(image, kernel, stride) + bias)
            parts.append(_relu(_matmul(image.reshape(len(flat), -1), dense[0]) + dense[1]))
        for kind in ("onehot", "binary"):
            parts += [flat[:, offset:offset + leaf.size] for leaf, offset in self.spec.leaf_columns(kind)]
        return np.concatenate(parts, axis=-1)

    def _normalized(self, vector: np.ndarray) -> np.ndarray:
        if not self._normalize:
            return vector
        return np.clip((vector - self._mean) / self._scale, -self._clip, self._clip)

    def forward(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(policy head output, values) for a batch, as the Keras model computes them."""
        features = self.features(observations)
        if self._value_path is not None:
            return self._mlp(features, self._torso, self._head), self._mlp(features, self._value_path[:-1],
                                                                          self._value_path[-1])[:, 0]
        output = self._mlp(features, self._torso, self._head)
        return output[:, :-1], output[:, -1]

    def _mlp(self, features: np.ndarray, torso: list[Layer], head: Layer) -> np.ndarray:
        for kernel, bias in torso:
            features = self._activation(_matmul(features, kernel) + bias)
        return _matmul(features, head[0]) + head[1]

    def sample(self, observations: np.ndarray, noise: "EnvNoise | None" = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(actions, their log-probabilities, state values), drawn from the stochastic policy.

        ``noise`` gives each env its own random stream (the collectors pass one, so that a run split across
        workers draws the same actions); without it the draws come from this policy's generator.
        """
        head, values = self.forward(observations)
        kind = self.spec.action_kind
        if kind == "discrete":
            actions, log_probs = _sample_categorical(head, self._noise(noise, "gumbel", head.shape))
        elif kind == "multidiscrete":
            gumbel = self._noise(noise, "gumbel", head.shape)
            drawn = [_sample_categorical(part, part_noise)
                     for part, part_noise in zip(self._split(head), self._split(gumbel))]
            actions = np.stack([action for action, _ in drawn], axis=-1)
            log_probs = np.sum([log_prob for _, log_prob in drawn], axis=0)
        elif kind == "multibinary":
            actions = (self._noise(noise, "random", head.shape) < _sigmoid(head)).astype(np.float32)
            log_probs = np.sum(actions * head - np.logaddexp(0.0, head), axis=-1)
        else:
            normal = self._noise(noise, "standard_normal", head.shape).astype(np.float32)
            actions = head + np.exp(self._log_std) * normal
            log_probs = np.sum(-0.5 * np.square(normal) - self._log_std - 0.5 * LOG_2PI, axis=-1)
        dtype = np.int32 if self.spec.integer_actions else np.float32
        return actions.astype(dtype), np.asarray(log_probs, np.float32), values.astype(np.float32)

    def _noise(self, noise: "EnvNoise | None", kind: str, shape: tuple[int, ...]) -> np.ndarray:
        if noise is None:
            return getattr(self.random, kind)(size=shape)
        return noise.draw(kind, shape)

    def mode(self, observations: np.ndarray) -> np.ndarray:
        """The deterministic action per observation: the most likely one, or the Gaussian mean."""
        head, _ = self.forward(observations)
        kind = self.spec.action_kind
        if kind == "discrete":
            return np.argmax(head, axis=-1).astype(np.int32)
        if kind == "multidiscrete":
            return np.stack([np.argmax(part, axis=-1) for part in self._split(head)], axis=-1).astype(np.int32)
        if kind == "multibinary":
            return (head > 0.0).astype(np.float32)
        return head.astype(np.float32)

    def _split(self, logits: np.ndarray) -> list[np.ndarray]:
        """Per-component columns of a multidiscrete head."""
        return np.split(logits, np.cumsum(self.spec.action_nvec)[:-1], axis=-1)

    def value(self, observations: np.ndarray) -> np.ndarray:
        """V(observation) per observation."""
        return self.forward(observations)[1].astype(np.float32)

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """What to send to the env: in its action space's shape and range (continuous actions clipped to the
        bounds, category indices moved to the space's start)."""
        spec, count = self.spec, len(actions)
        if spec.action_kind == "continuous":
            actions = np.clip(actions, self._low, self._high)
        elif spec.action_kind == "multibinary":
            actions = actions.astype(np.int8)
        elif any(spec.action_start):
            actions = actions + np.asarray(spec.action_start if spec.action_kind == "multidiscrete"
                                           else spec.action_start[0], actions.dtype)
        shape = spec.action_env_shape or spec.action_shape  # a manifest from before action_env_shape: a flat Box
        return actions if spec.action_kind == "discrete" or actions.shape[1:] == shape else actions.reshape(count, *shape)

    def random_state(self) -> dict[str, Any]:
        """The sampler's state, for a resume checkpoint."""
        return self.random.bit_generator.state

    def set_random_state(self, state: dict[str, Any]) -> None:
        """Continue sampling where a checkpointed run left off."""
        self.random.bit_generator.state = state


def _sample_categorical(logits: np.ndarray, gumbel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index per row by the Gumbel-max trick with this ``gumbel`` noise, its log-probability)."""
    log_probs = _log_softmax(logits)
    actions = np.argmax(log_probs + gumbel, axis=-1)
    return actions, log_probs[np.arange(len(actions)), actions]


def _convolve(images: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """A 'valid' 2-D convolution of [batch, H, W, C] images with a Keras kernel [k, k, C, filters]."""
    size = kernel.shape[0]
    windows = sliding_window_view(images, (size, size), axis=(1, 2))[:, ::stride, ::stride]  # [B, h, w, C, k, k]
    batch, height, width = windows.shape[:3]
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(batch, height * width, -1)  # rows ordered as the kernel's
    # one matrix product per image (numpy's matmul loops over the leading axis), so that an image's output does
    # not depend on the batch it is in (see _matmul)
    return (patches @ kernel.reshape(-1, kernel.shape[-1])).reshape(batch, height, width, -1)


def _matmul(rows: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``rows @ kernel`` computed row by row, so that a row's result does not depend on the batch it is in.

    A BLAS matrix product of a batch picks its kernels by the batch's size, and the same row can come out
    different (in its last bits) in a batch of 4 and one of 8. Acting would then depend on how the envs are
    split across workers, and a run on W workers x M envs would drift from the same run on W*M envs in
    one process. As a stack of row-vector products (one BLAS call each inside one numpy call), every row
    takes the same path whatever the batch: about 1 microsecond more per layer for 8 envs of a small MLP.
    """
    return (rows[:, None, :] @ kernel)[:, 0]


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * values)


def _side_by_side(policy: Layer, value: Layer, first: bool) -> Layer:
    """One layer computing a policy layer and a value layer at once.

    The first layer sees the same input for both, so the kernels sit side by side; later layers
    see [policy features, value features], so the kernel is block-diagonal (the zero blocks add
    exact zeros).
    """
    (policy_kernel, policy_bias), (value_kernel, value_bias) = policy, value
    if first:
        kernel = np.concatenate([policy_kernel, value_kernel], axis=1)
    else:
        kernel = np.zeros((policy_kernel.shape[0] + value_kernel.shape[0], policy_kernel.shape[1] + value_kernel.shape[1]),
                          np.float32)
        kernel[:policy_kernel.shape[0], :policy_kernel.shape[1]] = policy_kernel
        kernel[policy_kernel.shape[0]:, policy_kernel.shape[1]:] = value_kernel
    return kernel, np.concatenate([policy_bias, value_bias])


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
