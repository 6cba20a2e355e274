"""The crown: held-out re-evaluation of the best candidates (runners/crown.py), and everything that follows it."""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from champion.agents.config import ConfigError, CrownConfig, NetworkConfig, TrainConfig, validate
from champion.agents.networks import ActorCritic, weight_arrays
from champion.agents.numpy_policy import NumpyPolicy
from champion.envs.factory import EnvOptions, describe_env, make_eval_env
from champion.runners import crown as crowning
from champion.runners.store.best_store import BestPolicyStore, read_champion
from champion.runners.evaluate import episode_seeds, evaluate
from champion.runners.store.run_metadata import best_manifest, network_spec
from toy_envs import NoisyBandit

BANDIT = "toy_envs:NoisyBandit-v0"
ARM_PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7)]
"""Candidate i plays arm ARM_PAIRS[i][c] on cue c: candidate 0 is truly best (1.0), the others 0.6."""


def true_return(arms: tuple[int, int]) -> float:
    return (NoisyBandit.ARM_MEANS[arms[0]] + NoisyBandit.ARM_MEANS[arms[1]]) / 2


def bandit_config(trial: int, **crown: int) -> TrainConfig:
    return TrainConfig(env_id=BANDIT, eval_seed=1_000 * trial, eval_episodes=10,
                       network=NetworkConfig(hidden_sizes=()),
                       crown=CrownConfig(**{"candidates": 4, "episodes": 100, "workers": 1, **crown}))


def arm_policies(config: TrainConfig, arm_pairs: list[tuple[int, int]], arm_count: int):
    """The network spec of ``config``'s bandit env, and a policy per arm pair: logits 10 on its arm for each cue (no
    hidden layer), so its mode is that arm."""
    spec = network_spec(describe_env(config.env_id, EnvOptions()), config)
    template = weight_arrays(ActorCritic(spec, seed=0))
    head = next(name for name, array in template.items() if array.shape == (2, arm_count))
    policies = []
    for arms in arm_pairs:
        weights = {name: np.zeros_like(array) for name, array in template.items()}
        for cue, arm in enumerate(arms):
            weights[head][cue, arm] = 10.0
        policies.append(NumpyPolicy(spec, weights=weights))
    return spec, policies


@pytest.fixture(scope="module")
def bandit_policies():
    return arm_policies(bandit_config(0), ARM_PAIRS, len(NoisyBandit.ARM_MEANS))


def save_candidates(run_dir: Path, config: TrainConfig, spec, policies) -> tuple[str, list[str]]:
    """Evaluate each policy on the run's 10 evaluation seeds and save them as the best store would have, in
    increasing order of that mean (so each is a new best); returns the training-time best and entry by candidate."""
    envs = make_eval_env(BANDIT, config.eval_episodes)
    try:
        results = [evaluate(policy, envs, episode_seeds(config.eval_seed, config.eval_episodes)) for policy in policies]
    finally:
        envs.close()
    store = BestPolicyStore(run_dir / "best", keep=config.crown.candidates)
    names = [""] * len(policies)
    for rank, index in enumerate(np.argsort([result.mean_return for result in results])):
        saved, _ = store.offer(policies[index].weights, results[index].mean_return,
                               best_manifest(config, spec, 1_000 * (rank + 1), results[index]))
        assert saved
        names[index] = store.current_entry.name
    return store.current_entry.name, names


def test_bandit_policies_play_their_arms(bandit_policies):
    """The known answer rests on this: each candidate's mode is its arm for the cue, so its true return is known."""
    spec, policies = bandit_policies
    for policy, arms in zip(policies, ARM_PAIRS):
        assert policy.mode(np.eye(2, dtype=np.float32)).tolist() == list(arms)
    assert [true_return(arms) for arms in ARM_PAIRS] == [1.0, 0.6, 0.6, 0.6]


