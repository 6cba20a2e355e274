"""What champion trusts a run folder with, checked before anything in it is read.

Run folders are shared (a colleague's best policy, a downloaded benchmark run), so opening one must never run code
from it or reach outside it, and a damaged or crafted file must cost at most a fallback:

- names: an entry, checkpoint or weights file named in a record must be a plain name of the store's pattern;
- links: a link inside the folder that leads out of it is refused (``check_links``); files are opened without
  following a link (``read_bytes``), and only regular files are read;
- sizes: every file is read only up to a bound fitting what it holds (a record, the weights of a known network);
- digests: a record that decides something (a best entry's or a checkpoint's manifest) carries the sha256 of its own
  content (``seal``), so an edit or damage is found and the entry falls back like damaged weights do. A digest finds
  damage and edits, not a forger: the numbers in a folder are as good as its source.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from champion.errors import ChampionError


BEST_ENTRY_NAME = re.compile(r"[0-9]{4,9}-step-[0-9]{1,15}(-[0-9]{1,6})?")
"""A best entry's folder name (``0007-step-12345``, or ``-2`` after it when that name was taken)."""
FINAL_ENTRY_NAME = re.compile(r"final-step-[0-9]{1,15}(-[0-9]{1,6})?")
"""A final-policy entry's folder name (``final-step-12345``)."""
CHECKPOINT_NAME = re.compile(r"ckpt-[0-9]{10,15}(-[0-9]{1,6})?")
"""A resume checkpoint's folder name (``ckpt-0000012345``)."""
MAX_RECORD_BYTES = 4 * 2**20
"""The largest JSON record read from a run folder (manifests, pointers, the crown: a few KB to a few hundred)."""
MAX_CONFIG_BYTES = 2**20
"""The largest config.yaml read (champion writes a few KB; YAML costs far more memory than its text)."""
MAX_EVALUATIONS_BYTES = 256 * 2**20
"""The largest evaluations.csv read (one row per evaluation: a long run writes a few MB)."""
MAX_YAML_NODES = 100_000
"""The most YAML nodes a document may stand for once its aliases are expanded (a config has a few hundred)."""
DIGEST_KEY = "digest"


class RunFolderError(ChampionError, RuntimeError):
    """A results or run folder cannot hold this run, or cannot be opened safely; the message says why and what to
    do."""


