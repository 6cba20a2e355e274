"""The loop's side of callbacks: the run's stop rules (``stop.*``) and the user's callbacks, called in order with
narrow events; the first Stop wins; an exception in a callback becomes one CallbackError line naming it."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from champion.agents.config import StopConfig
from champion.callbacks import BestEntry, Callback, Stop, StopAfterEvaluationsWithoutBest, StopAtReturn
from champion.errors import CallbackError, UsageError, first_line
from champion.runners.evaluate import EvalResult
from champion.runners.logs.run_logger import csv_text


def stop_rules(stop: StopConfig) -> list[Callback]:
    """The built-in callbacks that the config's ``stop.*`` keys ask for."""
    rules: list[Callback] = []
    if stop.at_return is not None:
        rules.append(StopAtReturn(stop.at_return))
    if stop.after_evaluations_without_best is not None:
        rules.append(StopAfterEvaluationsWithoutBest(stop.after_evaluations_without_best))
    return rules


def recorded_evaluations(run_dir: Path, step: int) -> list[tuple[int, float]]:
    """(step, mean return) of each evaluation evaluations.csv records up to ``step``, in order: what a resumed
    run's callbacks rebuild their state from."""
    found = []
    for row in csv.DictReader(io.StringIO(csv_text(run_dir / "evaluations.csv"), newline="")):
        try:
            evaluated, mean_return = int(row["step"]), float(row["mean_return"])
        except (KeyError, TypeError, ValueError):
            continue  # a row cut short by a crash
        if evaluated <= step:
            found.append((evaluated, mean_return))
    return found


class Hooks:
    """The run's callbacks (its stop rules first, then the user's), and the stop one of them asked for."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
            raise UsageError(f"callbacks must be a list of champion.Callback objects, got {type(callbacks).__name__} "
                             "(e.g. callbacks=[champion.StopAtReturn(475)])")
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise UsageError(f"callbacks must be champion.Callback objects, got {type(callback).__name__} "
                                 "(subclass champion.Callback and override its hooks)")
        self.callbacks = list(callbacks)
        self.stop_reason: str | None = None
        """The first Stop's reason, with who asked (None while the run goes on)."""

    def start(self, step: int, evaluations: Sequence[tuple[int, float]]) -> None:
        """The run starts at ``step`` (0, or a resume's), after ``evaluations`` (step, mean return) in order."""
        self._call("on_start", step, list(evaluations))

    def evaluation(self, step: int, result: EvalResult, new_best: Path | None) -> None:
        """An evaluation was offered to the best store; ``new_best`` is its entry when it was saved as best."""
        if new_best is not None:
            self._call("on_new_best", BestEntry(new_best, step, result.mean_return))
        self._call("on_evaluation", step, result)

    def checkpoint(self, step: int, path: Path) -> None:
        self._call("on_checkpoint", step, path)

    def end(self, result: Any) -> None:
        self._call("on_end", result)

    def _call(self, hook: str, *event: Any) -> None:
        for callback in self.callbacks:
            try:
                outcome = getattr(callback, hook)(*event)
            except Exception as error:  # a user's code can fail in any way; the run must say whose it was
                raise CallbackError(f"callback {callback.name}.{hook} raised {type(error).__name__}: "
                                    f"{first_line(error)}") from error
            if isinstance(outcome, Stop) and self.stop_reason is None:
                self.stop_reason = f"{callback.name}: {outcome.reason}"
