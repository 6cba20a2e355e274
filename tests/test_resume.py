"""Resume: exact continuation after a kill, signals, damaged checkpoints, refusals, TensorBoard."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from champion.agents.config import ConfigError
from crash_helpers import (CHAMPION, QUICK, assert_run_is_sound, champion, checkpoint_weights, evaluation_rows,
                           tensorboard_steps)
from champion.runners import evaluate as evaluating, faults
from champion.runners.configure import resolve_config
from champion.runners.store.checkpoints import CheckpointError, read_checkpoint
from champion.runners.store.run_folder import RunFolderError, RunLock
from champion.runners.training import resume, train


@pytest.mark.parametrize("engine", ["graph", pytest.param("gymnasium", marks=pytest.mark.slow)])
def test_kill_and_resume_continues_exactly_like_a_straight_run(tmp_path, engine):
    options = QUICK + ["--set", f"engine={engine}"]
    straight = champion(["train", "CartPole-v1", "--total-steps", "4096", "--results-dir", str(tmp_path),
                         "--run-name", "straight"] + options)
    assert straight.returncode == 0, straight.stderr
    killed = champion(["train", "CartPole-v1", "--total-steps", "4096", "--results-dir", str(tmp_path),
                       "--run-name", "resumed"] + options, env={"CHAMPION_FAULT_KILL_AT_STEP": "2560"})
    assert killed.returncode == -signal.SIGKILL
    resumed_dir = tmp_path / "CartPole-v1" / "ppo" / "resumed"
    # the kill came at the end of the loop's step-2560 iteration, before the next checkpoint (3072); the
    # evaluation at 2560, started beside the loop just before, may or may not have been offered by then
    before_kill = [row["step"] for row in evaluation_rows(resumed_dir)]
    assert before_kill in (["512", "1024", "1536", "2048"], ["512", "1024", "1536", "2048", "2560"])
    started = time.perf_counter()
    again = champion(["train", "--resume", str(resumed_dir), "-q"])
    resumed_seconds = time.perf_counter() - started
    assert again.returncode == 0, again.stderr

    straight_dir = tmp_path / "CartPole-v1" / "ppo" / "straight"
    # "saved" may differ: the killed run had already saved the step-2560 best, so the replayed
    # evaluation at 2560 finds it equal, not better. Every return and the best-so-far column match.
    columns = ("step", "mean_return", "std_return", "min_return", "max_return", "best_mean_return")
    straight_rows = [[row[column] for column in columns] for row in evaluation_rows(straight_dir)]
    resumed_rows = [[row[column] for column in columns] for row in evaluation_rows(resumed_dir)]
    assert resumed_rows == straight_rows and len(straight_rows) == 8
    first, second = checkpoint_weights(straight_dir, 4096), checkpoint_weights(resumed_dir, 4096)
    assert first.keys() == second.keys()
    assert len([name for name in first if name.startswith("model/")]) == 12  # 3 layers x 2 torsos + 2 heads
    assert all(np.array_equal(first[name], second[name]) for name in first)
    assert_run_is_sound(resumed_dir)
    # wall_seconds carries on across the kill without counting any session twice
    walls = [float(row["wall_seconds"]) for row in evaluation_rows(resumed_dir)]
    assert walls == sorted(walls) and walls[-1] - walls[len(before_kill) - 1] < resumed_seconds
    # TensorBoard: one value per step per tag, and the same steps as the straight run
    resumed_steps, straight_steps = tensorboard_steps(resumed_dir), tensorboard_steps(straight_dir)
    for tag, steps in resumed_steps.items():
        assert len(steps) == len(set(steps)), f"{tag} has duplicated steps {steps}"
    assert resumed_steps["eval/mean_return"] == straight_steps["eval/mean_return"] == list(range(512, 4097, 512))


class Crash(Exception):
    """Stands in for the process dying at a loop iteration's end."""


