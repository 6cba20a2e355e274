"""examples/custom_loop_keeper.py, a plain Keras loop with a BestKeeper, SIGKILLed and run again: every kill leaves an
intact best whose loss, recomputed with model.load_weights alone, is the recorded one, nothing reported kept is
lost, and the resumed loop ends with the weights of an uninterrupted one."""

import hashlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from champion.runners.store.checkpoints import list_checkpoints, read_checkpoint
from champion.runners.store.entries import list_entries
from champion.runners.store.kept_models import rank, read_kept

EXAMPLE = Path(__file__).parent.parent / "examples" / "custom_loop_keeper.py"
IDENTITY = {"monitor": "val_loss", "mode": "min"}


@pytest.fixture(scope="module")
def example():
    """The example's module (its data, model and validation loss), imported as a test imports a helper."""
    spec = importlib.util.spec_from_file_location("custom_loop_keeper", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command(out: Path, steps: int) -> list[str]:
    return [sys.executable, str(EXAMPLE), str(steps), "--out", str(out)]


def child_environment(**variables: str) -> dict[str, str]:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **variables)


def kept_values(stdout: str) -> list[float]:
    """The validation losses the loop printed as kept (after ``offer`` returned True)."""
    return [float(line.split()[5]) for line in stdout.splitlines()
            if line.startswith("step ") and line.endswith(" kept")]


def newest_checkpoint_step(out: Path) -> int | None:
    checkpoints = list_checkpoints(out / "keeper" / "checkpoints")
    return read_checkpoint(checkpoints[-1]).manifest["step"] if checkpoints else None


def check_what_the_kill_left(example, out: Path, reported_kept: list[float]) -> None:
    """Every entry and checkpoint at a final name verifies; the entry ``current.json`` names is intact by plain sha256
    and its weights, loaded with Keras alone, give the val_loss its manifest records; the best intact entry is at
    least as good as every value the loop saw kept."""
    best_dir = out / "keeper" / "best"
    intact = rank([read_kept(entry, IDENTITY) for entry in list_entries(best_dir)], "min")  # raises if one is damaged
    for checkpoint in list_checkpoints(out / "keeper" / "checkpoints"):
        read_checkpoint(checkpoint)
    assert not reported_kept or intact[0].value <= min(reported_kept)
    pointer = best_dir / "current.json"
    if not pointer.exists():  # killed before the first pointer was written
        assert reported_kept == [] and len(intact) <= 1
        return
    entry = best_dir / json.loads(pointer.read_text())["entry"]
    manifest = json.loads((entry / "manifest.json").read_text())
    digests = {name: hashlib.sha256((entry / name).read_bytes()).hexdigest() for name in manifest["files"]}
    assert digests == manifest["files"]
    model = example.make_model()
    model.load_weights(entry / "model.weights.h5")
    _, (x_validation, y_validation) = example.make_data()
    assert example.validation_loss(model, x_validation, y_validation) == manifest["value"]


def final_weights(out: Path, example) -> list[np.ndarray]:
    model = example.make_model()
    model.load_weights(out / "final.weights.h5")
    return model.get_weights()


def finish_and_compare(example, tmp_path: Path, out: Path, steps: int, capsys=None) -> None:
    """Run the killed loop to its end (in a child process; in this one with ``capsys``), and the same loop
    uninterrupted in this process: the resumed loop starts at the newest checkpoint and ends with the same weights and
    the same three kept models."""
    resume_step = newest_checkpoint_step(out)
    if capsys is None:
        done = subprocess.run(command(out, steps), capture_output=True, text=True, timeout=300,
                              env=child_environment())
        assert done.returncode == 0, done.stderr[-3000:]
        stdout = done.stdout
    else:
        capsys.readouterr()
        example.train(steps, out)
        stdout = capsys.readouterr().out
    assert stdout.startswith(f"resuming at step {resume_step}\n")
    check_what_the_kill_left(example, out, kept_values(stdout))
    example.train(steps, tmp_path / "straight")
    resumed, straight = final_weights(out, example), final_weights(tmp_path / "straight", example)
    assert len(resumed) == len(straight) and all(np.array_equal(a, b) for a, b in zip(resumed, straight))
    kept = {name: [(kept.step, kept.value) for kept in rank([read_kept(entry, IDENTITY) for entry in
                                                             list_entries(folder / "keeper" / "best")], "min")]
            for name, folder in (("resumed", out), ("straight", tmp_path / "straight"))}
    assert kept["resumed"] == kept["straight"] and len(kept["straight"]) == 3