def test_crown_picks_the_truly_best_entry_far_more_often_than_the_training_time_maximum(tmp_path, bandit_policies):
    """Known answer: candidate 0 is truly best. Over 100 runs (different evaluation and held-out seeds) the crown
    on 100 held-out episodes picks it in a large majority; the max of the 10-episode evaluations far less often."""
    spec, policies = bandit_policies
    trials, crowned_right, naive_right = 100, 0, 0
    for trial in range(trials):
        run_dir = tmp_path / f"run{trial}"
        config = bandit_config(trial + 1)
        training_best, names = save_candidates(run_dir, config, spec, policies)
        before = {path.name for path in (run_dir / "best").iterdir()}
        crown = crowning.crown_run(run_dir, config)
        assert {path.name for path in (run_dir / "best").iterdir()} == before | {"champion.json"}  # nothing deleted
        assert crown.training_best == training_best
        assert len(crown.judged) == 4 and set(crown.seeds).isdisjoint(episode_seeds(config.eval_seed, 10))
        naive_right += training_best == names[0]
        crowned_right += crown.champion.candidate.name == names[0]
    naive_rate, crown_rate = naive_right / trials, crowned_right / trials
    print(f"truly best picked: crown {crown_rate:.2f}, training-time maximum {naive_rate:.2f}")
    assert crown_rate >= 0.80
    assert naive_rate <= 0.70
    assert crown_rate - naive_rate >= 0.25


def test_champion_json_records_the_held_out_episodes_and_the_interval(tmp_path, bandit_policies):
    spec, policies = bandit_policies
    config = bandit_config(7, candidates=3)
    training_best, names = save_candidates(tmp_path, config, spec, policies)
    oldest = min(names)  # the oldest of four entries was pruned (keep 3): it comes back as the final policy
    store = BestPolicyStore(tmp_path / "best", keep=4)
    final = store.save_final(policies[names.index(oldest)].weights,
                             json.loads((tmp_path / "best" / training_best / "manifest.json").read_text()) | {"step": 9_000})
    crown = crowning.crown_run(tmp_path, config)
    assert [judged.candidate.name for judged in crown.judged] == sorted(set(names) - {oldest}) + [final.name]
    assert crown.judged[-1].candidate.is_final
    record = read_champion(tmp_path / "best")
    assert record["entry"] == crown.champion.candidate.name
    played = len(record["returns"])  # the race plays the first of the held-out seeds, in order
    assert played in (10, 20, 40, 80, 100)
    assert record["held_out_seeds"] == list(range(7_000 + 10_000_000, 7_000 + 10_000_000 + played))
    assert record["held_out_mean"] == pytest.approx(np.mean(record["returns"]))
    low, high = record["interval"]
    assert low < record["held_out_mean"] < high
    still_racing = [candidate for candidate in record["candidates"] if not candidate["stopped"]]
    assert record["held_out_mean"] == max(candidate["held_out_mean"] for candidate in still_racing)
    weights = (tmp_path / "best" / record["entry"] / "policy.npz").read_bytes()
    assert record["sha256"] == hashlib.sha256(weights).hexdigest()
    episodes = sum(candidate["episodes"] for candidate in record["candidates"])
    assert record["cost"]["episodes"] == episodes and record["cost"]["env_steps"] == episodes  # one-step episodes
    assert record["cost"]["episodes_skipped"] == 400 - episodes


class InterruptedAfterTwo(crowning.ProcessPlayer):
    def play(self, policies, seeds, deadline=None, on_episodes=None):
        super().play(policies[:2], seeds, deadline, on_episodes)
        raise KeyboardInterrupt  # as a Ctrl-C would stop it after two candidates


def test_a_crown_that_fails_midway_leaves_the_store_as_it_was(tmp_path, bandit_policies):
    spec, policies = bandit_policies
    config = bandit_config(3)
    save_candidates(tmp_path, config, spec, policies)
    crowning.crown_run(tmp_path, config)
    before = {path: path.read_bytes() for path in (tmp_path / "best").rglob("*") if path.is_file()}
    again = dataclasses.replace(config, crown=CrownConfig(candidates=4, episodes=50, workers=1))
    with pytest.raises(KeyboardInterrupt):
        crowning.crown_run(tmp_path, again, InterruptedAfterTwo(again))
    after = {path: path.read_bytes() for path in (tmp_path / "best").rglob("*") if path.is_file()}
    assert after == before and len(read_champion(tmp_path / "best")["held_out_seeds"]) == 100  # the first crown's


