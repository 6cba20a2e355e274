"""Environments written in TensorFlow ops, for the in-graph engine (``runners/engines/graph.py``).

Which envs have one is known without importing TensorFlow, so a command can refuse ``engine=graph``
before it starts TensorFlow.
"""

from __future__ import annotations

from typing import Any

GRAPH_ENV_IDS = ("CartPole-v1",)
"""Env ids with a TF-op implementation."""


def has_graph_env(env_id: str) -> bool:
    """Whether ``env_id`` can run inside the compiled graph."""
    return env_id in GRAPH_ENV_IDS


def make_graph_env(env_id: str, num_envs: int, generator: Any) -> Any:
    """The TF-op implementation of ``env_id`` (see ``has_graph_env``) for ``num_envs`` envs drawing from the
    ``tf.random.Generator`` ``generator``."""
    from champion.envs.graph.cartpole import GraphCartPole

    builders = {"CartPole-v1": GraphCartPole}
    return builders[env_id](num_envs, generator)
