"""champion tune: space files checked in one line, default spaces that always make a run, the objective read from the
trial's run folder, pruning of a known-bad trial, the study's fresh seeds, the winner's config file, a SIGKILLed study
resumed to exactly N trials, two processes on one journal, trials on Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

import champion  # noqa: E402
from champion.agents.config import ConfigError  # noqa: E402
from champion.runners.configure import load_run_config  # noqa: E402
from champion.runners.store.best_store import read_champion  # noqa: E402
from champion.runners.tune import report as tune_report  # noqa: E402
from champion.runners.tune.settings import make_settings, read_settings, require_optuna, trial_config  # noqa: E402
from champion.runners.tune.spaces import default_space, load_space  # noqa: E402
from hostile_helpers import champion as champion_cli  # noqa: E402

CHAMPION = [sys.executable, "-c", "from champion.runners.cli.main import main; main()"]
SMALL_SPACE = {"ppo.learning_rate": {"low": 3.0e-4, "high": 3.0e-3, "log": True}, "ppo.epochs": [2, 4]}
SMALL_RUN = {"ppo.num_steps": 64, "eval_every": 512, "checkpoint_every": 512, "engine": "gymnasium",
             "ppo.jit_compile": False, "crown.episodes": 20}
"""8 envs x 64 steps: 512-transition rollouts, an evaluation and a checkpoint after each; nothing compiled with XLA
(each trial's new shapes would compile again), a short crown."""


def study_folder(results: Path, name: str, env_id: str = "CartPole-v1") -> Path:
    return results / "tune" / env_id / "ppo" / name


def open_journal(folder: Path, name: str):
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def tune_command(results: Path, name: str, trials: int, *extra: str) -> list[str]:
    settings = [item for key, value in SMALL_RUN.items() for item in ("--set", f"{key}={value}")]
    return CHAMPION + ["tune", "CartPole-v1", "--trials", str(trials), "--trial-steps", "2048", "--study-name", name,
                       "--results-dir", str(results), "--final-episodes", "5", "--top", "1", "--quiet", *settings,
                       *extra]


@pytest.mark.parametrize("space, message", [
    ({"ppo.learnin_rate": [1e-3]}, "unknown config key 'ppo.learnin_rate'; did you mean ppo.learning_rate?"),
    ({"ppo.learning_rate": {"low": 1e-3, "high": 1e-4}}, "ppo.learning_rate: low must be below high, got low=0.001 "
                                                         "high=0.0001"),
    ({"ppo.learning_rate": {"low": 0, "high": 1e-3, "log": True}}, "ppo.learning_rate: a log range needs low > 0, "
                                                                   "got low=0"),
    ({"ppo.epochs": {"low": 1.5, "high": 10}}, "ppo.epochs is an integer field, so low must be a whole number, got 1.5"),
    ({"ppo.epochs": ["many"]}, "ppo.epochs must be an integer, got 'many'"),
    ({"ppo.epochs": []}, "ppo.epochs: the list of choices is empty; give at least one"),
    ({"network.activation": {"low": 0, "high": 1}}, "network.activation is not a number, so it takes a list of choices, "
                                                    "not a range"),
    ({"total_steps": [1000, 2000]}, "total_steps is the study's, the same for every trial (give it with --set or the "
                                    "tune options), so a space may not search it"),
    ({"crown.episodes": [10, 20]}, "crown.episodes is the study's"),
    ({"a2c.learning_rate": [1e-3]}, "a2c.learning_rate is a setting of A2C, and this study tunes PPO"),
    ({"ppo.gamma": {"low": 0.9, "high": 0.99, "spread": 2}}, "ppo.gamma: unknown range field 'spread'"),
    ([1, 2], "a space is a mapping of config keys to choices or ranges"),
])
def test_a_bad_space_file_is_refused_in_one_line_naming_the_file_and_the_key(tmp_path, space, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    with pytest.raises(ConfigError) as error:
        load_space(path, "ppo")
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_every_setting_the_default_space_samples_makes_a_valid_run(tmp_path, algo):
    settings = make_settings("Pendulum-v1", algo, trials=1, trial_steps=50_000, results_dir=tmp_path,
                             study_name="probe", space=None, base={}, use_preset=False, seed=0, storage=None,
                             prune=True, top=1, final_episodes=1, final_seed=2_000_000_000, workers=1,
                             engine="process", ray_address=None)
    space = default_space(algo)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3), direction="maximize")
    base = trial_config(settings, {}, "probe")
    seen = set()
    for _ in range(40):
        trial = study.ask()
        sampled, _ = space.sample(trial, base)
        config = trial_config(settings, sampled, "probe")  # validated: raises on a setting that cannot run
        hyper = config.algo_config
        assert config.total_steps == 50_000 and config.seed == 0
        assert 1e-5 <= hyper.learning_rate <= (3e-3 if algo == "ppo" else 1e-2)
        if algo == "ppo":
            assert config.rollout_size % hyper.minibatch_size == 0
        seen.add(tuple(config.network.hidden_sizes))
        study.tell(trial, 0.0)
    assert seen == {(64,), (64, 64), (256, 256)}


