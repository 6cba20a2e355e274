"""Engines: what advances training by some env steps (collect rollouts, update the learner).

The train loop asks an engine to ``advance`` up to the next step where it has something to do
(evaluate, log, checkpoint, stop) and gets back the steps taken, the update metrics and the
finished episodes (``base``). ``gymnasium`` steps a gymnasium vector env from Python, one rollout
and one compiled update per call; ``graph`` runs the env as TF ops and fuses many rollouts and
updates into one compiled call; ``ray_engine`` collects fragments on Ray actors (``runners/workers.py``)
and makes the same update on their stacked batch. A new engine is one module here and one line in ``make_engine``;
the loop, evaluator, best-policy store and logger do not change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from champion.agents.config import ConfigError, TrainConfig
from champion.envs.graph import GRAPH_ENV_IDS, has_graph_env
from champion.runners.engines.base import Advance, Engine, EngineFailed, EpisodeStats
from champion.runners.timing import Timings

__all__ = ["Advance", "Engine", "EngineFailed", "EpisodeStats", "choose_engine", "make_engine"]


def choose_engine(config: TrainConfig) -> str:
    """graph, gymnasium or ray for this config; ConfigError (one line) if graph is asked for and impossible, or ray
    is asked for and not installed."""
    if config.engine == "ray":
        from champion.runners.ray.cluster import require_ray

        require_ray()
        return "ray"
    reasons = []
    if not has_graph_env(config.env_id):
        reasons.append(f"{config.env_id} has no TF-op implementation (graph envs: {', '.join(GRAPH_ENV_IDS)})")
    if config.reward_scaling:
        reasons.append("reward_scaling is not implemented in the graph engine")
    if config.vectorization == "async":
        reasons.append("vectorization=async asks for gymnasium envs in worker processes")
    if config.frame_stack > 1:
        reasons.append("frame_stack is not implemented in the graph engine")
    if config.env_kwargs:  # the TF-op envs are gymnasium's defaults; the evaluations would play another env
        reasons.append(f"env_kwargs ({', '.join(sorted(config.env_kwargs))}) are not implemented in the graph engine")
    if config.engine == "graph" and reasons:
        raise ConfigError(f"engine=graph is not possible: {'; '.join(reasons)}; use engine=gymnasium or auto")
    if config.engine == "gymnasium" or reasons:
        return "gymnasium"
    return "graph"


def make_engine(kind: str, config: TrainConfig, model: Any, policy: Any, learner: Any,
                timings: Timings, run_dir: Path | None = None) -> Engine:
    """The engine of this ``kind`` (graph, gymnasium or ray); ``start`` it before the first ``advance``. A local
    Ray's logs go to ``run_dir/ray-logs`` if the run fails (its own folder is removed at the end)."""
    if kind == "ray":
        from champion.runners.engines.ray_engine import RayEngine  # Ray, only when asked for

        engine = RayEngine(config, policy, learner, timings)
        engine.connection.logs_on_failure = run_dir / "ray-logs" if run_dir is not None else None
        return engine
    if kind == "graph":
        from champion.runners.engines.graph import GraphEngine  # TF-op envs, only when asked for

        return GraphEngine(model, learner, config, timings)
    from champion.runners.engines.gymnasium import GymnasiumEngine

    return GymnasiumEngine(config, policy, learner, timings)
