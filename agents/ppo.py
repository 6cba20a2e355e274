"""PPO: clipped surrogate, several epochs over shuffled minibatches, written as TF ops.

This module is the algorithm only. ``champion.agents.compile`` runs ``update_ops`` as one compiled call
(``CompiledLearner``), and the graph engine puts the same ops in its fused loop; neither is imported here.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from champion.agents import losses
from champion.agents.batch import RolloutBatch
from champion.agents.config import PPOConfig
from champion.agents.networks import ActorCritic
from champion.agents.distributions import make_distribution
from champion.agents.optimization import apply_clipped_gradients, batch_gae, gradient_keepers, merge_time_and_envs, scheduled

METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm")
"""Averaged over the gradient steps (in this order, as the minibatch step stacks them)."""
METRIC_NAMES = (*METRICS, "nonfinite_steps", "explained_variance", "learning_rate", "clip_range")
"""Every metric an update returns."""


class PPOLearner:
    """PPO's update of an ActorCritic from rollouts of a fixed shape, as TF ops (``update_ops``), and the state
    it keeps (optimizer, shuffling generator, the gradients kept for histograms)."""

    metric_names = METRIC_NAMES

    def __init__(self, model: ActorCritic, config: PPOConfig, num_envs: int, seed: int = 0,
                 keep_gradients: bool = False) -> None:
        """``num_envs``: the rollouts' width, which the update's shapes are fixed to. ``keep_gradients``: keep the
        last applied gradients in ``kept_gradients`` (for histograms)."""
        self.kept_gradients = gradient_keepers(model, keep_gradients)
        self.model = model
        self.config = config
        self.distribution = make_distribution(model)
        self.optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, epsilon=config.adam_epsilon,
                                                name="adam")  # fixed, as a2c.make_optimizer says
        self.optimizer.build(model.trainable_variables)
        self.generator = tf.random.Generator.from_seed(seed + 1)
        self.num_envs = num_envs
        self.rollout_size = config.num_steps * num_envs
        self.num_minibatches = self.rollout_size // config.minibatch_size

    def update_ops(self, batch: RolloutBatch, progress_remaining: tf.Tensor) -> dict[str, tf.Tensor]:
        """One PPO update (epochs x minibatches gradient steps) as TF ops on a batch of tensors; the metrics
        averaged over the steps. For a caller that compiles it, alone or in a larger graph."""
        config = self.config
        advantages, returns = batch_gae(batch, config.gamma, config.gae_lambda)
        data = [merge_time_and_envs(tensor) for tensor in (
            batch.observations, batch.actions, batch.log_probs, batch.values, advantages, returns)]
        learning_rate = scheduled(config.learning_rate, config.learning_rate_schedule, progress_remaining)
        clip_range = scheduled(config.clip_range, config.clip_range_schedule, progress_remaining)
        self.optimizer.learning_rate.assign(learning_rate)
        # One shuffle per epoch. With one minibatch per epoch it would only reorder the batch's sums: skipped.
        orders = (tf.argsort(self.generator.uniform([config.epochs, self.rollout_size]), axis=-1)
                  if self.num_minibatches > 1 else None)

        def gradient_step(step: tf.Tensor, totals: tf.Tensor, skipped: tf.Tensor) -> tuple[tf.Tensor, ...]:
            minibatch = data
            if orders is not None:
                epoch, index = step // self.num_minibatches, step % self.num_minibatches
                indices = tf.slice(orders, [epoch, index * config.minibatch_size], [1, config.minibatch_size])[0]
                minibatch = [tf.gather(tensor, indices) for tensor in data]
            stats, step_skipped = self._minibatch_step(minibatch, clip_range)
            return step + 1, totals + tf.where(step_skipped > 0, tf.zeros_like(stats), stats), skipped + step_skipped

        total_steps = config.epochs * self.num_minibatches
        _, totals, skipped = tf.while_loop(lambda step, *_: step < total_steps, gradient_step,
                                           (tf.constant(0), tf.zeros([len(METRICS)]), tf.constant(0.0)))
        applied = float(total_steps) - skipped
        means = tf.where(applied > 0, totals / tf.maximum(applied, 1.0), tf.fill([len(METRICS)], float("nan")))
        metrics = {name: means[index] for index, name in enumerate(METRICS)}
        metrics["nonfinite_steps"] = skipped
        metrics["explained_variance"] = losses.explained_variance(data[3], data[5])
        metrics["learning_rate"] = learning_rate
        metrics["clip_range"] = clip_range
        # After the epochs: this batch was collected, and is trained on, with the old statistics.
        self.model.update_normalizer(data[0])
        return metrics

    def _minibatch_step(self, minibatch: list[tf.Tensor], clip_range: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        observations, actions, old_log_probs, old_values, advantages, returns = minibatch
        config = self.config
        if config.normalize_advantages:
            advantages = losses.normalize(advantages)
        with tf.GradientTape() as tape:
            parameters, values = self.model(observations, training=True)
            log_probs = self.distribution.log_prob(parameters, actions)
            entropy = tf.reduce_mean(self.distribution.entropy(parameters))
            policy_loss, clip_fraction, approx_kl = losses.ppo_policy_loss(log_probs, old_log_probs, advantages, clip_range)
            value_loss = losses.value_loss(values, old_values, returns, config.value_clip_range)
            loss = policy_loss - config.entropy_coef * entropy + config.value_coef * value_loss
        grad_norm, skipped = apply_clipped_gradients(
            self.optimizer, tape, loss, self.model.trainable_variables, config.max_grad_norm, self.kept_gradients)
        return tf.stack([policy_loss, value_loss, entropy, approx_kl, clip_fraction, grad_norm]), skipped

    def checkpoint_objects(self) -> dict[str, object]:
        """The learner's TensorFlow state for a resume checkpoint (optimizer slots, iterations, RNG)."""
        return {"optimizer": self.optimizer, "generator": self.generator}
