"""A resume checkpoint's non-TensorFlow state as data, never as a pickle: JSON for the structure, npz for arrays.

A pickle can run any code when it is read, and run folders are shared, so a checkpoint holds nothing but plain
values: None, bools, numbers, strings, lists, tuples, dicts, numpy arrays and scalars, bytes, numpy random
generators, and the few classes named in ``CLASSES``, rebuilt from their fields. Decoding builds nothing else.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np

from champion.errors import ChampionError
from champion.agents.numpy_policy import EnvNoise
from champion.envs.env_state import JournalState, Snapshot, VectorEnvState
from champion.runners.store.atomic_files import read_arrays
from champion.runners.rollout import RewardScaler

NUMBER = (int, float, np.integer, np.floating)
CLASSES: dict[str, tuple[type, dict[str, tuple[type, ...]]]] = {
    "JournalState": (JournalState, {"base_seed": (int,), "episodes": (int,), "segments": (tuple,),
                                    "observation": (np.ndarray, dict, tuple, type(None)), "reward_sum": NUMBER}),
    "Snapshot": (Snapshot, {"state": (object,)}),
    "VectorEnvState": (VectorEnvState, {"journals": (tuple,), "episode_returns": (np.ndarray,),
                                        "episode_lengths": (np.ndarray,)}),
    "EnvNoise": (EnvNoise, {"env_indices": (list,), "generators": (list,), "_kind": (tuple, type(None)),
                            "_block": (np.ndarray,), "_position": (int,)}),
    "RewardScaler": (RewardScaler, {"gamma": NUMBER, "epsilon": NUMBER, "returns": (np.ndarray,), "mean": NUMBER,
                                    "variance": NUMBER, "count": NUMBER}),
}
"""The classes a checkpoint may hold, by name: the attributes each is rebuilt from, and the kinds each may be."""
BIT_GENERATORS = {name: getattr(np.random, name) for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")}


class StateFormatError(ChampionError, ValueError):
    """A state file that is not what ``encode_state`` writes; the message says what was found."""


def encode_state(value: Any) -> tuple[bytes, bytes]:
    """``value`` as (JSON bytes of its structure, npz bytes of its arrays)."""
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(value, arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return json.dumps(tree, separators=(",", ":")).encode(), buffer.getvalue()


def decode_state(structure: bytes, arrays_data: bytes) -> Any:
    """Inverse of ``encode_state``; StateFormatError for anything it would not have written."""
    try:
        arrays = read_arrays(arrays_data)
        tree = json.loads(structure)
        return _decode(tree, arrays)
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError, AttributeError) as error:
        raise StateFormatError(f"the state is not one champion wrote ({type(error).__name__}: {error})") from None


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The JSON structure of ``value``; exact types only (a namedtuple or an OrderedDict would come back as
    something else, so it is refused rather than changed)."""
    kind = type(value)
    if value is None or kind in (bool, str, int, float):
        return value
    if kind in (np.ndarray, bytes) or isinstance(value, np.generic):
        if getattr(value, "dtype", None) == object:
            raise TypeError("a resume checkpoint cannot hold an array of Python objects")
        key = f"a{len(arrays)}"
        arrays[key] = np.frombuffer(value, np.uint8) if kind is bytes else np.asarray(value)
        return {"bytes" if kind is bytes else "array" if kind is np.ndarray else "scalar": key}
    if kind is list:
        return [_encode(item, arrays) for item in value]
    if kind is tuple:
        return {"tuple": [_encode(item, arrays) for item in value]}
    if kind is dict:
        return {"items": [[_encode(key, arrays), _encode(item, arrays)] for key, item in value.items()]}
    if kind is np.random.Generator:
        return {"generator": _encode(value.bit_generator.state, arrays)}
    name = kind.__name__
    if name in CLASSES and kind is CLASSES[name][0]:
        fields = CLASSES[name][1]
        present = set(vars(value)) if not dataclasses.is_dataclass(value) else set(fields)
        if present != set(fields):
            raise TypeError(f"{name} has the attributes {sorted(present)}, state_codec.CLASSES lists {sorted(fields)}")
        return {"object": name, "fields": {field: _encode(getattr(value, field), arrays) for field in fields}}
    raise TypeError(f"a resume checkpoint cannot hold a {kind.__qualname__}; add it to state_codec.CLASSES")


def _decode(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    if isinstance(tree, list):
        return [_decode(item, arrays) for item in tree]
    if not isinstance(tree, dict) or len(tree) not in (1, 2):
        raise ValueError(f"unexpected {type(tree).__name__} in the structure")
    kind = next(iter(tree))
    if kind in ("array", "scalar", "bytes"):
        array = arrays[tree[kind]]
        return array.tobytes() if kind == "bytes" else array[()] if kind == "scalar" else array
    if kind == "tuple":
        return tuple(_decode(item, arrays) for item in _list(tree["tuple"]))
    if kind == "items":
        return {_hashable(_decode(key, arrays)): _decode(item, arrays) for key, item in map(_pair, _list(tree["items"]))}
    if kind == "generator":
        state = _decode(tree["generator"], arrays)
        generator = np.random.Generator(BIT_GENERATORS[state["bit_generator"]]())
        generator.bit_generator.state = state
        return generator
    if kind == "object":
        return _build(tree["object"], tree["fields"], arrays)
    raise ValueError(f"unexpected tag {kind!r} in the structure")


def _build(name: str, fields: Any, arrays: dict[str, np.ndarray]) -> Any:
    """One of ``CLASSES`` from exactly its recorded attributes."""
    cls, kinds = CLASSES[name]
    if not isinstance(fields, dict) or set(fields) != set(kinds):
        raise ValueError(f"{name} needs the fields {', '.join(kinds)}")
    values = {field: _decode(fields[field], arrays) for field in kinds}
    wrong = [field for field, value in values.items() if not isinstance(value, kinds[field]) or isinstance(value, bool)]
    if wrong:
        raise ValueError(f"{name}.{wrong[0]} is a {type(values[wrong[0]]).__name__}")
    if name == "EnvNoise" and not all(isinstance(item, np.random.Generator) for item in values["generators"]):
        raise ValueError("EnvNoise.generators holds something other than random generators")
    if dataclasses.is_dataclass(cls):
        return cls(**values)
    built = cls.__new__(cls)
    built.__dict__.update(values)
    return built


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError("expected a list in the structure")
    return value


def _pair(value: Any) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("expected a key and a value in the structure")
    return value[0], value[1]


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict, np.ndarray)):
        raise ValueError("a dict key in the structure is not a plain value")
    return key
