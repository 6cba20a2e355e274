"""Continuous actions, observation normalisation inside the model, and reward scaling."""

import math

import numpy as np
import pytest
import tensorflow as tf

import toy_envs
from champion.agents.distributions import DiagonalGaussian
from champion.agents.networks import ActorCritic, NetworkSpec, assign_weight_arrays, numpy_policy, weight_arrays
from champion.agents.normalization import RunningNormalization
from champion.agents.spec import box_leaf
from champion.envs.factory import make_vector_env
from champion.runners.configure import resolve_config
from champion.runners.replay import replay
from champion.runners.rollout import RewardScaler, VectorEnvCollector
from champion.runners.training import train


def test_normalization_matches_numpy_running_statistics():
    rng = np.random.default_rng(0)
    layer = RunningNormalization(3)
    layer(tf.zeros([1, 3]))  # builds the statistics, as the model's first call does
    batches = [rng.normal([5.0, -2.0, 100.0], [1.0, 0.1, 30.0], size=(size, 3)) for size in (7, 50, 1, 200)]
    for batch in batches:
        layer.update(tf.constant(batch, tf.float32))
    everything = np.concatenate(batches).astype(np.float32).astype(np.float64)
    # Merging batch by batch is exact, so the result equals one merge of all 258 rows with the
    # layer's prior (count 1e-4 at mean 0, variance 1).
    prior, count = 1e-4, len(everything)
    total = prior + count
    mean = everything.mean(axis=0) * count / total
    variance = (prior + everything.var(axis=0) * count + everything.mean(axis=0) ** 2 * prior * count / total) / total
    np.testing.assert_allclose(layer.mean.numpy(), mean, rtol=1e-9)
    np.testing.assert_allclose(layer.variance.numpy(), variance, rtol=1e-9)
    assert layer.count.numpy() == pytest.approx(total, rel=1e-12)
    probe = np.array([[6.0, -2.1, 40.0]], np.float32)
    expected = (probe - mean) / np.sqrt(variance + 1e-8)
    np.testing.assert_allclose(layer(tf.constant(probe)).numpy(), expected, rtol=1e-4)
    assert layer(tf.constant([[1e6, 0.0, 0.0]])).numpy()[0, 0] == 10.0  # clipped


def test_gaussian_log_prob_and_entropy_match_the_closed_form():
    mean, log_std = np.array([[0.5, -1.0]]), np.array([[0.0, math.log(2.0)]])
    action = np.array([[1.5, 0.0]])
    parameters = tf.constant(np.concatenate([mean, log_std], axis=1), tf.float32)
    distribution = DiagonalGaussian(2)
    std = np.exp(log_std)
    expected = np.sum(-0.5 * ((action - mean) / std) ** 2 - np.log(std * math.sqrt(2 * math.pi)))
    assert distribution.log_prob(parameters, tf.constant(action, tf.float32)).numpy()[0] == pytest.approx(expected, rel=1e-6)
    assert distribution.entropy(parameters).numpy()[0] == pytest.approx(np.sum(0.5 * np.log(2 * math.pi * math.e * std**2)), rel=1e-6)
    samples = distribution.sample(tf.tile(parameters, [20000, 1]), tf.random.Generator.from_seed(0)).numpy()
    np.testing.assert_allclose(samples.mean(axis=0), mean[0], atol=0.05)
    np.testing.assert_allclose(samples.std(axis=0), std[0], rtol=0.03)
    assert distribution.mode(parameters).numpy().tolist() == [[0.5, -1.0]]


def continuous_spec(**changes):
    values = dict(observation_leaves=(box_leaf((2,)),), action_kind="continuous", action_size=1, hidden_sizes=(16,),
                  action_low=(-1.0,), action_high=(1.0,), normalize_observations=True)
    values.update(changes)
    return NetworkSpec(**values)


def test_actions_sent_to_the_env_are_clipped_but_stored_unclipped():
    toy_envs.Target.received.clear()
    policy = numpy_policy(ActorCritic(continuous_spec(log_std_init=1.5)), seed=0)  # std 4.5: most samples out of bounds
    rollout = VectorEnvCollector(make_vector_env("toy_envs:Target-v0", 2), num_steps=16, seed=0).collect(policy)
    stored = rollout.batch.actions
    assert stored.shape == (16, 2, 1) and stored.dtype == np.float32
    assert np.abs(stored).max() > 1.0
    received = np.array(toy_envs.Target.received)
    assert received.shape == (32, 1) and received.min() >= -1.0 and received.max() <= 1.0
    np.testing.assert_allclose(np.sort(received.ravel()), np.sort(np.clip(stored, -1, 1).ravel()))