def test_ctrl_c_during_the_crown_at_the_end_of_a_run_keeps_the_finished_run(tmp_path, monkeypatch, capsys):
    """The training is complete: its summary and final policy are written before the crown, which a Ctrl-C only
    skips (with how to crown later); best/ gets no champion.json."""
    from champion.runners.configure import resolve_config
    from champion.runners.training import train

    monkeypatch.setattr(crowning, "ProcessPlayer", InterruptedAfterTwo)
    config, _ = resolve_config("CartPole-v1", "ppo", {"total_steps": 2048, "eval_every": 512, "results_dir": str(tmp_path),
                                                      "run_name": "stopped", "media": False, "engine": "gymnasium"})
    with pytest.raises(KeyboardInterrupt):  # after the closing lines, as Python has a Ctrl-C (the CLI exits 130)
        train(config, progress=False)
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "stopped"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 2048 and "crown" not in summary
    assert not (run_dir / "best" / "champion.json").exists()
    assert f"the crown was interrupted; the training-time best stands; crown later with: champion crown {run_dir}" in \
        capsys.readouterr().err.replace("\n", " ")


def test_held_out_seeds_must_not_overlap_the_evaluation_seeds():
    with pytest.raises(ConfigError, match="overlap the evaluation seeds"):
        validate(TrainConfig(eval_seed=100, eval_episodes=10, crown=CrownConfig(seed=50, episodes=60)))
    validate(TrainConfig(eval_seed=100, eval_episodes=10, crown=CrownConfig(seed=110)))


def test_processes_play_the_same_episodes_as_this_process():
    """Acting is row by row, so splitting the held-out seeds over spawned processes changes no return."""
    config = dataclasses.replace(TrainConfig(env_id="CartPole-v1"), crown=CrownConfig(workers=2, episodes=40))
    spec = network_spec(describe_env("CartPole-v1", EnvOptions()), config)
    policies = [NumpyPolicy(spec, weights=weight_arrays(ActorCritic(spec, seed=seed))) for seed in (1, 2)]
    seeds = crowning.held_out_seeds(config)
    apart = crowning.ProcessPlayer(config)
    here = crowning.ProcessPlayer(dataclasses.replace(config, crown=CrownConfig(workers=1)))
    try:
        assert [result.returns for result in apart.play(policies, seeds)] == \
            [result.returns for result in here.play(policies, seeds)]
    finally:
        apart.close()
    assert apart.where == "2 processes"


def test_the_store_never_prunes_the_crowned_entry(tmp_path, bandit_policies):
    spec, policies = bandit_policies
    config = bandit_config(5, candidates=3)
    store = BestPolicyStore(tmp_path / "best", keep=3)
    envs = make_eval_env(BANDIT, 10)
    result = evaluate(policies[0], envs, episode_seeds(5_000, 10))
    envs.close()
    store.offer(policies[0].weights, 0.1, best_manifest(config, spec, 100, result))
    crowning.crown_run(tmp_path, config)
    crowned = read_champion(tmp_path / "best")["entry"]
    for step in range(1, 5):
        store.offer(policies[1].weights, 0.1 + step, best_manifest(config, spec, 100 + step, result))
    assert (tmp_path / "best" / crowned).is_dir()
    assert len(store.entries()) == 4  # keep=3 plus the crowned one


# --- a real run: the crown at its end, and replay, export, runs and TensorBoard reading it ---

def champion(*args: str) -> int:
    """``champion ARGS`` in this process; its exit code."""
    from champion.runners.cli.main import main

    try:
        main(list(args))
    except SystemExit as done:
        return done.code or 0
    return 0


@pytest.fixture
def crowned_run(crowned_cartpole_run):
    """The session's crowned CartPole run (tests/conftest.py), trained once for the CLI and crown tests; a test that
    changes it copies it first."""
    return crowned_cartpole_run


