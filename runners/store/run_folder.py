"""The run folder: checks before creating it, creating it, and keeping other trainers out of it."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from champion.agents.config import ConfigError, TrainConfig
from champion.runners.store.atomic_files import TEMP_PREFIX, atomic_write_text, commit_folder, process_is_alive, warn
from champion.runners.store.folder_trust import RunFolderError, read_record

DEFAULT_MIN_FREE_MB = 64.0
LOCK_FILE = ".lock"
STATUS_FILE = "status.json"
"""How the run's last session stands: running, finished, stopped (a signal, with a checkpoint) or failed (why)."""


def env_folder_name(env_id: str) -> str:
    """A folder name for an env id (``module:Env-v0`` has characters some file systems refuse)."""
    return env_id.replace(":", "_").replace("/", "_")


def min_free_bytes() -> int:
    """The free-space floor: CHAMPION_MIN_FREE_MB (default 64) mebibytes."""
    text = os.environ.get("CHAMPION_MIN_FREE_MB", str(DEFAULT_MIN_FREE_MB))
    try:
        return int(float(text) * 2**20)
    except ValueError:
        raise RunFolderError(f"CHAMPION_MIN_FREE_MB must be a number of MiB, got {text!r}") from None


def preflight(folder: Path, min_free: int | None = None) -> None:
    """Fail early, with one line, if ``folder`` cannot be written or is nearly full.

    The free-space floor is 64 MiB unless CHAMPION_MIN_FREE_MB says otherwise.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    probe = existing / f".tmp-champion-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
    except OSError as error:
        raise RunFolderError(f"cannot write to the results folder {folder} ({error.strerror or error}); "
                             "choose a writable --results-dir") from None
    finally:
        probe.unlink(missing_ok=True)
    floor = min_free_bytes() if min_free is None else min_free
    free = shutil.disk_usage(existing).free
    if free < floor:
        raise RunFolderError(f"the results folder {folder} has only {free / 2**20:.1f} MiB free; "
                             f"champion needs at least {floor / 2**20:.1f} MiB for checkpoints and logs")


def config_yaml(config: TrainConfig, run_name: str) -> str:
    """The text of a run's config.yaml: the full resolved config under the folder's own name."""
    return yaml.safe_dump(dict(config.to_dict(), run_name=run_name), sort_keys=False)


def create_run_dir(config: TrainConfig) -> Path:
    """Create ``results_dir/env/algo/run_name`` holding config.yaml, all at once.

    The folder is assembled under a temporary name and renamed into place, so a run folder
    never exists without its config. An existing named run is refused.
    """
    check_run_name_free(config)
    parent = Path(config.results_dir) / env_folder_name(config.env_id) / config.algo
    name = config.run_name or default_run_name(config.seed, datetime.now())
    run_dir = parent / name
    if run_dir.exists():
        suffix = 2
        while (parent / f"{name}-{suffix}").exists():
            suffix += 1
        run_dir = parent / f"{name}-{suffix}"
    parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_run_folders(parent)
    temporary = parent / f"{TEMP_PREFIX}{run_dir.name}-{os.getpid()}"
    temporary.mkdir()
    (temporary / "config.yaml").write_text(config_yaml(config, run_dir.name))
    try:
        commit_folder(temporary, run_dir)
    except OSError:  # another trainer took the name a moment ago
        shutil.rmtree(temporary, ignore_errors=True)
        raise ConfigError(f"run folder {run_dir} was just created by another trainer; choose another --run-name") from None
    return run_dir


def check_run_name_free(config: TrainConfig) -> None:
    """Refuse a run name whose folder exists, in one line that says how to continue that run instead (made before
    TensorFlow is imported, and again when the folder is made)."""
    if not config.run_name:
        return
    run_dir = Path(config.results_dir) / env_folder_name(config.env_id) / config.algo / config.run_name
    if run_dir.exists() or run_dir.is_symlink():
        raise ConfigError(f"run folder {run_dir} already exists; choose another --run-name, "
                          f"or continue it with: champion train --resume {run_dir}")


def default_run_name(seed: int, now: datetime) -> str:
    """The name of a run not given one: its start time and seed (``create_run_dir`` adds -2, -3... if taken)."""
    return now.strftime(f"%Y%m%d-%H%M%S-seed{seed}")


def _remove_abandoned_run_folders(parent: Path) -> None:
    """Delete half-made run folders whose creating process is gone: only what ``create_run_dir`` leaves (a folder
    holding config.yaml or nothing). Anything else under such a name is left in place with a warning: it may be a
    run someone keeps there."""
    for path in parent.glob(f"{TEMP_PREFIX}*"):
        pid = path.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or process_is_alive(int(pid)):
            continue
        if _left_by_create_run_dir(path):
            _remove_leftover(path)
        else:
            warn(f"kept {path}: its name is that of a run folder a trainer (pid {pid}, gone) left half-made, but "
                 "it holds more than champion leaves there; move or delete it yourself")


def _left_by_create_run_dir(path: Path) -> bool:
    """Whether ``path`` is a real folder (not a link) holding nothing but a regular config.yaml, or nothing."""
    try:
        if not stat.S_ISDIR(path.lstat().st_mode):
            return False
        return all(item.name == "config.yaml" and stat.S_ISREG(item.lstat().st_mode) for item in path.iterdir())
    except OSError:
        return False


def _remove_leftover(path: Path) -> None:
    """Delete a folder ``_left_by_create_run_dir`` found: its config.yaml, then the folder (never a link's target)."""
    try:
        (path / "config.yaml").unlink(missing_ok=True)
        path.rmdir()
    except OSError:  # another trainer removed it first, or it changed meanwhile: left as it is
        pass


class RunLock:
    """An exclusive lock on a run folder, held while a trainer writes to it.

    Uses flock, so the kernel releases it when the process dies however it dies: a stale lock file never
    blocks a resume. A trainer that finishes removes the file (while it still holds the lock); one that
    opened the file just before that retries on the new one, so two trainers never both hold a lock.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._handle = None

    def __enter__(self) -> "RunLock":
        while True:
            handle = os.fdopen(open_lock_file(self.path, os.O_RDWR | os.O_CREAT), "r+")
            try:
                _lock_within(handle, BUSY_WAIT_S)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                handle.seek(0)
                holder = handle.read(20).strip()
                holder = holder if holder.isdigit() else "unknown"  # a PID, as a trainer writes it
                handle.close()
                raise RunFolderError(f"run folder {self.path.parent} is in use by another trainer (pid {holder}); "
                                     "wait for it to finish or stop it first") from None
            if self._still_named(handle):
                break
            handle.close()  # the trainer before removed this file after we opened it: lock the new one
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def _still_named(self, handle: Any) -> bool:
        """Whether the lock file's name (not followed if a link) still names the file ``handle`` has open."""
        try:
            named, opened = os.lstat(self.path), os.fstat(handle.fileno())
        except FileNotFoundError:
            return False
        return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._handle is not None:
            self.path.unlink(missing_ok=True)  # while still holding the lock
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


BUSY_WAIT_S = 0.5
"""How long a trainer waits for a lock held only for a moment (``is_locked``'s look) before calling it taken."""


def _lock_within(handle: Any, seconds: float) -> None:
    """An exclusive flock on ``handle``, tried again for up to ``seconds`` while it is held; OSError after."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def open_lock_file(path: Path, flags: int) -> int:
    """A descriptor of the lock file at ``path``, opened with ``flags`` and never through a link. Anything but a
    regular file with one name is refused (RunFolderError) before it is opened, and checked again once open: a
    link or a hard link could point the PID champion writes at any file, a FIFO or a device could block or act."""
    try:
        _check_lock_file(path, os.lstat(path))
    except FileNotFoundError:
        pass  # created below, if flags say so
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):  # a link made meanwhile; a folder; a socket
            raise RunFolderError(_not_a_lock_file(path)) from None
        raise
    try:
        _check_lock_file(path, os.fstat(descriptor))
    except RunFolderError:
        os.close(descriptor)
        raise
    return descriptor


def _check_lock_file(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise RunFolderError(_not_a_lock_file(path))


def _not_a_lock_file(path: Path) -> str:
    return (f"the run folder's {LOCK_FILE} ({path}) is a link or not a regular file; champion never writes through "
            f"one: delete {path} and try again")


def is_locked(run_dir: Path) -> bool:
    """Whether a trainer holds the run folder's lock now (read-only: a shared lock is tried and released at once; a
    trainer starting at that moment waits for it, ``BUSY_WAIT_S``). A lock file no trainer would take (a link, a
    FIFO...) is never opened or followed: nobody holds it."""
    return lock_is_held(Path(run_dir) / LOCK_FILE)


def lock_is_held(path: Path) -> bool:
    """Whether a process holds an flock on the file at ``path`` now (a shared lock tried and released at once); a
    missing file, or one that is not a regular file with one name, is held by nobody."""
    try:
        handle = os.fdopen(open_lock_file(path, os.O_RDONLY))
    except (OSError, RunFolderError):
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def write_status(run_dir: Path, status: str, reason: str = "") -> None:
    """Record how the session stands (``STATUS_FILE``); a failure to write it never hides why a session ended."""
    record = {"status": status, "reason": reason, "pid": os.getpid(),
              "time": datetime.now().astimezone().isoformat(timespec="seconds")}
    try:
        atomic_write_text(Path(run_dir) / STATUS_FILE, json.dumps(record))
    except OSError:
        pass


def read_status(run_dir: Path) -> dict[str, Any]:
    """The recorded status ({} when there is none or it cannot be read)."""
    try:
        return read_record(Path(run_dir) / STATUS_FILE)
    except (OSError, ValueError):
        return {}