WRITE_KILLS = ["keeper entry: weights written#4", "checkpoint: state written#2"]
"""In the middle of a kept model's write (its weights written, not its .keras or manifest), then of a resume
checkpoint's (its TensorFlow part and state written, not its manifest)."""


def test_the_example_killed_during_its_writes_resumes_and_ends_as_an_uninterrupted_run(example, tmp_path, capsys):
    """Two kills in child processes; the resumed and the uninterrupted loops run in this one, which spares two
    TensorFlow start-ups (the slow test below resumes in a child process)."""
    out, steps = tmp_path / "killed", 240
    for kill_at in WRITE_KILLS:
        resume_step = newest_checkpoint_step(out) if out.exists() else None
        killed = subprocess.run(command(out, steps), capture_output=True, text=True, timeout=300,
                                env=child_environment(CHAMPION_FAULT_KILL_AT=kill_at))
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr[-3000:])
        assert killed.stdout.startswith(f"resuming at step {resume_step}\n" if resume_step else "step 20 "), kill_at
        check_what_the_kill_left(example, out, kept_values(killed.stdout))
    finish_and_compare(example, tmp_path, out, steps, capsys)


WRITE_POINTS = ["keeper entry: weights written", "keeper entry: model written", "before renaming to 0",
                "half-way through .tmp-current.json", "checkpoint: tensorflow state written",
                "checkpoint: state written", "before renaming to ckpt-"]
"""Inside a kept model's write (weights written; .keras written; all but the folder's rename), the pointer's
replacement, and a resume checkpoint's write (TensorFlow part; state; all but the rename)."""


def kill_once(out: Path, steps: int, write_point: str | None, chooser: random.Random) -> str:
    """Start the loop and SIGKILL it: at ``write_point`` (the 1st, 2nd or 3rd time it passes one of that label), or
    without one at a random time up to 0.5 s after its first line. Returns its output up to the kill."""
    if write_point is not None:
        killed = subprocess.run(command(out, steps), capture_output=True, text=True, timeout=300,
                                env=child_environment(CHAMPION_FAULT_KILL_AT=f"{write_point}#{chooser.randint(1, 3)}"))
        assert killed.returncode == -signal.SIGKILL, (write_point, killed.stderr[-3000:])
        return killed.stdout
    child = subprocess.Popen(command(out, steps), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=child_environment())
    lines = [child.stdout.readline()]
    time.sleep(chooser.uniform(0.0, 0.5))
    child.kill()
    lines += child.stdout.readlines()
    assert child.wait(timeout=60) == -signal.SIGKILL, "the loop ended before its kill"
    return "".join(lines)


@pytest.mark.slow
def test_twenty_kills_at_random_moments_never_lose_the_best_and_the_loop_ends_as_an_uninterrupted_one(example,
                                                                                                    tmp_path):
    """Ten kills at write points (each of WRITE_POINTS at least once, at a random pass of it), ten at random times,
    alternating; then the loop runs to its end in a process of its own."""
    out, steps, chooser = tmp_path / "killed", 4000, random.Random(34)
    for kill in range(20):
        write_point = WRITE_POINTS[kill // 2 % len(WRITE_POINTS)] if kill % 2 == 0 else None
        stdout = kill_once(out, steps, write_point, chooser)
        check_what_the_kill_left(example, out, kept_values(stdout))
    finish_and_compare(example, tmp_path, out, steps)
