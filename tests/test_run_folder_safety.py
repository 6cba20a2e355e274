"""A run folder from anyone is safe to open: its lock, names, seeds, leftovers, final policy, stop lines, config."""

import dataclasses
import errno
import fcntl
import os
import shutil
import signal
import threading
from datetime import datetime
from pathlib import Path

import pytest

from champion.agents.config import RUN_NAME_MAX_BYTES, SEED_LIMIT, ConfigError, TrainConfig, validate
from hostile_helpers import champion, copy_run, errors_in, tree_digest, warnings_in
from champion.runners.store.best_store import list_final_entries, read_entry
from champion.runners.store.run_folder import RunFolderError, RunLock, create_run_dir, default_run_name, is_locked
from champion.runners.run_state import TrainingInterrupted, _recorded_total_steps, write_failure

DEAD_PID = 9_999_999
"""Above any Linux pid_max (at most 2**22): no process has it."""
TINY = ("--total-steps", "512", "--eval-every", "512", "--eval-episodes", "2", "--no-media", "-q",
        "--engine", "gymnasium", "--set", "num_envs=4", "--set", "ppo.num_steps=128", "--set", "ppo.minibatch_size=512",
        "--set", "ppo.epochs=1", "--set", "ppo.jit_compile=false")
"""One rollout of CartPole and one evaluation: a second or two once TensorFlow is loaded."""


