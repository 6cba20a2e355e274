"""Build the learner a run trains with: PPO's or A2C's update math, wrapped with its update compiled."""

from __future__ import annotations

from champion.agents.a2c import A2CLearner
from champion.agents.compile.update import CompiledLearner
from champion.agents.config import TrainConfig
from champion.agents.networks import ActorCritic
from champion.agents.ppo import PPOLearner


def make_learner(model: ActorCritic, config: TrainConfig) -> CompiledLearner:
    """The PPO or A2C learner for this run, seeded from the run's seed (keeping gradients for histograms if asked),
    with its update compiled (``CompiledLearner``)."""
    return CompiledLearner(algorithm_learner(model, config))


def algorithm_learner(model: ActorCritic, config: TrainConfig) -> PPOLearner | A2CLearner:
    """The config's algorithm as a learner of TF ops (``update_ops``), not compiled."""
    keep_gradients = config.histogram_every > 0
    if config.algo == "ppo":
        return PPOLearner(model, config.ppo, config.num_envs, seed=config.seed, keep_gradients=keep_gradients)
    return A2CLearner(model, config.a2c, config.num_envs, seed=config.seed, keep_gradients=keep_gradients)
