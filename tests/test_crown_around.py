"""Around the end-of-run crown (issue 31): a signal during it (exit code, message, lock, status, store), the closing
lines that name the champion, and the best-policy GIF's time (counted as media, bounded by the media budget)."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import champion
from event_files import summaries
from champion.runners import crown as crowning
from champion.runners.logs import media as media_module
from champion.runners.logs.media import PendingBest
from champion.runners.logs.run_logger import BEST_POLICY_GIF
from champion.runners.store.best_store import CHAMPION_FILE, list_final_entries, pointer_name, read_entry
from champion.runners.store.folder_trust import DIGEST_KEY, read_record, seal
from champion.runners.store.run_folder import read_status
from champion.runners.training import CROWNED_LINE, MEDIA_PHASE

QUICK = {"total_steps": 1024, "eval_every": 512, "ppo.epochs": 2, "engine": "gymnasium", "ppo.jit_compile": False,
         "media": False, "crown.episodes": 5, "crown.workers": 1}
"""A run of two evaluations and a crown of 5 held-out episodes per candidate, played in this process."""


def quick_run(tmp_path: Path, name: str, **settings) -> champion.RunResult:
    return champion.train("CartPole-v1", config={**QUICK, "results_dir": str(tmp_path), "run_name": name, **settings},
                          progress=True)


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder``, by its path there."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


SIGNALLED_CROWN = """
import hashlib, json, os, sys
from pathlib import Path

from champion.runners import crown as crowning
from champion.runners.cli.main import main

signal_number, run_dir, snapshot = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])


class SignalledPlayer(crowning.ProcessPlayer):
    def play(self, *arguments, **keywords):
        # what best/ holds while the crown is under way, then the signal, as from a terminal or a job scheduler
        best = run_dir / "best"
        snapshot.write_text(json.dumps({str(path.relative_to(best)): hashlib.sha256(path.read_bytes()).hexdigest()
                                        for path in sorted(best.rglob("*")) if path.is_file()}))
        os.kill(os.getpid(), signal_number)
        return super().play(*arguments, **keywords)