def test_a_study_without_optuna_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "optuna" else real(name, *args))
    with pytest.raises(ConfigError, match=r"^champion tune needs Optuna, which is not installed: pip install -e "
                                          r"'\.\[tune\]' \(in champion's folder\)"):
        require_optuna()


@pytest.mark.parametrize("args, message", [
    (["--trials", "0", "--trial-steps", "100"], "trials must be a whole number of at least 1, got 0"),
    (["--trials", "2", "--trial-steps", "100", "--set", "total_steps=5"],
     "total_steps is set by the study for every trial: give it as --trial-steps"),
    (["--trials", "2", "--trial-steps", "100", "--set", "crown.at_end=false"],
     "crown.at_end=false leaves trials without the crowned held-out mean"),
    (["--trials", "2", "--trial-steps", "100", "--set", "ppo.epoks=3"], "unknown config key 'ppo.epoks'"),
    (["--trials", "2"], "give ENV_ID, --trials and --trial-steps"),
    (["--trials", "2", "--trial-steps", "100", "--final-seed", "1000005"],
     "the study's re-evaluation seeds 1,000,005-1,000,104 overlap the evaluation seeds of every trial "
     "(1,000,000-1,000,009); start a study with another --final-seed"),
])
def test_bad_tune_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        from champion.runners.cli.main import main

        main(["tune", "CartPole-v1", "--results-dir", str(results), *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1
    assert lines[0].startswith("champion tune: error: ") and message in lines[0]
    assert not results.exists()


def probe_settings(results: Path, name: str, **changes):
    """A study's settings with the default PPO space on CartPole (nothing trains from them here)."""
    values = dict(trials=2, trial_steps=2048, results_dir=results, study_name=name, space=None, base=SMALL_RUN,
                  use_preset=True, seed=0, storage=None, prune=True, top=1, final_episodes=5,
                  final_seed=2_000_000_000, workers=1, engine="process", ray_address=None)
    return make_settings("CartPole-v1", "ppo", **{**values, **changes})


def test_workers_that_ask_at_the_same_moment_draw_different_settings(tmp_path):
    """Two workers open the study before either asks (they see the same history, as two processes starting together
    do); each trial's settings come from a sampler seeded by the study's seed and the trial's number."""
    from champion.runners.tune.settings import check_base
    from champion.runners.tune.study import open_study, seeded_trial
    from champion.runners.tune.tuning import prepare

    def draw(settings, opened, number):
        return settings.search_space().sample(seeded_trial(opened, number), check_base(settings))[0]

    settings = prepare(probe_settings(tmp_path, "race"))
    first, second = open_study(settings), open_study(settings)
    numbers = [first.study.ask().number, second.study.ask().number]
    drawn = [draw(settings, first, numbers[0]), draw(settings, second, numbers[1])]
    assert numbers == [0, 1] and drawn[0] != drawn[1]
    again = prepare(probe_settings(tmp_path, "race-again"))  # the same seed from scratch: the same first trial
    opened = open_study(again)
    assert draw(again, opened, opened.study.ask().number) == drawn[0]


def test_the_evaluation_at_the_budget_is_reported_but_never_pruned():
    """Trial 0 finished with 100, 200, 300 at steps 1,024, 2,048, 3,072 (the budget). A trial below it only at the
    budget completes with that report; one below it at 2,048 is pruned there."""
    from types import SimpleNamespace

    from champion.callbacks import Stop
    from champion.runners.tune.study import OpenStudy, ReportToStudy

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1024))
    finished = study.ask()
    for step, value in ((1024, 100.0), (2048, 200.0), (3072, 300.0)):
        finished.report(value, step)
    study.tell(finished, 300.0)
    opened = OpenStudy(study, storage, None)

    def evaluations(returns):
        number = study.ask().number
        reporter = ReportToStudy(opened, number, eval_every=1024, total_steps=3072)
        stops = [reporter.on_evaluation(step, SimpleNamespace(mean_return=value))
                 for step, value in zip((1024, 2048, 3072), returns)]
        return opened.trial(number), reporter, stops

    trial, reporter, stops = evaluations((150.0, 250.0, 280.0))
    assert stops == [None, None, None] and reporter.pruned_at is None
    assert trial.intermediate_values == {1024: 150.0, 2048: 250.0, 3072: 280.0}
    trial, reporter, stops = evaluations((150.0, 150.0))
    assert stops[0] is None and isinstance(stops[1], Stop) and "pruned by the study" in stops[1].reason
    assert reporter.pruned_at == 2048 and trial.user_attrs["pruned_at"] == 2048


