"""The in-graph engine: CartPole in TF ops, rollouts and updates fused in one compiled call."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from rich.console import Console

from champion.agents.config import ConfigError
from champion.agents.learners import make_learner
from champion.agents.networks import ActorCritic
from champion.envs.factory import describe_env
from champion.envs.graph import has_graph_env
from champion.envs.graph.cartpole import MAX_EPISODE_STEPS, CartPoleState, GraphCartPole
from champion.runners.configure import resolve_config
from champion.runners.engines import Advance, EpisodeStats, choose_engine
from champion.runners.engines.graph import GraphEngine
from champion.runners.timing import Timings
from champion.runners.run_state import LoopState
from champion.runners.store.run_metadata import network_spec
from champion.runners.training import _count_nonfinite, train


def cartpole(num_envs: int = 1, seed: int = 0) -> GraphCartPole:
    return GraphCartPole(num_envs, tf.random.Generator.from_seed(seed))


def test_the_physics_are_those_of_gymnasiums_cartpole():
    env, single = cartpole(), gym.make("CartPole-v1")
    single.reset(seed=0)
    start = np.array([0.01, -0.03, 0.02, 0.04])
    single.unwrapped.state = start.copy()
    state = CartPoleState(tf.constant(start[np.newaxis]), tf.zeros([1], tf.int32))
    actions = [0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0] * 4
    for action in actions:
        expected, reward, terminated, truncated, _ = single.step(action)
        state, transition = env.step(state, tf.constant([action]))
        np.testing.assert_allclose(transition.final_observations[0], expected, rtol=1e-6, atol=1e-7)
        assert (float(transition.rewards[0]), bool(transition.terminated[0]), bool(transition.truncated[0])) == (
            reward, terminated, truncated)
        if terminated:
            break
    assert terminated, "the action sequence should have dropped the pole"


def test_finished_envs_restart_in_the_same_step_and_the_time_limit_truncates():
    env = cartpole(num_envs=3)
    falling = [0.0, 0.0, 0.2, 2.0]  # past 12 degrees after one step
    upright = [0.0, 0.0, 0.0, 0.0]
    state = CartPoleState(tf.constant([falling, upright, upright], tf.float64),
                          tf.constant([7, MAX_EPISODE_STEPS - 1, 3], tf.int32))
    state, transition = env.step(state, tf.constant([1, 1, 0]))
    assert transition.terminated.numpy().tolist() == [True, False, False]
    assert transition.truncated.numpy().tolist() == [False, True, False]
    assert state.elapsed.numpy().tolist() == [0, 0, 4]
    assert abs(transition.final_observations[0, 2]) > 12 * 2 * np.pi / 360  # where the episode ended
    restarted = transition.observations.numpy()[:2]
    assert np.all(np.abs(restarted) <= 0.05) and not np.array_equal(restarted[0], restarted[1])
    np.testing.assert_array_equal(transition.observations[2], transition.final_observations[2])  # env 2 goes on


def engine_for(algo: str, **values) -> GraphEngine:
    config, _ = resolve_config("CartPole-v1", algo, values)
    model = ActorCritic(network_spec(describe_env("CartPole-v1"), config), seed=config.seed)
    return GraphEngine(model, make_learner(model, config), config, Timings())


def test_one_call_runs_whole_rollouts_each_followed_by_one_learner_update():
    engine = engine_for("ppo", **{"ppo.num_steps": 16, "num_envs": 4, "ppo.minibatch_size": 32, "ppo.epochs": 3})
    advanced = engine.advance(step=0, max_env_steps=64 * 5 + 10, total_steps=1000)
    assert (advanced.env_steps, advanced.updates) == (320, 5)
    assert int(engine.learner.optimizer.iterations) == 5 * 3 * 2  # 5 updates x 3 epochs x 2 minibatches
    # the linear schedule is read after each rollout: 1 - 64/1000, 1 - 128/1000, ...
    initial_rate = engine.learner.config.learning_rate
    expected_rate = np.mean([initial_rate * (1 - 64 * index / 1000) for index in range(1, 6)])
    assert advanced.metrics["learning_rate"] == pytest.approx(expected_rate, rel=1e-5)
    # CartPole pays 1 per step, so returns and lengths sum alike; random play drops the pole in ~10-60 steps
    episodes = advanced.episodes
    assert episodes.count > 0 and episodes.return_sum == episodes.length_sum
    assert 8 <= episodes.length_sum / episodes.count <= 80
    assert engine.advance(step=320, max_env_steps=10, total_steps=1000).env_steps == 64  # at least one rollout
    assert engine.tracing_count() == 1


def test_episode_statistics_carry_across_calls():
    engine = engine_for("a2c", num_envs=2)
    steps, lengths = 0, 0.0
    for _ in range(40):  # 40 calls of one 5-step rollout: episodes straddle calls
        advanced = engine.advance(step=steps, max_env_steps=10, total_steps=10_000)
        steps += advanced.env_steps
        lengths += advanced.episodes.length_sum
    unfinished = float(tf.reduce_sum(engine.episode_returns))
    assert lengths + unfinished == steps == 400


def test_auto_picks_the_graph_engine_where_it_can_and_graph_refuses_where_it_cannot():
    def config(env_id, **values):
        return resolve_config(env_id, "ppo", values)[0]
    assert has_graph_env("CartPole-v1") and not has_graph_env("Acrobot-v1")
    assert choose_engine(config("CartPole-v1")) == "graph"
    assert choose_engine(config("CartPole-v1", engine="gymnasium")) == "gymnasium"
    assert choose_engine(config("Acrobot-v1")) == "gymnasium"
    assert choose_engine(config("CartPole-v1", reward_scaling=True)) == "gymnasium"
    with pytest.raises(ConfigError, match="engine=graph is not possible: Acrobot-v1 has no TF-op implementation"):
        choose_engine(config("Acrobot-v1", engine="graph"))
    with pytest.raises(ConfigError, match="reward_scaling is not implemented in the graph engine"):
        choose_engine(config("CartPole-v1", engine="graph", reward_scaling=True))
    # the TF-op CartPole is gymnasium's default one: with env_kwargs the evaluations would play another env
    assert choose_engine(config("CartPole-v1", env_kwargs={"sutton_barto_reward": True})) == "gymnasium"
    with pytest.raises(ConfigError, match=r"env_kwargs \(sutton_barto_reward\) are not implemented in the graph"):
        choose_engine(config("CartPole-v1", engine="graph", env_kwargs={"sutton_barto_reward": True}))


@pytest.mark.slow
@pytest.mark.parametrize("algo, total_steps", [("ppo", 100_000), ("a2c", 500_000)])
def test_the_graph_engine_learns_cartpole_within_the_benchmark_budget(tmp_path, algo, total_steps):
    config, _ = resolve_config("CartPole-v1", algo, {"results_dir": str(tmp_path), "total_steps": total_steps,
                                                      "eval_every": 10_000})
    result = train(config, progress=False)
    assert result.best_mean_return >= 475
    assert result.timing_calls["compile+first call (graph)"] == 1
    assert "env_stepping" not in result.timings  # no env step went through Python


def test_the_rollout_records_the_observation_acted_on_and_bootstraps_the_time_limit():
    engine = engine_for("ppo", **{"ppo.num_steps": 2, "num_envs": 2, "ppo.minibatch_size": 4})
    upright = tf.constant([[0.01, 0.0, 0.0, 0.0], [0.0, 0.02, 0.01, -0.03]], tf.float64)
    engine.env_state.physics.assign(upright)
    engine.env_state.elapsed.assign([MAX_EPISODE_STEPS - 1, 5])  # env 0 hits the time limit on its first step
    start = type(engine.env_state)(*[tf.identity(variable) for variable in engine.env_state])
    batch, episodes = engine._rollout()
    np.testing.assert_array_equal(batch.observations[0], engine.env.observe(start))
    _, transition = engine.env.step(start, batch.actions[0])  # the same step again, to see its final observation
    assert batch.truncated.numpy()[0].tolist() == [1.0, 0.0] and batch.terminated.numpy()[0].tolist() == [0.0, 0.0]
    final_value = engine.model(transition.final_observations)[1][0]
    np.testing.assert_allclose(batch.truncation_values[0], [final_value, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(batch.observations[1, 1], transition.observations[1])  # env 1 goes on
    assert np.all(np.abs(batch.observations[1, 0]) <= 0.05)  # env 0 acted from a fresh start in the next step
    assert float(episodes[0]) == 1.0  # one episode ended


def test_runs_of_updates_with_skipped_steps_are_counted_inside_the_call():
    engine = engine_for("ppo", **{"ppo.num_steps": 16, "num_envs": 4, "ppo.minibatch_size": 64, "ppo.epochs": 1})
    update_ops = engine.learner.update_ops

    def flagged(batch, progress_remaining):  # the 8 updates of one call see progress 0.936, 0.872, ... 0.488
        metrics = dict(update_ops(batch, progress_remaining))
        bad = (progress_remaining > 0.85) | ((progress_remaining > 0.6) & (progress_remaining < 0.75))
        metrics["nonfinite_steps"] = tf.cast(bad, tf.float32)  # updates 1, 2 and 4, 5, 6 of 8
        return metrics

    engine.learner.update_ops = flagged
    advanced = engine.advance(step=0, max_env_steps=8 * 64, total_steps=1000)
    assert (advanced.updates, advanced.skipped_steps, advanced.nonfinite_runs) == (8, 5, (2, 0, 3))
    assert advanced.metrics["nonfinite_steps"] == pytest.approx(5 / 8)  # per update, as the gymnasium engine logs it


def test_the_divergence_guard_counts_updates_across_calls():
    run = SimpleNamespace(console=Console(quiet=True))
    state = LoopState()

    def call(updates, runs, skipped=1):
        return _count_nonfinite(run, state, Advance(updates * 10, updates, {}, EpisodeStats(), skipped, runs))

    assert call(8, (0, 3, 3)) == 3  # ends with 3 bad updates
    assert state.nonfinite_streak == 3
    assert call(8, (2, 0, 2)) == 5  # 3 + 2 = 5 in a row across the two calls
    state = LoopState()
    call(8, (0, 2, 2))
    assert call(8, (1, 0, 1)) == 3  # 2 + 1 = 3 in a row, then finite updates end the run
    assert state.nonfinite_streak == 0 and state.skipped_steps == 2
    assert call(4, (4, 4, 4)) == 4  # a whole call of bad updates: 4 in a row
    assert state.nonfinite_streak == 4
    assert call(2, (2, 2, 2)) == 6  # and 2 more
    assert call(3, (0, 1, 1), skipped=0) == 0 and state.nonfinite_streak == 0  # no skipped step: the count restarts
