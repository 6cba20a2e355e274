"""Rollouts keep termination and truncation apart; evaluation returns are fixed by the seeds, beside the loop or not."""

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest

from champion.agents.networks import ActorCritic, NetworkSpec, numpy_policy
from champion.agents.spec import box_leaf
from champion.envs.factory import make_eval_env, make_vector_env
from champion.runners.configure import resolve_config
from champion.runners.evaluate import BackgroundEvaluation, episode_seeds, evaluate
from champion.runners.rollout import VectorEnvCollector
from champion.runners.training import train


@pytest.fixture
def policy():
    return numpy_policy(ActorCritic(NetworkSpec((box_leaf((1,)),), "discrete", 2, hidden_sizes=(8,))), seed=0)


def test_truncation_is_bootstrapped_from_the_final_observation(policy):
    # Counter-v1 would run 10 steps but its time limit truncates every episode at 4.
    envs = make_vector_env("champion-test/Counter-v1", num_envs=2)
    rollout = VectorEnvCollector(envs, num_steps=9, seed=0).collect(policy)
    batch = rollout.batch
    expected_truncated = np.zeros((9, 2), np.float32)
    expected_truncated[[3, 7]] = 1.0
    np.testing.assert_array_equal(batch.truncated, expected_truncated)
    np.testing.assert_array_equal(batch.terminated, np.zeros((9, 2)))
    # observations count steps within the episode, restarting right after each truncation
    np.testing.assert_array_equal(batch.observations[:, 0, 0], [0, 1, 2, 3, 0, 1, 2, 3, 0])
    final_value = policy.value(np.array([[4.0]], np.float32))[0]
    assert final_value != 0.0
    np.testing.assert_allclose(batch.truncation_values[[3, 7]], final_value, rtol=1e-5)
    np.testing.assert_array_equal(batch.truncation_values[[0, 1, 2, 4, 5, 6, 8]], 0.0)
    np.testing.assert_allclose(batch.last_values, policy.value(np.array([[1.0], [1.0]], np.float32)), rtol=1e-6)
    assert sorted(rollout.episode_returns.tolist()) == [4.0] * 4
    assert rollout.episode_lengths.tolist() == [4] * 4
    assert rollout.env_steps == 18


def test_training_envs_drop_the_envs_own_info_but_still_bootstrap_truncations(policy):
    from champion.envs.factory import make_env

    single = make_env("champion-test/ChattyCounter-v0")
    single.reset(seed=0)
    assert single.step(0)[4] == {"steps": 1}  # the env itself reports it; the vector envs leave it out
    envs = make_vector_env("champion-test/ChattyCounter-v0", num_envs=2)
    envs.reset(seed=0)
    infos = [envs.step(np.zeros(2, np.int64))[4] for _ in range(4)]  # the time limit truncates at step 4
    assert all("steps" not in info for info in infos)
    np.testing.assert_array_equal(infos[3]["final_obs"][0], [4.0])  # the vector env's own keys stay
    assert "steps" not in infos[3].get("final_info", {})
    rollout = VectorEnvCollector(envs, num_steps=9, seed=0).collect(policy)
    np.testing.assert_array_equal(rollout.batch.observations[:, 0, 0], [0, 1, 2, 3, 0, 1, 2, 3, 0])
    final_value = policy.value(np.array([[4.0]], np.float32))[0]
    np.testing.assert_allclose(rollout.batch.truncation_values[[3, 7]], final_value, rtol=1e-5)
    assert rollout.episode_returns.tolist() == [4.0] * 4
    evaluation = make_eval_env("champion-test/ChattyCounter-v0", 2)
    evaluation.reset(seed=0)
    assert "steps" not in evaluation.step(np.zeros(2, np.int64))[4]


def test_termination_is_not_a_truncation_and_state_carries_over(policy):
    envs = make_vector_env("champion-test/Counter-v0", num_envs=1)  # terminates after 3 steps
    collector = VectorEnvCollector(envs, num_steps=2, seed=0)
    first, second = collector.collect(policy), collector.collect(policy)
    assert first.batch.terminated[:, 0].tolist() == [0.0, 0.0]
    assert second.batch.terminated[:, 0].tolist() == [1.0, 0.0]
    assert second.batch.observations[:, 0, 0].tolist() == [2.0, 0.0]
    assert second.batch.truncated.sum() == 0
    assert second.episode_returns.tolist() == [3.0]


