"""Versioned entries: the folder-per-version store that champion's best policies, resume checkpoints and
``champion.BestKeeper`` are kept in.

An entry is a folder (``0007-step-12345`` for a best, ``ckpt-0000012345`` for a checkpoint) written completely under
a temporary name, with a ``manifest.json`` that records the sha256 of its files and is sealed with the digest of its
own content (``folder_trust.seal``), then given its final name in one rename (``atomic_files.commit_folder``): an
entry exists complete or not at all, and a name is never written over. A pointer (``current.json``) names the
current entry and is replaced atomically. Readers verify an entry before using it and fall back, with a warning
for each one passed over, to the next intact one; pruning keeps a given number.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from champion.runners.store.atomic_files import (TEMP_PREFIX, atomic_write_text, commit_folder, remove_folder,
                                                 unique_path)
from champion.runners.store.folder_trust import BEST_ENTRY_NAME, open_regular, read_bytes, read_record, seal

MANIFEST_FILE = "manifest.json"
POINTER_FILE = "current.json"
MAX_FILE_BYTES = 2**34
"""The largest file an entry may hold (a checkpoint of the largest network champion builds, a user's model)."""
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, OverflowError)
"""What reading a damaged or hand-edited entry raises: it is passed over, never a crash."""

Loaded = TypeVar("Loaded")


def write_entry(directory: Path, name: str, write_files: Callable[[Path], None],
                manifest_for: Callable[[dict[str, str]], dict[str, Any]]) -> Path:
    """A new entry folder ``directory/name`` (``name-2``, ... if taken): ``write_files`` fills a temporary folder,
    ``manifest_for`` turns the sha256 of each file it wrote (by name) into the manifest, which is sealed; then the
    folder is committed by rename. Returns the entry's final path; on any failure nothing is left at a final name."""
    final = unique_path(directory, name)
    temporary = directory / f"{TEMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        write_files(temporary)
        digests = {path.name: file_sha256(path) for path in sorted(temporary.iterdir())}
        (temporary / MANIFEST_FILE).write_text(json.dumps(seal(manifest_for(digests)), indent=2))
        commit_folder(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return final


def file_sha256(path: Path) -> str:
    """Hex sha256 of an entry's file, opened as ``folder_trust.read_bytes`` opens it (no link, a regular file of at
    most ``MAX_FILE_BYTES``), read in blocks."""
    digest = hashlib.sha256()
    with open_regular(path, MAX_FILE_BYTES) as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(entry: Path, digests: Any) -> None:
    """ValueError unless ``entry`` holds exactly the files ``digests`` names (besides its manifest), each matching
    its recorded sha256."""
    if not isinstance(digests, dict):
        raise ValueError("its manifest lacks the sha256 of its files")
    present = sorted(item.name for item in entry.iterdir() if item.name != MANIFEST_FILE)
    if present != sorted(digests):
        raise ValueError(f"files {present} differ from the manifest's {sorted(digests)}")
    for name, expected in digests.items():
        actual = file_sha256(entry / name)
        if actual != expected:
            raise ValueError(f"sha256 of {name} is {actual[:12]}..., the manifest says {str(expected)[:12]}...")


def folders(directory: Path) -> list[Path]:
    """The folders directly in ``directory`` (links are not entries); none if it is missing or a file."""
    try:
        return [path for path in Path(directory).iterdir() if path.is_dir() and not path.is_symlink()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def entry_number(entry: Path) -> int:
    """The save-order number of a numbered entry folder (``0007-step-12345`` -> 7)."""
    return int(entry.name.split("-", 1)[0])


def list_entries(directory: Path) -> list[Path]:
    """Complete numbered entry folders (``0007-step-12345``), in the order they were saved; other names are passed
    over."""
    entries = [path for path in folders(directory) if BEST_ENTRY_NAME.fullmatch(path.name)]
    return sorted(entries, key=lambda path: (entry_number(path), path.name))


def next_entry_name(directory: Path, step: int) -> str:
    """The name of the next numbered entry saved at ``step``: one past the newest entry's number."""
    existing = list_entries(directory)
    number = entry_number(existing[-1]) + 1 if existing else 1
    return f"{number:04d}-step-{int(step)}"


def point_to(directory: Path, entry: Path) -> None:
    """Atomically make ``current.json`` in ``directory`` name ``entry`` (no write if it already does)."""
    pointer = Path(directory) / POINTER_FILE
    text = json.dumps({"entry": entry.name}) + "\n"
    try:
        unchanged = read_bytes(pointer, len(text) + 1) == text.encode()
    except (OSError, ValueError):  # missing, or not a plain file: replaced by one
        unchanged = False
    if not unchanged:
        atomic_write_text(pointer, text)


def pointer_name(directory: Path) -> str:
    """The entry name ``current.json`` holds; OSError or ValueError (saying why) if it holds none, or anything
    but a numbered entry's name."""
    name = read_record(Path(directory) / POINTER_FILE).get("entry")
    if not isinstance(name, str) or not BEST_ENTRY_NAME.fullmatch(name):
        raise ValueError(f"it names {str(name)[:80]!r}, which is not an entry of the folder")
    return name


def read_pointer(directory: Path, on_warning: Callable[[str], None], kind: str) -> Path | None:
    """The entry folder ``current.json`` names; None (with a warning naming the ``kind`` of pointer, unless there is
    no pointer at all) when it is unusable or names a missing entry."""
    path = Path(directory) / POINTER_FILE
    try:
        name = pointer_name(directory)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        on_warning(f"the {kind} pointer {path} is unusable ({error}); using the newest good entry")
        return None
    entry = Path(directory) / name
    if not entry.is_dir() or entry.is_symlink():
        on_warning(f"the {kind} pointer names {entry.name}, which is missing; using the newest good entry")
        return None
    return entry


def first_intact(candidates: Iterable[Path], read: Callable[[Path], Loaded], on_warning: Callable[[str], None],
                 passed_over: str) -> tuple[Loaded | None, list[str]]:
    """The first of ``candidates`` that ``read`` reads and verifies, and one line per entry passed over before it
    (``name: why``). Each one passed over is also told to ``on_warning`` as ``passed_over`` formatted with the
    ``entry`` and the ``error``; (None, problems) when none reads."""
    problems = []
    for entry in candidates:
        try:
            return read(entry), problems
        except READ_ERRORS as error:
            problems.append(f"{entry.name}: {error}")
            on_warning(passed_over.format(entry=entry, error=error))
    return None, problems


def prune(ranked: list[Path], keep: int, protected: Iterable[Path | None] = ()) -> None:
    """Remove the entries of ``ranked`` (the ones to keep first) past the first ``keep``, except ``protected``
    ones."""
    spared = set(protected)
    for entry in ranked[keep:]:
        if entry not in spared:
            remove_folder(entry)
