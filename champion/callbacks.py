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

from champion.errors import UsageError

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
    state is not in champion's checkpoints: ``on_start`` hands it the run's earlier evaluations to rebuild it from
    (the built-in stops do)."""

    def on_start(self, step: int, evaluations: list[tuple[int, float]]) -> Stop | None:
        """The run starts at ``step`` (0, or where a resume goes on), after ``evaluations`` ((step, mean return)
        of the earlier sessions' evaluations, in order; empty for a new run)."""
        return None

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
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise UsageError(f"StopAtReturn needs a finite mean return as its threshold, got {threshold!r}")
        self.threshold = float(threshold)

    def on_evaluation(self, step: int, result: EvalResult) -> Stop | None:
        if result.mean_return >= self.threshold:
            return Stop(f"mean return {result.mean_return:.2f} at step {step:,} reached {self.threshold:g}")
        return None


class StopAfterEvaluationsWithoutBest(Callback):
    """Stop when ``evaluations`` evaluations in a row brought no new best (config:
    ``stop.after_evaluations_without_best``). A new best is what the best store saves: a finite mean return
    strictly above every earlier one. After a resume the count goes on from the run's earlier evaluations."""

    def __init__(self, evaluations: int) -> None:
        if isinstance(evaluations, bool) or not isinstance(evaluations, int) or evaluations < 1:
            raise UsageError(f"StopAfterEvaluationsWithoutBest needs a positive whole number of evaluations, got "
                             f"{evaluations!r}")
        self.evaluations = evaluations
        self.best = -math.inf
        self.without_best = 0

    def on_start(self, step: int, evaluations: list[tuple[int, float]]) -> Stop | None:
        self.best, self.without_best = -math.inf, 0
        for _, mean_return in evaluations:
            self._count(mean_return)
        return None

    def on_evaluation(self, step: int, result: EvalResult) -> Stop | None:
        self._count(result.mean_return)
        if self.without_best >= self.evaluations:
            return Stop(f"{self.without_best} evaluations in a row without a new best (best {self.best:.2f}; "
                        f"the last at step {step:,})")
        return None

    def _count(self, mean_return: float) -> None:
        if math.isfinite(mean_return) and mean_return > self.best:
            self.best, self.without_best = mean_return, 0
        else:
            self.without_best += 1
