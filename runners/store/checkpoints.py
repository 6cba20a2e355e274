"""Resume checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder ``checkpoints/ckpt-<step>/`` holding a tf.train.Checkpoint of the
TensorFlow state (model, optimizer slots and iterations, random generators), ``state.json`` and
``state.npz`` with the rest (counters, the envs' journals, numpy and Python random states) as plain data
(``champion.runners.store.state_codec``: never a pickle, so reading a checkpoint runs no code from it), and
``manifest.json`` with the sha256 of every file and of itself. It is written in a temporary folder
and renamed into place, so a checkpoint either exists complete or not at all; one that fails
verification is reported and the next older one is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from champion.errors import ChampionError, first_line
from champion.runners.store.atomic_files import remove_temporaries, warn
from champion.runners.store.entries import MANIFEST_FILE, first_intact, prune, verify_files, write_entry
from champion.runners.faults import write_point
from champion.runners.store.folder_trust import CHECKPOINT_NAME, check_seal, read_bytes, read_record

PREFIX = "ckpt-"
STATE_FILE = "state.json"
ARRAYS_FILE = "state.npz"
OLD_STATE_FILE = "state.pkl"
"""Where older champions kept a checkpoint's state, as a pickle: never read (reading one can run code)."""
TF_PREFIX = "tf"
MAX_STRUCTURE_BYTES = 64 * 2**20
"""The largest ``state.json`` read (its numbers are counters and random states; arrays go to ``state.npz``)."""
MAX_ARRAYS_BYTES = 2**31
"""The largest ``state.npz`` read (journals of up to 100,000 steps per env, observations, noise: megabytes)."""


class CheckpointError(ChampionError, RuntimeError):
    """No usable resume checkpoint; the message says what was found."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A verified checkpoint: its folder, manifest and the non-TensorFlow state."""

    path: Path
    manifest: dict[str, Any]
    state: dict[str, Any]
    tensor_shapes: dict[str, list[int]] = field(default_factory=dict)
    """The TensorFlow part's variables by checkpoint key, with their shapes (read by ``ResumeCheckpoints.latest``)."""

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
        return list_checkpoints(self.directory)

    def save(self, step: int, trackables: dict[str, Any], state: dict[str, Any], manifest: dict[str, Any]) -> Path:
        """Write a new checkpoint for ``step`` (never over an existing one) and prune old ones."""
        import tensorflow as tf

        from champion.runners.store.state_codec import encode_state

        def write_state(folder: Path) -> None:
            tf.train.Checkpoint(**trackables).write(str(folder / TF_PREFIX))
            write_point("checkpoint: tensorflow state written")
            structure, arrays = encode_state(state)
            (folder / STATE_FILE).write_bytes(structure)
            (folder / ARRAYS_FILE).write_bytes(arrays)
            write_point("checkpoint: state written")

        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        final = write_entry(self.directory, f"{PREFIX}{step:010d}", write_state,
                            lambda digests: dict(manifest, step=step, files=digests, created=created))
        prune(self.all()[::-1], self.keep)
        return final

    def latest(self, check: Callable[["LoadedCheckpoint"], None] | None = None) -> LoadedCheckpoint:
        """The newest checkpoint that verifies, whose TensorFlow part reads, and that passes ``check`` (which raises
        ValueError or TypeError saying what is wrong); each newer one passed over is reported, never skipped
        silently. Checkpoints of an older champion (a pickled state) are refused in one line."""
        checkpoints = list_checkpoints(self.directory, on_stray=self.on_warning)
        if not checkpoints:
            raise CheckpointError(f"no resume checkpoint in {self.directory} (the run stopped before its first "
                                  "checkpoint); start a new run, or lower checkpoint_every next time")
        if all((path / OLD_STATE_FILE).exists() for path in checkpoints):
            raise CheckpointError(f"the checkpoints in {self.directory} were written by an older champion, whose "
                                  f"{OLD_STATE_FILE} is a pickle (reading one can run code, so champion no longer "
                                  "does); start a new run: this run's best policies replay and export as before")
        def read_and_check(path: Path) -> LoadedCheckpoint:
            loaded = replace(read_checkpoint(path), tensor_shapes=_tensor_shapes(path))
            if check is not None:
                check(loaded)
            return loaded

        loaded, problems = first_intact(reversed(checkpoints), read_and_check, self.on_warning,
                                        "checkpoint {entry} is damaged ({error}); trying the one before it")
        if loaded is not None:
            if problems:
                self.on_warning(f"resuming from the older checkpoint {loaded.path.name} "
                                f"(step {loaded.manifest['step']:,})")
            return loaded
        raise CheckpointError(f"every resume checkpoint in {self.directory} is damaged: " + "; ".join(problems))


def newest_good_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of the newest checkpoint in ``directory`` whose files verify, read-only (nothing is created,
    cleaned up or unpickled); None when there is none."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return verify_checkpoint(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def list_checkpoints(directory: Path, on_stray: Callable[[str], None] | None = None) -> list[Path]:
    """Checkpoint folders (``ckpt-<step>``), oldest first; other names are passed over (told to ``on_stray``)."""
    found = []
    for path in Path(directory).glob(f"{PREFIX}*"):
        if CHECKPOINT_NAME.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            found.append(path)
        elif on_stray is not None:
            on_stray(f"{path} is not a checkpoint folder champion writes; ignoring it")
    return sorted(found)


def newest_good_step(directory: Path) -> int | None:
    """The step of ``newest_good_manifest``; None when there is none."""
    manifest = newest_good_manifest(directory)
    return None if manifest is None else int(manifest["step"])


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's manifest, once it matches its own digest and every file in it matches the sha256 the
    manifest records (ValueError otherwise)."""
    manifest = read_record(path / MANIFEST_FILE)
    if not check_seal(manifest, MANIFEST_FILE) and not (path / OLD_STATE_FILE).exists():
        raise ValueError(f"its {MANIFEST_FILE} has no digest, which every checkpoint champion writes carries")
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("step"), int):
        raise ValueError("its manifest lacks the files or the step")
    if OLD_STATE_FILE in manifest["files"]:
        raise ValueError(f"it was written by an older champion, whose {OLD_STATE_FILE} is a pickle (reading one can "
                         "run code, so champion no longer does); start a new run: its best policies replay as before")
    verify_files(path, manifest["files"])
    return manifest


def read_checkpoint(path: Path) -> LoadedCheckpoint:
    """Verify every file of a checkpoint against its manifest and decode the state (as data: nothing in it runs)."""
    from champion.runners.store.state_codec import decode_state

    manifest = verify_checkpoint(path)
    state = decode_state(read_bytes(path / STATE_FILE, MAX_STRUCTURE_BYTES), read_bytes(path / ARRAYS_FILE, MAX_ARRAYS_BYTES))
    if not isinstance(state, dict):
        raise ValueError("its state is not a mapping")
    return LoadedCheckpoint(path, manifest, state)


def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Every variable of the checkpoint's TensorFlow part with its shape, once each tensor was read (the files
    matching their sha256 says they were not damaged since, not that they were whole when written); ValueError if
    any cannot be read."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(path / TF_PREFIX))
        shapes = reader.get_variable_to_shape_map()
        for name in shapes:
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, RuntimeError) as error:
        raise ValueError(f"its TensorFlow state cannot be read ({first_line(error, limit=200)})") from None
    return {name: list(shape) for name, shape in shapes.items()}