def test_evaluation_returns_are_known_from_the_seeds(policy):
    seeds = episode_seeds(10, 5)  # SeededCounter episodes last 2 + seed % 5 steps
    assert seeds == [10, 11, 12, 13, 14]
    envs = make_eval_env("champion-test/SeededCounter-v0", 5)
    result = evaluate(policy, envs, seeds)
    assert result.returns == (2.0, 3.0, 4.0, 5.0, 6.0)
    assert result.lengths == (2, 3, 4, 5, 6)
    assert (result.mean_return, result.min_return, result.max_return) == (4.0, 2.0, 6.0)
    assert result.std_return == pytest.approx(np.std([2, 3, 4, 5, 6]))
    assert result.env_steps == 20
    assert evaluate(policy, envs, seeds) == result


def test_evaluation_needs_one_seed_per_env(policy):
    with pytest.raises(ValueError, match="3 seeds for 5 evaluation envs"):
        evaluate(policy, make_eval_env("champion-test/SeededCounter-v0", 5), [1, 2, 3])


def test_cartpole_evaluation_is_reproducible_and_records_frames(policy):
    model = ActorCritic(NetworkSpec((box_leaf((4,)),), "discrete", 2, hidden_sizes=(8,)), seed=3)
    cartpole_policy = numpy_policy(model)
    seeds = episode_seeds(0, 3)
    first = evaluate(cartpole_policy, make_eval_env("CartPole-v1", 3), seeds)
    frames = []
    second = evaluate(cartpole_policy, make_eval_env("CartPole-v1", 3, render_mode="rgb_array"), seeds, frames)
    assert first == second
    assert len(frames) == first.lengths[0] + 1
    assert frames[0].shape == (400, 600, 3)


def test_background_evaluations_come_back_in_order_with_the_results_of_a_direct_evaluation(policy):
    envs = make_eval_env("champion-test/SeededCounter-v0", 5)
    evaluation = BackgroundEvaluation(envs, episode_seeds(10, 5))
    assert evaluation.start(100, policy.snapshot()) == [] and evaluation.step_in_flight == 100
    previous = evaluation.start(200, policy.snapshot())  # waits for the one in flight and hands it back
    assert [finished.step for finished in previous] == [100] and evaluation.step_in_flight == 200
    last = evaluation.wait()
    assert [finished.step for finished in last] == [200] and evaluation.step_in_flight == -1
    direct = evaluate(policy, make_eval_env("champion-test/SeededCounter-v0", 5), episode_seeds(10, 5))
    assert previous[0].result == last[0].result == direct and last[0].seconds > 0
    assert evaluation.wait() == [] and evaluation.finished() == []


def test_an_error_in_a_background_evaluation_is_raised_where_the_loop_takes_it(policy):
    broken = policy.snapshot()

    def mode(observations):
        raise ValueError("the policy broke")

    broken.mode = mode
    evaluation = BackgroundEvaluation(make_eval_env("champion-test/SeededCounter-v0", 2), episode_seeds(0, 2))
    evaluation.start(64, broken)
    with pytest.raises(ValueError, match="the policy broke"):
        evaluation.wait()
    assert evaluation.step_in_flight == -1 and evaluation.wait() == []


def test_training_evaluates_the_same_with_and_without_the_background_thread(tmp_path):
    columns = ("step", "mean_return", "std_return", "min_return", "max_return", "best_mean_return", "saved")
    rows = {}
    for background in (True, False):
        config, _ = resolve_config("CartPole-v1", "ppo", {
            "total_steps": 2048, "eval_every": 256, "ppo.epochs": 2, "media": False, "engine": "gymnasium",
            "ppo.jit_compile": False, "eval_in_background": background, "results_dir": str(tmp_path),
            "run_name": f"background-{background}"})
        result = train(config, progress=False)
        with open(result.run_dir / "evaluations.csv", newline="") as handle:
            rows[background] = [[row[column] for column in columns] for row in csv.DictReader(handle)]
        assert result.beside_calls.get("evaluation") == 8
    assert rows[True] == rows[False] and len(rows[True]) == 8
    assert len({row[1] for row in rows[True]}) > 1  # the policy changed between evaluations