@pytest.mark.parametrize("offered_before_the_crash", [False, True])
def test_an_evaluation_in_flight_at_a_checkpoint_is_played_again_by_a_resume_unless_it_was_offered(
        tmp_path, monkeypatch, offered_before_the_crash):
    """A checkpoint does not wait for the evaluation beside the loop. If the run dies before offering it, a resume
    from that checkpoint (whose weights are the evaluated ones) plays it again; if it was offered, not twice."""
    overrides = {"total_steps": 3072, "eval_every": 512, "checkpoint_every": 1024, "ppo.epochs": 2, "media": False,
                 "engine": "gymnasium", "ppo.jit_compile": False, "results_dir": str(tmp_path)}
    straight = train(resolve_config("CartPole-v1", "ppo", {**overrides, "run_name": "straight"})[0], progress=False)
    released, evaluated, calls = threading.Event(), threading.Event(), []
    real_evaluate = evaluating.evaluate

    def held_evaluate(*args, **kwargs):  # the second one, at step 1024, is still running at its checkpoint
        calls.append(len(calls))
        if len(calls) != 2:
            return real_evaluate(*args, **kwargs)
        released.wait(timeout=60)
        result = real_evaluate(*args, **kwargs)
        evaluated.set()
        return result

    def crash_at(step):
        if step == 1024:
            released.set()
            if offered_before_the_crash:
                evaluated.wait(timeout=60)  # so the next iteration finds it finished and offers it
        if step == (1536 if offered_before_the_crash else 1024):
            raise Crash

    monkeypatch.setattr(evaluating, "evaluate", held_evaluate)
    monkeypatch.setattr(faults, "step_point", crash_at)
    with pytest.raises(Crash):
        train(resolve_config("CartPole-v1", "ppo", {**overrides, "run_name": "crashed"})[0], progress=False)
    monkeypatch.undo()
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "crashed"
    assert read_checkpoint(run_dir / "checkpoints" / f"ckpt-{1024:010d}").state["loop"]["evaluation_in_flight"] == 1024
    logged = [int(row["step"]) for row in evaluation_rows(run_dir)]
    assert logged == ([512, 1024] if offered_before_the_crash else [512])
    resume(run_dir, progress=False)
    rows = {int(row["step"]): row for row in evaluation_rows(run_dir)}
    assert list(rows) == [512, 1024, 1536, 2048, 2560, 3072]
    straight_rows = {int(row["step"]): row for row in evaluation_rows(straight.run_dir)}
    assert rows[1024]["mean_return"] == straight_rows[1024]["mean_return"]  # the same policy, played again or not
    assert rows[3072]["mean_return"] == straight_rows[3072]["mean_return"]