def test_save_and_load_gives_identical_actions_with_normalization_active():
    model = ActorCritic(continuous_spec(), seed=3)
    rng = np.random.default_rng(1)
    model.update_normalizer(tf.constant(rng.normal(400.0, 50.0, size=(64, 2)), tf.float32))
    copy = ActorCritic(continuous_spec(), seed=99)
    assign_weight_arrays(copy, weight_arrays(model))
    observations = rng.normal(400.0, 50.0, size=(100, 2)).astype(np.float32)
    assert np.array_equal(model(observations)[0].numpy(), copy(observations)[0].numpy())
    assert np.array_equal(numpy_policy(model).mode(observations), numpy_policy(copy).mode(observations))
    assert weight_arrays(copy)["observation_normalizer/count"] == pytest.approx(64 + 1e-4)


def merged_with_prior(values):
    """Variance of values merged with the scaler's prior (count 1e-4, mean 0, variance 1): exact."""
    prior, count = 1e-4, len(values)
    total = prior + count
    return (prior + np.var(values) * count + np.mean(values) ** 2 * prior * count / total) / total


def test_reward_scaler_divides_by_the_running_std_of_discounted_returns():
    scaler = RewardScaler(num_envs=2, gamma=0.5)
    first = scaler(np.array([2.0, 4.0]), np.array([False, True]))
    np.testing.assert_allclose(first, np.array([2.0, 4.0]) / np.sqrt(merged_with_prior([2.0, 4.0]) + 1e-8), rtol=1e-6)
    np.testing.assert_array_equal(scaler.returns, [2.0, 0.0])  # env 1's episode ended: its return restarts
    second = scaler(np.array([0.0, 3.0]), np.array([False, False]))
    # discounted returns now [2 * 0.5 + 0, 0 * 0.5 + 3] = [1, 3]; the scale uses all four seen so far
    assert scaler.variance == pytest.approx(merged_with_prior([2.0, 4.0, 1.0, 3.0]), rel=1e-9)
    np.testing.assert_allclose(second, np.array([0.0, 3.0]) / np.sqrt(scaler.variance + 1e-8), rtol=1e-6)


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_user_env_with_box_actions_trains_and_replays(tmp_path, algo):
    config, note = resolve_config("toy_envs:Target-v0", algo, {
        "total_steps": 3072, "num_envs": 4, "eval_every": 1024, "eval_episodes": 3, "reward_scaling": True,
        "network.normalize_observations": True, "ppo.num_steps": 64, "ppo.minibatch_size": 64,
        "a2c.learning_rate": 3e-3, "ppo.learning_rate": 3e-3, "results_dir": str(tmp_path), "run_name": "box"})
    assert "no preset" in note
    result = train(config, progress=False)
    first_evaluation = result.evaluations[0][1]
    assert result.best_mean_return > -4.0 and result.best_mean_return >= first_evaluation  # random play scores about -4
    replayed = replay(result.run_dir)
    assert replayed.result.mean_return == replayed.recorded_mean_return == result.best_mean_return


def test_reward_scaler_on_a_whole_batch_equals_scaling_each_step_as_it_comes():
    from champion.agents.batch import RolloutBatch
    from champion.runners.rollout import RewardScaler

    rng = np.random.default_rng(0)
    rewards = rng.normal(5.0, 3.0, size=(20, 3)).astype(np.float32)
    terminated = (rng.random((20, 3)) < 0.1).astype(np.float32)
    truncated = (rng.random((20, 3)) < 0.05).astype(np.float32)
    step_by_step = RewardScaler(3, 0.99)
    expected = np.stack([step_by_step(rewards[step], (terminated[step] + truncated[step]) > 0) for step in range(20)])
    zeros = np.zeros((20, 3), np.float32)
    batch = RolloutBatch(zeros, zeros, zeros, zeros, rewards, terminated, truncated, zeros, np.zeros(3, np.float32))
    whole = RewardScaler(3, 0.99)
    assert np.array_equal(whole.scale(batch).rewards, expected)
    assert whole.count == step_by_step.count and np.array_equal(whole.returns, step_by_step.returns)
