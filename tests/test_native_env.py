"""gymnasium's vectorised CartPole, reset in the same step: the same physics, every step a real transition."""

import pickle

import gymnasium as gym
import numpy as np

from envs.factory import make_vector_env
from envs.native import SameStepCartPole, has_native_vector_env


def test_auto_vectorization_picks_the_native_env_only_where_there_is_one():
    assert has_native_vector_env("CartPole-v1") and not has_native_vector_env("Acrobot-v1")
    assert isinstance(make_vector_env("CartPole-v1", 2).env, SameStepCartPole)
    assert isinstance(make_vector_env("CartPole-v1", 2, "sync").env, gym.vector.SyncVectorEnv)
    assert isinstance(make_vector_env("Acrobot-v1", 2).env, gym.vector.SyncVectorEnv)


def test_the_physics_are_those_of_the_single_env():
    native = make_vector_env("CartPole-v1", 1)
    observations, _ = native.reset(seed=3)
    single = gym.make("CartPole-v1")
    single.reset(seed=0)
    single.unwrapped.state = observations[0].astype(np.float64)  # start both from the same state
    native.unwrapped.state = observations.T.astype(np.float64)
    actions = [0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0] * 4
    for step, action in enumerate(actions):
        expected, reward, terminated, truncated, _ = single.step(action)
        observations, rewards, terminal, truncation, info = native.step(np.array([action]))
        final = info["final_obs"][0] if terminal[0] else observations[0]
        np.testing.assert_allclose(final, expected, rtol=1e-6, atol=1e-7)
        assert (rewards[0], terminal[0], truncation[0]) == (reward, terminated, truncated)
        if terminated:
            break
    assert terminated, "the action sequence should have dropped the pole"


def test_finished_envs_restart_in_the_same_step_and_report_their_final_observation():
    envs = SameStepCartPole(gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="vector_entry_point",
                                         max_episode_steps=5))
    envs.reset(seed=0)
    for step in range(1, 13):
        observations, rewards, terminated, truncated, info = envs.step(np.array([0, 1, 0]))
        assert rewards.tolist() == [1.0, 1.0, 1.0]  # no reward-0 reset steps
        assert not terminated.any()  # 5 steps are too few to drop the pole
        assert truncated.tolist() == [step % 5 == 0] * 3
        if step % 5 == 0:
            assert info["_final_obs"].all()
            assert np.abs(observations).max() <= 0.05  # fresh start states
            assert all(np.abs(final).max() > 0.05 for final in info["final_obs"])
        else:
            assert "final_obs" not in info


def test_episode_statistics_and_pickling():
    envs = make_vector_env("CartPole-v1", 4)
    envs.reset(seed=1)
    rng = np.random.default_rng(0)
    lengths, counted = [], np.zeros(4, int)
    for _ in range(300):
        _, _, terminated, truncated, info = envs.step(rng.integers(0, 2, 4))
        counted += 1
        if "_episode" in info:
            done = info["_episode"]
            lengths += info["episode"]["l"][done].tolist()
            assert info["episode"]["l"][done].tolist() == counted[done].tolist()
            assert info["episode"]["r"][done].tolist() == counted[done].astype(float).tolist()
            counted[done] = 0
    assert len(lengths) > 20
    copy = pickle.loads(pickle.dumps(envs))
    actions = np.array([1, 0, 1, 0])
    np.testing.assert_array_equal(copy.step(actions)[0], envs.step(actions)[0])


def test_evaluation_on_the_native_env_starts_each_episode_from_its_seed():
    from agents.networks import ActorCritic, NetworkSpec
    from agents.numpy_policy import NumpyPolicy
    from envs.factory import make_eval_env
    from envs.native import SeededCartPoleStarts
    from runners.evaluate import evaluate

    native, sync = make_eval_env("CartPole-v1", 4), make_eval_env("CartPole-v1", 4, vectorization="sync")
    assert isinstance(native, SeededCartPoleStarts) and isinstance(sync, gym.vector.SyncVectorEnv)
    seeds = [7, 8, 9, 10]
    np.testing.assert_array_equal(native.reset(seed=seeds)[0], sync.reset(seed=seeds)[0])
    policy = NumpyPolicy(ActorCritic(NetworkSpec((4,), "discrete", 2, hidden_sizes=(8,)), seed=2))
    on_native, on_sync = evaluate(policy, native, seeds), evaluate(policy, sync, seeds)
    assert on_native.returns == on_sync.returns and len(set(on_native.returns)) > 1
    frames = []
    assert evaluate(policy, make_eval_env("CartPole-v1", 4, render_mode="rgb_array"), seeds, frames) == on_native
    assert len(frames) == on_native.lengths[0] + 1 and frames[0].shape == (400, 600, 3)
