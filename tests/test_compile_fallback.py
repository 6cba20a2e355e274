"""The compile machinery's safety: the public fallback trains alike, CHAMPION_XLA_CACHE=off turns every cache
off, only a damaged entry is ever set aside (and only it), and two runs can share one cache at once; and the
TensorBoard writer's public fallback writes what TensorBoard's own writer does."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from champion.agents.compile import compat, graph_cache, xla_cache
from crash_helpers import CHAMPION
from champion.runners.configure import resolve_config
from champion.runners.training import train

SHORT = {"total_steps": 2048, "eval_every": 1024, "media": False, "engine": "graph"}


def evaluations(run_dir: Path) -> list[str]:
    with open(run_dir / "evaluations.csv", newline="") as handle:
        return [row["mean_return"] for row in csv.DictReader(handle)]


def test_private_apis_are_used_only_on_a_tested_tensorflow_with_the_cache_on(monkeypatch):
    monkeypatch.delenv(xla_cache.ENVIRONMENT_VARIABLE, raising=False)
    assert compat.available() and graph_cache.uses_private_apis()  # the suite runs on a tested TensorFlow
    monkeypatch.setattr(compat, "tensorflow_minor_version", lambda: "2.99")
    assert not compat.available() and not graph_cache.uses_private_apis() and not compat.tensorflow_has_started()
    monkeypatch.undo()
    monkeypatch.setenv(xla_cache.ENVIRONMENT_VARIABLE, "off")
    assert compat.available() and not graph_cache.uses_private_apis() and xla_cache.configured_cache_dir() is None


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_training_on_the_public_fallback_gives_the_same_evaluations(tmp_path, monkeypatch, algo):
    """The fallback traces and calls the tf.function itself; the private path calls the saved definitions of the
    same graph. Same machine, same ops, so the same numbers (CartPole returns are whole steps)."""
    runs = {}
    for name in ("private", "fallback"):
        if name == "fallback":
            monkeypatch.setattr(compat, "TESTED_TENSORFLOW", ())
        assert graph_cache.uses_private_apis() == (name == "private")
        config, _ = resolve_config("CartPole-v1", algo, {**SHORT, "results_dir": str(tmp_path), "run_name": name})
        result = train(config, progress=False)
        runs[name] = (evaluations(result.run_dir), set(result.timings))
    assert runs["fallback"][0] == runs["private"][0] and len(runs["private"][0]) == 2
    assert "tracing (graph)" in runs["fallback"][1]


def test_cache_off_turns_every_cache_path_off(tmp_path):
    environment = {**os.environ, xla_cache.ENVIRONMENT_VARIABLE: "off", "TF_XLA_FLAGS": "",
                   "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    done = subprocess.run(CHAMPION + ["train", "CartPole-v1", "--total-steps", "1024", "--eval-every", "1024",
                                      "--results-dir", str(tmp_path / "results"), "--run-name", "off", "--no-media",
                                      "--quiet", "--profile"], capture_output=True, text=True, timeout=300,
                          env=environment)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("XLA compile cache: off")
    assert not (tmp_path / "xdg" / "champion").exists()  # no default cache folder, graph entry or compiled entry
    summary = json.loads((tmp_path / "results" / "CartPole-v1" / "ppo" / "off" / "summary.json").read_text())
    assert "tracing (graph)" in summary["timings"]


def test_an_error_that_is_not_a_damaged_entry_is_raised_as_it_is_and_the_cache_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_XLA_FLAGS", f"{xla_cache.FLAG}={tmp_path}")
    files = {"entry-a.pb": b"\x08\x01", "entry-b.pb": b"garbage", "entry-c.pb.tmp.99": b"half",
             "champion-graph-abc.pb": b"champion-graph-1\n"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    rebuilt = []

    def failing_compile():
        raise tf.errors.InvalidArgumentError(None, None, "Detected unsupported operations when trying to compile")

    with pytest.raises(tf.errors.InvalidArgumentError, match="unsupported operations"):
        xla_cache.first_call(failing_compile, lambda: rebuilt.append(1))
    assert rebuilt == [] and {path.name: path.read_bytes() for path in tmp_path.iterdir()} == files


def test_a_damaged_entry_is_set_aside_alone_and_the_call_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_XLA_FLAGS", f"{xla_cache.FLAG}={tmp_path}")
    good, bad, ours = "entry-a.pb", "entry-b.pb", "champion-graph-abc.pb"
    (tmp_path / good).write_bytes(b"\x08\x01")  # a well-formed protocol buffer
    (tmp_path / ours).write_bytes(b"champion-graph-1\n")  # champion's own format: never TensorFlow's to judge
    (tmp_path / bad).write_bytes(b"\x08")  # cut short
    (tmp_path / f"{bad}.tmp.7").write_bytes(b"\x08")  # another run's file being written: never touched
    calls = []

    def compile_once_damaged():
        calls.append(1)
        if len(calls) == 1:
            raise tf.errors.OutOfRangeError(None, None, "Read less bytes than requested [Op:__inference_step_9]")
        return "compiled"

    assert xla_cache.first_call(compile_once_damaged, lambda: calls.append("rebuilt")) == "compiled"
    assert calls == [1, "rebuilt", 1]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([good, ours, f"damaged-{bad}.bad", f"{bad}.tmp.7"])


def test_two_runs_sharing_one_cache_at_once_train_alike(tmp_path):
    environment = {**os.environ, xla_cache.ENVIRONMENT_VARIABLE: str(tmp_path / "cache"), "TF_XLA_FLAGS": ""}
    results = tmp_path / "results"
    runs = [subprocess.Popen(CHAMPION + ["train", "CartPole-v1", "--total-steps", "2048", "--eval-every", "1024",
                                         "--results-dir", str(results), "--run-name", name, "--no-media", "--quiet"],
                             env=environment, stderr=subprocess.PIPE, text=True) for name in ("one", "two")]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert not any("champion: warning" in stderr for _, stderr in outcomes)
    one, two = (evaluations(results / "CartPole-v1" / "ppo" / name) for name in ("one", "two"))
    assert one == two and len(one) == 2
    entries = sorted(path.name for path in (tmp_path / "cache").iterdir())
    assert not any(".tmp" in name for name in entries)  # every write was finished and renamed into place


@pytest.mark.parametrize("content, set_aside", [(b"", True), (b"\x08\x01", False)], ids=["empty", "well-formed"])
def test_an_entry_whose_key_does_not_match_is_recompiled_and_set_aside_when_its_bytes_tell(
        tmp_path, monkeypatch, capsys, content, set_aside):
    monkeypatch.setenv("TF_XLA_FLAGS", f"{xla_cache.FLAG}={tmp_path}")
    (tmp_path / "entry-a.pb").write_bytes(content)
    calls = []

    def compile_once_mismatched():
        calls.append(1)
        if len(calls) == 1:
            raise tf.errors.InvalidArgumentError(None, None, "Serialized cache key does not match.")
        return "compiled"

    assert xla_cache.first_call(compile_once_mismatched, lambda: calls.append("rebuilt")) == "compiled"
    assert calls == [1, "rebuilt", 1]
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == (["damaged-entry-a.pb.bad"] if set_aside else ["entry-a.pb"])
    warning = capsys.readouterr().err
    assert ("set entry-a.pb aside" in warning) == set_aside and ("could not tell" in warning) != set_aside


def test_a_damaged_entry_another_run_set_aside_first_is_compiled_afresh_here_too(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_XLA_FLAGS", f"{xla_cache.FLAG}={tmp_path}")
    gone = tmp_path / "entry-b.pb"  # named by TensorFlow, then renamed aside by the other run
    calls = []

    def compile_once_damaged():
        calls.append(1)
        if len(calls) == 1:
            raise tf.errors.DataLossError(None, None, f"Can't parse {gone} as binary proto")
        return "compiled"

    assert xla_cache.first_call(compile_once_damaged, lambda: calls.append("rebuilt")) == "compiled"
    assert calls == [1, "rebuilt", 1] and list(tmp_path.iterdir()) == []


def log_a_run(run_dir: Path) -> None:
    """Everything RunLogger and log_crown write to TensorBoard, with fixed values: config text, hparams, training
    scalars, an evaluation, a GIF (bytes that end in zeros), histograms, and the crown's own file."""
    from champion.runners.engines.base import EpisodeStats
    from champion.runners.evaluate import EvalResult
    from champion.runners.logs.run_logger import RunLogger, log_crown

    logger = RunLogger(run_dir, log_every=100)
    logger.log_config("algo: ppo\nseed: 3")
    logger.log_hparams({"algo": "ppo", "ppo.epochs": 4, "ppo.learning_rate": 3e-4, "reward_scaling": True}, "run")
    logger.log_update(100, {"policy_loss": 0.25, "entropy": 0.5}, EpisodeStats(2, 30.0, 30.0), 1234.0)
    logger.log_evaluation(100, 1.5, EvalResult((10.0, 14.0), (10, 14), (1, 2)), 12.0, saved=True)
    logger.log_image(100, "eval/best_policy", b"GIF89a\x01\x00\x00", 300, 200)
    logger.log_histograms(100, {"weights/kernel": np.linspace(-1.0, 2.0, 50), "gradients/kernel": np.zeros(4)})
    logger.close()
    log_crown(run_dir, {100: 11.5, 200: 12.5}, 200, 12.5, "| entry | mean |\n| 0001 | 12.5 |")


