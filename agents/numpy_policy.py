"""The policy's forward pass in numpy, for acting on the CPU without a TensorFlow call per step.

A small MLP on a handful of observations is microseconds of arithmetic, while every TensorFlow
call has a fixed dispatch cost many times that; acting once per vector step, the dispatch would
dominate (docs/architecture-notes.md has the figures). ``NumpyPolicy`` reads the Keras model's weights
(``refresh`` after an update or load, before acting with them) and computes the same function to float32 rounding:
the same normaliser, layers, activations and distributions. Evaluation and replay both act
through it, so a replay reproduces the recorded return exactly.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from agents.networks import ActorCritic, weight_name

LOG_2PI = math.log(2.0 * math.pi)


def _erf(values: np.ndarray) -> np.ndarray:
    """erf to within 1.5e-7 (Abramowitz and Stegun 7.1.26); numpy has none."""
    sign = np.sign(values)
    magnitude = np.abs(values)
    t = 1.0 / (1.0 + 0.3275911 * magnitude)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-magnitude * magnitude))).astype(values.dtype)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x * (0.5 + 0.5 * np.tanh(0.5 * x)),  # x * sigmoid(x), without overflow
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0)))),
}


class NumpyPolicy:
    """Acts with a weight snapshot of an ActorCritic (sample / mode / value, numpy in and out).

    Sampling uses this policy's own ``numpy.random.Generator``, whose state goes into resume
    checkpoints (``random_state``), so a resumed run draws the same actions.
    """

    def __init__(self, model: ActorCritic, seed: int = 0) -> None:
        self.model = model
        self.spec = model.spec
        self.random = np.random.default_rng(seed)
        self._activation = ACTIVATIONS[self.spec.activation]
        spec = self.spec
        continuous = spec.action_kind == "continuous"
        self._low = np.asarray(spec.action_low, np.float32) if continuous else None
        self._high = np.asarray(spec.action_high, np.float32) if continuous else None
        self._names = [weight_name(variable) for variable in model.weights]
        # One graph call reads every weight, instead of one .numpy() call per variable.
        self._read_weights = tf.function(lambda: [tf.identity(variable.value) for variable in model.weights],
                                         autograph=False)
        self.refresh()

    def refresh(self) -> None:
        """Take the model's current weights (after an update, restore or load, before acting or a snapshot)."""
        weights = {name: tensor.numpy() for name, tensor in zip(self._names, self._read_weights())}
        self.weights = weights  # by name, as networks.weight_arrays gives them (the best store saves these)
        spec = self.spec

        def layer(name: str) -> tuple[np.ndarray, np.ndarray]:
            return weights[f"{name}/kernel"], weights[f"{name}/bias"]

        depth = len(spec.hidden_sizes)
        policy_layers = [layer(f"policy_torso_{index}") for index in range(depth)] + [layer("policy_head")]
        if spec.shared_torso:
            value_head = layer("value_head")
            self._torso = policy_layers[:-1]
            self._head = (np.concatenate([policy_layers[-1][0], value_head[0]], axis=1),
                          np.concatenate([policy_layers[-1][1], value_head[1]]))
        else:  # both torsos side by side as one wider network: half the numpy calls per step
            value_layers = [layer(f"value_torso_{index}") for index in range(depth)] + [layer("value_head")]
            fused = [_side_by_side(policy, value, first=index == 0)
                     for index, (policy, value) in enumerate(zip(policy_layers, value_layers))]
            self._torso, self._head = fused[:-1], fused[-1]
        self._log_std = weights["log_std"] if "log_std" in weights else None
        if spec.normalize_observations:
            normalizer = self.model.normalizer
            self._mean = weights[f"{normalizer.name}/mean"].astype(np.float32)
            self._scale = np.sqrt(weights[f"{normalizer.name}/variance"] + normalizer.epsilon).astype(np.float32)
            self._clip = np.float32(normalizer.clip)

    def snapshot(self) -> "NumpyPolicy":
        """This policy as of now, unchanged by later refreshes: evaluation plays it beside training.

        ``refresh`` replaces the arrays instead of writing into them, so a shallow copy is a snapshot.
        It samples from its own generator, never from the training policy's.
        """
        frozen = copy.copy(self)
        frozen.random = np.random.default_rng(0)
        return frozen

    def forward(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(policy head output, values) for a batch, as the Keras model computes them."""
        features = np.asarray(observations, np.float32).reshape(len(observations), -1)
        if self.spec.normalize_observations:
            features = np.clip((features - self._mean) / self._scale, -self._clip, self._clip)
        for kernel, bias in self._torso:
            features = self._activation(features @ kernel + bias)
        kernel, bias = self._head
        output = features @ kernel + bias
        return output[:, :-1], output[:, -1]

    def sample(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(actions, their log-probabilities, state values), drawn from the stochastic policy."""
        head, values = self.forward(observations)
        if self._log_std is None:
            log_probs = _log_softmax(head)
            actions = np.argmax(log_probs + self.random.gumbel(size=head.shape), axis=-1)  # Gumbel-max
            chosen = log_probs[np.arange(len(actions)), actions]
            return actions.astype(np.int32), chosen.astype(np.float32), values.astype(np.float32)
        std = np.exp(self._log_std)
        noise = self.random.standard_normal(head.shape).astype(np.float32)
        actions = head + std * noise
        log_probs = np.sum(-0.5 * np.square(noise) - self._log_std - 0.5 * LOG_2PI, axis=-1)
        return actions.astype(np.float32), log_probs.astype(np.float32), values.astype(np.float32)

    def mode(self, observations: np.ndarray) -> np.ndarray:
        """The deterministic action per observation: the most likely one, or the Gaussian mean."""
        head, _ = self.forward(observations)
        return np.argmax(head, axis=-1).astype(np.int32) if self._log_std is None else head.astype(np.float32)

    def value(self, observations: np.ndarray) -> np.ndarray:
        """V(observation) per observation."""
        return self.forward(observations)[1].astype(np.float32)

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """What to send to the env: continuous actions clipped to its bounds, discrete ones as they are."""
        return actions if self._low is None else np.clip(actions, self._low, self._high)

    def random_state(self) -> dict[str, Any]:
        """The sampler's state, for a resume checkpoint."""
        return self.random.bit_generator.state

    def set_random_state(self, state: dict[str, Any]) -> None:
        """Continue sampling where a checkpointed run left off."""
        self.random.bit_generator.state = state


def _side_by_side(policy: tuple[np.ndarray, np.ndarray], value: tuple[np.ndarray, np.ndarray],
                  first: bool) -> tuple[np.ndarray, np.ndarray]:
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