def test_a_run_crowns_itself_and_replay_reproduces_the_held_out_mean(crowned_run):
    from champion.runners.cli.main import cli

    record = read_champion(crowned_run / "best")
    summary = json.loads((crowned_run / "summary.json").read_text())
    assert summary["crown"]["champion"] == record["entry"]
    assert summary["crown"]["episodes"] == sum(candidate["episodes"] for candidate in record["candidates"])
    assert summary["crown"]["seconds"] > 0
    replayed = json.loads(CliRunner().invoke(cli, ["replay", str(crowned_run), "--json"]).output)
    assert replayed["crowned"] is True
    assert replayed["seeds"] == record["held_out_seeds"]
    assert replayed["recorded_mean_return"] == record["held_out_mean"]
    assert replayed["mean_return"] == record["held_out_mean"] and replayed["matches_recorded"]
    training_best = json.loads(CliRunner().invoke(cli, ["replay", str(crowned_run), "--json", "--entry", "best"]).output)
    assert training_best["crowned"] is False
    assert Path(training_best["entry"]).name == record["training_best"]
    assert training_best["seeds"] == list(range(1_000_000, 1_000_010))


def test_runs_and_export_show_the_champion(crowned_run, tmp_path):
    from champion.runners.cli.main import cli
    from champion.runners.export import export_policy

    record = read_champion(crowned_run / "best")
    listed = json.loads(CliRunner().invoke(cli, ["runs", "--results-dir", str(crowned_run.parent), "--json"]).output)
    assert listed[0]["crowned_entry"] == record["entry"]
    assert listed[0]["crowned_mean_return"] == record["held_out_mean"]
    exported = export_policy(crowned_run, "saved_model", tmp_path / "model")
    metadata = json.loads(exported.metadata.read_text())
    assert exported.crowned and Path(metadata["best_entry"]).name == record["entry"]
    assert metadata["mean_return"] == record["held_out_mean"] and metadata["episodes"] == len(record["returns"])


def test_tensorboard_has_the_crown_per_candidate(crowned_run):
    from event_files import summaries

    record = read_champion(crowned_run / "best")
    events = summaries(crowned_run / "tb")
    points = {event.step: float(event.value) for event in events["crown/held_out_mean"]}
    assert points == pytest.approx({candidate["step"]: candidate["held_out_mean"] for candidate in record["candidates"]})
    table = events["crown"][-1].value.item().decode()
    assert record["entry"] in table and "crowned" in table


def test_crown_command_judges_again_and_refuses_a_run_without_entries(crowned_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(crowned_run, copy)
    first = read_champion(copy / "best")
    capsys.readouterr()
    assert champion("crown", str(tmp_path), "--episodes", "12", "--workers", "1", "--no-race") == 0  # a folder of runs
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"picked {copy}: the newest of the 1 run with a best policy below {tmp_path}")
    assert lines[-1].startswith("it replaces the crown of ") and lines[-1].endswith(
        f": {first['entry']}, held-out mean {first['held_out_mean']:.2f} over {len(first['returns'])} episodes")
    assert len(read_champion(copy / "best")["held_out_seeds"]) == 12
    assert champion("crown", str(tmp_path), "--episodes", "6", "--workers", "1", "--json", "--no-race") == 0
    record = json.loads(capsys.readouterr().out)  # one JSON object, naming the run it picked
    assert record["run_dir"] == str(copy) and len(record["held_out_seeds"]) == 6
    assert len(list((copy / "tb").glob("*.crown"))) == 1  # the first crown's TensorBoard file was replaced
    assert json.loads((copy / "summary.json").read_text())["crown"]["episodes"] == 6 * len(
        read_champion(copy / "best")["candidates"])
    from champion.runners.store.run_folder import RunLock

    capsys.readouterr()
    with RunLock(copy):  # as if it were still training
        assert champion("crown", str(tmp_path)) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"champion crown: error: run folder {copy} is in use") and line.endswith(
        "; or give another run's folder")
    empty = tmp_path / "empty"
    (empty / "best").mkdir(parents=True)
    (empty / "config.yaml").write_text("env_id: CartPole-v1\nalgo: ppo\n")
    assert champion("crown", str(empty)) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"champion crown: error: {empty / 'best'} holds no usable best-policy entry to crown; train the run first"]
    (empty / "config.yaml").write_text("env_id: [CartPole-v1\n")
    assert champion("crown", str(empty)) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"champion crown: error: {empty / 'config.yaml'} is not valid YAML at line ")
    assert line.endswith("; a run folder needs its config as champion train wrote it")


