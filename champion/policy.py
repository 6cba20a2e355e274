"""A saved policy in your own code: ``champion.load(path).act(observation)``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import gymnasium as gym
    import keras

    from champion.agents.numpy_policy import NumpyPolicy
    from champion.agents.spec import NetworkSpec


class Policy:
    """A run's saved policy (its crowned champion, training-time best or another entry), acting in numpy.

    ``act`` takes the observations of the env champion trained on, as ``make_env()`` gives them (Atari frames
    preprocessed and stacked as in training), one or a batch, and gives the env's actions: exactly what
    ``champion replay`` sends to the env."""

    def __init__(self, numpy_policy: NumpyPolicy, manifest: dict[str, Any], seed: int | None = None) -> None:
        self._policy = numpy_policy
        self._manifest = manifest
        self._random = np.random.default_rng(seed)

    @property
    def entry(self) -> Path:
        """The entry folder the weights came from (``RUN_DIR/best/NNNN-step-S`` or ``final-step-S``)."""
        return Path(self._manifest["entry"])

    @property
    def run_dir(self) -> Path:
        """The run folder this policy belongs to."""
        return self.entry.parent.parent

    @property
    def env_id(self) -> str:
        """The env it was trained on (a gymnasium id, or module:EnvName-v0)."""
        return str(self._manifest["env_id"])

    @property
    def manifest(self) -> dict[str, Any]:
        """The entry's manifest as recorded (env options, network, seeds, returns), with ``entry`` added."""
        return dict(self._manifest)

    @property
    def step(self) -> int:
        """The env step at which this policy was evaluated and saved."""
        return int(self._manifest["step"])

    @property
    def mean_return(self) -> float:
        """Its recorded mean return: over the held-out episodes when it is the crowned champion, else over the
        evaluation that saved it."""
        return float(self._manifest["mean_return"])

    @property
    def crowned(self) -> bool:
        """Whether this is the run's crowned champion (chosen on held-out episodes)."""
        return bool(self._manifest.get("crowned"))

    @property
    def spec(self) -> NetworkSpec:
        """The network's layout (observation leaves, action kind)."""
        return self._policy.spec

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """The weights by name, as saved in the entry's policy.npz."""
        return dict(self._policy.weights)

    def act(self, observation: Any, deterministic: bool = True) -> Any:
        """The action for one observation, or an array of actions for a batch (a leading batch axis on every
        leaf). Deterministic: the argmax or the Gaussian mean clipped to the bounds, as replay and evaluation act;
        else a sample from the policy's distribution."""
        from champion.envs.observations import flat_observations

        flat, batched = flat_observations(self._policy.spec, observation)
        if deterministic:
            actions = self._policy.mode(flat)
        else:
            actions = self._sample(flat)
        actions = self._policy.env_actions(actions)
        return actions if batched else actions[0]

    def _sample(self, flat: np.ndarray) -> np.ndarray:
        from champion.agents.numpy_policy import EnvNoise

        noise = EnvNoise(int(self._random.integers(2**31)), range(len(flat)))
        return self._policy.sample(flat, noise)[0]

    def make_env(self, render_mode: str | None = None) -> gym.Env:
        """The env this policy acts in, made as champion's evaluation makes it (same id, options and wrappers),
        with observations unflattened: the ones ``act`` takes."""
        from champion.envs.factory import EnvOptions, make_env

        options = EnvOptions.from_dict(self._manifest.get("env_options"))
        extra = {} if render_mode is None else {"render_mode": render_mode}  # some envs take no render_mode
        return make_env(self.env_id, options, flatten=False, **extra)

    def keras_model(self) -> keras.Model:
        """The same policy as a Keras model of built-in layers, and of the run's own torso's when it has one (what
        ``champion export --format keras`` writes):
        observations in (one input per leaf), out a dict with ``actions`` (what ``act`` gives), the distribution's
        parameters (``logits``, or ``mean`` and ``log_std``) and the ``value``."""
        from champion.agents.keras_policy import keras_policy

        return keras_policy(self._policy.spec, self._policy.weights)

    def __repr__(self) -> str:
        kind = "crowned champion" if self.crowned else "entry"
        return f"Policy({self.env_id}, {kind} {self.entry.name}, step {self.step:,}, mean return {self.mean_return:.2f})"