def comparable(run_dir: Path) -> dict[str, list[tuple]]:
    """tag -> (step, plugin, plugin content, value) as TensorBoard reads them; the hparams record without its
    start time, the one thing that differs between two writes of it."""
    from event_files import hparams_plugin_data, summaries

    found = {}
    for tag, points in summaries(run_dir / "tb").items():
        rows = []
        for point in points:
            content = point.content
            if point.plugin == "hparams":
                record = hparams_plugin_data(content)
                if record.HasField("experiment"):
                    record.experiment.time_created_secs = 0
                else:
                    record.session_start_info.start_time_secs = 0
                content = record.SerializeToString(deterministic=True)
            rows.append((point.step, point.plugin, content, point.value.tolist()))
        found[tag] = rows
    return found


def test_tensorboards_own_writer_is_used_only_on_a_tested_tensorboard(tmp_path, monkeypatch):
    assert compat.tensorboard_available()  # the suite runs on a tested TensorBoard
    assert isinstance(compat.open_event_file(str(tmp_path / "a")), compat.TensorBoardEventFile)
    monkeypatch.setattr(compat, "tensorboard_minor_version", lambda: "2.99")
    assert not compat.tensorboard_available()
    writer = compat.open_event_file(str(tmp_path / "b"), filename_suffix=".crown")
    assert isinstance(writer, compat.PublicEventFile)
    writer.close()
    assert [path.name.endswith(".crown") for path in (tmp_path / "b").iterdir()] == [True]


