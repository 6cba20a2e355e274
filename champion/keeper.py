"""``BestKeeper``: the best models of any Keras training loop (your own ``train_step``, no ``model.fit``), kept in
champion's store, and a checkpoint to resume the loop from after a crash.

    keeper = champion.BestKeeper("keeper", monitor="val_loss", mode="min")
    start = keeper.restore_state(model, optimizer, rng=rng) or 0   # where a killed loop stopped (None: a new one)
    for step in range(start, steps):
        ...                                                         # your train_step
        keeper.offer(model, val_loss, step + 1)                     # kept if among the best so far
        keeper.save_state(model, optimizer, step + 1, rng=rng)      # every so often
    keeper.load_best(model)

The kept models are Keras' own files (``model.weights.h5``, ``model.keras``), which load without champion.
"""

from __future__ import annotations

import json
import math
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from champion.errors import UsageError, first_line
from champion.runners.store.atomic_files import (TEMP_PREFIX, atomic_write_text, remove_folder, remove_temporaries,
                                                 warn)
from champion.runners.store.entries import READ_ERRORS, first_intact, list_entries, point_to
from champion.runners.store.folder_trust import is_whole, read_sealed, seal
from champion.runners.store.kept_models import (MODES, KeptModel, better, check_value, rank, read_kept, recorded,
                                                write_kept)
from champion.runners.store import loop_state

if TYPE_CHECKING:
    import keras

KEEPER_FILE = "keeper.json"
KEEPER_KIND = "champion.BestKeeper"
RUN_FOLDER_FILES = ("config.yaml", "status.json", "summary.json")
"""Files of a champion run folder: a keeper refuses to share one."""


