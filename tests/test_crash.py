"""Faults: SIGKILL at durable-write points, a full disk, a read-only folder, NaN rewards."""

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from crash_helpers import QUICK, assert_run_is_sound, champion, evaluation_rows, final_files
from hostile_helpers import champion as champion_here
from champion.runners.store.best_store import list_entries, load_best
from champion.runners.configure import resolve_config
from champion.runners.replay import replay
from champion.runners.run_state import TrainingDiverged, is_write_failure
from champion.runners.training import train

# A 3072-step run passes 35-65 write points (config, 1-6 best saves, 3 checkpoints, summary).
FAST_KILL_POINTS = ["best entry: weights written#2", "half-way through .tmp-current.json#3",
                    "before renaming to ckpt-#1", "checkpoint: state written#2"]
ALL_KILL_POINTS = [str(point) for point in range(1, 56, 2)]  # 28 points, whatever they are
SEED_GROUP = pytest.mark.xdist_group("crash-seed")


def run_command(tmp_path: Path, seed: int) -> list[str]:
    return ["train", "CartPole-v1", "--total-steps", "3072", "--seed", str(seed), "--results-dir", str(tmp_path),
            "--run-name", "k"] + QUICK


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> int:
    """The first seed whose run passes every FAST_KILL_POINT (e.g. saves a best three times) and 55 write points.

    How many bests a short run saves depends on its learning curve, which any change to the
    algorithm or the env moves; a dry run finds a seed instead of hard-coding one. The tests that use it share
    one xdist worker (``SEED_GROUP``), so the dry run is made once per session, not once per worker.
    """
    for candidate in (4, *range(4), *range(5, 10)):  # 4 passed when QUICK last changed: tried first
        folder = tmp_path_factory.mktemp(f"dry-run-{candidate}")
        champion(run_command(folder, candidate), env={"CHAMPION_FAULT_LOG": str(folder / "writes.log")})
        labels = (folder / "writes.log").read_text()
        if labels.count("\n") >= 55 and all(
                labels.count(point.split("#")[0]) >= int(point.split("#")[1]) for point in FAST_KILL_POINTS):
            return candidate
    pytest.fail("no seed in 0-9 gives a 3072-step run that reaches every FAST_KILL_POINT and 55 write points")


def kill_and_check(tmp_path: Path, kill_at: str, seed: int = 0) -> str:
    log = tmp_path / "writes.log"
    killed = champion(run_command(tmp_path, seed),
                      env={"CHAMPION_FAULT_KILL_AT": kill_at, "CHAMPION_FAULT_LOG": str(log)})
    label = log.read_text().splitlines()[-1]
    assert killed.returncode == -signal.SIGKILL, (label, killed.stderr[-2000:])
    if "#" in kill_at:
        assert kill_at.split("#")[0] in label
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "k"
    assert_run_is_sound(run_dir)
    rows = evaluation_rows(run_dir) if (run_dir / "evaluations.csv").exists() else []  # a kill may precede it
    saved_before_kill = [float(row["mean_return"]) for row in rows if row["saved"] == "1"]
    if list_entries(run_dir / "best"):
        stored = load_best(run_dir / "best")
        # nothing recorded as saved was lost (the kill may have come after a save but before its CSV row)
        assert stored.manifest["mean_return"] >= max(saved_before_kill, default=float("-inf")), label
        replayed = replay(run_dir)
        assert replayed.result.mean_return == stored.manifest["mean_return"], label
    else:
        assert saved_before_kill == [], label
    if list((run_dir / "checkpoints").glob("ckpt-*")):
        # resumed in this process, as the replay above (what is checked is what the kill left; a resume in a
        # process of its own after a SIGKILL is tested in test_resume.py and test_resume_matrix.py)
        assert champion_here("train", "--resume", run_dir, "-q") == 0, label
        assert_run_is_sound(run_dir)
        assert not [path for path in run_dir.rglob(".tmp-*")], label
        rows = evaluation_rows(run_dir)
        assert [int(row["step"]) for row in rows] == list(range(512, 3073, 512)), label
        assert load_best(run_dir / "best").manifest["mean_return"] == max(float(row["mean_return"]) for row in rows)
    return label


@SEED_GROUP
@pytest.mark.parametrize("kill_at", FAST_KILL_POINTS)
def test_sigkill_at_a_write_point_leaves_a_sound_run(tmp_path, kill_at, seed):
    kill_and_check(tmp_path, kill_at, seed)


