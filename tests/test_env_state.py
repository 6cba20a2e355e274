"""Env journals (envs/env_state.py): what they record, and that a fresh env replayed from one continues as the
original does, step for step; an env that cannot be replayed is told apart."""

import importlib.util

import numpy as np
import pytest

from champion.envs import env_state
from champion.envs.env_state import NOT_REPLAYED, TOO_LONG, Snapshot, capture, check_replays, episode_seed, restore
from champion.envs.factory import EnvOptions, make_vector_env


def random_actions(envs, count, seed=0):
    space = envs.single_action_space
    space.seed(seed)
    return [np.stack([space.sample() for _ in range(envs.num_envs)]) for _ in range(count)]


def continues_alike(first, second, actions):
    """Whether two vector envs give the same observations, rewards and episode ends for the same actions."""
    for batch in actions:
        one, two = first.step(batch), second.step(batch)
        if not all(np.array_equal(a, b) for a, b in zip(one[:4], two[:4])):
            return False
    return True


def test_a_journal_records_the_seed_and_actions_of_the_episode_under_way_and_derives_each_episode_seed():
    envs = make_vector_env("champion-test/Counter-v0", 2)  # episodes of exactly 3 steps
    envs.reset(seed=10)
    for batch in random_actions(envs, 7):
        envs.step(batch)
    first, second = capture(envs).journals
    # 7 steps: episodes of 3, 3 and 1 step so far; the journal holds the third, started by the second reset after
    assert (first.base_seed, second.base_seed) == (10, 11) and first.episodes == second.episodes == 2
    assert [start for start, _ in first.segments] == [episode_seed(10, 2)] and first.steps == 1
    assert first.observation.tolist() == [1.0] and first.reward_sum == 1.0
    seeds = {episode_seed(base, episode) for base in (10, 11) for episode in (1, 2, 3)}
    assert len(seeds) == 6 and episode_seed(10, 0) == 10  # each env's episodes have seeds of their own


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_fresh_envs_replayed_from_a_journal_continue_exactly(vectorization):
    envs = make_vector_env("Acrobot-v1", 3, vectorization)
    envs.reset(seed=4)
    for batch in random_actions(envs, 150):
        envs.step(batch)
    state = capture(envs)
    assert all(journal.steps == 150 for journal in state.journals)  # Acrobot's episodes last 500 steps
    fresh = make_vector_env("Acrobot-v1", 3, vectorization)
    observations, problems = restore(fresh, state, [True, True, True])
    assert problems == [None, None, None]
    assert np.array_equal(observations, np.stack([journal.observation for journal in state.journals]))
    assert np.array_equal(fresh.episode_returns, envs.episode_returns)
    assert continues_alike(envs, fresh, random_actions(envs, 600, seed=1))  # across each env's next reset too
    envs.close(), fresh.close()


def test_an_env_that_draws_from_an_unseeded_generator_is_found_and_restarts_on_restore():
    envs = make_vector_env("champion-test/Unseeded-v0", 2)
    envs.reset(seed=0)
    for batch in random_actions(envs, 5):
        envs.step(batch)
    problems = check_replays(envs)
    assert all(problem.startswith("replaying its episode from seed") for problem in problems)
    fresh = make_vector_env("champion-test/Unseeded-v0", 2)
    saved = capture(envs)
    observations, restored = restore(fresh, saved, [False, True])
    assert restored[0] == NOT_REPLAYED and restored[1].startswith("replaying its episode")
    assert np.all(observations < 1.0)  # both restarted: step 0 of a new episode, plus an offset below 1
    assert fresh.episode_returns.tolist() == [0.0, 0.0]
    # each restarted env goes on with its own journal's next episode seed, not one shared by every restarted env
    after = capture(fresh).journals
    assert [journal.segments[0][0] for journal in after] == [
        episode_seed(journal.base_seed, journal.episodes + 1) for journal in saved.journals]
    assert after[0].segments[0][0] != after[1].segments[0][0]


def test_an_episode_longer_than_the_journal_keeps_is_not_replayed(monkeypatch):
    monkeypatch.setattr(env_state, "MAX_JOURNAL_STEPS", 20)
    vector = make_vector_env("Acrobot-v1", 1)
    vector.reset(seed=0)
    for batch in random_actions(vector, 25):
        vector.step(batch)
    [journal] = capture(vector).journals
    assert journal.observation is None and journal.segments == ()
    _, problems = restore(make_vector_env("Acrobot-v1", 1), capture(vector), [True])
    assert problems == [TOO_LONG]
    _, problems = restore(make_vector_env("Acrobot-v1", 1), capture(vector), [False])  # as its checkpoint records it
    assert problems == [TOO_LONG]
    assert check_replays(vector) == [TOO_LONG]  # not found "not deterministic": it is only too long to record


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs the atari extra")
def test_an_atari_journal_starts_from_the_emulators_state_at_a_new_game_and_spans_its_lives():
    """A new game is not reseeded (that reloads the ROM); the journal keeps the emulator's state and RNG instead,
    and a lost life (a reset that goes on with the game) stays in the journal."""
    options = EnvOptions(frame_stack=4)
    envs = make_vector_env("ALE/Breakout-v5", 1, options=options)
    envs.reset(seed=3)
    actions = random_actions(envs, 5000, seed=2)
    for step, batch in enumerate(actions):
        envs.step(batch)
        [journal] = capture(envs).journals if step % 50 == 49 else [None]
        if journal is not None and isinstance(journal.segments[0][0], Snapshot) and len(journal.segments) >= 3:
            break
    else:
        pytest.fail("no second game with a lost life in 5,000 random steps")
    assert all(start is None for start, _ in journal.segments[1:])  # the lives lost since, without a seed
    fresh = make_vector_env("ALE/Breakout-v5", 1, options=options)
    _, problems = restore(fresh, capture(envs), [True])
    assert problems == [None]
    assert continues_alike(envs, fresh, random_actions(envs, 300, seed=5))


def test_an_env_error_without_a_message_still_says_what_was_raised():
    from champion.envs.factory import EnvStepError, env_call

    def bare_assert():  # what an env's bare ``assert`` raises outside pytest's rewriting
        raise AssertionError

    with pytest.raises(EnvStepError) as raised:
        env_call("LunarLander-v3", "step()", bare_assert)
    assert str(raised.value) == "environment LunarLander-v3 raised AssertionError in step(): (it gave no message)"


def test_a_nan_reward_replays_as_a_nan_and_is_not_taken_for_another_reward_sum():
    envs = make_vector_env("champion-test/NaNMidEpisode-v0", 1)
    envs.reset(seed=0)
    for batch in random_actions(envs, 27):  # 7 steps into the third episode, NaN since its 5th
        envs.step(batch)
    [journal] = capture(envs).journals
    assert np.isnan(journal.reward_sum)
    assert check_replays(envs) == [None]
