"""CartPole-v1 written in TensorFlow ops, so that a rollout can run inside a compiled graph.

The physics are gymnasium's CartPoleEnv line for line (float64 state, Euler integration,
float32 observations, reward 1 on every step including the one that ends the episode,
termination at |x| > 2.4 or |theta| > 12 degrees, truncation after 500 steps). Finished envs
restart in the step that ends them, from a uniform draw in [-0.05, 0.05] as gymnasium's reset
draws, so every step is a real transition and ``final_observations`` holds what to bootstrap a
truncation from. The state is plain tensors (``CartPoleState``): the engine carries it through
its loops and keeps it in variables between calls.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

from champion.envs.graph.base import Transition

GRAVITY, CART_MASS, POLE_MASS, HALF_LENGTH, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = CART_MASS + POLE_MASS
POLE_MASS_LENGTH = POLE_MASS * HALF_LENGTH
X_THRESHOLD, THETA_THRESHOLD = 2.4, 12 * 2 * math.pi / 360
MAX_EPISODE_STEPS = 500
START_BOUND = 0.05


class CartPoleState(NamedTuple):
    """The state of ``num_envs`` CartPoles."""

    physics: tf.Tensor
    """[N, 4] float64: cart position, cart velocity, pole angle, pole angular velocity."""
    elapsed: tf.Tensor
    """[N] int32: steps taken in the current episode."""


class GraphCartPole:
    """``num_envs`` CartPole-v1 environments as TF ops, sampling start states from ``generator``."""

    env_id = "CartPole-v1"
    observation_shape = (4,)
    action_kind = "discrete"

    def __init__(self, num_envs: int, generator: tf.random.Generator) -> None:
        self.num_envs = num_envs
        self.generator = generator

    def reset(self) -> CartPoleState:
        """Fresh episodes in every env."""
        return CartPoleState(self._start_states(), tf.zeros([self.num_envs], tf.int32))

    def observe(self, state: CartPoleState) -> tf.Tensor:
        """[N, 4] float32 observations of ``state``."""
        return tf.cast(state.physics, tf.float32)

    def step(self, state: CartPoleState, actions: tf.Tensor) -> tuple[CartPoleState, Transition]:
        """Push each cart left (0) or right (1); restart the envs whose episode ended."""
        physics = _physics_step(state.physics, actions)
        elapsed = state.elapsed + 1
        x, theta = physics[:, 0], physics[:, 2]
        # gymnasium's own test
        terminated = (x < -X_THRESHOLD) | (x > X_THRESHOLD) | (theta < -THETA_THRESHOLD) | (theta > THETA_THRESHOLD)
        truncated = elapsed >= MAX_EPISODE_STEPS
        done = terminated | truncated
        next_physics = tf.where(done[:, tf.newaxis], self._start_states(), physics)
        next_state = CartPoleState(next_physics, tf.where(done, tf.zeros_like(elapsed), elapsed))
        transition = Transition(observations=tf.cast(next_physics, tf.float32), rewards=tf.ones([self.num_envs]),
                                terminated=terminated, truncated=truncated,
                                final_observations=tf.cast(physics, tf.float32))
        return next_state, transition

    def _start_states(self) -> tf.Tensor:
        return self.generator.uniform([self.num_envs, 4], -START_BOUND, START_BOUND, dtype=tf.float64)


def _physics_step(physics: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
    """One Euler step of gymnasium's CartPole equations for every env."""
    x, x_dot, theta, theta_dot = tf.unstack(physics, axis=1)
    force = tf.where(tf.equal(actions, 1), tf.constant(FORCE, tf.float64), tf.constant(-FORCE, tf.float64))
    cos_theta, sin_theta = tf.cos(theta), tf.sin(theta)
    temp = (force + POLE_MASS_LENGTH * tf.square(theta_dot) * sin_theta) / TOTAL_MASS
    theta_acc = (GRAVITY * sin_theta - cos_theta * temp) / (
        HALF_LENGTH * (4.0 / 3.0 - POLE_MASS * tf.square(cos_theta) / TOTAL_MASS))
    x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos_theta / TOTAL_MASS
    return tf.stack([x + TAU * x_dot, x_dot + TAU * x_acc, theta + TAU * theta_dot, theta_dot + TAU * theta_acc], axis=1)
