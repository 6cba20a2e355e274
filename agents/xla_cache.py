"""A persistent cache of XLA-compiled executables, so that a run's compiled step is compiled once per machine.

XLA compiling the graph engine's loop takes 3-5 s on a 2-core CPU, longer than training CartPole. TensorFlow
can keep what it compiled on disk (``--tf_xla_persistent_cache_directory``) and load it when the same
computation is compiled again: the next run with the same shapes starts in a fraction of the time. Entries
are keyed by the computation and checked against its full HLO before use, and TensorFlow writes each one to
a unique temporary file and renames it into place, so several runs may share the directory.

The directory is per TensorFlow version and per machine (host name and CPU flags), so a home directory shared
by a cluster never hands one machine another's code. ``CHAMPION_XLA_CACHE`` picks another directory, or
``off`` turns the cache off. A ``TF_XLA_FLAGS`` that already names a cache directory is left alone.

This module must not import TensorFlow: the flag is read when TensorFlow starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import platform
import socket
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, TypeVar

Result = TypeVar("Result")

ENVIRONMENT_VARIABLE = "CHAMPION_XLA_CACHE"
FLAG = "--tf_xla_persistent_cache_directory"
MAX_CACHE_BYTES = 256 * 1024 * 1024
"""Past this size the oldest entries are removed at start-up (an entry is 1-3 MB)."""
OFF_VALUES = {"off", "0", "false", "no", "none", ""}


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


def configured_cache_dir() -> Path | None:
    """The directory ``configure`` chose (or was given through TF_XLA_FLAGS), or None when the cache is off."""
    for flag in os.environ.get("TF_XLA_FLAGS", "").split():
        name, _, value = flag.partition("=")
        if name == FLAG and value:
            return Path(value)
    return None


def configure() -> Path | None:
    """Point TensorFlow's XLA persistent cache at champion's directory, unless the user chose otherwise.

    Returns the directory in use, or None when the cache is off or its directory can't be written (the
    cache is then simply not used: a run never fails for want of it).
    """
    existing = configured_cache_dir()
    if existing is not None:
        return existing
    chosen = os.environ.get(ENVIRONMENT_VARIABLE)
    if chosen is not None and chosen.strip().lower() in OFF_VALUES:
        return None
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
    (only once it holds more than ``max_bytes``). Returns how many files were removed."""
    entries = []
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False):
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


NAME_STRIDE = 10_000


def align_trace_names() -> None:
    """Call just before tracing a compiled function: moves TensorFlow's unique-id counter to the next
    multiple of NAME_STRIDE, so the trace's names do not depend on what the process traced before.

    TensorFlow names a traced function and its loop bodies with ids from one process-wide counter,
    and the persistent cache keys on those names (and on the HLO, which carries them). Without this a
    resumed run, whose restore traces other functions first, never found the entry that a fresh run
    with the same shapes had left, and compiled again. Costs a few milliseconds.
    """
    from tensorflow.python.framework import ops

    while ops.uid() % NAME_STRIDE != NAME_STRIDE - 1:
        pass


def tracing_for_xla() -> bool:
    """Whether the ops being created now will be compiled by XLA (inside a ``jit_compile`` function, its
    loops and gradients), as TensorFlow's own ops decide it. Code that has an XLA-only form uses it."""
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def first_call(call: Callable[[], Result], rebuild: Callable[[], None]) -> Result:
    """The first call of an XLA-compiled function, recovering from an unreadable cache entry.

    TensorFlow fails the call, not the cache lookup, when an entry it finds can't be read (a damaged
    disk, a file written by another build). A cache must never stop a run, so when the cache is on and
    the first call fails, the cache's entries are removed, ``rebuild`` makes a new function (its new
    trace has a new cache key, so the bad entry is not looked up again) and the call is made once more.
    An error that was not the cache's comes back the second time and is raised.
    """
    import tensorflow as tf

    directory = configured_cache_dir()
    if directory is None:
        return call()
    try:
        with _without_text_format_errors():
            return call()
    except tf.errors.OpError as error:
        if not directory.is_dir():
            raise
        removed = clear(directory)
        print(f"champion: warning: the first compiled call failed with the XLA compile cache at {directory} "
              f"in use ({error.message.splitlines()[0][:200]}); removed its {removed} entries and compiling "
              "afresh. If this repeats, run with CHAMPION_XLA_CACHE=off", file=sys.stderr)
        rebuild()
        with _without_text_format_errors():
            return call()


TEXT_FORMAT_ERROR = "Error parsing text-format tensorflow.XlaSerializedCacheEntry"
"""What TensorFlow logs each time it loads a cache entry: it tries the text format before the binary one
the entries are written in. An error line on every warm start would be noise, so it is dropped."""


@contextlib.contextmanager
def _without_text_format_errors() -> Iterator[None]:
    """Hold back what is written to stderr (file descriptor 2) meanwhile, then pass it on without
    TensorFlow's TEXT_FORMAT_ERROR lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if TEXT_FORMAT_ERROR not in line]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def clear(directory: Path) -> int:
    """Remove every cache entry in ``directory``; how many were removed."""
    removed = 0
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and entry.name.endswith((".pb", ".tmp")):
            try:
                os.remove(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed
