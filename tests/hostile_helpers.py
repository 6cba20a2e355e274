"""Helpers for tests that open run folders built to do harm (tests/test_hostile_folders.py and others).

Each test builds its hostile folder from a copy of one small finished run, hashes everything outside the run
folder and beside it before and after the command, and checks that a marker file never appears.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path


FINISHED_OPTIONS = ("--total-steps", "4096", "--eval-every", "1024", "--eval-episodes", "2", "--seed", "3",
                    "--no-media", "--quiet", "--engine", "gymnasium",
                    "--set", "num_envs=4", "--set", "ppo.num_steps=128", "--set", "ppo.minibatch_size=512",
                    "--set", "ppo.epochs=1", "--set", "checkpoint_every=1024", "--set", "crown.at_end=false",
                    "--set", "ppo.jit_compile=false", "--set", "ppo.learning_rate_schedule=constant",
                    "--set", "ppo.clip_range_schedule=constant")
"""A CartPole run of 8 rollouts with an evaluation and a checkpoint after every second one: a few seconds. Its
schedules are constant, so that a resume may give it a larger budget."""


def champion(*args: str) -> int:
    """``champion ARGS`` in this process; its exit code (0 when it returned)."""
    from champion.runners.cli.main import main

    try:
        main([str(arg) for arg in args])
    except SystemExit as done:
        return int(done.code or 0) if not isinstance(done.code, str) else 1
    return 0


def make_finished_run(results: Path, name: str = "R") -> Path:
    """Train the small CartPole run into ``results`` and return its folder."""
    assert champion("train", "CartPole-v1", "--results-dir", results, "--run-name", name, *FINISHED_OPTIONS) == 0
    return results / "CartPole-v1" / "ppo" / name


def copy_run(run_dir: Path, destination: Path) -> Path:
    """A copy of ``run_dir`` at ``destination`` (links copied as links), to be made hostile."""
    shutil.copytree(run_dir, destination, symlinks=True)
    return destination


def tree_digest(root: Path) -> dict[str, str]:
    """What every path under ``root`` holds: a file's sha256, a link's target, 'dir' (links are not followed)."""
    found = {}
    for folder, folders, files in os.walk(root, followlinks=False):
        for name in folders + files:
            path = Path(folder) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                found[str(path.relative_to(root))] = "link:" + os.readlink(path)
            elif stat.S_ISREG(mode):
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[str(path.relative_to(root))] = "dir" if stat.S_ISDIR(mode) else "special"
    return found


def warnings_in(text: str) -> list[str]:
    """The warning lines in ``text`` (what champion prints on stderr as 'champion: warning: ...')."""
    return [line for line in text.splitlines() if "warning:" in line]


def errors_in(text: str) -> list[str]:
    """The error lines in ``text`` ('champion <command>: error: ...')."""
    return [line for line in text.splitlines() if ": error:" in line]
