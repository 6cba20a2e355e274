"""A2C: n-step (GAE) advantages and one gradient step per rollout, written as TF ops.

This module is the algorithm only. ``champion.agents.compile`` runs ``update_ops`` as one compiled call
(``CompiledLearner``), and the graph engine puts the same ops in its fused loop; neither is imported here.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from champion.agents import losses
from champion.agents.batch import RolloutBatch
from champion.agents.config import A2CConfig
from champion.agents.networks import ActorCritic
from champion.agents.distributions import make_distribution
from champion.agents.optimization import apply_clipped_gradients, batch_gae, gradient_keepers, merge_time_and_envs, scheduled


def make_optimizer(config: A2CConfig) -> keras.optimizers.Optimizer:
    """RMSprop (as in the A3C paper and SB3's default) or Adam.

    ``optimizer_epsilon`` means what it means in PyTorch (and so in SB3's A2C): it is added to
    the root, lr * g / (sqrt(v) + eps). Keras' RMSprop adds it under the root,
    lr * g / sqrt(v + eps), so it gets eps squared, which matches to within eps. The name is fixed
    (Keras would number each new optimizer), so that a traced update does not depend on how many
    optimizers the process made before.
    """
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=config.learning_rate, epsilon=config.optimizer_epsilon, name="adam")
    return keras.optimizers.RMSprop(
        learning_rate=config.learning_rate, rho=config.rmsprop_decay, epsilon=config.optimizer_epsilon**2,
        name="rmsprop")


METRIC_NAMES = ("policy_loss", "value_loss", "entropy", "grad_norm", "explained_variance", "learning_rate",
                "nonfinite_steps")
"""Every metric an update returns."""


class A2CLearner:
    """Synchronous advantage actor-critic's update of an ActorCritic from rollouts of a fixed shape, as TF ops
    (``update_ops``), and the state it keeps (optimizer, the gradients kept for histograms)."""

    metric_names = METRIC_NAMES

    def __init__(self, model: ActorCritic, config: A2CConfig, num_envs: int, seed: int = 0,
                 keep_gradients: bool = False) -> None:
        """``num_envs``: the rollouts' width, which the update's shapes are fixed to. ``keep_gradients``: keep the
        last applied gradients in ``kept_gradients`` (for histograms)."""
        self.kept_gradients = gradient_keepers(model, keep_gradients)
        self.model = model
        self.config = config
        self.distribution = make_distribution(model)
        self.optimizer = make_optimizer(config)
        self.optimizer.build(model.trainable_variables)
        self.num_envs = num_envs

    def update_ops(self, batch: RolloutBatch, progress_remaining: tf.Tensor) -> dict[str, tf.Tensor]:
        """One gradient step on the whole rollout as TF ops on a batch of tensors; its metrics. For a caller
        that compiles it, alone or in a larger graph."""
        config = self.config
        advantages, returns = batch_gae(batch, config.gamma, config.gae_lambda)
        observations, actions, old_values, advantages, returns = [merge_time_and_envs(tensor) for tensor in (
            batch.observations, batch.actions, batch.values, advantages, returns)]
        if config.normalize_advantages:
            advantages = losses.normalize(advantages)
        learning_rate = scheduled(config.learning_rate, config.learning_rate_schedule, progress_remaining)
        self.optimizer.learning_rate.assign(learning_rate)
        with tf.GradientTape() as tape:
            parameters, values = self.model(observations, training=True)
            log_probs = self.distribution.log_prob(parameters, actions)
            entropy = tf.reduce_mean(self.distribution.entropy(parameters))
            policy_loss = losses.policy_gradient_loss(log_probs, advantages)
            value_loss = losses.value_loss(values, old_values, returns)
            loss = policy_loss - config.entropy_coef * entropy + config.value_coef * value_loss
        grad_norm, skipped = apply_clipped_gradients(
            self.optimizer, tape, loss, self.model.trainable_variables, config.max_grad_norm, self.kept_gradients)
        self.model.update_normalizer(observations)  # after the step, which used the statistics it acted with
        return {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "grad_norm": grad_norm,
            "explained_variance": losses.explained_variance(old_values, returns),
            "learning_rate": learning_rate,
            "nonfinite_steps": skipped,
        }

    def checkpoint_objects(self) -> dict[str, object]:
        """The learner's TensorFlow state for a resume checkpoint (optimizer slots, iterations, RNG)."""
        return {"optimizer": self.optimizer}
