"""The crown's race (runners/race.py): its statistics by hand, and on a known-answer env against fixed 100 episodes."""

import dataclasses

import numpy as np
import pytest

from champion.agents.config import CrownConfig, NetworkConfig, TrainConfig
from champion.agents.networks import ActorCritic, weight_arrays
from champion.envs.factory import EnvOptions, describe_env
from champion.runners import crown as crowning
from champion.runners.evaluate import EvalResult, episode_seeds, play_episodes
from champion.runners.race import Race, looks, mean_interval, student_t_quantile
from champion.runners.store.best_store import BestPolicyStore
from champion.runners.store.run_metadata import best_manifest, network_spec
from test_crown import arm_policies
from toy_envs import RaceBandit

RACE_BANDIT = "toy_envs:RaceBandit-v0"
ARM_PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7)]
TRUE_MEANS = [(RaceBandit.ARM_MEANS[first] + RaceBandit.ARM_MEANS[second]) / 2 for first, second in ARM_PAIRS]


@pytest.mark.parametrize("probability, degrees, published", [
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 9, 2.262), (0.999, 9, 4.297), (0.995, 99, 2.626),
    (0.9995, 30, 3.646), (0.975, 5_000, 1.960)])
def test_student_t_quantiles_match_the_published_tables(probability, degrees, published):
    assert student_t_quantile(probability, degrees) == pytest.approx(published, abs=1e-3)
    assert student_t_quantile(1 - probability, degrees) == pytest.approx(-published, abs=1e-3)


def test_the_t_interval_by_hand():
    """Fifty zeros and fifty ones: mean 0.5, sample sd sqrt(25/99), t(0.975, 99) = 1.9842, so 0.5 ± 0.0997."""
    low, high = mean_interval([0.0, 1.0] * 50, 0.05)
    assert (low, high) == pytest.approx((0.5 - 0.09971, 0.5 + 0.09971), abs=2e-5)
    assert mean_interval([3.0] * 20, 0.05) == (3.0, 3.0)


def test_the_looks_double_from_ten_up_to_the_most_episodes():
    assert looks(100) == [10, 20, 40, 80, 100]
    assert looks(25) == [10, 20, 25] and looks(10) == [10] and looks(4) == [4]
    assert looks(100, racing=False) == [100]


def test_a_look_drops_a_clearly_worse_candidate_and_keeps_an_undecided_one():
    """A leads; B is A minus 4.5 or 5.5 on every seed (clearly worse); C is A plus or minus 2 (no telling)."""
    a = [10.0 + (1 if index % 2 else -1) for index in range(10)]
    b = [value - 5.0 - (0.5 if index % 3 else -0.5) for index, value in enumerate(a)]
    c = [value + (2 if index % 2 else -2) for index, value in enumerate(a)]
    race = Race(["A", "B", "C"], 100, order=[(True, 1), (False, 2), (False, 3)])
    assert race.pair_error == pytest.approx(0.05 / (5 * 2)) and race.interval_error == pytest.approx(0.05 / (5 * 3))
    assert race.look([a, b, c]) is False
    assert race.running == [0, 2] and race.dropped == {1: "worse than A after 10 episodes"}
    assert race.next_count(10) == 20


def test_identical_returns_decide_nothing_before_the_last_look_and_a_tolerance_ends_the_race_sooner():
    """Two policies at 500 on every seed: no spread, so no t interval to judge by (the next episode may differ);
    the race goes on to its last look. Two as good on average, each 1 off: equal within a tolerance of 2.5."""
    same = [500.0] * 10
    race = Race(["old", "new"], 100, order=[(False, 1), (True, 2)])
    assert race.look([same, same]) is False and race.running == [0, 1]
    assert race.leader([same, same]) == 1  # a tie goes to the training-time best, then the newest
    assert Race(["old", "new"], 10).look([same, same]) is True  # the last look ends it
    close = [500.0 + (1 if index % 2 else -1) for index in range(10)]  # as good on average, 1 off each time
    assert Race(["a", "b"], 100).look([same, close]) is False
    race = Race(["a", "b"], 100, tolerance=2.5)
    assert race.look([same, close]) is True and race.dropped == {1: "within 2.5 of a after 10 episodes"}


class DirectPlayer:
    """Plays each seed on one RaceBandit env, without a vector env: the crown's episodes at a fraction of the cost
    (``test_the_direct_player_plays_what_the_crown_plays`` checks that they are the same)."""

    where = "one env"

    def __init__(self):
        self.env = RaceBandit()

    def play(self, policies, seeds, deadline=None, on_episodes=None):
        results = []
        for policy in policies:
            returns = []
            for seed in seeds:
                observation, _ = self.env.reset(seed=int(seed))
                action = policy.env_actions(policy.mode(observation[None]))[0]
                returns.append(float(self.env.step(action)[1]))
            results.append(EvalResult(tuple(returns), (1,) * len(seeds), tuple(int(seed) for seed in seeds)))
        return results

    def close(self):
        pass


