"""Running the trainer as a child process and checking what a crash left on disk."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from event_files import summaries
from champion.runners.store.best_store import POINTER_FILE, list_entries, load_best, read_entry
from champion.runners.store.checkpoints import read_checkpoint
from champion.runners.store.run_folder import env_folder_name

CHAMPION = [sys.executable, "-c", "from champion.runners.cli.main import main; main()"]
QUICK = ["--set", "ppo.epochs=2", "--set", "checkpoint_every=1024", "--eval-every", "512", "-q", "--no-media",
         "--set", "engine=gymnasium", "--set", "ppo.jit_compile=false"]
"""Small runs for crash and resume mechanics, which do not depend on the engine: the gymnasium engine
without XLA starts in a fraction of the graph engine's compile time (tests that need the graph engine
add --set engine=graph, which wins)."""


def champion(args: list[str], env: dict[str, str] | None = None, timeout: float = 300,
             prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a child process (optionally under a prefix such as setpriv), with tests/ on its path."""
    tests = str(Path(__file__).parent)  # so that a child can make toy_envs:... envs
    child_env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])),
                     **(env or {}))
    return subprocess.run((prefix or []) + CHAMPION + args, capture_output=True, text=True, timeout=timeout,
                          env=child_env, stdin=subprocess.DEVNULL)


def champion_here(args: list[str]) -> None:
    """``champion ARGS`` in this process, which must succeed: a straight run to compare a killed and resumed one
    with, without a TensorFlow start-up to pay (the runs compared with it are child processes, so the comparison
    is also one across processes)."""
    from hostile_helpers import champion as in_process

    assert in_process(*args) == 0


def final_files(run_dir: Path) -> list[Path]:
    """Every file under the run folder except temporaries (which the next start removes)."""
    return [path for path in run_dir.rglob("*") if path.is_file() and not any(
        part.startswith(".tmp-") for part in path.relative_to(run_dir).parts)]


def assert_run_is_sound(run_dir: Path) -> None:
    """No partial file at a final path: every best entry and checkpoint verifies, the pointer parses."""
    for entry in list_entries(run_dir / "best"):
        read_entry(entry)  # raises on a sha256 mismatch or missing file
    pointer = run_dir / "best" / POINTER_FILE
    if pointer.exists():
        assert (run_dir / "best" / json.loads(pointer.read_text())["entry"]).is_dir()
    for checkpoint in sorted((run_dir / "checkpoints").glob("ckpt-*")):
        read_checkpoint(checkpoint)
    if (run_dir / "config.yaml").exists():
        assert "env_id" in (run_dir / "config.yaml").read_text()


def evaluation_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "evaluations.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def tensorboard_steps(run_dir: Path) -> dict[str, list[int]]:
    """tag -> the steps it has values at, in the order TensorBoard reads them (``event_files``)."""
    return {tag: [point.step for point in points] for tag, points in summaries(run_dir / "tb").items()}


def best_weights(run_dir: Path) -> dict[str, np.ndarray]:
    return load_best(run_dir / "best").weights


def checkpoint_weights(run_dir: Path, step: int) -> dict[str, np.ndarray]:
    """The model's and optimizer's variables in the run's checkpoint at ``step`` (verified first)."""
    path = run_dir / "checkpoints" / f"ckpt-{step:010d}"
    read_checkpoint(path)
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(path / "tf"))
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(str(path / "tf"))
            if name.startswith(("model/", "optimizer/"))}


ROLLOUTS = 4
KILL_POINTS = ("checkpoint: tensorflow state written#3", "checkpoint: state written#3", "before renaming to ckpt-#3")
"""Moments in the middle of the third checkpoint's save (its model written; its state too; all but the rename): a
resume goes on from the second."""


def run_options(tmp_path, algo, num_envs, num_steps, pairs):
    rollout = num_envs * num_steps
    sets = [f"num_envs={num_envs}", f"{algo}.num_steps={num_steps}", f"checkpoint_every={rollout}",
            "engine=gymnasium", "eval_episodes=2", "crown.at_end=false", *pairs]
    if algo == "ppo":
        sets += [f"ppo.minibatch_size={rollout}", "ppo.epochs=2", "ppo.jit_compile=false"]
    else:
        sets += ["a2c.jit_compile=false"]
    options = ["--algo", algo, "--total-steps", str(ROLLOUTS * rollout), "--eval-every", str(rollout),
               "--results-dir", str(tmp_path), "--no-media", "-q", "--seed", "3"]
    for pair in sets:
        options += ["--set", pair]
    return options


def weights_by_entry(run_dir):
    """Each best entry's name -> its arrays' bytes (the npz's zip timestamps aside, the policy byte for byte)."""
    return {entry.name: {name: array.tobytes() for name, array in read_entry(entry).weights.items()}
            for entry in list_entries(run_dir / "best")}


def kill_resume_and_compare(tmp_path: Path, env_id: str, algo: str, options: list[str], resume_options: tuple = (),
                            kill_at: str = KILL_POINTS[1]) -> dict:
    """A straight run and one SIGKILLed at ``kill_at`` then resumed; returns the state of the checkpoint resumed
    from once every evaluation, the final weights and every best entry are found equal. The straight run is made in
    this process (``champion_here``)."""
    champion_here(["train", env_id, "--run-name", "straight"] + options)
    killed = champion(["train", env_id, "--run-name", "resumed"] + options,
                      env={"CHAMPION_FAULT_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    folder = tmp_path / env_folder_name(env_id) / algo
    resumed_dir, straight_dir = folder / "resumed", folder / "straight"
    [checkpoint] = sorted((resumed_dir / "checkpoints").glob("ckpt-*"))[-1:]
    loaded = read_checkpoint(checkpoint)
    saved, step = loaded.state, loaded.manifest["step"]
    journals = saved["env_state"].journals if "env_state" in saved else saved["workers"][0]["env_state"].journals
    assert any(journal.steps > 0 for journal in journals), "the envs were not in the middle of an episode"
    again = champion(["train", "--resume", str(resumed_dir), *resume_options])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "not bit-exact" not in again.stderr
    num_envs = len(saved["envs_exact"])
    assert f"resuming from {checkpoint.name} at step {step:,}: {num_envs} of {num_envs} envs restored exactly" in again.stderr
    columns = ("step", "mean_return", "std_return", "min_return", "max_return", "mean_length", "best_mean_return")
    rows = {name: [[row[column] for column in columns] for row in evaluation_rows(folder / name)]
            for name in ("straight", "resumed")}
    assert rows["resumed"] == rows["straight"] and len(rows["straight"]) == ROLLOUTS
    last = int(rows["straight"][-1][0])
    first, second = checkpoint_weights(straight_dir, last), checkpoint_weights(resumed_dir, last)
    assert first.keys() == second.keys() and all(np.array_equal(first[name], second[name]) for name in first)
    assert weights_by_entry(resumed_dir) == weights_by_entry(straight_dir) != {}
    assert_run_is_sound(resumed_dir)
    return saved