@pytest.mark.slow
@SEED_GROUP
@pytest.mark.parametrize("kill_at", ALL_KILL_POINTS)
def test_sigkill_sweep_over_every_other_write_point(tmp_path, kill_at, seed):
    kill_and_check(tmp_path, kill_at, seed)


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=520k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_stops_with_one_line_and_keeps_the_previous_best(small_disk):
    result = champion(["train", "CartPole-v1", "--total-steps", "8192", "--results-dir", str(small_disk),
                       "--run-name", "full", "--eval-every", "256", "--set", "ppo.epochs=1",
                       "--set", "checkpoint_every=1024", "-q"], env={"CHAMPION_MIN_FREE_MB": "0.3"})
    run_dir = small_disk / "CartPole-v1" / "ppo" / "full"
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"champion train: error: a write in {run_dir} failed (No space left on device")
    assert f"champion train --resume {run_dir}" in last
    assert_run_is_sound(run_dir)
    stored = load_best(run_dir / "best")
    assert stored.manifest["step"] >= 256
    assert replay(run_dir).result.mean_return == stored.manifest["mean_return"]


def test_read_only_results_folder_fails_before_training(tmp_path):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is not installed")
    results = tmp_path / "readonly"
    results.mkdir()
    results.chmod(0o555)
    # drop root's permission override so the folder's mode applies, as it would for a normal user
    drop = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]
    result = champion(["train", "CartPole-v1", "--results-dir", str(results / "runs")], prefix=drop)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"champion train: error: cannot write to the results folder {results / 'runs'} (Permission denied); "
        "choose a writable --results-dir"]
    assert list(results.iterdir()) == []


def test_nan_rewards_are_never_saved_and_stop_the_run(tmp_path):
    config, _ = resolve_config("champion-test/NaNAfter-v0", "ppo", {
        "total_steps": 4096, "num_envs": 2, "eval_every": 64, "eval_episodes": 2, "checkpoint_every": 4096,
        "ppo.num_steps": 32, "ppo.minibatch_size": 64, "results_dir": str(tmp_path), "run_name": "nan"})
    with pytest.raises(TrainingDiverged) as stopped:
        train(config, progress=False)
    message = str(stopped.value)
    assert message.startswith("3 updates in a row had a non-finite loss or gradient")
    assert "is untouched in" in message
    run_dir = tmp_path / "champion-test_NaNAfter-v0" / "ppo" / "nan"
    stored = load_best(run_dir / "best")
    assert stored.manifest["step"] <= 320  # rewards turn NaN after 150 steps per env
    assert all(value == value for value in stored.manifest["returns"])  # finite, never NaN
    assert [path.name for path in final_files(run_dir) if "nan" in path.name.lower()] == []


def test_only_write_errors_in_the_run_folder_are_reported_as_a_failed_write(tmp_path, monkeypatch):
    import tensorflow as tf

    monkeypatch.chdir(tmp_path)
    run_dir = Path("results") / "CartPole-v1" / "ppo" / "run"  # relative, as the default results_dir is
    run_dir.mkdir(parents=True)
    assert is_write_failure(OSError(28, "No space left on device"), run_dir)  # a full disk that names no file
    assert is_write_failure(PermissionError(13, "Permission denied", str(run_dir / "best" / "x.json")), run_dir)
    assert not is_write_failure(PermissionError(13, "Permission denied", str(tmp_path / "elsewhere")), run_dir)
    assert not is_write_failure(FileNotFoundError(2, "No such file", str(run_dir / "config.yaml")), run_dir)  # a read
    assert not is_write_failure(FileNotFoundError(2, "No such file", "/data/level-3.map"), run_dir)  # an env's read
    assert not is_write_failure(ConnectionResetError(104, "Connection reset by peer"), run_dir)
    assert is_write_failure(tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __inference_save_fn_12}} /r/ckpt-1_temp/part; No space left on device [Op:SaveV2]"),
        run_dir)
    events = run_dir / "tb" / "events.out.tfevents.1"
    assert is_write_failure(tf.errors.ResourceExhaustedError(None, None, f"{events}; No space left on device"), run_dir)
    assert is_write_failure(tf.errors.UnknownError(None, None, f"{events.resolve()}; Read-only file system"), run_dir)
    assert not is_write_failure(tf.errors.PermissionDeniedError(None, None, "/opt/model.pb; Permission denied"), run_dir)
    assert not is_write_failure(tf.errors.NotFoundError(None, None, f"{run_dir / 'checkpoints'}; No such file"), run_dir)
    assert not is_write_failure(tf.errors.InvalidArgumentError(
        None, None, "Read less bytes than requested [Op:__inference__advance_2499]"), run_dir)