class BestKeeper:
    """Keeps the ``keep`` best models of a training loop by the metric ``monitor`` (lowest first for ``mode="min"``,
    highest for ``"max"``) in ``directory``, and on request a checkpoint to resume the loop from.

    Each kept model is a versioned entry (``best/0003-step-1200/``): its files are written under a temporary name,
    recorded with their sha256 in a sealed manifest, and committed by one rename, so a crash at any moment leaves
    every earlier entry intact. Entries are verified when read, and a damaged one is passed over, with a warning, for
    the next best intact one. The metric and each new best go to TensorBoard (``directory/tb``) if ``tensorboard``.
    """

    def __init__(self, directory: str | os.PathLike[str], monitor: str = "val_loss", mode: str = "min",
                 keep: int = 3, whole_model: bool = True, tensorboard: bool = True) -> None:
        _check_arguments(monitor, mode, keep)
        self.directory = Path(directory)
        self.monitor, self.mode, self.keep = monitor, mode, keep
        self.whole_model, self.tensorboard = whole_model, tensorboard
        self._identity = {"monitor": monitor, "mode": mode}
        _claim(self.directory, self._identity)
        self._best_dir = self.directory / "best"
        self._best_dir.mkdir(exist_ok=True)
        remove_temporaries(self._best_dir)
        self._kept: list[KeptModel] = []
        """The intact entries, best first (after a resume, the killed loop's from steps not yet replayed too)."""
        self._damaged: list[Path] = []
        """Entries found damaged (each warned about once): removed at the next save."""
        self._gone: list[KeptModel] = []
        """Models the restored checkpoint's standing held whose entries are gone (pruned by the killed loop after
        its checkpoint, or damaged): offers are judged against them as the uninterrupted loop's were."""
        for entry in list_entries(self._best_dir):
            try:
                self._kept.append(read_kept(entry, self._identity))
            except READ_ERRORS as error:
                self._damaged.append(entry)
                warn(f"kept model {entry} is unusable ({error}); passing over it")
        self._kept = rank(self._kept, mode)
        if self._kept:
            point_to(self._best_dir, self._kept[0].entry)  # after a crash between an entry and its pointer
        self._events: Any = None
        self._closer: weakref.finalize | None = None
        self._warned_not_finite = False

    @property
    def best(self) -> KeptModel | None:
        """The best model kept so far (its value, step and files), or None before the first."""
        return self._kept[0] if self._kept else None

    @property
    def kept(self) -> list[KeptModel]:
        """Every model kept, best first (in a resumed loop, the killed loop's from the steps it replays too)."""
        return list(self._kept)

    def offer(self, model: keras.Model, value: float, step: int) -> bool:
        """Keep ``model`` if ``value`` (the monitored metric at ``step``) ranks among the ``keep`` best so far;
        True when it is kept (with ``keep=1``: a new best). Ties keep the earlier model.

        A value that is NaN or infinite is never kept (False, and a warning the first time), nor are weights that
        hold one. The offer is judged against the models kept from steps up to ``step``: a resumed loop replaying
        the steps after its checkpoint gets what the loop never stopped got (its standing at the checkpoint is
        restored by ``restore_state``), and a step the killed loop kept with the same value is not written again.
        """
        step = _check_step(step)
        try:
            value = check_value(value, self.monitor)
        except TypeError as error:
            raise UsageError(str(error)) from None
        kept, new_best = self._consider(model, value, step)
        self._log(step, {self.monitor: value, **({f"best/{self.monitor}": value} if new_best else {})})
        return kept

    def load_best(self, model: keras.Model) -> KeptModel:
        """Load the best intact kept model's weights into ``model`` (the same architecture) and return it. Its files
        are verified again first; a damaged entry is passed over, with a warning, for the next best.
        BestPolicyError when none is intact."""
        from champion.runners.store.best_store import BestPolicyError

        found, problems = first_intact([kept.entry for kept in self._kept], self._read, warn,
                                       "kept model {entry} is unusable ({error}); trying the next best")
        passed_over = len(problems)  # the entries before the one found, in the order tried
        self._damaged += [kept.entry for kept in self._kept[:passed_over]]
        self._kept = self._kept[passed_over:]
        if found is None:
            why = "; ".join(problems) if problems else "nothing was kept yet"
            raise BestPolicyError(f"no intact kept model in {self._best_dir} ({why})")
        if passed_over:
            point_to(self._best_dir, found.entry)  # a reader following current.json gets an intact entry
        try:
            model.load_weights(found.weights_path)
        except (ValueError, KeyError) as error:
            raise UsageError(f"the kept model {found.entry} does not fit this model ({first_line(error)}); give "
                             "load_best a model built as the kept one was") from None
        return found

    def save_state(self, model: keras.Model, optimizer: keras.optimizers.Optimizer | None, step: int,
                   rng: Any = None) -> Path:
        """Write a resume checkpoint: the model's weights, the optimizer's state, ``step`` and the state of ``rng``
        (a numpy Generator, random.Random, keras.random.SeedGenerator or tf.random.Generator, or a list of them).
        The two newest are kept. Returns the checkpoint's folder."""
        step = _check_step(step)
        if self._events is not None:
            self._events.flush()  # what was logged up to this step survives a crash: restore_state keeps it
        standing = [(kept.entry.name, kept.step, kept.value) for kept in self._standing(step)]
        return loop_state.save(self.directory / "checkpoints", model, optimizer, step, rng, self._identity, standing)

    def restore_state(self, model: keras.Model, optimizer: keras.optimizers.Optimizer | None,
                      rng: Any = None) -> int | None:
        """Load the newest intact resume checkpoint into ``model`` (built, its weights and random state),
        ``optimizer`` and ``rng`` (the same kinds as saved) and return its step; None when there is none (a new
        loop). The keeper's standing at that step comes back too, so the replayed offers return what they returned
        the first time; TensorBoard values logged after that step are dropped, since the loop logs them again."""
        restored = loop_state.restore(self.directory / "checkpoints", model, optimizer, rng)
        if restored is None:
            return None
        if restored.standing is not None:
            intact = {(kept.entry.name, kept.step, kept.value) for kept in self._kept}
            self._gone = [recorded(self._best_dir / name, value, step) for name, step, value in restored.standing
                          if (name, step, value) not in intact]
        if self.tensorboard and (self.directory / "tb").is_dir():
            from champion.runners.logs.run_logger import truncate_logs

            self.close()
            truncate_logs(self.directory, restored.step)
        return restored.step

    def close(self) -> None:
        """Write what TensorBoard has not yet been sent and close its file (also done at exit)."""
        if self._closer is not None:
            self._closer()
        self._events, self._closer = None, None

    def __enter__(self) -> "BestKeeper":
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def __repr__(self) -> str:
        best = f"{self.best.value:g} at step {self.best.step}" if self.best else "none yet"
        return (f"BestKeeper({str(self.directory)!r}, monitor={self.monitor!r}, mode={self.mode!r}, keep={self.keep}; "
                f"best: {best})")

    def _read(self, entry: Path) -> KeptModel:
        return read_kept(entry, self._identity)

    def _standing(self, step: int, but: tuple[int, float] | None = None) -> list[KeptModel]:
        """The ``keep`` best models from steps up to ``step`` (those a loop never stopped held then; entries of later
        steps are a killed loop's future, which a resumed one replays), leaving out the one of step and value
        ``but``."""
        earlier = [kept for kept in self._kept + self._gone
                   if kept.step <= step and (kept.step, kept.value) != but]
        return rank(earlier, self.mode)[:self.keep]

    def _consider(self, model: keras.Model, value: float, step: int) -> tuple[bool, bool]:
        """(kept, a new best) for an offer, keeping the model if it ranks."""
        if not math.isfinite(value):
            self._warn_not_finite(f"{self.monitor} is {value} at step {step}")
            return False, False
        standing = self._standing(step, but=(step, value))
        if len(standing) >= self.keep and not better(value, standing[-1].value, self.mode):
            return False, False
        new_best = not standing or better(value, standing[0].value, self.mode)
        kept = next((kept for kept in self._kept if (kept.step, kept.value) == (step, value)), None)
        if kept is None:  # not a replayed step the killed loop kept
            if not _weights_are_finite(model):
                self._warn_not_finite(f"the model's weights hold NaN or infinity at step {step}")
                return False, False
            kept = write_kept(self._best_dir, model, value, step, self._identity, self.whole_model,
                              self._unsaveable)
        self._settle(rank(standing + [kept], self.mode)[:self.keep], kept, step)
        return True, new_best

    def _settle(self, standing: list[KeptModel], kept: KeptModel, step: int) -> None:
        """After ``kept`` joined the ``standing`` at ``step``: point to the best, then remove the entries of steps up
        to ``step`` that no longer stand, and every damaged one."""
        stands = {each.entry for each in standing}
        outranked = [each.entry for each in self._kept if each.step <= step and each.entry not in stands]
        self._kept = rank([each for each in self._kept if each.entry not in outranked and each.entry != kept.entry]
                          + [kept], self.mode)
        self._gone = [each for each in self._gone if each.entry in stands]
        point_to(self._best_dir, self._kept[0].entry)
        for entry in outranked + self._damaged:
            if entry.is_dir():
                remove_folder(entry)
        self._damaged = []

    def _unsaveable(self, error: Exception) -> None:
        self.whole_model = False
        warn(f"Keras cannot save this model whole as .keras ({first_line(error, limit=120)}); keeping its weights "
             "alone (model.weights.h5, which model.load_weights loads into the same architecture)")

    def _warn_not_finite(self, what: str) -> None:
        if not self._warned_not_finite:
            warn(f"{what}: not kept (a model whose metric or weights are not finite never is; the best so far "
                 "stands)")
            self._warned_not_finite = True

    def _log(self, step: int, values: dict[str, float]) -> None:
        if not self.tensorboard:
            return
        if self._events is None:
            from champion.agents.compile import compat

            self._events = compat.open_event_file(str(self.directory / "tb"))
            self._closer = weakref.finalize(self, self._events.close)
        self._events.scalars(step, values)
        if len(values) > 1:
            self._events.flush()  # a new best is on disk with its model