def test_the_replaced_crown_line_says_what_the_earlier_record_holds():
    from champion.runners.cli.main import _replaced_crown_line

    earlier = {"entry": "0002-step-20224", "crowned_at": "2026-12-06T17:27:40+00:00", "held_out_mean": 431.257,
               "held_out_seeds": [11, 12, 13]}
    assert _replaced_crown_line(earlier) == ("it replaces the crown of 2026-12-06 17:27 UTC: 0002-step-20224, "
                                             "held-out mean 431.26 over 3 episodes")
    damaged = {"entry": "0002-step-20224", "held_out_mean": None, "held_out_seeds": 3}  # from an older or edited file
    assert _replaced_crown_line(damaged) == "it replaces the crown: 0002-step-20224"


class Fixed:
    """Plays nothing: the held-out means are given (the first candidate's highest), to fix which one is crowned."""

    where = "given"

    def play(self, policies, seeds, deadline=None, on_episodes=None):
        from champion.runners.evaluate import EvalResult

        return [EvalResult(tuple([float(-index)] * len(seeds)), (1,) * len(seeds), tuple(seeds))
                for index in range(len(policies))]

    def close(self):
        pass


def test_a_damaged_or_outdated_crown_falls_back_to_the_training_time_best(tmp_path, bandit_policies, capsys):
    from champion.runners.replay import load_policy

    spec, policies = bandit_policies
    config = bandit_config(9)
    training_best, names = save_candidates(tmp_path, config, spec, policies)
    crown = crowning.crown_run(tmp_path, config, Fixed())
    crowned = crown.champion.candidate.name
    assert crowned != training_best and load_policy(tmp_path)[1]["crowned"] is True
    damaged = tmp_path / "best" / crowned / "policy.npz"
    intact = damaged.read_bytes()
    damaged.write_bytes(b"damaged")
    _, manifest = load_policy(tmp_path)
    assert (manifest["crowned"], Path(manifest["entry"]).name) == (False, training_best)
    assert "crowned entry" in capsys.readouterr().err
    damaged.write_bytes(intact)
    store = BestPolicyStore(tmp_path / "best", keep=4)  # a resumed run saves a better one and stops before a crown
    store.offer(policies[1].weights, 99.0, json.loads((tmp_path / "best" / training_best / "manifest.json").read_text()))
    _, manifest = load_policy(tmp_path)
    assert (manifest["crowned"], Path(manifest["entry"]).name) == (False, store.current_entry.name)
    assert "predates the newest best entry" in capsys.readouterr().err
    again = crowning.crown_run(tmp_path, dataclasses.replace(config, crown=CrownConfig(candidates=3, workers=1)))
    assert [judged.candidate.name for judged in again.judged][0] == crowned  # the earlier champion is judged again


def test_the_replaced_crown_is_read_under_the_lock(crowned_run, tmp_path, capsys, monkeypatch):
    """A crown record written by the run's own crown just before ``champion crown`` takes the lock is the one it
    says it replaces (it was read before the lock, and the line was missing)."""
    import shutil

    from champion.runners.store.run_folder import RunLock

    copy = tmp_path / "copy"
    shutil.copytree(crowned_run, copy)
    record = copy / "best" / "champion.json"
    written_meanwhile = record.read_bytes()
    record.unlink()
    enter = RunLock.__enter__

    def finished_just_before(lock):
        record.write_bytes(written_meanwhile)  # the run's own crown ends as this one waits for the lock
        return enter(lock)

    monkeypatch.setattr(RunLock, "__enter__", finished_just_before)
    capsys.readouterr()
    assert champion("crown", str(copy), "--episodes", "10", "--workers", "1") == 0
    earlier = json.loads(written_meanwhile)
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        f": {earlier['entry']}, held-out mean {earlier['held_out_mean']:.2f} over {len(earlier['returns'])} episodes")
