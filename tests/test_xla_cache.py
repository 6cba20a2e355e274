"""The persistent XLA cache: where it points TensorFlow, when it stays off, and that a run loading its
compiled step from the cache trains exactly as the run that compiled it."""

import csv
import json
import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from champion.agents.compile import compat, xla_cache
from crash_helpers import CHAMPION


@pytest.fixture
def tensorflow_not_started(monkeypatch):
    """As in a process that has run no TensorFlow op yet (this one has: other tests ran before)."""
    monkeypatch.setattr(compat, "tensorflow_has_started", lambda: False)


def test_the_default_directory_is_per_tensorflow_version_and_machine_and_other_flags_are_kept(
        tmp_path, monkeypatch, tensorflow_not_started):
    monkeypatch.delenv(xla_cache.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_min_cluster_size=2")
    directory = xla_cache.configure()
    version = importlib.metadata.version("tensorflow")
    assert directory == tmp_path / "champion" / "xla" / f"tf-{version}-{xla_cache.machine_fingerprint()}"
    assert directory.is_dir()
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_min_cluster_size=2 --tf_xla_persistent_cache_directory={directory}"
    assert xla_cache.configured_cache_dir() == directory
    assert xla_cache.configure() == directory  # a second call adds nothing
    assert os.environ["TF_XLA_FLAGS"].count("persistent_cache") == 1


def test_off_a_users_own_flag_and_an_unwritable_directory_leave_the_flags_alone(tmp_path, monkeypatch,
                                                                                tensorflow_not_started):
    monkeypatch.setenv("TF_XLA_FLAGS", "")
    monkeypatch.setenv(xla_cache.ENVIRONMENT_VARIABLE, "off")
    assert (xla_cache.configure(), os.environ["TF_XLA_FLAGS"]) == (None, "")

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(xla_cache.ENVIRONMENT_VARIABLE, str(blocker / "cache"))
    assert (xla_cache.configure(), os.environ["TF_XLA_FLAGS"]) == (None, "")

    monkeypatch.setenv("TF_XLA_FLAGS", f"--tf_xla_persistent_cache_directory={tmp_path / 'mine'}")
    monkeypatch.setenv(xla_cache.ENVIRONMENT_VARIABLE, str(tmp_path / "champions"))
    assert xla_cache.configure() == tmp_path / "mine"
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_persistent_cache_directory={tmp_path / 'mine'}"
    assert not (tmp_path / "champions").exists()


def test_once_tensorflow_has_run_the_cache_is_left_off_and_the_run_told_how_to_have_it(tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    tf.constant(1.0)  # TensorFlow's runtime has started in this process
    monkeypatch.setenv("TF_XLA_FLAGS", "")
    monkeypatch.setenv(xla_cache.ENVIRONMENT_VARIABLE, str(tmp_path / "cache"))
    assert compat.tensorflow_has_started()
    assert (xla_cache.configure(), os.environ["TF_XLA_FLAGS"], xla_cache.configured_cache_dir()) == (None, "", None)
    assert not (tmp_path / "cache").exists()
    assert "TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=DIR" in capsys.readouterr().err


def test_prune_removes_the_oldest_entries_down_to_half_the_limit_once_over_it(tmp_path):
    for age in range(6):  # entry-0 is the newest, entry-5 the oldest; 100 bytes each
        path = tmp_path / f"entry-{age}.pb"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
    assert xla_cache.prune(tmp_path, 600) == 0
    assert xla_cache.prune(tmp_path, 500) == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["entry-0.pb", "entry-1.pb"]


def _train(results: Path, cache: Path, name: str, resume: bool = False) -> tuple[list[str], list[str], str]:
    """Evaluation means, champion's warnings and where the graph came from ("tracing" or "trace from cache")
    of a short graph-engine run with ``cache`` (or of continuing it to 3072 steps)."""
    environment = {**os.environ, xla_cache.ENVIRONMENT_VARIABLE: str(cache), "TF_XLA_FLAGS": ""}
    run_dir = results / "CartPole-v1" / "ppo" / name
    arguments = (["--resume", str(run_dir), "--total-steps", "3072"] if resume else
                 ["CartPole-v1", "--total-steps", "2048", "--eval-every", "1024", "--results-dir", str(results),
                  "--run-name", name, "--no-media", "--set", "engine=graph", "--set", "crown.at_end=false",
                  "--set", "schedule_steps=3072"])  # the preset's linear schedules, over the resumed budget
    done = subprocess.run(CHAMPION + ["train", *arguments, "--quiet"], capture_output=True, text=True, timeout=300,
                          env=environment)
    assert done.returncode == 0, done.stderr
    with open(results / "CartPole-v1" / "ppo" / name / "evaluations.csv", newline="") as handle:
        means = [row["mean_return"] for row in csv.DictReader(handle)]
    timings = json.loads((run_dir / "summary.json").read_text())["timings"]
    built = [phase.removesuffix(" (graph)") for phase in timings if phase in ("tracing (graph)", "trace from cache (graph)")]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("champion: warning")]
    return means, warnings, built[0] if len(built) == 1 else f"{built}"


def test_a_run_that_loads_the_compiled_step_from_the_cache_trains_exactly_as_the_one_that_compiled_it(tmp_path):
    cache = tmp_path / "cache"
    compiled, warnings, built = _train(tmp_path / "results", cache, "first")
    entries = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}
    xla_entry, graph_entry = (cache / name for name in sorted(entries, key=lambda name: name.startswith("champion")))
    assert xla_entry.name.endswith(".pb") and graph_entry.name.startswith("champion-graph-")
    assert len(entries) == 2 and warnings == [] and built == "tracing"
    loaded, warnings, built = _train(tmp_path / "results", cache, "second")
    assert loaded == compiled and len(compiled) == 2 and warnings == [] and built == "trace from cache"
    assert {path.name: path.stat().st_mtime_ns for path in cache.iterdir()} == entries  # read, not written again
    # A resume traces other functions first (the restore); the step's names, and so its entries, are the same.
    shutil.copytree(tmp_path / "results" / "CartPole-v1" / "ppo" / "first", tmp_path / "results" / "CartPole-v1" / "ppo" / "copy")
    continued, warnings, built = _train(tmp_path / "results", cache, "first", resume=True)
    assert continued[:2] == compiled and len(continued) == 3 and warnings == [] and built == "trace from cache"
    assert {path.name: path.stat().st_mtime_ns for path in cache.iterdir()} == entries

    # A damaged traced graph is traced again, silently, and trains alike: the same resume, traced afresh, evaluates
    # as the one that loaded its graph.
    graph_entry.write_bytes(graph_entry.read_bytes()[:-100])
    retraced, warnings, built = _train(tmp_path / "results", cache, "copy", resume=True)
    assert retraced == continued and warnings == [] and built == "tracing"
    [graph_entry] = cache.glob("champion-graph-*.pb")  # the new trace's entry, which the next run loads

    # A damaged compiled entry costs a compile and a warning, never the run; only that entry is set aside.
    graph_written = graph_entry.stat().st_mtime_ns
    xla_entry.write_bytes(xla_entry.read_bytes()[: xla_entry.stat().st_size // 2])
    stranger = cache / f"{xla_entry.name}.tmp.77"  # another run's file being written
    stranger.write_bytes(b"half")
    healed, warnings, built = _train(tmp_path / "results", cache, "third")
    assert healed == compiled and built == "trace from cache"  # the new trace's entry, loaded
    assert len(warnings) == 1 and f"XLA compile cache entry in {cache} could not be used" in warnings[0]
    assert f"set {xla_entry.name} aside, and compiling afresh" in warnings[0]
    set_aside = cache / f"damaged-{xla_entry.name}.bad"
    assert set_aside.is_file() and not xla_entry.exists()
    assert graph_entry.stat().st_mtime_ns == graph_written and stranger.read_bytes() == b"half"
    new_entries = {path.name for path in cache.iterdir()} - {set_aside.name, graph_entry.name, stranger.name}
    assert len(new_entries) == 1 and new_entries.pop().endswith(".pb")  # the retry's, traced afresh
