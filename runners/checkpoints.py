"""Resume checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder ``checkpoints/ckpt-<step>/`` holding a tf.train.Checkpoint of the
TensorFlow state (model, optimizer slots and iterations, random generators), ``state.pkl`` with
the rest (counters, the environments themselves with their RNGs, numpy and Python random
states) and ``manifest.json`` with the sha256 of every file. It is written in a temporary
folder and renamed into place, so a checkpoint either exists complete or not at all; one that
fails verification is reported and the next older one is used instead.
"""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from runners.atomic_files import TEMP_PREFIX, commit_folder, file_sha256, remove_folder, remove_temporaries, unique_path, warn
from runners.faults import write_point

PREFIX = "ckpt-"
STATE_FILE = "state.pkl"
MANIFEST_FILE = "manifest.json"
TF_PREFIX = "tf"


class CheckpointError(RuntimeError):
    """No usable resume checkpoint; the message says what was found."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A verified checkpoint: its folder, manifest and the non-TensorFlow state."""

    path: Path
    manifest: dict[str, Any]
    state: dict[str, Any]

    def restore(self, trackables: dict[str, Any]) -> None:
        """Load the TensorFlow objects saved under the same names; every one must match."""
        import tensorflow as tf  # only here and in save: finding and checking checkpoints needs no TensorFlow

        tf.train.Checkpoint(**trackables).read(str(self.path / TF_PREFIX)).assert_existing_objects_matched()


class ResumeCheckpoints:
    """Writes, prunes and finds the resume checkpoints of one run folder."""

    def __init__(self, directory: Path, keep: int, on_warning: Callable[[str], None] = warn) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.on_warning = on_warning
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.directory)

    def all(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        return sorted(path for path in self.directory.glob(f"{PREFIX}*") if path.is_dir())

    def save(self, step: int, trackables: dict[str, Any], state: dict[str, Any], manifest: dict[str, Any]) -> Path:
        """Write a new checkpoint for ``step`` (never over an existing one) and prune old ones."""
        import tensorflow as tf

        final = unique_path(self.directory, f"{PREFIX}{step:010d}")
        temporary = self.directory / f"{TEMP_PREFIX}{final.name}"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        try:
            tf.train.Checkpoint(**trackables).write(str(temporary / TF_PREFIX))
            write_point("checkpoint: tensorflow state written")
            (temporary / STATE_FILE).write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            write_point("checkpoint: state written")
            files = {path.name: file_sha256(path) for path in sorted(temporary.iterdir())}
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            full_manifest = dict(manifest, step=step, files=files, created=created)
            (temporary / MANIFEST_FILE).write_text(json.dumps(full_manifest, indent=2))
            commit_folder(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        for old in self.all()[:-self.keep]:
            remove_folder(old)
        return final

    def latest(self) -> LoadedCheckpoint:
        """The newest checkpoint that verifies; each newer damaged one is reported, never skipped silently."""
        checkpoints = self.all()
        if not checkpoints:
            raise CheckpointError(f"no resume checkpoint in {self.directory} (the run stopped before its first "
                                  "checkpoint); start a new run, or lower checkpoint_every next time")
        problems = []
        for path in reversed(checkpoints):
            try:
                loaded = read_checkpoint(path)
            except (OSError, ValueError, KeyError, pickle.UnpicklingError, EOFError) as error:
                problems.append(f"{path.name}: {error}")
                self.on_warning(f"checkpoint {path} is damaged ({error}); trying the one before it")
                continue
            if problems:
                self.on_warning(f"resuming from the older checkpoint {path.name} (step {loaded.manifest['step']:,})")
            return loaded
        raise CheckpointError(f"every resume checkpoint in {self.directory} is damaged: " + "; ".join(problems))


def newest_good_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of the newest checkpoint in ``directory`` whose files verify, read-only (nothing is created,
    cleaned up or unpickled); None when there is none."""
    for path in sorted((item for item in Path(directory).glob(f"{PREFIX}*") if item.is_dir()), reverse=True):
        try:
            return verify_checkpoint(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def newest_good_step(directory: Path) -> int | None:
    """The step of ``newest_good_manifest``; None when there is none."""
    manifest = newest_good_manifest(directory)
    return None if manifest is None else int(manifest["step"])


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's manifest, once every file in it matches the sha256 the manifest records."""
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    present = sorted(item.name for item in path.iterdir() if item.name != MANIFEST_FILE)
    if present != sorted(manifest["files"]):
        raise ValueError(f"files {present} differ from the manifest's {sorted(manifest['files'])}")
    for name, expected in manifest["files"].items():
        actual = file_sha256(path / name)
        if actual != expected:
            raise ValueError(f"sha256 of {name} is {actual[:12]}..., the manifest says {expected[:12]}...")
    return manifest


def read_checkpoint(path: Path) -> LoadedCheckpoint:
    """Verify every file of a checkpoint against its manifest and unpickle the state."""
    manifest = verify_checkpoint(path)
    state = pickle.loads((path / STATE_FILE).read_bytes())
    return LoadedCheckpoint(path, manifest, state)
