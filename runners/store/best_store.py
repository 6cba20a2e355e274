"""The best-policy store: versioned entries written atomically, verified by sha256 when read."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from champion.errors import ChampionError
from champion.agents.config import MAX_EPISODES
from champion.runners.store.atomic_files import (TEMP_PREFIX, decode_weights, encode_weights, remove_folder,
                                                 remove_temporaries, warn)
from champion.runners.store.entries import (  # list_entries and pointer_name are read from here too
    MANIFEST_FILE, POINTER_FILE, entry_number, first_intact, folders, list_entries, next_entry_name, point_to,
    pointer_name, prune, read_pointer, write_entry)
from champion.runners.faults import write_point
from champion.runners.store.folder_trust import (FINAL_ENTRY_NAME, is_entry_name, is_number, is_whole, read_bytes,
                                                 read_sealed)

CHAMPION_FILE = "champion.json"
"""Written by the crown (``champion.runners.crown``): the entry that won on held-out episodes."""
WEIGHTS_FILE = "policy.npz"
FINAL_PREFIX = "final-step-"
"""Entries of the policy a run ended with (``final-step-<step>``), a crown candidate beside the bests."""


class BestPolicyError(ChampionError, RuntimeError):
    """No loadable best policy; the message says what was found."""


class CrownError(ChampionError, RuntimeError):
    """A run cannot be crowned (``champion.runners.crown``); the message says why and what to do."""


@dataclass(frozen=True)
class StoredPolicy:
    """A verified best-policy entry: its manifest and weight arrays."""

    entry: Path
    manifest: dict[str, Any]
    weights: dict[str, np.ndarray]
    sealed: bool = True
    """Whether the manifest carried its digest (an older champion's did not): without one, its numbers are unchecked."""


class BestPolicyStore:
    """Keeps the policy with the highest finite mean evaluation return, in versioned entries.

    Layout: ``best/0007-step-12345/{policy.npz, manifest.json}`` per saved best (numbered in the
    order they were saved, which is also the order of increasing return), and
    ``best/current.json`` naming the current entry. An entry is written completely in a
    temporary folder and renamed into place before the pointer moves to it; the last ``keep``
    entries stay on disk so that a damaged newest one can fall back to the previous.
    """

    def __init__(self, directory: Path, keep: int = 3, on_warning: Callable[[str], None] = warn) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.on_warning = on_warning
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.directory)
        self.best_mean_return = -math.inf
        self.current_entry: Path | None = None
        """The entry folder of the current best (None before the first)."""
        self.best_step: int | None = None
        if (self.directory / POINTER_FILE).exists() or list_entries(self.directory):
            try:
                current = self.load()
            except BestPolicyError as error:
                self.on_warning(str(error))
            else:
                self.best_mean_return = float(current.manifest["mean_return"])
                self.best_step = current.manifest.get("step")
                self._point_to(current.entry)

    def offer(self, weights: dict[str, np.ndarray], mean_return: float, manifest: dict[str, Any]) -> tuple[bool, str]:
        """Save the policy if its mean return is finite and strictly above the best so far.

        Returns (saved, reason). Weights with a NaN or infinity are never saved.
        """
        if not math.isfinite(mean_return):
            return False, f"mean return {mean_return} is not finite"
        if not all(np.all(np.isfinite(array)) for array in weights.values()):
            return False, "the weights contain NaN or infinity"
        if mean_return <= self.best_mean_return:
            return False, f"{mean_return:.2f} is not above the best {self.best_mean_return:.2f}"
        name = next_entry_name(self.directory, int(manifest.get("step", 0)))
        final = self._write_entry(name, weights, dict(manifest, mean_return=mean_return))
        self._point_to(final)
        prune(self.entries()[::-1], self.keep, protected=(final, crowned_entry(self.directory)))
        self.best_mean_return = mean_return
        self.best_step = manifest.get("step")
        return True, "new best"

    def entries(self) -> list[Path]:
        """Complete entry folders, oldest first."""
        return list_entries(self.directory)

    def load(self) -> StoredPolicy:
        """The current best policy, verified by sha256; falls back (loudly) to older good entries."""
        return load_best(self.directory, self.on_warning)

    def save_final(self, weights: dict[str, np.ndarray], manifest: dict[str, Any]) -> Path | None:
        """Keep the policy the run ended with as ``final-step-<step>`` (a crown candidate; the pointer does not
        move). Older final entries go, except one that is crowned. None if the weights are not finite."""
        if not all(np.all(np.isfinite(array)) for array in weights.values()):
            return None
        entry = self._write_entry(f"{FINAL_PREFIX}{int(manifest.get('step', 0))}", weights, manifest)
        protected = {entry, crowned_entry(self.directory)}
        for older in list_final_entries(self.directory):
            if older not in protected:
                remove_folder(older)
        return entry

    def _write_entry(self, name: str, weights: dict[str, np.ndarray], manifest: dict[str, Any]) -> Path:
        """Write one entry folder completely under a temporary name, then rename it into place (``write_entry``)."""
        data = encode_weights(weights)

        def write_weights(folder: Path) -> None:
            (folder / WEIGHTS_FILE).write_bytes(data)
            write_point("best entry: weights written")

        return write_entry(self.directory, name, write_weights,
                           lambda digests: dict(manifest, weights_file=WEIGHTS_FILE, sha256=digests[WEIGHTS_FILE]))

    def _point_to(self, entry: Path) -> None:
        """Atomically make ``entry`` the current best (no write if it already is)."""
        self.current_entry = entry
        point_to(self.directory, entry)