def test_async_vectorization_trains_exactly_as_sync_and_its_checkpoint_holds_the_same_env_journals(tmp_path):
    """Worker processes step the same seeded envs: the same transitions, so the same training, and checkpoints
    that a resume restores exactly either way (``champion.envs.env_state``)."""
    from champion.runners.store.checkpoints import read_checkpoint

    runs = {}
    for vectorization in ("sync", "async"):
        config, _ = resolve_config("CartPole-v1", "ppo", {
            "total_steps": 1024, "eval_every": 512, "num_envs": 2, "ppo.num_steps": 64, "ppo.minibatch_size": 64,
            "ppo.epochs": 2, "media": False, "engine": "gymnasium", "vectorization": vectorization,
            "results_dir": str(tmp_path), "run_name": vectorization})
        result = train(config, progress=False)
        with open(result.run_dir / "evaluations.csv", newline="") as handle:
            runs[vectorization] = [row["mean_return"] for row in csv.DictReader(handle)]
        checkpoint = read_checkpoint(sorted((result.run_dir / "checkpoints").glob("ckpt-*"))[-1])
        runs[f"{vectorization} exact"] = checkpoint.manifest["envs_exact"]
        runs[f"{vectorization} journals"] = [(journal.base_seed, journal.episodes, journal.observation.tobytes(),
                                              [(seed, actions.tolist()) for seed, actions in journal.segments])
                                             for journal in checkpoint.state["env_state"].journals]
    assert runs["async"] == runs["sync"] and len(runs["sync"]) == 2
    assert runs["async exact"] == runs["sync exact"] == [True, True]
    assert runs["async journals"] == runs["sync journals"]
    assert [base_seed for base_seed, *_ in runs["sync journals"]] == [0, 1]  # env i's first reset had seed + i


def test_an_env_that_raises_stops_the_run_with_one_line_naming_the_env_and_what_it_raised(tmp_path):
    from crash_helpers import CHAMPION

    done = subprocess.run(CHAMPION + ["train", "toy_envs:champion-test/FailsAfter-v0", "--total-steps", "4096", "--no-media",
                                      "--results-dir", str(tmp_path), "--run-name", "fails", "--quiet",
                                      "--set", "num_envs=2", "--set", "ppo.num_steps=32", "--set", "ppo.minibatch_size=64"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("champion train: error: environment toy_envs:champion-test/FailsAfter-v0 raised ValueError in "
                           "step(): the simulator lost its state at step 151; the best policy saved before it is "
                           "unchanged in ")
    assert "Traceback" not in done.stderr


def test_fragments_of_two_collectors_stack_into_the_rollout_of_one():
    """Envs 0-3 and 4-7, seeded and sampling as envs 0-7 of one vector env, stack (in order) into its rollout."""
    from champion.agents.numpy_policy import EnvNoise
    from champion.runners.rollout import stack_fragments

    policy = numpy_policy(ActorCritic(NetworkSpec((box_leaf((4,)),), "discrete", 2, hidden_sizes=(16,)), seed=1), seed=1)
    whole = VectorEnvCollector(make_vector_env("CartPole-v1", 8), num_steps=40, seed=11).collect(policy)
    parts = [VectorEnvCollector(make_vector_env("CartPole-v1", 4), num_steps=40, seed=11 + start,
                                noise=EnvNoise(11, range(start, start + 4))).collect(policy) for start in (0, 4)]
    stacked = stack_fragments(parts)
    for name, value in stacked.batch._asdict().items():
        assert np.array_equal(value, getattr(whole.batch, name)), name
    assert sorted(stacked.episode_returns) == sorted(whole.episode_returns) and len(whole.episode_returns) > 0
