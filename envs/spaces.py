"""From a gymnasium space to what the network needs (``champion.agents.spec``), and back to the env's actions.

Observations are flattened with gymnasium's own ``spaces.flatten`` (so Dict, Tuple, Discrete and
MultiDiscrete leaves land where ``spaces.flatten`` puts them); ``observation_leaves`` walks the space in
that same order and says what each block is. Supported actions: Discrete, MultiDiscrete, MultiBinary and
Box of any shape; a Dict or Tuple action space is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from champion.errors import ChampionError
from champion.agents.spec import ObservationLeaf
SUPPORTED_OBSERVATION_SPACES = "Box (any shape; uint8 images go through a CNN), Discrete, MultiDiscrete, MultiBinary, and Dict or Tuple of these"
SUPPORTED_ACTION_SPACES = "Discrete, MultiDiscrete, MultiBinary, Box (any shape)"


class SpaceError(ChampionError, ValueError):
    """A space champion cannot train on; the message says which and what is supported."""


def observation_leaves(space: gym.Space, image_layout: str = "auto") -> tuple[ObservationLeaf, ...]:
    """The leaves of ``space`` in ``gym.spaces.flatten``'s order. ``image_layout`` says how a uint8 Box is
    read: ``auto`` (an image when it is HxW, HxWxC or CxHxW with 1 to 4 channels), a forced layout, or
    ``none`` (never an image)."""
    return tuple(_leaves(space, (), image_layout))


def _leaves(space: gym.Space, path: tuple[str, ...], image_layout: str) -> list[ObservationLeaf]:
    if isinstance(space, gym.spaces.Dict):
        return [leaf for key, child in space.spaces.items() for leaf in _leaves(child, (*path, str(key)), image_layout)]
    if isinstance(space, gym.spaces.Tuple):
        return [leaf for index, child in enumerate(space.spaces) for leaf in _leaves(child, (*path, str(index)), image_layout)]
    if isinstance(space, gym.spaces.Discrete):
        return [ObservationLeaf(path, "onehot", (), "int64", categories=(int(space.n),), start=(int(space.start),))]
    if isinstance(space, gym.spaces.MultiDiscrete):
        nvec, start = np.asarray(space.nvec).reshape(-1), np.asarray(space.start).reshape(-1)
        return [ObservationLeaf(path, "onehot", tuple(int(size) for size in space.shape), "int64",
                                categories=tuple(int(value) for value in nvec), start=tuple(int(value) for value in start))]
    if isinstance(space, gym.spaces.MultiBinary):
        return [ObservationLeaf(path, "binary", tuple(int(size) for size in space.shape), "int8")]
    if isinstance(space, gym.spaces.Box):
        return [_box_leaf(space, path, image_layout)]
    where = f" at {'/'.join(path)}" if path else ""
    raise SpaceError(f"observation space {space}{where} is not supported; supported: {SUPPORTED_OBSERVATION_SPACES}")


def _box_leaf(space: gym.spaces.Box, path: tuple[str, ...], image_layout: str) -> ObservationLeaf:
    shape, dtype = tuple(int(size) for size in space.shape), str(space.dtype)
    layout = _image_layout(shape, dtype, image_layout)
    if layout is None:
        return ObservationLeaf(path, "box", shape, dtype)
    return ObservationLeaf(path, "image", shape, dtype, channels_first=layout == "channels_first")


def _image_layout(shape: tuple[int, ...], dtype: str, image_layout: str) -> str | None:
    """``channels_last`` or ``channels_first`` if a Box of this shape and dtype is read as an image, else None."""
    if image_layout == "none" or len(shape) not in (2, 3):
        return None
    if image_layout != "auto":
        return image_layout
    if dtype != "uint8":
        return None
    if len(shape) == 2 or 1 <= shape[-1] <= 4:
        return "channels_last"
    return "channels_first" if 1 <= shape[0] <= 4 else None


def needs_flattening(space: gym.Space) -> bool:
    """Whether observations must be flattened on their way to the model (anything but a Box)."""
    return not isinstance(space, gym.spaces.Box)


@dataclass(frozen=True)
class ActionLayout:
    """The action space as the network's head sees it (the fields of ``NetworkSpec`` named action_*)."""

    kind: str
    size: int
    nvec: tuple[int, ...] = ()
    start: tuple[int, ...] = ()
    env_shape: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()


def action_layout(space: gym.Space) -> ActionLayout:
    """How the policy head covers ``space``; SpaceError (one line) for an unsupported one."""
    shape = tuple(int(size) for size in space.shape) if space.shape is not None else ()
    if isinstance(space, gym.spaces.Discrete):
        return ActionLayout("discrete", int(space.n), start=(int(space.start),))
    if isinstance(space, gym.spaces.MultiDiscrete):
        nvec = tuple(int(value) for value in np.asarray(space.nvec).reshape(-1))
        start = tuple(int(value) for value in np.asarray(space.start).reshape(-1))
        return ActionLayout("multidiscrete", sum(nvec), nvec=nvec, start=start, env_shape=shape)
    if isinstance(space, gym.spaces.MultiBinary):
        return ActionLayout("multibinary", math.prod(shape), env_shape=shape)
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return ActionLayout("continuous", math.prod(shape), env_shape=shape,
                            low=tuple(float(value) for value in space.low.reshape(-1)),
                            high=tuple(float(value) for value in space.high.reshape(-1)))
    raise SpaceError(f"action space {space} is not supported; supported: {SUPPORTED_ACTION_SPACES}")