@pytest.mark.parametrize("signal_number, engine", [(signal.SIGINT, "graph"), (signal.SIGTERM, "gymnasium")])
def test_signals_write_a_checkpoint_and_exit_with_128_plus_the_signal(tmp_path, signal_number, engine):
    """The signal goes to the process group, as Ctrl-C in a terminal or `kill -- -PGID` sends it: the
    stderr filter process gets it too and must keep passing the trainer's last lines on."""
    child = subprocess.Popen(CHAMPION + ["train", "CartPole-v1", "--total-steps", "200000", "--results-dir",
                                         str(tmp_path), "--run-name", "sig", "--eval-every", "512",
                                         "--set", "checkpoint_every=100000", "--set", f"engine={engine}"],
                             stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    for line in child.stdout:
        if line.startswith("step"):  # the first evaluation: training is under way
            break
    os.killpg(child.pid, signal_number)
    _, rest = child.communicate(timeout=120)
    assert child.returncode == 128 + signal_number
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "sig"
    assert f"continue with: champion train --resume {run_dir}" in rest
    [checkpoint] = sorted((run_dir / "checkpoints").glob("ckpt-*"))
    assert read_checkpoint(checkpoint).manifest["step"] < 100000
    [listed] = json.loads(champion(["runs", "--results-dir", str(tmp_path), "--json"]).stdout)
    assert (listed["status"], listed["resume_step"]) == ("stopped", read_checkpoint(checkpoint).manifest["step"])
    assert_run_is_sound(run_dir)


def quick_config(tmp_path, name, **overrides):
    values = {"total_steps": 2048, "eval_every": 512, "checkpoint_every": 1024, "ppo.epochs": 2,
              "results_dir": str(tmp_path), "run_name": name, "media": False, "engine": "gymnasium",
              "ppo.jit_compile": False,  # resume mechanics, not the engine: see crash_helpers.QUICK
              # constant rates, so that a finished run may train longer (a linear one ends at its first budget)
              "ppo.learning_rate_schedule": "constant", "ppo.clip_range_schedule": "constant"}
    values.update(overrides)
    return resolve_config("CartPole-v1", "ppo", values)[0]


@pytest.mark.parametrize("damage", ["truncate the state", "delete the tensorflow index"])
def test_damaged_newest_checkpoint_falls_back_loudly_and_never_starts_fresh(tmp_path, capsys, damage):
    run_dir = train(quick_config(tmp_path, "damaged"), progress=False).run_dir
    older, newest = sorted((run_dir / "checkpoints").glob("ckpt-*"))
    if damage == "truncate the state":
        state = newest / "state.npz"
        state.write_bytes(state.read_bytes()[:-10])
    else:
        (newest / "tf.index").unlink()
    result = resume(run_dir, {"total_steps": 3072}, progress=False)
    assert "checkpoint " + str(newest) in capsys.readouterr().err
    assert result.env_steps == 3072 and result.session_steps == 2048  # from step 1024, not from 0
    assert (run_dir / "checkpoints" / "ckpt-0000002048-2").is_dir()  # the damaged number is not overwritten
    for checkpoint in (run_dir / "checkpoints").glob("ckpt-*"):
        shutil.rmtree(checkpoint)
    with pytest.raises(CheckpointError, match="no resume checkpoint .* start a new run"):
        resume(run_dir, {"total_steps": 4096}, progress=False)


def test_every_checkpoint_damaged_is_refused(tmp_path):
    run_dir = train(quick_config(tmp_path, "all-damaged", total_steps=1024), progress=False).run_dir
    for checkpoint in (run_dir / "checkpoints").glob("ckpt-*"):
        (checkpoint / "manifest.json").write_text("{garbled")
    with pytest.raises(CheckpointError, match="every resume checkpoint .* is damaged"):
        resume(run_dir, {"total_steps": 2048}, progress=False)


def test_resume_refuses_changes_to_the_problem_and_a_foreign_checkpoint(tmp_path):
    run_dir = train(quick_config(tmp_path, "mine", total_steps=1024), progress=False).run_dir
    with pytest.raises(ConfigError, match=r"--resume cannot change network.hidden_sizes \(the run has \(64, 64\), "
                                          r"you asked for \(32,\)\)"):
        resume(run_dir, {"network.hidden_sizes": "[32]"}, progress=False)
    with pytest.raises(ConfigError, match="--resume cannot change env_id"):
        resume(run_dir, {"env_id": "Acrobot-v1"}, progress=False)
    other = train(quick_config(tmp_path, "other", total_steps=1024, **{"network.hidden_sizes": "[16]"}),
                  progress=False).run_dir
    shutil.rmtree(run_dir / "checkpoints")
    shutil.copytree(other / "checkpoints", run_dir / "checkpoints")
    with pytest.raises(ConfigError, match="was made for CartPole-v1 with network .*16.* refusing to load it"):
        resume(run_dir, {"total_steps": 2048}, progress=False)


def test_resume_keeps_the_best_when_later_evaluations_are_not_better(tmp_path):
    config, _ = resolve_config("champion-test/Bandit-v0", "ppo", {
        "total_steps": 1024, "num_envs": 4, "eval_every": 256, "eval_episodes": 2, "checkpoint_every": 512,
        "ppo.num_steps": 16, "ppo.minibatch_size": 32, "ppo.learning_rate": 3e-3,
        "results_dir": str(tmp_path), "run_name": "bandit"})
    first = train(config, progress=False)
    assert first.best_mean_return == 1.0
    best_before = json.loads((first.run_dir / "best" / "current.json").read_text())
    resumed = resume(first.run_dir, {"total_steps": 2048}, progress=False)
    rows = evaluation_rows(first.run_dir)
    assert [float(row["mean_return"]) for row in rows[-4:]] == [1.0] * 4
    assert [row["saved"] for row in rows[-4:]] == ["0"] * 4
    assert resumed.best_step == first.best_step is not None
    assert json.loads((first.run_dir / "best" / "current.json").read_text()) == best_before


def test_a_second_trainer_on_the_same_run_folder_is_refused(tmp_path):
    run_dir = train(quick_config(tmp_path, "locked", total_steps=1024), progress=False).run_dir
    with RunLock(run_dir):
        with pytest.raises(RunFolderError, match=f"run folder {run_dir} is in use by another trainer"):
            resume(run_dir, {"total_steps": 2048}, progress=False)
    assert resume(run_dir, {"total_steps": 1536}, progress=False).env_steps == 1536
    assert not (run_dir / ".lock").exists()  # a finished trainer leaves no lock file behind


def test_a_trainer_that_opened_the_lock_file_as_the_last_one_removed_it_locks_the_new_file(tmp_path):
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = RunLock(run_dir).__enter__()
    stale = open(run_dir / ".lock", "a+")  # a second trainer opens the file now...
    first.__exit__(None, None, None)  # ...the first one finishes and removes it...
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ...so the old file's lock is free, but names nothing
    with RunLock(run_dir) as third:  # a third trainer takes the path's new file
        assert os.fstat(third._handle.fileno()).st_ino != os.fstat(stale.fileno()).st_ino
        assert third._still_named(third._handle) and not third._still_named(stale)
        with pytest.raises(RunFolderError, match="in use by another trainer"):
            RunLock(run_dir).__enter__()
    stale.close()


def test_resuming_a_finished_run_exits_2_with_the_hint_and_leaves_the_run_untouched(tmp_path, capsys):
    from champion.runners.cli.main import main

    run_dir = train(quick_config(tmp_path, "done", total_steps=1024), progress=False).run_dir

    def snapshot() -> dict[str, tuple[int, bytes]]:
        return {str(path.relative_to(run_dir)): (path.stat().st_mtime_ns, path.read_bytes())
                for path in sorted(run_dir.rglob("*")) if path.is_file()}

    before = snapshot()
    capsys.readouterr()  # what the training above printed is not the resume's
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run_dir)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1
    assert lines[0] == (f"champion train: error: the run in {run_dir} is already at step 1,024 of 1,024; pass a larger "
                        "--total-steps to train longer (e.g. --total-steps 2048)")
    assert snapshot() == before
    assert resume(run_dir, {"total_steps": 2048}, progress=False).env_steps == 2048  # a larger budget still resumes


