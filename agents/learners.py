"""Pick the learner for a config's algorithm."""

from __future__ import annotations

from champion.agents.a2c import A2CLearner
from champion.agents.config import TrainConfig
from champion.agents.networks import ActorCritic
from champion.agents.ppo import PPOLearner


def make_learner(model: ActorCritic, config: TrainConfig) -> PPOLearner | A2CLearner:
    """The PPO or A2C learner for this run, seeded from the run's seed (keeping gradients for histograms if asked)."""
    keep_gradients = config.histogram_every > 0
    if config.algo == "ppo":
        return PPOLearner(model, config.ppo, config.num_envs, seed=config.seed, keep_gradients=keep_gradients)
    return A2CLearner(model, config.a2c, config.num_envs, seed=config.seed, keep_gradients=keep_gradients)