crowning.ProcessPlayer = SignalledPlayer
main(sys.argv[4:])
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_during_the_crown_exits_128_plus_it_with_the_run_finished_unlocked_and_its_store_unchanged(
        tmp_path, signal_name):
    number = getattr(signal, signal_name)
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "signalled"
    settings = [item for key, value in QUICK.items() if key not in ("total_steps", "eval_every")
                for item in ("--set", f"{key}={str(value).lower()}")]
    done = subprocess.run([sys.executable, "-c", SIGNALLED_CROWN, str(number), str(run_dir), str(tmp_path / "during.json"),
                           "train", "CartPole-v1", "--total-steps", "1024", "--eval-every", "512", "--results-dir",
                           str(tmp_path), "--run-name", "signalled", *settings],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 128 + number, done.stderr[-2000:]
    later = f"the training-time best stands; crown later with: champion crown {run_dir}"
    if signal_name == "SIGINT":
        assert f"warning: the crown was interrupted; {later}" in done.stderr
    else:
        assert f"champion train: stopped by SIGTERM during the crown: the run is finished; {later}" in done.stderr
    assert not (run_dir / ".lock").exists()  # the lock was released on the way out
    assert read_status(run_dir)["status"] == "finished"  # the run is complete; only its crown was cut
    assert not (run_dir / "best" / CHAMPION_FILE).exists()
    assert digests(run_dir / "best") == json.loads((tmp_path / "during.json").read_text())
    best = run_dir / "best" / pointer_name(run_dir / "best")
    assert done.stdout.splitlines()[-2:] == [f"best policy: {best}", f"replay it with: champion replay {run_dir}"]


def test_sigterm_during_champion_crown_exits_143_with_the_lock_released_and_the_store_unchanged(tmp_path):
    """champion crown RUN_DIR, stopped by SIGTERM (a job scheduler's): one line, exit 143, no .lock left and best/
    as it was, as for the end-of-run crown (it had died at once, leaving the lock file and its spawned players)."""
    run_dir = quick_run(tmp_path, "later", **{"crown.at_end": False}).run_dir
    done = subprocess.run([sys.executable, "-c", SIGNALLED_CROWN, str(int(signal.SIGTERM)), str(run_dir),
                           str(tmp_path / "during.json"), "crown", str(run_dir), "--workers", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr[-2000:]
    assert (f"champion crown: stopped by SIGTERM during the crown: the run is finished; the training-time best "
            f"stands; crown later with: champion crown {run_dir}") in done.stderr
    assert not (run_dir / ".lock").exists() and not (run_dir / "best" / CHAMPION_FILE).exists()
    assert digests(run_dir / "best") == json.loads((tmp_path / "during.json").read_text())


def test_ctrl_c_during_the_crown_reaches_a_python_caller_as_keyboard_interrupt_after_the_warning(
        tmp_path, monkeypatch, capsys):
    class CtrlC(crowning.ProcessPlayer):
        def play(self, *arguments, **keywords):
            raise KeyboardInterrupt  # where a Ctrl-C's handler raises it

    monkeypatch.setattr(crowning, "ProcessPlayer", CtrlC)
    with pytest.raises(KeyboardInterrupt):
        quick_run(tmp_path, "interrupted")
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "interrupted"
    assert f"crown later with: champion crown {run_dir}" in capsys.readouterr().err
    assert read_status(run_dir)["status"] == "finished" and not (run_dir / ".lock").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 1024 and "crown" not in summary


def crown_then(change):
    """crown_run as it is, then ``change(best_dir)`` applied to what it wrote."""
    real = crowning.crown_run

    def crown_run(run_dir, config, *arguments, **keywords):
        crown = real(run_dir, config, *arguments, **keywords)
        change(Path(run_dir) / "best")
        return crown

    return crown_run


def crown_the_final_entry(best_dir: Path) -> None:
    """The crown's record, naming the final policy's entry (a crown often picks it), sealed as the crown seals it."""
    record = {key: value for key, value in read_record(best_dir / CHAMPION_FILE).items() if key != DIGEST_KEY}
    [final] = list_final_entries(best_dir)
    record.update(entry=final.name, sha256=read_entry(final).manifest["sha256"])
    (best_dir / CHAMPION_FILE).write_text(json.dumps(seal(record)))


def test_the_closing_lines_name_the_crowned_champion_and_the_training_time_best_beside_it(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(crowning, "crown_run", crown_then(crown_the_final_entry))
    result = quick_run(tmp_path, "crowned")
    best_dir = result.run_dir / "best"
    [final] = list_final_entries(best_dir)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:] == [f"{CROWNED_LINE}{final}", f"training-time best: {best_dir / pointer_name(best_dir)}",
                          f"replay it with: champion replay {result.run_dir}"]
    assert result.champion_entry == final  # what the API's result and champion.load follow


def test_a_damaged_crown_record_is_not_named_the_training_time_best_is(tmp_path, monkeypatch, capsys):
    def damage(best_dir: Path) -> None:
        record = read_record(best_dir / CHAMPION_FILE)
        (best_dir / CHAMPION_FILE).write_text(json.dumps(dict(record, held_out_mean=record["held_out_mean"] + 100)))

    monkeypatch.setattr(crowning, "crown_run", crown_then(damage))
    result = quick_run(tmp_path, "damaged")
    best_dir = result.run_dir / "best"
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[-2:] == [f"best policy: {best_dir / pointer_name(best_dir)}",
                          f"replay it with: champion replay {result.run_dir}"]
    assert not any(line.startswith(CROWNED_LINE) for line in lines)
    assert f"{best_dir / CHAMPION_FILE} is unreadable or incomplete; using the training-time best" in captured.err
    assert result.champion_entry is None


RECORDING_SECONDS = 0.3


@pytest.fixture
def slow_recorder(monkeypatch):
    """Every GIF takes RECORDING_SECONDS (a sleep, so at least that) and is two black frames; the envs it was
    recorded for are listed."""
    recorded = []

    def play_apart(play, env_id, *arguments):
        time.sleep(RECORDING_SECONDS)
        recorded.append(env_id)
        return [np.zeros((8, 8, 3), np.uint8)] * 2, 30

    monkeypatch.setattr(media_module, "play_apart", play_apart)
    return recorded


def test_the_gif_recorded_after_training_is_in_the_session_time_as_media(tmp_path, monkeypatch, capsys, slow_recorder):
    def put_off(self, step, wall_seconds, policy):  # as the budget puts off the bests of a short run
        self.pending = PendingBest(step, policy)
        return False

    monkeypatch.setattr(media_module.BestPolicyMedia, "offer", put_off)
    monkeypatch.setattr(media_module, "MEDIA_BUDGET", 1.0)  # so that the budget lets the last best be recorded
    monkeypatch.setattr(media_module, "FIRST_ESTIMATE", 0.0)
    result = quick_run(tmp_path, "counted", media=True, **{"crown.at_end": False})
    assert slow_recorder == ["CartPole-v1"]
    assert [point.step for point in summaries(result.run_dir / "tb")[BEST_POLICY_GIF]] == [result.best_step]
    timings = result.details.timings
    assert timings[MEDIA_PHASE] >= RECORDING_SECONDS
    assert sum(timings.values()) <= result.details.wall_seconds  # inside the session's time, not after it
    [went] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("time went to: ")]
    assert float(re.search(r"media \(best-policy GIF\) ([\d.]+)s", went)[1]) >= RECORDING_SECONDS


def test_a_gif_the_media_budget_cannot_pay_for_is_not_recorded_after_training_and_the_run_says_so(
        tmp_path, monkeypatch, capsys, slow_recorder):
    monkeypatch.setattr(media_module, "FIRST_ESTIMATE", 1e6)  # more than 4% of any run
    result = quick_run(tmp_path, "bounded", media=True, **{"crown.at_end": False})
    assert slow_recorder == [] and BEST_POLICY_GIF not in summaries(result.run_dir / "tb")
    assert result.details.timings.get(MEDIA_PHASE, 0.0) < RECORDING_SECONDS
    note = (f"note: the best policy of step {result.best_step:,} has no GIF: one takes about 1000000.0s, more than "
            f"the 4% of this session's")
    err = " ".join(capsys.readouterr().err.split())  # rich may wrap a long line on a narrow terminal
    assert note in err and f"champion replay {result.run_dir} --video best.gif records one" in err


def test_a_gif_rendered_in_a_process_of_its_own_waits_for_a_run_long_enough_to_pay_for_its_estimate(slow_recorder):
    """MuJoCo's GIFs (14-15 s each, rendered apart) are not started in a run that 4% cannot pay for, where a
    CartPole GIF is; neither has been measured yet, so each is judged by its kind's first estimate."""
    policy = SimpleNamespace(spec=None, weights=None)  # the recorder above plays nothing
    for env_id, wall_seconds, recorded in (("HalfCheetah-v5", 300.0, False), ("CartPole-v1", 300.0, True),
                                           ("HalfCheetah-v5", 600.0, True)):  # 4% of them: 12 s, 12 s, 24 s
        media = media_module.BestPolicyMedia(env_id, 0, lambda step, gif, width, height: None)
        assert media.offer(1, wall_seconds=wall_seconds, policy=policy) is recorded
    assert slow_recorder == ["CartPole-v1", "HalfCheetah-v5"]