def test_a_lock_file_removed_between_open_and_lock_is_opened_again(tmp_path, monkeypatch):
    import fcntl

    from champion.runners.store import run_folder

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    real_flock, calls = fcntl.flock, []

    def flock_after_the_other_trainer_removed_the_file(handle, operation):
        calls.append(operation)
        if len(calls) == 1:
            (run_dir / ".lock").unlink()  # the trainer before finished between our open() and flock()
        return real_flock(handle, operation)

    monkeypatch.setattr(run_folder.fcntl, "flock", flock_after_the_other_trainer_removed_the_file)
    with RunLock(run_dir) as lock:
        assert len(calls) == 2  # locked the removed file, saw it was no longer the lock file, locked the new one
        assert os.stat(run_dir / ".lock").st_ino == os.fstat(lock._handle.fileno()).st_ino
        assert (run_dir / ".lock").read_text() == str(os.getpid())


def test_a_budget_that_is_not_whole_rollouts_is_rounded_up_and_the_run_says_so_at_the_start(tmp_path, capsys):
    result = train(quick_config(tmp_path, "rounded", total_steps=1000, eval_every=1000), progress=True)
    assert result.env_steps == 1024  # 4 rollouts of 32 steps x 8 envs
    assert "note: 1,000 steps rounded up to 1,024: whole rollouts of 32 steps x 8 envs" in capsys.readouterr().err
    exact = train(quick_config(tmp_path, "exact", total_steps=1024, eval_every=1024), progress=True)
    assert exact.env_steps == 1024 and "rounded up" not in capsys.readouterr().err


def test_the_end_of_a_run_names_the_best_policys_folder(tmp_path, capsys):
    """Without a crown, the training-time best (with one: tests/test_crown_around.py)."""
    result = train(quick_config(tmp_path, "named", total_steps=1024, eval_every=512, **{"crown.at_end": False}),
                   progress=True)
    lines = capsys.readouterr().out.splitlines()  # with the results, on stdout
    entry = (result.run_dir / "best" / json.loads((result.run_dir / "best" / "current.json").read_text())["entry"])
    assert f"best policy: {entry}" in lines and entry.is_dir()


def test_a_run_killed_after_its_last_checkpoint_but_before_its_summary_is_finished_by_resume(tmp_path):
    # 1,000 steps are 4 whole rollouts of 256: the last checkpoint is at 1,024, past the budget as given
    run_dir = train(quick_config(tmp_path, "almost", total_steps=1000,
                                 **{"ppo.learning_rate_schedule": "linear"}), progress=False).run_dir
    (run_dir / "summary.json").unlink()  # as if killed between the last checkpoint and the summary
    result = resume(run_dir, progress=False)
    assert (result.env_steps, result.session_steps) == (1024, 0)
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] == 1024
    (run_dir / "summary.json").unlink()
    with pytest.raises(ConfigError, match="is at step 1,024 already, past --total-steps 999; give at least 1,024"):
        resume(run_dir, {"total_steps": 999}, progress=False)  # a budget given now is not rounded up to reach it
    assert resume(run_dir, {"total_steps": 1000}, progress=False).env_steps == 1024  # its own budget: finishes


def tensorboard_values(run_dir, tag):
    """step -> value of a scalar tag, in the order TensorBoard reads them (``event_files``)."""
    from event_files import scalar_values

    return scalar_values(run_dir / "tb", tag)


def crash_at_step(monkeypatch, crash_step):
    def crash_at(step):
        if step == crash_step:
            raise Crash
    monkeypatch.setattr(faults, "step_point", crash_at)


