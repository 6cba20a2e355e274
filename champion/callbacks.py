"""Callbacks: what a run tells your code while it trains, and how your code ends a run early.

A callback gets narrow, typed events (an evaluation's result, a new best entry, a checkpoint, the end), never
the loop's variables. Any hook may return a ``Stop``: the run then ends as at its budget (final evaluation
saved, checkpoint, crown, summary), and the reason is recorded in the run folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from champion.runners.evaluate import EvalResult


@dataclass(frozen=True)
class Stop:
    """Returned by a hook: end the run now, as at its budget, for ``reason`` (one line, recorded)."""

    reason: str


@dataclass(frozen=True)
class BestEntry:
    """A policy the best store has just saved as the run's new best."""

    path: Path
    """Its entry folder (``RUN_DIR/best/NNNN-step-S``): ``champion.load(path)`` acts with it."""
    step: int
    mean_return: float


class Callback:
    """Override the hooks you need; each runs in the training loop's thread, between updates.

    A hook returns None to go on or a ``Stop`` to end the run. An exception in a hook stops the run with a
    checkpoint and one line naming the callback; the best policy saved before is untouched. A callback's own
    state is not in champion's checkpoints: after a resume it starts afresh (the built-in stops read theirs from
    the run)."""

    def on_evaluation(self, step: int, result: EvalResult) -> Stop | None:
        """An evaluation finished: its fixed-seed episodes' returns (``result.mean_return`` ...) at ``step``."""
        return None

    def on_new_best(self, entry: BestEntry) -> Stop | None:
        """That evaluation's policy was strictly better than every earlier one, and is saved as ``entry``."""
        return None

    def on_checkpoint(self, step: int, path: Path) -> Stop | None:
        """A resume checkpoint was written at ``step`` in ``path``."""
        return None

    def on_end(self, result: Any) -> None:
        """The run ended (its budget, or a Stop): ``result`` is the ``champion.RunResult``."""
        return None

    @property
    def name(self) -> str:
        """How errors and the stop line name this callback."""
        return type(self).__name__


class StopAtReturn(Callback):
    """Stop at the first evaluation whose mean return is at or above ``threshold`` (config: ``stop.at_return``)."""

    def __init__(self, threshold: float) -> None:
        if not math.isfinite(threshold):
            raise ValueError(f"StopAtReturn needs a finite threshold, got {threshold}")
        self.threshold = float(threshold)

    def on_evaluation(self, step: int, result: EvalResult) -> Stop | None:
        if result.mean_return >= self.threshold:
            return Stop(f"mean return {result.mean_return:.2f} at step {step:,} reached {self.threshold:g}")
        return None


class StopAfterEvaluationsWithoutBest(Callback):
    """Stop when ``evaluations`` evaluations in a row brought no new best (config:
    ``stop.after_evaluations_without_best``). The count goes on across a resume: it is read from the run."""

    def __init__(self, evaluations: int) -> None:
        if evaluations < 1:
            raise ValueError(f"StopAfterEvaluationsWithoutBest needs at least 1 evaluation, got {evaluations}")
        self.evaluations = int(evaluations)
        self.without_best = 0

    def on_evaluation(self, step: int, result: EvalResult) -> Stop | None:
        self.without_best += 1  # reset by on_new_best, which comes first for a new best
        if self.without_best > self.evaluations:
            return None  # already stopped once; a resumed run with a larger budget asked to go on
        if self.without_best == self.evaluations:
            return Stop(f"{self.evaluations} evaluations in a row without a new best (the last at step {step:,})")
        return None

    def on_new_best(self, entry: BestEntry) -> Stop | None:
        self.without_best = -1  # the evaluation that made it adds one
        return None