def test_a_running_trial_that_names_no_worker_is_recovered_once_it_is_older_than_the_grace(tmp_path, monkeypatch):
    """A worker SIGKILLed between asking for a trial and naming itself leaves a RUNNING trial without a worker; one
    on another machine may not have written its heartbeat yet. Both are lost only after LOST_AFTER_S."""
    from champion.runners.tune import study as tune_study
    from champion.runners.tune.tuning import prepare

    settings = prepare(probe_settings(tmp_path, "orphan"))
    opened = tune_study.open_study(settings)
    orphan = opened.study.ask()
    elsewhere = opened.study.ask()
    opened.set_attr(elsewhere.number, "worker", "another-host/another-host-1-2.lock")
    assert tune_study.recover_lost_trials(opened) == []  # just asked for: their workers may be about to write
    monkeypatch.setattr(tune_study, "LOST_AFTER_S", 0.0)
    assert tune_study.recover_lost_trials(opened) == [orphan.number, elsewhere.number]
    trials = opened.study.get_trials()
    assert [trial.state.name for trial in trials] == ["FAIL", "FAIL", "WAITING", "WAITING"]
    assert trials[0].user_attrs["lost"] == "its worker was killed"
    assert [trials[2].user_attrs["retry_of"], trials[3].user_attrs["retry_of"]] == [0, 1]
    outcome = tune_study.TrialOutcome("COMPLETE", 1.0, {"crown_mean": 1.0}, "trial 0: crowned held-out mean 1.00")
    assert tune_study.tell(opened, orphan.number, outcome) is False  # its worker ended after all: not counted
    assert opened.trial(orphan.number).state.name == "FAIL" and "crown_mean" not in opened.trial(0).user_attrs
    assert opened.set_attr(orphan.number, "heartbeat", 1.0) is False


def test_a_runs_config_file_keeps_its_settings_but_not_the_study_keys(small_study):
    from champion.runners.configure import read_config_file
    from champion.runners.tune.settings import without_study_keys

    results, result = small_study
    path = study_folder(results, "small") / result.trials[0].run_dir / "config.yaml"
    kept, note = without_study_keys(read_config_file(path).settings, path)
    assert note == (f"{path}'s seed, total_steps, results_dir are left out: the study sets them for every trial "
                    "(--seed, --trial-steps, its folder)")
    assert not {"seed", "total_steps", "schedule_steps", "results_dir", "run_name"} & set(kept)
    assert kept["ppo.num_steps"] == 64 and kept["eval_every"] == 512 and kept["crown.episodes"] == 20


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """A finished 2-trial CartPole study (2,048 steps a trial), trained once for this module's tests."""
    results = tmp_path_factory.mktemp("tune")
    result = champion.tune("CartPole-v1", trials=2, trial_steps=2048, space=SMALL_SPACE, study_name="small",
                           results_dir=results, top=2, final_episodes=5, progress=False, config=SMALL_RUN)
    return results, result


