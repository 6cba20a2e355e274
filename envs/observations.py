"""From an env's own observation (a Dict of leaves, a Discrete index, an image) to the flat vector the network
takes, in numpy: what gymnasium's ``spaces.flatten`` gives the training and evaluation envs, built from the
saved network's observation leaves alone, so that a saved policy acts without making its env."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from champion.agents.spec import NetworkSpec, ObservationLeaf
from champion.errors import UsageError


def flat_observations(spec: NetworkSpec, observation: Any) -> tuple[np.ndarray, bool]:
    """(the flat observation vectors, one row per observation; whether ``observation`` was a batch). A batch has
    one leading axis more than the env's observation on every leaf."""
    leaves = spec.observation_leaves
    values = [_array(_leaf_value(observation, leaf), leaf) for leaf in leaves]
    batched = values[0].ndim == _rank(leaves[0]) + 1
    count = len(values[0]) if batched else 1
    parts = []
    for leaf, value in zip(leaves, values):
        if value.ndim != _rank(leaf) + batched or value.shape[batched:] != _env_shape(leaf) or (
                batched and len(value) != count):
            want = _env_shape(leaf) if not batched else (count, *_env_shape(leaf))
            raise UsageError(f"observation {_where(leaf)}has shape {value.shape}, but the policy takes {want}"
                             f"{' (one observation)' if not batched else ' (a batch)'} as its env gives them")
        value = value.reshape(count, *_env_shape(leaf))
        if leaf.kind == "onehot":
            parts.append(_one_hot(leaf, value))
            continue
        if leaf.kind == "binary" and not np.isin(value, (0, 1)).all():
            raise UsageError(f"observation {_where(leaf)}must hold only 0 and 1 (a MultiBinary space), got "
                             f"{np.unique(value)[:5].tolist()}")
        parts.append(value.reshape(count, -1).astype(np.float32))
    return (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)), batched


def _leaf_value(observation: Any, leaf: ObservationLeaf) -> Any:
    value = observation
    for key in leaf.path:
        if isinstance(value, Mapping):
            if key not in value:
                raise UsageError(f"observation has no {key!r} (the policy takes {_keys_text(leaf)})")
            value = value[key]
        elif isinstance(value, tuple) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise UsageError(f"observation has no {key!r}: got a {type(value).__name__} where the env's space has "
                             "a Dict or a Tuple (a Tuple observation is a tuple; a batch of them is a tuple of "
                             "batched leaves, as a vector env gives it)")
    return value


def _array(value: Any, leaf: ObservationLeaf) -> np.ndarray:
    """A leaf's value as a numeric array; UsageError for anything else (strings, ragged lists)."""
    try:
        array = np.asarray(value)
    except ValueError as error:
        raise UsageError(f"observation {_where(leaf)}is not an array of numbers ({error})") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise UsageError(f"observation {_where(leaf)}must be numbers, got an array of {array.dtype}")
    return array


def _one_hot(leaf: ObservationLeaf, value: np.ndarray) -> np.ndarray:
    """Each component's value as a one-hot block of its ``categories``, as gymnasium flattens Discrete and
    MultiDiscrete spaces."""
    count = len(value)
    given = value.reshape(count, len(leaf.categories))
    if value.dtype == np.bool_ or not np.array_equal(given, np.floor(given)):
        raise UsageError(f"observation {_where(leaf)}must be whole numbers (a Discrete or MultiDiscrete space), got "
                         f"{given.reshape(-1)[:5].tolist()}")
    indices = given.astype(np.int64) - np.asarray(leaf.start, np.int64)
    blocks = []
    for component, size in enumerate(leaf.categories):
        column = indices[:, component]
        outside = (column < 0) | (column >= size)
        if np.any(outside):
            raise UsageError(f"observation {_where(leaf)}holds {given[outside, component].tolist()[:5]}, outside the "
                             f"env's {leaf.start[component]}..{leaf.start[component] + size - 1}")
        blocks.append(np.eye(size, dtype=np.float32)[column])
    return np.concatenate(blocks, axis=1)


def _env_shape(leaf: ObservationLeaf) -> tuple[int, ...]:
    return tuple(leaf.shape)


def _rank(leaf: ObservationLeaf) -> int:
    return len(leaf.shape)


def _where(leaf: ObservationLeaf) -> str:
    return f"{'/'.join(leaf.path)} " if leaf.path else ""


def _keys_text(leaf: ObservationLeaf) -> str:
    return "/".join(leaf.path)
