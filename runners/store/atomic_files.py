"""Crash-safe files: atomic writes, folders committed by rename, and cleaning up what a crash left.

Nothing here ever writes over a file that is in use: new content goes to a temporary name in
the same folder, is flushed and fsynced, and then renamed into place (an atomic step on POSIX
file systems), so a crash at any moment leaves either the old or the new version, never half.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

from champion.runners.faults import write_point

TEMP_PREFIX = ".tmp-"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix."""
    temporary = path.parent / f"{TEMP_PREFIX}{path.name}-{os.getpid()}"
    try:
        write_point(f"before writing {path.name}")
        temporary.unlink(missing_ok=True)  # whatever lies there (a FIFO, a link) is not written through
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data[: len(data) // 2])
            write_point(f"half-way through {temporary.name}")
            handle.write(data[len(data) // 2:])
            handle.flush()
            os.fsync(handle.fileno())
        write_point(f"before renaming to {path.name}")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    write_point(f"after renaming to {path.name}")
    fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """atomic_write_bytes for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def commit_folder(temporary: Path, final: Path) -> None:
    """Make a fully written temporary folder durable and give it its final name in one rename.

    Every file in it and the folder itself are fsynced first; the parent is fsynced after.
    """
    for path in temporary.iterdir():
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
    fsync_directory(temporary)
    write_point(f"before renaming to {final.name}")
    os.rename(temporary, final)
    write_point(f"after renaming to {final.name}")
    fsync_directory(final.parent)


def unique_path(directory: Path, stem: str) -> Path:
    """directory/stem, or stem-2, stem-3, ... if taken: an existing entry is never overwritten."""
    path, suffix = directory / stem, 1
    while path.exists():
        suffix += 1
        path = directory / f"{stem}-{suffix}"
    return path


def remove_folder(path: Path) -> None:
    """Delete a folder without ever leaving a half-deleted one at its final name.

    It is first renamed to a temporary name (atomic), which the next start cleans up if this
    process dies while deleting.
    """
    doomed = path.parent / f"{TEMP_PREFIX}removing-{path.name}"
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def remove_temporaries(directory: Path) -> None:
    """Delete what an interrupted write left behind (names starting with .tmp-)."""
    for path in directory.glob(f"{TEMP_PREFIX}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def process_is_alive(pid: int) -> bool:
    """Whether ``pid`` names a running process (this one included; one of another user counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):  # no process can have such a number
        return False
    return True


def encode_weights(arrays: dict[str, np.ndarray]) -> bytes:
    """Weights by name as the bytes of an .npz file (uncompressed, no pickle)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_weights(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of encode_weights (``read_arrays``)."""
    return read_arrays(data)


def read_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of npz bytes; ValueError for pickled objects or compressed members (champion writes neither: a
    small deflated file can expand without bound) and for members that claim more bytes than the file holds."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
        if any(member.compress_type != zipfile.ZIP_STORED for member in members):
            raise ValueError("it has compressed members; champion writes arrays uncompressed")
        if sum(member.file_size for member in members) > len(data):
            raise ValueError("its members claim more bytes than the file holds")
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in members:
                _check_array_header(archive, member)
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError, OverflowError) as error:
        raise ValueError(f"it is not an npz file of arrays ({error})") from None


def _check_array_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
    """ValueError unless the .npy member's header claims no more data than the member holds (numpy allocates what
    the header claims before it reads), and no Python objects."""
    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(handle) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(handle))
        header_size = handle.tell()
    if dtype.hasobject:
        raise ValueError(f"{member.filename} holds Python objects")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > member.file_size - header_size:
        raise ValueError(f"{member.filename} claims {claimed:,} bytes of data, more than its {member.file_size:,}")


def warn(message: str) -> None:
    """Say something the user must see (a fallback, a damaged file) on stderr."""
    print(f"champion: warning: {message}", file=sys.stderr)