def list_final_entries(directory: Path) -> list[Path]:
    """Final-policy entry folders (``final-step-<step>``), oldest step first."""
    entries = [path for path in folders(directory) if FINAL_ENTRY_NAME.fullmatch(path.name)]
    return sorted(entries, key=lambda path: (_final_step(path), path.name))


def stray_names(directory: Path) -> list[str]:
    """What a best-policy folder holds besides entries, their pointer, the crown and temporaries: ignored, and
    worth a warning (a hand-made folder, say), never a reason to stop."""
    known = {POINTER_FILE, CHAMPION_FILE}
    return sorted(path.name for path in Path(directory).glob("*") if not (
        path.name in known or path.name.startswith(TEMP_PREFIX)
        or (is_entry_name(path.name) and path.is_dir() and not path.is_symlink())))


def warn_about_strays(directory: Path, on_warning: Callable[[str], None]) -> None:
    """One warning naming what ``stray_names`` finds (nothing when there is nothing)."""
    strays = stray_names(directory)
    if strays:
        on_warning(f"{directory} holds {', '.join(strays[:3])}{' and more' if len(strays) > 3 else ''}, which "
                   "champion did not write there; ignoring it")


def _final_step(entry: Path) -> int:
    digits = entry.name[len(FINAL_PREFIX):].split("-", 1)[0]
    return int(digits) if digits.isdigit() else -1


CHAMPION_KEYS = ("entry", "sha256", "held_out_mean", "held_out_std", "held_out_seeds", "candidates")


def read_champion(directory: Path) -> dict[str, Any] | None:
    """The crown record (``champion.json``), or None if there is none or it is unreadable or incomplete (or names
    anything but an entry of this folder)."""
    try:
        record, _ = read_sealed(Path(directory) / CHAMPION_FILE)
    except (OSError, ValueError):
        return None
    complete = all(key in record for key in CHAMPION_KEYS) and isinstance(record["candidates"], list)
    seeds, candidates = record.get("held_out_seeds"), record.get("candidates")
    usable = (isinstance(seeds, list) and 0 < len(seeds) <= MAX_RECORDED_SEEDS
              and all(is_whole(seed, high=2**63) for seed in seeds)
              and is_number(record.get("held_out_mean")) and is_number(record.get("held_out_std"))
              and isinstance(candidates, list)
              and all(isinstance(each, dict) and isinstance(each.get("entry"), str) for each in candidates)
              and (record.get("interval") is None or isinstance(record["interval"], list)
                   and all(is_number(value) for value in record["interval"])))
    named = complete and isinstance(record["entry"], str) and is_entry_name(record["entry"])
    return record if named and usable else None