@pytest.fixture
def hostile(tmp_path, finished_run):
    """A copy of the finished run (``run``) and a folder beside it that nothing may change (``outside``)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("not a lock\n")
    return copy_run(finished_run, tmp_path / "run"), outside


# 1. the lock file


@pytest.mark.parametrize("kind", ["symlink", "hard link", "fifo"])
def test_crown_never_writes_through_a_lock_file_that_is_not_its_own(hostile, capsys, kind):
    run, outside = hostile
    {"symlink": lambda: (run / ".lock").symlink_to(outside / "target"),
     "hard link": lambda: os.link(outside / "target", run / ".lock"),
     "fifo": lambda: os.mkfifo(run / ".lock")}[kind]()
    before, run_before = tree_digest(outside), tree_digest(run)
    assert champion("crown", run) == 2
    errors = errors_in(capsys.readouterr().err)
    assert len(errors) == 1 and ".lock" in errors[0], errors  # a link out may be refused before the lock is taken
    assert tree_digest(outside) == before and tree_digest(run) == run_before


def test_resume_never_writes_through_a_linked_lock_file(hostile, capsys):
    run, outside = hostile
    (run / ".lock").symlink_to(outside / "target")
    (run / "summary.json").unlink()  # a run killed before its end: its resume would finish it
    before = tree_digest(outside)
    assert champion("train", "--resume", run, "-q") == 2
    errors = errors_in(capsys.readouterr().err)
    assert len(errors) == 1 and ".lock" in errors[0], errors
    assert tree_digest(outside) == before
    assert (outside / "target").read_text() == "not a lock\n"


def test_the_lock_never_follows_a_link_nor_waits_on_a_fifo(hostile):
    run, outside = hostile
    (run / ".lock").symlink_to(outside / "target")
    with pytest.raises(RunFolderError, match=r"\.lock .* is a link or not a regular file"):
        with RunLock(run):
            pass
    assert (outside / "target").read_text() == "not a lock\n"
    with open(outside / "target") as held:  # a lock on the target: seen only if the link were followed
        fcntl.flock(held, fcntl.LOCK_EX)
        assert is_locked(run) is False
    (run / ".lock").unlink()
    os.mkfifo(run / ".lock")
    answers = []
    looking = threading.Thread(target=lambda: answers.append(is_locked(run)), daemon=True)
    looking.start()
    looking.join(10)
    assert answers == [False]
    (run / ".lock").unlink()
    with RunLock(run):  # a real lock still works, and its file goes with it
        assert is_locked(run) is True and (run / ".lock").read_text() == str(os.getpid())
    assert not (run / ".lock").exists()
    (run / ".lock").mkdir()
    with pytest.raises(RunFolderError, match="not a regular file"):
        with RunLock(run):
            pass


# 2. run names and 3. seeds, refused before any folder exists


@pytest.mark.parametrize("name", ["../../x", "ABSOLUTE", ".tmp-keep-1", ".", "a/b", "-x", "bad\udcffname",
                                  "tab\tname", "a b", "x" * (RUN_NAME_MAX_BYTES + 1), "é" * (RUN_NAME_MAX_BYTES // 2 + 1)])
def test_a_run_name_that_is_not_one_plain_folder_name_is_refused_before_anything_exists(tmp_path, capsys, name):
    results, absolute = tmp_path / "results", tmp_path / "absolute"
    name = str(absolute) if name == "ABSOLUTE" else name
    assert champion("train", "CartPole-v1", "--results-dir", results, "--run-name", name, *TINY) == 2
    errors = errors_in(capsys.readouterr().err)
    assert len(errors) == 1 and "run_name" in errors[0] and f"at most {RUN_NAME_MAX_BYTES} bytes" in errors[0], errors
    assert not results.exists() and not absolute.exists()


def test_names_at_the_limit_and_every_generated_name_pass():
    longest = "é" * (RUN_NAME_MAX_BYTES // 2)  # 2 bytes each in UTF-8
    assert len(f".tmp-{longest}-{9_999_999}".encode()) == 255
    generated = default_run_name(SEED_LIMIT - 1, datetime(2026, 12, 31, 23, 59, 59))
    for name in (longest, "x" * RUN_NAME_MAX_BYTES, generated, f"{generated}-2", f"{generated}-1234", "日本語_run-1.2+3=4,5"):
        validate(dataclasses.replace(TrainConfig(), run_name=name))


def test_a_run_folder_with_the_longest_name_is_created(tmp_path):
    name = "é" * (RUN_NAME_MAX_BYTES // 2)
    run_dir = create_run_dir(TrainConfig(results_dir=str(tmp_path), run_name=name))
    assert run_dir.name == name and (run_dir / "config.yaml").is_file()


@pytest.mark.parametrize("options", [("--seed", "99999999999999999999"), ("--seed", str(SEED_LIMIT)), ("--seed", "-1"),
                                     ("--set", f"eval_seed={SEED_LIMIT}"), ("--set", "crown.seed=-3"),
                                     ("--set", f"crown.seed={2**40}")])
def test_a_seed_out_of_range_is_refused_before_the_run_folder_exists(tmp_path, capsys, options):
    results = tmp_path / "results"
    assert champion("train", "CartPole-v1", "--results-dir", results, *TINY, *options) == 2
    errors = errors_in(capsys.readouterr().err)
    assert len(errors) == 1 and f"from 0 to {SEED_LIMIT - 1:,}" in errors[0], errors
    assert not results.exists()


def test_a_run_trains_and_crowns_at_the_largest_seeds(tmp_path):
    top = SEED_LIMIT - 1
    assert champion("train", "CartPole-v1", "--results-dir", tmp_path, "--run-name", "top", *TINY, "--seed", top,
                    "--set", f"eval_seed={top}", "--set", "crown.episodes=2", "--set", "crown.candidates=1",
                    "--set", "crown.workers=1") == 0
    assert (tmp_path / "CartPole-v1" / "ppo" / "top" / "best" / "champion.json").is_file()
    with pytest.raises(ConfigError, match="crown.seed"):
        validate(dataclasses.replace(TrainConfig(), crown=dataclasses.replace(TrainConfig().crown, seed=SEED_LIMIT)))


# 4. leftovers of create_run_dir


def test_only_what_create_run_dir_leaves_is_removed_as_abandoned(tmp_path, capsys):
    parent = tmp_path / "CartPole-v1" / "ppo"
    parent.mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "best").mkdir(parents=True)
    (outside / "best" / "policy.npz").write_bytes(b"keep")
    half_made, empty = parent / f".tmp-a-{DEAD_PID}", parent / f".tmp-b-{DEAD_PID}"
    half_made.mkdir()
    (half_made / "config.yaml").write_text("env_id: CartPole-v1\n")
    empty.mkdir()
    kept_run, link, alive = parent / f".tmp-keep-{DEAD_PID}", parent / f".tmp-link-{DEAD_PID}", parent / f".tmp-c-{os.getpid()}"
    (kept_run / "best").mkdir(parents=True)
    (kept_run / "config.yaml").write_text("env_id: CartPole-v1\n")
    link.symlink_to(outside, target_is_directory=True)
    alive.mkdir()
    before = tree_digest(outside)
    run_dir = create_run_dir(TrainConfig(results_dir=str(tmp_path), run_name="new"))
    assert run_dir.is_dir() and not half_made.exists() and not empty.exists()
    assert (kept_run / "best").is_dir() and link.is_symlink() and alive.is_dir()
    assert tree_digest(outside) == before
    warnings = warnings_in(capsys.readouterr().err)
    assert len(warnings) == 2 and str(kept_run) in warnings[0] + warnings[1] and str(link) in warnings[0] + warnings[1]


# 5. the final policy is saved before the last checkpoint


def test_a_kill_right_after_the_last_checkpoint_leaves_the_final_policy(tmp_path):
    from crash_helpers import champion as child_champion

    options = ["train", "CartPole-v1", "--results-dir", str(tmp_path), "--run-name", "k", "--seed", "3",
               *TINY[2:], "--total-steps", "1024", "--set", "checkpoint_every=512", "--set", "crown.at_end=false"]
    killed = child_champion(options, env={"CHAMPION_FAULT_KILL_AT": "after renaming to ckpt-0000001024#1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "CartPole-v1" / "ppo" / "k"
    [final] = list_final_entries(run / "best")
    assert final.name == "final-step-1024" and read_entry(final).manifest["step"] == 1024
    assert not (run / "summary.json").exists()  # the kill came before the run's end
    again = child_champion(["train", "--resume", str(run), "-q"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert list_final_entries(run / "best") == [final] and (run / "summary.json").is_file()


# 6. a stop line says to resume only when there is a checkpoint to resume from


def test_a_stop_line_offers_a_resume_only_with_a_good_checkpoint(hostile):
    run, _ = hostile
    full = OSError(errno.ENOSPC, "No space left on device", str(run / "tb" / "events"))
    with_checkpoint = str(write_failure(full, run))
    assert f"continue with: champion train --resume {run}" in with_checkpoint
    assert f"the best policy saved before it is unchanged in {run / 'best'}" in with_checkpoint
    assert f"with a checkpoint saved; continue with: champion train --resume {run}" in str(
        TrainingInterrupted(signal.SIGTERM, 4096, run))
    for manifest in (run / "checkpoints").glob("ckpt-*/manifest.json"):
        manifest.write_text("{}")  # damaged: no good checkpoint remains
    for text in (str(write_failure(full, run)), str(TrainingInterrupted(signal.SIGINT, 4096, run))):
        assert "--resume" not in text and "no checkpoint was written yet" in text and "start a new run" in text
    shutil.rmtree(run / "best")
    assert "no best policy had been saved yet" in str(write_failure(full, run))


def test_a_disk_full_before_the_first_checkpoint_says_to_start_again(tmp_path, capsys, monkeypatch):
    from champion.runners import training

    def full_disk(run, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(run.run_dir / "checkpoints" / "ckpt"))

    monkeypatch.setattr(training, "_checkpoint", full_disk)
    assert champion("train", "CartPole-v1", "--results-dir", tmp_path, "--run-name", "full", *TINY) == 1
    [line] = errors_in(capsys.readouterr().err)
    assert "No space left on device" in line and "--resume" not in line and "no checkpoint was written yet" in line


# 7. a config.yaml that is not champion's


@pytest.mark.parametrize("text, problem", [
    ("- a\n- b\n", "holds a list"), ("42\n", "holds a number"), ("", "holds nothing"), ("just text\n", "holds a text"),
    ("network: 5\n", "has no env_id"), ("REPLACE\nnetwork: 5\n", "network: 5 instead of a mapping"),
    ("REPLACE\nnetwork: {foo: 1}\n", "network.foo"), ("REPLACE\nextra: 1\n", "'extra'"),
    ("REPLACE\n7: 1\n", "key 7"), ("REPLACE\nseed: 99999999999999999999\n", "seed must be"),
])
def test_a_config_yaml_that_is_not_a_config_is_refused_in_one_line(hostile, capsys, text, problem):
    run, _ = hostile
    recorded = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("REPLACE\n", recorded))
    before = tree_digest(run)
    assert champion("train", "--resume", run, "-q") == 2
    errors = errors_in(capsys.readouterr().err)
    assert len(errors) == 1 and str(run / "config.yaml") in errors[0] and problem in errors[0], errors
    assert tree_digest(run) == before
    assert _recorded_total_steps(run) in (None, 4096)