def is_number(value: Any) -> bool:
    """Whether a value read from a record is a finite number (a bool is not one)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def is_whole(value: Any, low: int = 0, high: int = 2**62) -> bool:
    """Whether a value read from a record is a whole number in [low, high) (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def is_entry_name(name: str) -> bool:
    """Whether ``name`` is a best or final entry's folder name."""
    return bool(BEST_ENTRY_NAME.fullmatch(name) or FINAL_ENTRY_NAME.fullmatch(name))


def open_regular(path: Path, limit: int) -> BinaryIO:
    """The regular file at ``path`` opened for reading without following a link (nor blocking on a FIFO), if it
    holds at most ``limit`` bytes; OSError or ValueError (saying which and why) for anything else."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    handle = os.fdopen(descriptor, "rb")
    status = os.fstat(handle.fileno())
    if not stat.S_ISREG(status.st_mode) or status.st_size > limit:
        handle.close()
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        raise ValueError(f"{path.name} is {status.st_size:,} bytes, more than the {limit:,} it can hold")
    return handle


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, opened as ``open_regular`` opens it, at most ``limit`` of them;
    OSError or ValueError (saying which and why) for anything else."""
    with open_regular(path, limit) as handle:
        data = handle.read(os.fstat(handle.fileno()).st_size)  # the size it has: a buffer of the size asked is made
        if handle.read(1):
            raise ValueError(f"{path.name} grew while it was read")
        return data


def read_json(path: Path, limit: int = MAX_RECORD_BYTES) -> Any:
    """A JSON file of a run folder, read as ``read_bytes`` reads; ValueError if it is not JSON."""
    try:
        return json.loads(read_bytes(path, limit))
    except RecursionError:
        raise ValueError(f"{path.name} is nested too deeply to be a record") from None


def read_record(path: Path, limit: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """A JSON object of a run folder; ValueError if the file holds anything else."""
    record = read_json(path, limit)
    if not isinstance(record, dict):
        raise ValueError(f"{path.name} holds a JSON {type(record).__name__}, not an object")
    return record


def load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` of ``text`` that refuses (ValueError naming ``source``) a document whose aliases expand to
    more than ``MAX_YAML_NODES`` nodes, or that refers to itself, before building it."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set())
        if size > MAX_YAML_NODES:
            raise ValueError(f"{source} stands for more than {MAX_YAML_NODES:,} YAML values once its aliases are "
                             "expanded, more than a config may hold")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many nodes ``node`` stands for with every alias expanded (capped just past the bound)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise ValueError("the YAML document refers to itself (a recursive alias)")
    open_nodes.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1
    for child in children:
        total = min(total + _expanded_size(child, sizes, open_nodes), MAX_YAML_NODES + 1)
    open_nodes.discard(key)
    sizes[key] = total
    return total


def read_yaml_file(path: Path) -> Any:
    """A YAML file of a run folder, read as ``read_bytes`` and ``load_yaml`` read; OSError, ValueError (too big,
    not UTF-8, too many values) or yaml.YAMLError."""
    data = read_bytes(path, MAX_CONFIG_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path.name} is not UTF-8 text") from None
    try:
        return load_yaml(text, str(path))
    except RecursionError:
        raise ValueError(f"{path.name} is nested too deeply to be a config") from None


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with ``digest``: the sha256 of the rest of it, so that an edit or damage is found on reading."""
    return dict(record, **{DIGEST_KEY: _digest(record)})


def check_seal(record: dict[str, Any], name: str) -> bool:
    """ValueError if ``record`` carries a digest that its content does not match; whether it carries one (a record
    without one was written by a champion from before digests, or had its digest removed: its numbers cannot be
    checked, which the caller says)."""
    recorded = record.get(DIGEST_KEY)
    if recorded is not None and recorded != _digest(record):
        raise ValueError(f"{name} does not match its digest (it was edited or damaged after it was written)")
    return recorded is not None


def read_sealed(path: Path) -> tuple[dict[str, Any], bool]:
    """A JSON record of a run folder checked against its digest (``check_seal``), and whether it had one."""
    record = read_record(path)
    return record, check_seal(record, path.name)


def _digest(record: dict[str, Any]) -> str:
    content = {key: value for key, value in record.items() if key != DIGEST_KEY}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def links_out(run_dir: Path) -> list[tuple[str, str]]:
    """Every link below ``run_dir`` that leads out of it (or nowhere): (its path in the folder, its target)."""
    root = Path(run_dir).resolve()
    found = []
    for folder, folders, files in os.walk(root, followlinks=False):
        for name in folders + files:
            path = Path(folder) / name
            if path.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):  # a loop, or a link to nothing
                    target = None
                if target is None or not target.is_relative_to(root):
                    found.append((str(path.relative_to(root)), os.readlink(path)))
    return found


def check_links(run_dir: Path) -> None:
    """RunFolderError (one line) if a link in ``run_dir`` leads out of it (champion reads and writes only inside a
    run folder, so that a folder from anyone cannot make it touch another file), or if its best/, checkpoints/ or
    tb/ is not a folder."""
    for name in ("best", "checkpoints", "tb"):
        part = Path(run_dir) / name
        if part.is_symlink() is False and part.exists() and not part.is_dir():
            raise RunFolderError(f"{part} is not a folder, as champion makes it; move it aside to open the run")
    found = links_out(run_dir)
    if found:
        name, target = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise RunFolderError(f"{run_dir} holds a link out of the run folder: {name} -> {target}{more}; champion reads "
                             "and writes only inside a run folder: remove the link, or copy what it points at into "
                             "the folder")
