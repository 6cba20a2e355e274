"""The entries ``champion.BestKeeper`` keeps: a Keras model in Keras' own files, in champion's versioned entries.

An entry is ``best/0003-step-1200/`` holding ``model.weights.h5`` (``model.save_weights``), ``model.keras``
(``model.save``, when Keras can save the model whole) and ``manifest.json`` (the monitored value, its step, the
sha256 of each file, sealed), written and verified as every versioned entry is (``entries``). Nothing here imports
Keras: the model saves itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from champion.runners.faults import write_point
from champion.runners.store.entries import MANIFEST_FILE, entry_number, next_entry_name, verify_files, write_entry
from champion.runners.store.folder_trust import is_number, is_whole, read_sealed

WEIGHTS_FILE = "model.weights.h5"
MODEL_FILE = "model.keras"
ENTRY_KIND = "champion.BestKeeper entry"
MODES = ("min", "max")


@dataclass(frozen=True)
class KeptModel:
    """One model a ``BestKeeper`` kept: the monitored value it had, its step, and its files."""

    value: float
    step: int
    entry: Path
    """Its entry folder (``DIRECTORY/best/0003-step-1200``)."""
    weights_path: Path
    """``model.weights.h5``: ``model.load_weights(path)`` loads it into the same architecture, without champion."""
    model_path: Path | None
    """``model.keras``: ``keras.saving.load_model(path)`` rebuilds the model, without champion; None when the model
    could not be saved whole (a subclassed model without ``get_config``)."""


def better(value: float, other: float, mode: str) -> bool:
    """Whether ``value`` is strictly better than ``other`` under ``mode`` ("min" or "max")."""
    return value < other if mode == "min" else value > other


def rank(kept: list[KeptModel], mode: str) -> list[KeptModel]:
    """Best first; between equal values, the one saved first (a tie keeps the earlier model)."""
    sign = 1 if mode == "min" else -1
    return sorted(kept, key=lambda model: (sign * model.value, entry_number(model.entry)))


def write_kept(directory: Path, model: Any, value: float, step: int, identity: dict[str, str],
               whole_model: bool, on_unsaveable: Callable[[Exception], None]) -> KeptModel:
    """Save ``model`` as a new entry of ``directory``: its weights, and the whole model if ``whole_model``; a model
    Keras cannot save whole (any error but an OSError) is told to ``on_unsaveable`` and kept as weights alone."""
    import keras

    def write_files(folder: Path) -> None:
        model.save_weights(folder / WEIGHTS_FILE)
        write_point("keeper entry: weights written")
        if whole_model:
            try:
                model.save(folder / MODEL_FILE)
            except OSError:
                raise
            except Exception as error:  # what Keras raises for a model it cannot serialise varies by model
                (folder / MODEL_FILE).unlink(missing_ok=True)
                on_unsaveable(error)
            write_point("keeper entry: model written")

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entry = write_entry(directory, next_entry_name(directory, step), write_files, lambda digests: dict(
        identity, kind=ENTRY_KIND, value=value, step=step, files=digests, keras_version=keras.__version__,
        created=created))
    return _kept(entry, value, step, (entry / MODEL_FILE).exists())


def read_kept(entry: Path, identity: dict[str, str]) -> KeptModel:
    """Read and verify one entry: its manifest against its digest and ``identity`` (monitor and mode), every file
    against its sha256. ValueError (or OSError) saying what does not match."""
    manifest, sealed = read_sealed(entry / MANIFEST_FILE)
    if not sealed:
        raise ValueError(f"its {MANIFEST_FILE} has no digest, which every entry a BestKeeper writes carries")
    if manifest.get("kind") != ENTRY_KIND or any(manifest.get(key) != value for key, value in identity.items()):
        raise ValueError(f"it was not kept by {identity.get('monitor')} ({identity.get('mode')})")
    value, step, files = manifest.get("value"), manifest.get("step"), manifest.get("files")
    if not is_number(value) or not is_whole(step) or not isinstance(files, dict) or WEIGHTS_FILE not in files:
        raise ValueError("its manifest's value, step or files are not what a BestKeeper writes")
    verify_files(entry, files)
    return _kept(entry, float(value), step, MODEL_FILE in files)


def recorded(entry: Path, value: float, step: int) -> KeptModel:
    """A model known by its value and step alone (its entry may be gone): what a checkpoint's standing records."""
    return _kept(entry, value, step, False)


def _kept(entry: Path, value: float, step: int, whole: bool) -> KeptModel:
    return KeptModel(value, step, entry, entry / WEIGHTS_FILE, entry / MODEL_FILE if whole else None)


def check_value(value: Any, monitor: str) -> float:
    """``value`` as a float (a Python or numpy number, a scalar tensor); TypeError saying what it is otherwise. NaN
    and infinity pass: the caller decides what they mean."""
    shape = getattr(value, "shape", None)
    if isinstance(value, (bool, str, bytes)) or (shape is not None and len(tuple(shape)) != 0):
        kind = f"an array of shape {tuple(shape)}" if shape is not None else f"a {type(value).__name__}"
        raise TypeError(f"{monitor} must be one number, not {kind}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{monitor} must be one number, not a {type(value).__name__}") from None