def test_the_public_tensorboard_fallback_writes_what_tensorboards_writer_does(tmp_path, monkeypatch):
    """The same logger calls through TensorBoard's writer and through tf.summary give the same tags, steps,
    dashboards (plugin and its metadata) and values; histograms agree to float64 rounding (TensorFlow ops
    bucket them where TensorBoard uses numpy)."""
    logged = {}
    for name in ("private", "fallback"):
        if name == "fallback":
            monkeypatch.setattr(compat, "TESTED_TENSORBOARD", ())
        (tmp_path / name / "tb").mkdir(parents=True)
        log_a_run(tmp_path / name)
        logged[name] = comparable(tmp_path / name)
    private, fallback = logged["private"], logged["fallback"]
    assert sorted(fallback) == sorted(private) == sorted([
        "config", "_hparams_/experiment", "_hparams_/session_start_info", "train/policy_loss", "train/entropy", "perf/steps_per_second",
        "rollout/episode_return", "rollout/episode_length", "eval/mean_return", "eval/std_return", "eval/min_return",
        "eval/max_return", "eval/mean_length", "eval/best_mean_return", "eval/best_policy", "weights/kernel",
        "gradients/kernel", "crown/held_out_mean", "crown/champion_held_out_mean", "crown"])
    histograms = {"weights/kernel", "gradients/kernel"}
    for tag in set(private) - histograms:
        assert fallback[tag] == private[tag], tag
    for tag in histograms:
        [(step, plugin, content, buckets)] = private[tag]
        assert [row[:3] for row in fallback[tag]] == [(step, "histograms", content)] and step == 100
        np.testing.assert_allclose(fallback[tag][0][3], buckets, rtol=1e-12, atol=1e-12)
    assert private["eval/best_policy"] == [(100, "images", b"", [b"300", b"200", b"GIF89a\x01\x00\x00"])]
    assert private["crown/held_out_mean"] == [(100, "scalars", b"", 11.5), (200, "scalars", b"", 12.5)]
    assert private["train/policy_loss"] == [(100, "scalars", b"", 0.25)]