def test_a_trials_value_is_its_runs_crowned_held_out_mean(small_study):
    results, result = small_study
    folder = study_folder(results, "small")
    trials = open_journal(folder, "small").get_trials()
    assert [trial.state.name for trial in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:
        run_dir = folder / trial.user_attrs["run_dir"]
        assert run_dir == folder / "CartPole-v1" / "ppo" / f"trial-{trial.number:04d}"
        crown = read_champion(run_dir / "best")
        assert trial.value == crown["held_out_mean"] == result.row(trial.number).crown_mean
        config = load_run_config(run_dir)
        assert config.total_steps == 2048 and config.ppo.num_steps == 64
        assert config.ppo.epochs == trial.params["ppo.epochs"]
        assert config.ppo.learning_rate == trial.params["ppo.learning_rate"]
        assert sorted(trial.intermediate_values) == [512, 1024, 1536, 2048]  # each evaluation, reported


def test_the_study_re_evaluation_plays_seeds_no_trial_saw(small_study):
    results, result = small_study
    folder = study_folder(results, "small")
    final = set(range(result.final_seeds[0], result.final_seeds[1] + 1))
    assert len(final) == 5 and min(final) == 2_000_000_000
    for row in result.trials:
        used = tune_report.trial_seeds(load_run_config(folder / row.run_dir))
        crown = set(read_champion(folder / row.run_dir / "best")["held_out_seeds"])
        assert crown <= set(used["crown"])
        for seeds in (*used.values(), crown):
            assert not final & set(seeds)
        assert row.study_mean is not None and row.study_interval[0] <= row.study_mean <= row.study_interval[1]
    settings = read_settings(folder)
    overlapping = type(settings)(**{**settings.to_dict(), "final_seed": 1_000_005})  # inside the eval seeds
    with pytest.raises(ConfigError, match=r"^the study's re-evaluation seeds 1,000,005-1,000,009 overlap the "
                                          r"evaluation seeds of .*trial-000[01] \(1,000,000-1,000,009\); start a study "
                                          r"with another --final-seed$"):
        tune_report.check_disjoint(overlapping, [folder / result.trials[0].run_dir])


def test_the_winner_is_the_best_on_fresh_seeds_and_its_file_trains_with_champion_train(small_study, tmp_path):
    results, result = small_study
    folder = study_folder(results, "small")
    winner = result.row(result.winner)
    assert winner.study_mean == max(row.study_mean for row in result.trials)
    assert result.winner_policy == folder / winner.run_dir / "best" / read_champion(
        folder / winner.run_dir / "best")["entry"]
    table = (folder / "report.md").read_text()
    assert f"| {result.winner} (winner) | complete |" in table and "selection bias of the winner" in table
    assert json.loads((folder / "report.json").read_text())["winner"] == result.winner
    assert champion_cli("train", "--config", result.winner_config, "--total-steps", "512", "--results-dir",
                        tmp_path, "--run-name", "again", "-q") == 0
    again = load_run_config(tmp_path / "CartPole-v1" / "ppo" / "again").to_dict()
    trained = load_run_config(folder / winner.run_dir).to_dict()
    assert again["total_steps"] == 512 and again["ppo"]["learning_rate"] == winner.settings["ppo.learning_rate"]
    budget = ("run_name", "results_dir", "seed", "total_steps", "schedule_steps")
    assert {key: value for key, value in again.items() if key not in budget} == {
        key: value for key, value in trained.items() if key not in budget}  # every other setting, as the trial had it


def test_a_study_starts_from_a_winner_file_with_its_own_seed_and_budget(small_study, tmp_path, capsys):
    """winner.yaml records its trial's seed and budget: the new study leaves them out with one note and trains every
    trial with its own (--seed 3, --trial-steps 512), the file's other settings kept."""
    results, result = small_study
    space = write(tmp_path / "space.yaml", {"ppo.epochs": [3]})
    code = champion_cli("tune", "--config", result.winner_config, "--trials", "1", "--trial-steps", "512", "--seed",
                        "3", "--study-name", "again", "--results-dir", tmp_path, "--space", space, "--top", "1",
                        "--final-episodes", "5", "-q")
    err = capsys.readouterr().err
    assert code == 0, err
    assert [line for line in err.splitlines() if line.startswith("note: ")] == [
        f"note: {result.winner_config}'s seed, total_steps are left out: the study sets them for every trial (--seed, "
        "--trial-steps, its folder)"]
    trial = load_run_config(study_folder(tmp_path, "again") / "CartPole-v1" / "ppo" / "trial-0000")
    assert trial.seed == 3 and trial.total_steps == 512 and trial.ppo.epochs == 3
    winner = result.row(result.winner)
    assert trial.ppo.learning_rate == winner.settings["ppo.learning_rate"]  # the file's, not searched here
    assert trial.ppo.num_steps == 64 and trial.eval_every == 512 and trial.crown.episodes == 20


def test_champion_runs_lists_the_study_beside_its_trials(small_study, capsys):
    results, result = small_study
    assert champion_cli("runs", "--results-dir", results) == 0
    out = capsys.readouterr().out
    assert "studies (champion tune)" in out and "trial-0000" in out and "trial-0001" in out
    line = next(line for line in out.splitlines() if "│ small " in line)
    assert "2/0 of 2; 0" in line and f"(trial {result.winner})" in line


def test_the_median_pruner_stops_a_trial_that_cannot_learn_and_it_keeps_what_it_saved(tmp_path):
    """Trial 0 learns (learning rate 3e-3); trial 1 cannot (1e-12: its policy stays the initial one, which falls at
    once), so at its first evaluation past the warm-up (a third of the budget) it is below trial 0's, the median."""
    folder = study_folder(tmp_path, "prune")
    space = {"ppo.learning_rate": [3.0e-3, 1.0e-12]}
    settings = make_settings("CartPole-v1", "ppo", trials=2, trial_steps=3072, results_dir=tmp_path,
                             study_name="prune", space=load_space_from(tmp_path, space), base=SMALL_RUN,
                             use_preset=True, seed=0, storage=None, prune=True, top=1, final_episodes=5,
                             final_seed=2_000_000_000, workers=1, engine="process", ray_address=None,
                             startup_trials=1)
    from champion.runners.tune.study import load_study, open_storage
    from champion.runners.tune.tuning import prepare, run_study

    prepare(settings)
    study = load_study(settings, open_storage(settings))
    study.enqueue_trial({"ppo.learning_rate": 3.0e-3})
    study.enqueue_trial({"ppo.learning_rate": 1.0e-12})
    result = run_study(settings, progress=False)
    trials = open_journal(folder, "prune").get_trials()
    assert [trial.state.name for trial in trials] == ["COMPLETE", "PRUNED"]
    pruned = trials[1]
    assert 1024 <= pruned.user_attrs["pruned_at"] < 3072
    step = pruned.user_attrs["pruned_at"] // 512 * 512
    assert pruned.intermediate_values[step] < trials[0].intermediate_values[step]  # below the median, trial 0
    run_dir = folder / pruned.user_attrs["run_dir"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "pruned by the study" in summary["stopped_early"]
    assert read_champion(run_dir / "best") is not None  # what it saved: best entries and the crown
    assert [row.state for row in result.trials] == ["COMPLETE", "PRUNED"] and result.winner == 0
    # a Ray task retried after its worker died in the run's end keeps the trial pruned, trained no further
    from champion.runners.tune.ray_trials import ray_trial

    stopped_at = pruned.user_attrs["env_steps"]  # the rollout under way when it was pruned, finished
    ended = ray_trial(str(folder), 1, pruned.user_attrs["settings"])  # the run had ended: taken as it is
    assert ended["state"] == "PRUNED" and ended["attrs"]["env_steps"] == stopped_at < 3072
    assert ended["attrs"]["crown_mean"] == pruned.user_attrs["crown_mean"]
    (run_dir / "summary.json").unlink()  # killed before its summary: champion's resume finishes it at that step
    finished = ray_trial(str(folder), 1, pruned.user_attrs["settings"])
    assert finished["state"] == "PRUNED" and finished["attrs"]["pruned_at"] == pruned.user_attrs["pruned_at"]
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] == stopped_at


def load_space_from(folder: Path, space: dict):
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return load_space(path, "ppo")


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def running_trial(folder: Path, name: str, number: int):
    """Trial ``number`` if it is RUNNING and its run has written a checkpoint (so it is mid-training)."""
    if not (folder / "journal.log").exists():
        return None
    try:
        trials = open_journal(folder, name).get_trials()
    except KeyError:  # the study is not created yet
        return None
    trial = next((trial for trial in trials if trial.number == number), None)
    if trial is None or trial.state.name != "RUNNING" or "run_dir" not in trial.user_attrs:
        return None
    return trial if (folder / trial.user_attrs["run_dir"] / "checkpoints").is_dir() else None


def test_a_study_killed_mid_trial_resumes_to_exactly_n_trials(tmp_path):
    """SIGKILLed while trial 1 trains (trial 0 finished): the same command again finds trial 1 lost, trains its
    settings again as trial 2 and ends with exactly 2 counted trials, trial 0 not trained again."""
    folder = study_folder(tmp_path, "killed")
    command = tune_command(tmp_path, "killed", 2, "--space", str(write(tmp_path / "space.yaml", SMALL_SPACE)))
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: running_trial(folder, "killed", 1), 180, "trial 1 to be training")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert open_journal(folder, "killed").get_trials()[1].state.name == "RUNNING"  # as the kill left it
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    trials = open_journal(folder, "killed").get_trials()
    counted = [trial for trial in trials if trial.state.name in ("COMPLETE", "PRUNED")]
    assert [trial.number for trial in counted] == [0, 2] and len(trials) == 3
    assert counted[0].user_attrs["ended"] < counted[1].user_attrs["started"]  # trial 0 as the killed run left it
    lost = trials[1]
    assert lost.state.name == "FAIL" and lost.user_attrs["lost"] == "its worker was killed"
    retry = trials[2]
    assert retry.user_attrs["retry_of"] == 1 and retry.params == lost.params
    assert (folder / lost.user_attrs["run_dir"] / "config.yaml").is_file()  # the killed run's folder is kept
    assert sorted(row.number for row in tune_report.read_report(folder).trials) == sorted(
        trial.number for trial in counted)


