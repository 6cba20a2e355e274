"""TensorFlow's persistent XLA cache, so that a run's compiled step is compiled once per machine.

TensorFlow keeps what XLA compiled on disk when ``TF_XLA_FLAGS`` names a directory
(``--tf_xla_persistent_cache_directory``), and loads it when the same computation is compiled again.
Entries are keyed by the computation and checked against its full HLO before use, and TensorFlow writes
each one to a unique temporary file and renames it into place, so several runs may share the directory.

``configure`` is called when a run starts (never at import). TensorFlow reads the flag when its runtime
starts (the first op of the process), so a run that starts after TensorFlow has run anything, in a
process that did not name a cache directory before, goes without the cache and says so. The directory is
per TensorFlow version and per machine (host name and CPU flags), so a home directory shared by a cluster
never hands one machine another's code. ``CHAMPION_XLA_CACHE`` picks another directory, or ``off`` turns
every compile cache off; a ``TF_XLA_FLAGS`` that already names a cache directory is left alone.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import socket
import sys
from pathlib import Path
from typing import Callable, TypeVar

Result = TypeVar("Result")

ENVIRONMENT_VARIABLE = "CHAMPION_XLA_CACHE"
FLAG = "--tf_xla_persistent_cache_directory"
MAX_CACHE_BYTES = 256 * 1024 * 1024
"""Past this size the oldest entries are removed when a run starts."""
OFF_VALUES = {"off", "0", "false", "no", "none", ""}
ENTRY_SUFFIX = ".pb"
SET_ASIDE_PREFIX = "damaged-"
OWN_ENTRY_PREFIX = "champion-graph-"
"""champion's traced-graph entries (graph_cache), which have a format of their own and are checked on read."""
DAMAGED_ENTRY_MESSAGES = ("as binary proto", "Read less bytes than requested", "Serialized cache key does not match")
"""What TensorFlow says when a cache entry cannot be used (the first names the file; the others name none)."""


def machine_fingerprint() -> str:
    """A short hash of what makes compiled CPU code portable or not: host, architecture and CPU flags."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            cpu = next((line for line in handle if line.startswith(("flags", "Features"))), cpu)
    except OSError:
        pass
    text = "|".join([socket.gethostname(), platform.machine(), cpu])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/champion/xla/tf-VERSION-FINGERPRINT`` (``~/.cache`` when XDG_CACHE_HOME is unset)."""
    try:
        version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "champion" / "xla" / f"tf-{version}-{machine_fingerprint()}"


def turned_off() -> bool:
    """Whether ``CHAMPION_XLA_CACHE`` turns the compile caches off."""
    chosen = os.environ.get(ENVIRONMENT_VARIABLE)
    return chosen is not None and chosen.strip().lower() in OFF_VALUES


def flagged_cache_dir() -> Path | None:
    """The XLA cache directory ``TF_XLA_FLAGS`` names (set by ``configure`` or by the user), or None."""
    for flag in os.environ.get("TF_XLA_FLAGS", "").split():
        name, _, value = flag.partition("=")
        if name == FLAG and value:
            return Path(value)
    return None


def configured_cache_dir() -> Path | None:
    """The directory champion's caches use: the one ``TF_XLA_FLAGS`` names, unless ``CHAMPION_XLA_CACHE=off``."""
    return None if turned_off() else flagged_cache_dir()


def configure() -> Path | None:
    """Point TensorFlow's XLA persistent cache at champion's directory, unless the user chose otherwise.

    Returns the directory in use, or None when the cache is off or its directory can't be written (the
    cache is then simply not used: a run never fails for want of it).
    """
    if turned_off():
        return None
    existing = configured_cache_dir()
    if existing is not None:
        return existing
    from champion.agents.compile import compat

    if compat.tensorflow_has_started():
        print("champion: warning: TensorFlow ran before this run started, so it can no longer take the XLA compile "
              f"cache's directory; this process trains without the compile cache. Start the run before other "
              f"TensorFlow work, or set TF_XLA_FLAGS={FLAG}=DIR before starting Python", file=sys.stderr)
        return None
    chosen = os.environ.get(ENVIRONMENT_VARIABLE)
    directory = Path(chosen).expanduser() if chosen else default_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            return None
        prune(directory, MAX_CACHE_BYTES)
    except OSError:
        return None
    os.environ["TF_XLA_FLAGS"] = f"{os.environ.get('TF_XLA_FLAGS', '')} {FLAG}={directory}".strip()
    return directory