def crowned_entry(directory: Path) -> Path | None:
    """The entry folder the crown names (None without a crown)."""
    record = read_champion(directory)
    return Path(directory) / record["entry"] if record is not None else None


def load_champion(directory: Path, on_warning: Callable[[str], None] = warn) -> tuple[StoredPolicy, dict[str, Any]] | None:
    """The crowned entry, verified, and its crown record; None (with a warning when a crown was found but is
    unusable) when there is no crown to follow, so that the caller falls back to the training-time best."""
    directory = Path(directory)
    if not (directory / CHAMPION_FILE).exists():
        return None
    record = read_champion(directory)
    if record is None:
        on_warning(f"{directory / CHAMPION_FILE} is unreadable or incomplete; using the training-time best instead")
        return None
    if record.get("digest") is None:
        on_warning(f"{directory / CHAMPION_FILE} has no digest (written by a champion from before digests, or its "
                   "digest was removed), so its held-out numbers cannot be checked")
    newer = _newer_than_crown(directory, record)
    if newer is not None:
        on_warning(f"the crown in {directory / CHAMPION_FILE} predates the newest best entry {newer.name} (a resumed "
                   f"run that did not crown again); using that training-time best. Judge them all with: "
                   f"champion crown {directory.parent}")
        return None
    try:
        stored = read_entry(directory / record["entry"])
        if stored.manifest["sha256"] != record.get("sha256"):
            raise ValueError("its weights are not the ones that were crowned")
    except (OSError, ValueError, KeyError) as error:
        on_warning(f"the crowned entry {record['entry']} is unusable ({error}); using the training-time best instead")
        return None
    return stored, record


def _newer_than_crown(directory: Path, record: dict[str, Any]) -> Path | None:
    """The newest best entry if it was saved after the crown judged its candidates (else None)."""
    entries = list_entries(directory)
    judged = {candidate.get("entry") for candidate in record["candidates"] if isinstance(candidate, dict)}
    judged_numbers = [entry_number(entry) for entry in entries if entry.name in judged]
    if entries and entries[-1].name not in judged and entry_number(entries[-1]) > max(judged_numbers, default=0):
        return entries[-1]
    return None


def load_best(directory: Path, on_warning: Callable[[str], None] = warn) -> StoredPolicy:
    """Read-only: the current best entry, verified; else the newest older entry that verifies.

    The current entry is the one the pointer names, or a newer complete entry if a crash came
    between writing that entry and moving the pointer (entries only ever improve on the last).
    Every entry passed over is reported through ``on_warning``; BestPolicyError if none loads.
    """
    directory = Path(directory)
    warn_about_strays(directory, on_warning)
    candidates = list_entries(directory)[::-1]
    pointed = read_pointer(directory, on_warning, "best-policy")
    if pointed is not None:
        newer = candidates[: candidates.index(pointed)] if pointed in candidates else []
        if newer:
            on_warning(f"{newer[0].name} is newer than the pointer's {pointed.name} (a save was cut short "
                       "before the pointer moved); using the newer entry if it verifies")
        candidates = newer + [pointed] + [entry for entry in candidates if entry not in newer and entry != pointed]
    stored, problems = first_intact(candidates, read_entry, on_warning,
                                    "best-policy entry {entry} is unusable ({error}); trying an older one")
    if stored is not None:
        if not stored.sealed:
            on_warning(f"best-policy entry {stored.entry} {UNSEALED}")
        return stored
    if not problems:
        raise BestPolicyError(f"no best policy in {directory} (no evaluation has saved one yet)")
    raise BestPolicyError(f"no usable best policy in {directory}: " + "; ".join(problems))