def make_race_run(run_dir):
    """A run folder whose best store holds the four RaceBandit policies (candidate i on arm pair i), saved in
    the order of their 10-episode evaluation means as training would; its config, the policies, and the true
    mean of each entry."""
    config = TrainConfig(env_id=RACE_BANDIT, eval_episodes=10, network=NetworkConfig(hidden_sizes=()))
    spec, policies = arm_policies(config, ARM_PAIRS, len(RaceBandit.ARM_MEANS))
    results = DirectPlayer().play(policies, episode_seeds(config.eval_seed, 10))
    store, truth = BestPolicyStore(run_dir / "best", keep=4), {}
    for rank, index in enumerate(np.argsort([result.mean_return for result in results])):
        store.offer(policies[index].weights, results[index].mean_return - 100 + rank,  # each a new best
                    best_manifest(config, spec, 1_000 * (rank + 1), results[index]))
        truth[store.current_entry.name] = TRUE_MEANS[index]
    return run_dir, config, policies, truth


def race_against_fixed(run_dir, config, truth, repetitions: int, first_seed: int) -> dict:
    """Crown the run ``repetitions`` times on fresh held-out seeds, racing and with a fixed 100 episodes on the same
    seeds: how often each crowned the truly best, the episodes each played, and how often the race's stated 95%
    intervals covered the true means (all candidates' at once, and the champion's)."""
    right, episodes, all_covered, champion_covered = {True: 0, False: 0}, {True: 0, False: 0}, 0, 0
    for repetition in range(repetitions):
        for racing in (True, False):
            crown_config = CrownConfig(candidates=4, episodes=100, seed=first_seed + 1_000 * repetition,
                                       race=racing, time_share=0.0)
            crown = crowning.crown_run(run_dir, dataclasses.replace(config, crown=crown_config), DirectPlayer())
            right[racing] += truth[crown.champion.candidate.name] == 1.0
            episodes[racing] += crown.episodes
            if racing:
                covered = [judged.interval is None  # no claim: every episode returned the same
                           or judged.interval[0] <= truth[judged.candidate.name] <= judged.interval[1]
                           for judged in crown.judged]
                all_covered += all(covered)
                champion_covered += covered[crown.judged.index(crown.champion)]
    return {"repetitions": repetitions, "right_racing": right[True], "right_fixed": right[False],
            "episodes_racing": episodes[True], "episodes_fixed": episodes[False],
            "all_intervals_covered": all_covered, "champion_interval_covered": champion_covered}


@pytest.fixture(scope="module")
def race_run(tmp_path_factory):
    return make_race_run(tmp_path_factory.mktemp("race"))


def test_the_direct_player_plays_what_the_crown_plays(race_run):
    _, config, policies, _ = race_run
    seeds = episode_seeds(12_345, 20)
    direct = [result.returns for result in DirectPlayer().play(policies, seeds)]
    played = [play_episodes(RACE_BANDIT, EnvOptions(), policy.spec, policy.weights, seeds).returns for policy in policies]
    assert direct == played
    assert [np.mean(returns) for returns in direct] != [np.mean(direct[0])] * 4  # the arms differ


def test_racing_picks_as_often_as_fixed_100_with_fewer_episodes_and_its_intervals_cover(race_run):
    """Known answer: the entry on arm pair (0, 1) holds 1.0, one 0.8, the others 0.0 and -1.0. On the same held-out
    seeds in each of 200 repetitions: the race picks the truly best as often as 100 episodes each do (it stops
    the two bad ones early), plays far fewer episodes, and the stated 95% intervals (all candidates' at once)
    cover every true mean in at least 95% of the repetitions. (benchmarks/crown_race.py: 2,000 repetitions.)"""
    run_dir, config, _, truth = race_run
    figures = race_against_fixed(run_dir, config, truth, repetitions=200, first_seed=50_000_000)
    print(figures)
    repetitions = figures["repetitions"]
    assert figures["episodes_fixed"] == 400 * repetitions
    assert figures["right_fixed"] >= 0.8 * repetitions  # the close pair: 0.2 apart, paired sd 1.4: ~92% at 100
    assert figures["right_racing"] >= figures["right_fixed"] - 0.01 * repetitions
    assert figures["episodes_racing"] <= 0.75 * figures["episodes_fixed"]
    assert figures["all_intervals_covered"] >= 0.95 * repetitions
    assert figures["champion_interval_covered"] >= 0.95 * repetitions


def played_twice(env_id: str, options: EnvOptions, seeds: list[int]) -> tuple[EvalResult, EvalResult]:
    """A random-init policy's episodes on ``seeds`` with fresh envs, then with kept envs that first played other
    seeds."""
    from champion.runners import evaluate as evaluating

    config = TrainConfig(env_id=env_id, frame_stack=options.frame_stack)
    spec = network_spec(describe_env(env_id, options), config)
    weights = weight_arrays(ActorCritic(spec, seed=4))
    fresh = play_episodes(env_id, options, spec, weights, seeds)
    try:
        play_episodes(env_id, options, spec, weights, [seed + 500 for seed in seeds] + [9_999], keep_envs=True)
        kept = play_episodes(env_id, options, spec, weights, seeds, keep_envs=True)
    finally:
        evaluating.close_kept_envs()
    return fresh, kept