def prune(directory: Path, max_bytes: int) -> int:
    """Remove the least recently written entries until the directory holds at most half of ``max_bytes``
    (only once it holds more than ``max_bytes``). Returns how many files were removed. Files being written
    (TensorFlow's and champion's temporaries) are left alone."""
    entries = []
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and ".tmp" not in entry.name:
            status = entry.stat(follow_symlinks=False)
            entries.append((status.st_mtime, status.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    if total <= max_bytes:
        return 0
    removed = 0
    for _, size, path in sorted(entries):
        if total <= max_bytes // 2:
            break
        try:
            os.remove(path)
        except FileNotFoundError:  # another run pruned it first
            pass
        total -= size
        removed += 1
    return removed


def first_call(call: Callable[[], Result], rebuild: Callable[[], None]) -> Result:
    """The first call of an XLA-compiled function, recovering from a cache entry TensorFlow cannot use.

    TensorFlow fails the call, not the lookup, when an entry it finds is damaged. Only that error is
    recovered from: the damaged entry is renamed aside where it can be told (``damaged-...``, removed by a
    later prune; no other file is touched), ``rebuild`` makes a new function, traced afresh so that
    TensorFlow looks it up under a new name, and the call is made once more. Any other error is raised as
    it is. This works on the directory TensorFlow was given, whoever named it.
    """
    import tensorflow as tf

    directory = flagged_cache_dir()
    try:
        return call()
    except tf.errors.OpError as error:
        if directory is None or not any(text in error.message for text in DAMAGED_ENTRY_MESSAGES):
            raise
        set_aside = set_aside_damaged(directory, error.message)
        names = ", ".join(path.name.removeprefix(SET_ASIDE_PREFIX).removesuffix(".bad") for path in set_aside)
        what = f"set {names} aside" if set_aside else "could not tell which entry it was, so it stays"
        print(f"champion: warning: an XLA compile cache entry in {directory} could not be used "
              f"({error.message.splitlines()[0][:160]}); {what}, and compiling afresh", file=sys.stderr)
        rebuild()
        return call()


def set_aside_damaged(directory: Path, message: str) -> list[Path]:
    """Rename aside the damaged entries: the one the message names, else every finished TensorFlow entry
    (``*.pb``, not champion's own) that is empty or not a well-formed protocol buffer. Returns their new
    paths (none when another run set them aside first, or when the damage can't be told from the bytes)."""
    named = [Path(found) for found in re.findall(r"(\S+" + re.escape(ENTRY_SUFFIX) + r")\b", message)]
    candidates = [path for path in named if path.parent == directory]
    if not candidates:
        candidates = [Path(entry.path) for entry in os.scandir(directory)
                      if entry.name.endswith(ENTRY_SUFFIX) and not entry.name.startswith(OWN_ENTRY_PREFIX)
                      and not _well_formed(Path(entry.path))]
    moved = []
    for path in candidates:
        target = path.with_name(SET_ASIDE_PREFIX + path.name + ".bad")
        try:
            os.replace(path, target)
        except FileNotFoundError:  # another run set it aside first
            continue
        moved.append(target)
    return moved


def _well_formed(path: Path) -> bool:
    """Whether a file's bytes parse as some protocol buffer (an empty, truncated or garbled one does not)."""
    from google.protobuf import empty_pb2
    from google.protobuf.message import DecodeError

    try:
        data = path.read_bytes()
        if not data:
            return False
        empty_pb2.Empty().ParseFromString(data)
    except DecodeError:
        return False
    except OSError:
        return True  # unreadable now (removed meanwhile): not ours to judge
    return True