COUNT_SIGTERMS = """
import signal, sys, time
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append(time.monotonic()))
print("ready", flush=True)
while not got:
    time.sleep(0.01)
time.sleep(0.5)
sys.exit(100 + len(got))
"""
"""A stand-in worker: exits with 100 + the SIGTERMs it got within half a second of the first."""


def test_the_study_process_forwards_a_signal_once_to_each_worker_process():
    """SIGTERM to the process that started the workers (in their own session, so nothing else reaches them) is sent
    on to each of them exactly once."""
    import threading

    from champion.runners.tune.study import ForwardSignals

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can be set only in the main thread")
    children = [subprocess.Popen([sys.executable, "-c", COUNT_SIGTERMS], stdout=subprocess.PIPE, text=True,
                                 start_new_session=True) for _ in range(2)]
    try:
        assert [child.stdout.readline().strip() for child in children] == ["ready", "ready"]
        with ForwardSignals(children) as forwarded:
            os.kill(os.getpid(), signal.SIGTERM)
            codes = [child.wait(timeout=30) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert codes == [101, 101] and forwarded.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is not forwarded.forward  # the handler from before is back


@pytest.mark.slow  # two worker processes start TensorFlow side by side (about 9 s on a loaded 2-core machine)
def test_sigterm_to_a_study_of_two_worker_processes_gives_both_trials_back_in_one_line(tmp_path):
    """SIGTERM to the champion tune process alone reaches its two workers (forwarded once): each stops its trial with a
    checkpoint and gives it back, and the command ends with 143 and one line naming both trials."""
    folder = study_folder(tmp_path, "stopped2")
    command = tune_command(tmp_path, "stopped2", 2, "--space", str(write(tmp_path / "space.yaml", SMALL_SPACE)),
                           "--workers", "2")
    command[command.index("--trial-steps") + 1] = "40960"  # long enough to be stopped mid-trial
    tune = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: running_trial(folder, "stopped2", 0) and running_trial(folder, "stopped2", 1), 180,
                 "trials 0 and 1 to be training")
        tune.send_signal(signal.SIGTERM)
        err = tune.communicate(timeout=120)[1]
    finally:
        if tune.poll() is None:
            tune.kill()
    assert tune.returncode == 143, err
    assert [line for line in err.splitlines() if line.startswith("champion tune:")] == [
        "champion tune: stopped by SIGTERM: the study stopped, and trials 0, 1 are given back (their settings train "
        f"again, under new numbers); go on with: champion tune --resume {folder}"]
    trials = open_journal(folder, "stopped2").get_trials()
    assert [trial.state.name for trial in trials] == ["FAIL", "FAIL", "WAITING", "WAITING"]
    # given back by their workers on the signal (a worker that died of it would leave "its worker was killed")
    assert [trial.user_attrs["lost"] for trial in trials[:2]] == ["stopped by a signal"] * 2
    assert sorted(trial.user_attrs["retry_of"] for trial in trials[2:]) == [0, 1]


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow  # two champion processes side by side (about 26 s on a loaded 2-core machine)
def test_two_tune_processes_on_one_journal_run_one_study_without_duplicates(tmp_path):
    folder = study_folder(tmp_path, "shared")
    command = tune_command(tmp_path, "shared", 4, "--space", str(write(tmp_path / "space.yaml", SMALL_SPACE)))
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    trials = open_journal(folder, "shared").get_trials()
    counted = [trial for trial in trials if trial.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 4
    drawn = [json.dumps(trial.params, sort_keys=True) for trial in counted]
    assert len(set(drawn)) == 4, drawn  # each trial number has its own draw, though both processes began together
    workers = {trial.user_attrs["worker"] for trial in counted}
    assert len(workers) == 2  # both processes trained trials
    run_dirs = [trial.user_attrs["run_dir"] for trial in counted]
    assert len(set(run_dirs)) == 4 and all((folder / run_dir / "best" / "champion.json").is_file()
                                            for run_dir in run_dirs)


@pytest.mark.xdist_group("ray")
def test_on_ray_two_trials_run_at_once_on_the_tests_local_ray(local_ray, tmp_path):
    result = champion.tune("CartPole-v1", trials=2, trial_steps=1024, space=SMALL_SPACE, study_name="ray-short",
                           results_dir=tmp_path, engine="ray", workers=2, top=1, final_episodes=5, progress=False,
                           config=SMALL_RUN)
    trials = open_journal(study_folder(tmp_path, "ray-short"), "ray-short").get_trials()
    assert [trial.state.name for trial in trials] == ["COMPLETE", "COMPLETE"]
    assert max(trial.user_attrs["started"] for trial in trials) < min(trial.user_attrs["ended"] for trial in trials)
    assert len({trial.user_attrs["pid"] for trial in trials} | {os.getpid()}) == 3  # two Ray workers, not here
    assert sorted(row.number for row in result.trials) == [0, 1]


def checkpointed_trial(folder: Path, name: str, number: int):
    """Trial ``number`` while RUNNING with a checkpoint that verifies (a resume can go on from it)."""
    from champion.runners.store.checkpoints import newest_good_manifest

    trial = running_trial(folder, name, number)
    if trial is None:
        return None
    manifest = newest_good_manifest(folder / trial.user_attrs["run_dir"] / "checkpoints")
    return trial if manifest is not None and manifest["step"] < 8192 else None  # still training


@pytest.mark.slow  # its own local Ray, four workers started (about 80 s on a loaded 2-core machine, 15 s at load 1.5)
def test_on_ray_two_trials_run_at_once_and_a_killed_trial_worker_is_retried(tmp_path):
    pytest.importorskip("ray")
    folder = study_folder(tmp_path, "ray")
    command = tune_command(tmp_path, "ray", 2, "--space", str(write(tmp_path / "space.yaml", SMALL_SPACE)),
                           "--engine", "ray", "--workers", "2")
    command[command.index("--trial-steps") + 1] = "8192"  # both trials still training when trial 0 is killed
    tune = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        trial = wait_for(lambda: checkpointed_trial(folder, "ray", 1) and checkpointed_trial(folder, "ray", 0), 240,
                         "trials 0 and 1 to have checkpoints on Ray")
        killed, killed_at = trial.user_attrs["pid"], time.time()
        os.kill(killed, signal.SIGKILL)
        out, err = tune.communicate(timeout=600)
    finally:
        if tune.poll() is None:
            tune.kill()
    assert tune.returncode == 0, err
    trials = open_journal(folder, "ray").get_trials()
    assert [trial.state.name for trial in trials] == ["COMPLETE", "COMPLETE"]
    retried = trials[0]
    assert retried.user_attrs["pid"] != killed and retried.user_attrs["attempt"] == "resumed after its worker died"
    assert retried.user_attrs["run_dir"] == "CartPole-v1/ppo/trial-0000" and retried.user_attrs["env_steps"] == 8192
    assert trials[1].user_attrs["started"] < killed_at < trials[1].user_attrs["ended"]  # trial 1 ran on meanwhile
    assert trials[1].user_attrs["pid"] not in (killed, retried.user_attrs["pid"])


def test_importing_champion_imports_neither_optuna_nor_tensorflow():
    script = ("import sys, champion\nassert callable(champion.tune) and champion.StudyResult\n"
              "print(sorted(name for name in ('optuna', 'tensorflow', 'ray') if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]"]


@pytest.mark.slow  # two champion processes one after the other (about 30 s on a loaded 2-core machine)
def test_a_study_stopped_with_ctrl_c_gives_its_trial_back_and_goes_on_to_exactly_n(tmp_path):
    folder = study_folder(tmp_path, "stopped")
    command = tune_command(tmp_path, "stopped", 2, "--space", str(write(tmp_path / "space.yaml", SMALL_SPACE)))
    command[command.index("--trial-steps") + 1] = "20480"  # long enough to be stopped mid-trial
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: running_trial(folder, "stopped", 0), 180, "trial 0 to be training")
    first.send_signal(signal.SIGINT)
    err = first.communicate(timeout=120)[1]
    assert first.returncode == 130
    assert err.strip().splitlines()[-1] == (
        "champion tune: stopped by SIGINT: the study stopped, and trial 0 is given back (its settings train again, "
        f"under a new number); go on with: champion tune --resume {folder}")
    trials = open_journal(folder, "stopped").get_trials()
    assert [trial.state.name for trial in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs["lost"] == "stopped by a signal" and trials[1].user_attrs["retry_of"] == 0
    again = subprocess.run(CHAMPION + ["tune", "--resume", str(folder), "--quiet"], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    trials = open_journal(folder, "stopped").get_trials()
    assert [trial.state.name for trial in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].params == trials[0].params


def test_tune_from_python_takes_the_winner_file_without_its_study_keys(small_study, monkeypatch, capsys):
    """champion.tune(config=winner.yaml) keeps the file's settings for every trial and leaves out the keys the study
    sets (seed, budget, folder), with the same note as the command; the study is prepared, not run."""
    from champion.runners.tune import tuning

    results, _ = small_study
    path = study_folder(results, "small") / "winner.yaml"
    prepared = []
    monkeypatch.setattr(tuning, "run_study", lambda study, progress: prepared.append(study))
    champion.tune("CartPole-v1", config=path, trials=1, trial_steps=1024, study_name="again",
                  results_dir=results, progress=False)
    note = capsys.readouterr().err.strip()
    assert note.startswith(f"note: {path}'s seed") and note.endswith(
        "left out: the study sets them for every trial (--seed, --trial-steps, its folder)")
    [study] = prepared
    assert study.base["ppo.num_steps"] == 64 and study.base["eval_every"] == 512  # the file's, kept
    assert not {"seed", "total_steps", "results_dir"} & set(study.base)
