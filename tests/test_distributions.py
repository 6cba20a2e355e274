"""Categorical distribution against numpy's closed forms."""

import numpy as np
import pytest
import tensorflow as tf

from champion.agents.distributions import Categorical


def test_log_prob_entropy_and_mode_match_numpy():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    distribution = Categorical(3)
    log_prob = distribution.log_prob(tf.constant(logits), tf.constant([2, 0])).numpy()
    np.testing.assert_allclose(log_prob, np.log([probabilities[0, 2], probabilities[1, 0]]), rtol=1e-5)
    entropy = distribution.entropy(tf.constant(logits)).numpy()
    np.testing.assert_allclose(entropy, -(probabilities * np.log(probabilities)).sum(axis=1), rtol=1e-5)
    assert distribution.mode(tf.constant(logits)).numpy().tolist() == [1, 2]


def test_sampling_frequencies_follow_softmax_and_are_reproducible():
    logits = tf.constant([[0.0, np.log(3.0)]] * 20000, tf.float32)  # p = [0.25, 0.75]
    distribution = Categorical(2)
    first = distribution.sample(logits, tf.random.Generator.from_seed(7)).numpy()
    second = distribution.sample(logits, tf.random.Generator.from_seed(7)).numpy()
    assert first.mean() == pytest.approx(0.75, abs=0.015)
    assert np.array_equal(first, second)
