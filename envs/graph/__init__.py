"""Environments written in TensorFlow ops, for the in-graph engine (``runners/graph_engine.py``)."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from envs.graph.base import GraphEnv
from envs.graph.cartpole import GraphCartPole

GRAPH_ENVS: dict[str, Callable[[int, tf.random.Generator], GraphEnv]] = {"CartPole-v1": GraphCartPole}
"""Env ids with a TF-op implementation, and how to build it from (num_envs, generator)."""
GRAPH_ENV_IDS = tuple(GRAPH_ENVS)


def has_graph_env(env_id: str) -> bool:
    """Whether ``env_id`` can run inside the compiled graph."""
    return env_id in GRAPH_ENVS


def make_graph_env(env_id: str, num_envs: int, generator: tf.random.Generator) -> GraphEnv:
    """The TF-op implementation of ``env_id`` (see ``has_graph_env``)."""
    return GRAPH_ENVS[env_id](num_envs, generator)