def read_entry(entry: Path) -> StoredPolicy:
    """Read and verify one entry: its manifest against its digest, the weights file's size against the network the
    manifest claims (before reading it), its bytes against the manifest's sha256, and every array's name and shape
    against that network. ValueError (or OSError) saying what does not match."""
    manifest, sealed = read_sealed(entry / MANIFEST_FILE)
    check_manifest(manifest)
    if manifest.get("weights_file", WEIGHTS_FILE) != WEIGHTS_FILE:
        raise ValueError(f"its manifest names the weights file {str(manifest['weights_file'])[:80]!r}; an entry's "
                         f"weights are in {WEIGHTS_FILE}")
    shapes = _claimed_shapes(manifest)
    data = read_bytes(entry / WEIGHTS_FILE, _largest_weights_file(shapes))
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        raise ValueError(f"sha256 of {WEIGHTS_FILE} is {digest[:12]}..., the manifest says {str(manifest['sha256'])[:12]}...")
    weights = decode_weights(data)
    found = {name: tuple(array.shape) for name, array in weights.items()}
    if found != shapes or any(array.dtype.kind != "f" for array in weights.values()):
        wrong = sorted(set(found) ^ set(shapes)) or sorted(name for name in found if found[name] != shapes[name])
        raise ValueError(f"its weights do not fit the network its manifest describes ({', '.join(wrong[:3]) or 'dtype'})")
    return StoredPolicy(entry, manifest, weights, sealed)


UNSEALED = ("has no digest (written by a champion from before digests, or its digest was removed), so its recorded "
            "return and step cannot be checked")


def check_manifest(manifest: dict[str, Any]) -> None:
    """ValueError unless the fields a manifest decides with have the kinds and ranges champion writes: a finite
    return, a step, an env id, evaluation seeds, env options."""
    seeds, options = manifest.get("eval_seeds", [0]), manifest.get("env_options") or {}
    kwargs = options.get("env_kwargs") or {} if isinstance(options, dict) else None
    problems = [
        ("mean_return", not is_number(manifest.get("mean_return"))),
        ("step", not is_whole(manifest.get("step"))),
        ("env_id", not isinstance(manifest.get("env_id"), str) or len(manifest["env_id"]) > 256),
        ("algo", manifest.get("algo", "ppo") not in ("ppo", "a2c")),
        ("eval_seeds", not isinstance(seeds, list) or not 0 < len(seeds) <= MAX_RECORDED_SEEDS
         or not all(is_whole(seed, high=2**63) for seed in seeds)),
        ("std_return", not all(is_number(manifest.get(key, 0.0)) for key in ("std_return", "min_return", "max_return"))),
        ("episodes", not is_whole(manifest.get("episodes", 1), low=1, high=MAX_RECORDED_SEEDS + 1)),
        ("env_options", not isinstance(options, dict) or not is_whole(options.get("frame_stack", 1), low=1, high=1025)
         or not isinstance(options.get("image_layout", "auto"), str)
         or not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs)),
        ("sha256", not isinstance(manifest.get("sha256"), str)),
    ]
    wrong = [name for name, bad in problems if bad]
    if wrong:
        raise ValueError(f"its manifest's {wrong[0]} is not what champion writes")


MAX_RECORDED_SEEDS = MAX_EPISODES
"""The most episode seeds a manifest or crown may record (an evaluation or a crown plays each one)."""


def _claimed_shapes(manifest: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The weight shapes of the network a manifest describes; ValueError if it describes none, or one too large to
    build on this machine."""
    from champion.agents.config import ACTIVATIONS
    from champion.agents.spec import NetworkSpec, check_network_size, weight_shapes

    try:
        spec = NetworkSpec.from_dict(manifest["network"])
        shapes = weight_shapes(spec)
        if spec.activation not in ACTIVATIONS or not all(isinstance(size, int) and size > 0
                                                         for shape in shapes.values() for size in shape):
            raise ValueError("its activation or a layer's size is not one champion builds")
        check_network_size(spec)
    except ValueError as error:
        raise ValueError(f"its manifest describes no network champion builds ({error})") from None
    except (KeyError, TypeError, AttributeError, ZeroDivisionError, OverflowError) as error:
        raise ValueError(f"its manifest describes no network champion builds ({type(error).__name__}: {error})") from None
    return shapes


def _largest_weights_file(shapes: dict[str, tuple[int, ...]]) -> int:
    """The most bytes an uncompressed npz of these weights can take: 8 bytes a number, and room for each array's
    name and headers."""
    return sum(8 * math.prod(shape) + 1024 for shape in shapes.values()) + 4096
