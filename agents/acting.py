"""Which policy acts for a network: ``NumpyPolicy`` for champion's own layers, ``KerasActingPolicy`` for a torso of
the user's (``champion.agents.keras_acting``), with one interface. Importing this imports no TensorFlow: a network of
champion's layers acts without it, as before."""

from __future__ import annotations

from typing import Any

import numpy as np

from champion.agents.numpy_policy import NumpyPolicy
from champion.agents.spec import NetworkSpec

__all__ = ["acting_policy", "model_policy"]


def acting_policy(spec: NetworkSpec, weights: dict[str, np.ndarray], seed: int = 0) -> NumpyPolicy:
    """A policy acting with saved ``weights`` of the network of ``spec`` (evaluation, the crown, replay, GIFs).
    ValueError when the weights do not fit a torso of the user's as its function builds it now."""
    if not spec.user_torso:
        return NumpyPolicy(spec, seed=seed, weights=weights)
    from champion.agents.keras_acting import keras_acting_policy

    return keras_acting_policy(spec, weights, seed)


def model_policy(model: Any, seed: int = 0) -> NumpyPolicy:
    """A policy acting with an ActorCritic's own weights, read again by its ``refresh`` (a run's training policy,
    and replay's)."""
    if not model.spec.user_torso:
        from champion.agents.networks import numpy_policy

        return numpy_policy(model, seed)
    from champion.agents.keras_acting import model_acting_policy

    return model_acting_policy(model, seed)
