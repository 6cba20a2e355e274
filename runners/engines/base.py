"""What every engine shares: the record of an advance, the protocol the train loop calls, timed tracing."""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Any, Callable, Protocol

import numpy as np

from champion.runners.timing import Timings


class EngineFailed(RuntimeError):
    """The engine's workers failed past their restarts; the loop writes a checkpoint and stops with this message."""


@dataclass(frozen=True)
class EpisodeStats:
    """Training episodes that finished during an advance, summed (what the logger averages)."""

    count: int = 0
    return_sum: float = 0.0
    length_sum: float = 0.0

    @classmethod
    def from_arrays(cls, returns: np.ndarray, lengths: np.ndarray) -> "EpisodeStats":
        """Sums of per-episode returns and lengths."""
        return cls(int(np.size(returns)), float(np.sum(returns)), float(np.sum(lengths)))

    def __add__(self, other: "EpisodeStats") -> "EpisodeStats":
        return EpisodeStats(self.count + other.count, self.return_sum + other.return_sum,
                            self.length_sum + other.length_sum)


@dataclass(frozen=True)
class Advance:
    """What one ``Engine.advance`` did."""

    env_steps: int
    updates: int
    metrics: dict[str, float]
    """Update metrics averaged over the updates."""
    episodes: EpisodeStats
    skipped_steps: int = 0
    """Gradient steps skipped for a non-finite loss or gradient, over all the updates."""
    nonfinite_runs: tuple[int, int, int] = (0, 0, 0)
    """Runs of consecutive updates with a skipped step: (at the start, at the end, longest)."""


class Engine(Protocol):
    """Collects rollouts and updates the learner on them."""

    kind: str

    def start(self, saved: dict[str, Any] | None, step: int, warn: Callable[[str], None]) -> list[str | None]:
        """Begin collecting: fresh, or from a checkpoint's ``checkpoint_state`` (TF state is restored already).
        Returns, per env, None when a checkpoint's env was restored exactly, else why its episode restarted
        (empty on a fresh start)."""
        ...

    def advance(self, step: int, max_env_steps: int, total_steps: int) -> Advance:
        """At least one rollout and update, at most ``max_env_steps`` env steps when that allows one."""
        ...

    def tracing_count(self) -> int:
        """Times the compiled function was traced (1 once it has run)."""
        ...

    def checkpoint_objects(self) -> dict[str, Any]:
        """TensorFlow state for a resume checkpoint."""
        ...

    def checkpoint_state(self) -> dict[str, Any]:
        """Picklable state for a resume checkpoint, with ``envs_exact``: per env, whether a resume restores it
        exactly."""
        ...

    def report(self) -> dict[str, Any]:
        """What summary.json records about the engine (at least its kind), asked before ``close``."""
        ...

    def close(self) -> None:
        """Release environments."""
        ...


def build_graph(prepare: Callable[[], str], timings: Timings, label: str) -> None:
    """Trace a compiled function or load its trace from the cache (``prepare``), timed as "tracing (label)"
    or "trace from cache (label)"."""
    started = perf_counter()
    source = prepare()
    timings.add(f"tracing ({label})" if source == "traced" else f"trace from cache ({label})", perf_counter() - started)