@pytest.mark.parametrize("env_id, options, extra", [
    ("CartPole-v1", EnvOptions(), None), ("LunarLander-v3", EnvOptions(), "Box2D"),
    ("HalfCheetah-v5", EnvOptions(), "mujoco"), ("ALE/Breakout-v5", EnvOptions(frame_stack=4), "ale_py")])
def test_kept_envs_play_the_same_episodes(env_id, options, extra):
    """The crown's processes keep their envs from round to round: a seeded reset starts the same episode whatever
    the env played before (wrappers' state too: time limits, frame stacks, FIRE and stalled-game counters)."""
    if extra:
        pytest.importorskip(extra)
    fresh, kept = played_twice(env_id, options, episode_seeds(77, 3))
    assert kept.returns == fresh.returns and kept.lengths == fresh.lengths
    if extra != "ale_py":  # an untrained CNN plays every Breakout game alike (120 steps, 0 points)
        assert len(set(fresh.returns)) > 1  # the seeds' episodes differ


def test_a_task_past_the_deadline_makes_no_env(monkeypatch):
    """A task of the crown's processes that starts after the time limit stops before making an env."""
    import time

    from champion.runners import evaluate as evaluating

    config = TrainConfig(env_id="CartPole-v1")
    spec = network_spec(describe_env("CartPole-v1", EnvOptions()), config)
    weights = weight_arrays(ActorCritic(spec, seed=4))
    monkeypatch.setattr(evaluating, "make_env_without_info", lambda *args, **kwargs: pytest.fail("an env was made"))
    with pytest.raises(evaluating.OutOfTime, match="6 of 6 episodes to play"):
        play_episodes("CartPole-v1", EnvOptions(), spec, weights, episode_seeds(77, 6), deadline=time.time() - 1.0)


def test_the_time_limit_follows_the_whole_run_and_a_fixed_crown_has_none_unless_set(tmp_path):
    from champion.runners.crown import run_time_limit, time_limit

    assert time_limit(CrownConfig(), 400.0) == 100.0  # a quarter of the training time
    assert time_limit(CrownConfig(), 40.0) == 30.0 and time_limit(CrownConfig(), None) == 30.0  # at least 30 s
    assert time_limit(CrownConfig(time_share=0.0), 400.0) is None
    assert time_limit(CrownConfig(race=False), 400.0) is None  # one round: a limit could only leave no crown
    assert time_limit(CrownConfig(race=False, seconds=12.0), 400.0) == 12.0
    (tmp_path / "summary.json").write_text('{"wall_seconds": 8.0, "run_wall_seconds": 600.0}')  # resumed for 8 s
    assert run_time_limit(tmp_path, TrainConfig()) == 150.0


def test_players_lost_mid_race_end_it_at_its_last_whole_round(race_run):
    """Spawned processes or Ray actors lost for good in round 2: the crown keeps round 1's episodes and says why
    it ended, instead of failing and losing them."""
    from concurrent.futures.process import BrokenProcessPool

    class LostInRoundTwo(DirectPlayer):
        rounds = 0

        def play(self, policies, seeds, deadline=None, on_episodes=None):
            self.rounds += 1
            if self.rounds == 2:
                raise BrokenProcessPool("a process in the process pool was terminated abruptly")
            return super().play(policies, seeds, deadline, on_episodes)

    run_dir, config, _, _ = race_run
    crown_config = CrownConfig(candidates=4, episodes=100, seed=70_000_000, time_share=0.0)
    crown = crowning.crown_run(run_dir, dataclasses.replace(config, crown=crown_config), LostInRoundTwo())
    assert crown.race["ended"].startswith("players lost after 10 episodes per candidate (")
    assert {len(judged.result.returns) for judged in crown.judged} == {10}


def test_a_candidate_whose_episodes_all_returned_one_value_gets_no_interval(race_run, tmp_path):
    """Ten zeros say nothing about how often a policy scores: no interval is claimed (champion.json's is null), and
    the crowned line says what was seen."""
    class Constant(DirectPlayer):
        def play(self, policies, seeds, deadline=None, on_episodes=None):
            return [EvalResult((0.0,) * len(seeds), (1,) * len(seeds), tuple(seeds)) for _ in policies]

    run_dir, config, _, _ = race_run
    crown_config = CrownConfig(candidates=4, episodes=20, seed=80_000_000, time_share=0.0)
    crown = crowning.crown_run(run_dir, dataclasses.replace(config, crown=crown_config), Constant())
    record = crown.record()
    assert record["interval"] is None and [each["interval"] for each in record["candidates"]] == [None] * 4
    assert [each["episodes"] for each in record["candidates"]] == [20] * 4  # no spread decides nothing early
    assert f"crowned: {crown.champion.candidate.name}, held-out return 0.00 in every one of its 20 episodes" in \
        crowning.crown_lines(crown)
    assert "| none: all equal |" in crowning.crown_table(crown)[2]