def _check_arguments(monitor: str, mode: str, keep: int) -> None:
    if mode not in MODES:
        raise UsageError(f"mode must be 'min' (lower {monitor} is better) or 'max' (higher is better), not {mode!r}")
    if not isinstance(monitor, str) or not monitor.strip() or len(monitor) > 200:
        raise UsageError(f"monitor must be the metric's name (a short string such as 'val_loss'), not {monitor!r}")
    if not is_whole(keep, low=1, high=10_001):
        raise UsageError(f"keep must be a whole number of models from 1 to 10,000, not {keep!r}")


def _check_step(step: Any) -> int:
    if isinstance(step, (np.integer,)):
        step = int(step)
    if not is_whole(step):
        raise UsageError(f"step must be a whole number from 0 (the loop's step or epoch), not {step!r}")
    return step


def _weights_are_finite(model: keras.Model) -> bool:
    return all(np.isfinite(array).all() for array in model.get_weights())


def _claim(directory: Path, identity: dict[str, str]) -> None:
    """Make ``directory`` this keeper's, or check that it already is; UsageError (one line) for a file, a folder of
    anything else (a champion run folder included), or a keeper's folder of another monitor or mode."""
    record_path = directory / KEEPER_FILE
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file; a BestKeeper needs a folder of its own")
    if record_path.is_file():
        try:
            record, _ = read_sealed(record_path)
        except (OSError, ValueError) as error:
            raise UsageError(f"{record_path} is unreadable ({error}); it says what the folder keeps: give the keeper "
                             "another folder") from None
        kept = {key: record.get(key) for key in identity}
        if record.get("kind") != KEEPER_KIND or kept != identity:
            raise UsageError(f"{directory} keeps the best by {kept['monitor']} ({kept['mode']}), not by "
                             f"{identity['monitor']} ({identity['mode']}): use the same monitor and mode, or another "
                             "folder")
        return
    if directory.is_dir():
        if any((directory / name).exists() for name in RUN_FOLDER_FILES):
            raise UsageError(f"{directory} is a champion run folder; give the BestKeeper a folder of its own")
        found = sorted(path.name for path in directory.iterdir() if not path.name.startswith(TEMP_PREFIX))
        if found:
            more = f" and {len(found) - 3} more" if len(found) > 3 else ""
            raise UsageError(f"{directory} holds {', '.join(found[:3])}{more}, which a BestKeeper did not write; give "
                             "it a new or empty folder")
    directory.mkdir(parents=True, exist_ok=True)
    remove_temporaries(directory)  # a keeper.json whose first write was cut short
    atomic_write_text(record_path, json.dumps(seal(dict(identity, kind=KEEPER_KIND)), indent=2) + "\n")
