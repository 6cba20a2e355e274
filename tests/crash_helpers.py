"""Running the trainer as a child process and checking what a crash left on disk."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners.best_store import POINTER_FILE, list_entries, load_best, read_entry
from runners.checkpoints import read_checkpoint

CHAMPION = [sys.executable, "-c", "from runners.cli import main; main()"]
QUICK = ["--set", "ppo.epochs=2", "--set", "checkpoint_every=1024", "--eval-every", "512", "-q", "--no-media",
         "--set", "engine=gymnasium", "--set", "ppo.jit_compile=false"]
"""Small runs for crash and resume mechanics, which do not depend on the engine: the gymnasium engine
without XLA starts in a fraction of the graph engine's compile time (tests that need the graph engine
add --set engine=graph, which wins)."""


def champion(args: list[str], env: dict[str, str] | None = None, timeout: float = 300,
             prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a child process (optionally under a prefix such as setpriv)."""
    child_env = dict(os.environ, **(env or {}))
    return subprocess.run((prefix or []) + CHAMPION + args, capture_output=True, text=True, timeout=timeout,
                          env=child_env, stdin=subprocess.DEVNULL)


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
    """tag -> the steps it has values at, as TensorBoard's Python loader reads them."""
    accumulator = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0}).Reload()
    return {tag: [event.step for event in accumulator.Tensors(tag)] for tag in accumulator.Tags()["tensors"]}


def best_weights(run_dir: Path) -> dict[str, np.ndarray]:
    return load_best(run_dir / "best").weights