def test_a_resume_keeps_the_runs_linear_schedules_whatever_its_new_budget(tmp_path, monkeypatch, capsys):
    """The learning rate falls linearly to 0 over the run's first budget (3,072 steps), recorded as schedule_steps:
    a resume with a lower --total-steps stops earlier with the same rates; a larger one is refused."""
    from champion.runners.cli.main import main

    config = quick_config(tmp_path, "linear", total_steps=3072, log_every=256, checkpoint_every=256,
                          **{"ppo.learning_rate_schedule": "linear", "ppo.learning_rate": 1e-3})
    crash_at_step(monkeypatch, 1024)
    with pytest.raises(Crash):
        train(config, progress=False)
    monkeypatch.undo()
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "linear"
    assert "schedule_steps: 3072" in (run_dir / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"total_steps=4,096 is past schedule_steps=3,072, where the linear schedule "
                                          r"of ppo.learning_rate_schedule reaches 0"):
        resume(run_dir, {"total_steps": 4096}, progress=False)
    with pytest.raises(SystemExit) as exit_info:  # the CLI says it in one line
        main(["train", "--resume", str(run_dir), "--total-steps", "4096"])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after a warning of an earlier test's TensorFlow, if any
    assert last.startswith("champion train: error: total_steps=4,096 is past schedule_steps")
    assert resume(run_dir, {"total_steps": 2048}, progress=False).env_steps == 2048
    capsys.readouterr()
    with pytest.raises(SystemExit):  # finished at 2,048 of a 3,072-step schedule: it may still go on to 3,072
        main(["train", "--resume", str(run_dir), "--total-steps", "2048"])
    assert "pass a larger --total-steps to train longer (e.g. --total-steps 3072)" in capsys.readouterr().err
    rates = tensorboard_values(run_dir, "train/learning_rate")
    assert sorted(rates) == list(range(256, 2049, 256))
    for step, rate in rates.items():  # the rule: 1e-3 * (1 - step / 3072) at the update ending at step
        assert rate == pytest.approx(1e-3 * (1 - step / 3072), rel=1e-6), step
    assert resume(run_dir, {"total_steps": 3072}, progress=False).env_steps == 3072
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(run_dir)])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"champion train: error: the run in {run_dir} is already at step 3,072 of 3,072, where its linear "
        "ppo.learning_rate_schedule reaches 0; to train longer start a new run with a larger --total-steps")


def test_a_budget_below_the_steps_already_done_is_refused_and_a_lower_one_above_them_is_noted(tmp_path, monkeypatch,
                                                                                              capsys):
    from champion.runners.cli.main import main

    crash_at_step(monkeypatch, 1536)
    with pytest.raises(Crash):
        train(quick_config(tmp_path, "lowered", total_steps=3072, checkpoint_every=512), progress=False)
    monkeypatch.undo()
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "lowered"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run_dir), "--total-steps", "1024"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"champion train: error: the run in {run_dir} is at step 1,536 already, past --total-steps 1,024; give at "
        "least 1,536 (it cannot go back)"]
    main(["train", "--resume", str(run_dir), "--total-steps", "2048"])  # returns: it succeeded
    assert "note: the run's budget is lowered from 3,072 to 2,048 steps" in capsys.readouterr().err.splitlines()
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] == 2048


def test_champion_runs_shows_each_runs_status_and_the_step_a_resume_starts_from(tmp_path, monkeypatch):
    from champion.runners.store.runs import status_text, summarize

    finished = train(quick_config(tmp_path, "finished", total_steps=1024), progress=False).run_dir
    crash_at_step(monkeypatch, 1536)
    with pytest.raises(Crash):
        train(quick_config(tmp_path, "failed", total_steps=3072, eval_every=1024, checkpoint_every=512), progress=False)
    monkeypatch.undo()
    failed = tmp_path / "CartPole-v1" / "ppo" / "failed"
    assert [row["step"] for row in evaluation_rows(failed)] == ["1024"]  # the last evaluation is behind...
    summary = summarize(failed)
    assert (summary.status, summary.resume_step, summary.env_steps) == ("failed", 1536, 1536)  # ...the checkpoint
    assert summary.envs_exact == [True] * 8
    assert status_text(summary) == "failed, resumes at 1,536, 8/8 envs exact"
    assert (summarize(finished).status, summarize(finished).env_steps) == ("finished", 1024)
    with RunLock(failed):
        assert summarize(failed).status == "running"
    (failed / "status.json").write_text(json.dumps({"status": "running"}))  # as a SIGKILL leaves it
    assert summarize(failed).status == "crashed"
