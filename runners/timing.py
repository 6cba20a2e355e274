"""Wall-time accounting per phase of training (env stepping, acting, update, ...), and of the work done
beside the loop on another thread (evaluation), which overlaps those phases."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator


class Timings:
    """Accumulates seconds per named phase; cheap enough for the per-step path."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.beside_seconds: dict[str, float] = defaultdict(float)
        self.beside_calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block and add it to ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` for phase ``name``, for a block whose name is known only once it has run."""
        self.seconds[name] += seconds
        self.calls[name] += 1

    def add_beside(self, name: str, seconds: float) -> None:
        """Count ``seconds`` of work another thread did while the loop went on (not part of the loop's time)."""
        self.beside_seconds[name] += seconds
        self.beside_calls[name] += 1

    def summary(self, total_seconds: float) -> str:
        """One line: each phase's seconds and share of the total."""
        parts = [f"{name} {seconds:.1f}s ({100 * seconds / max(total_seconds, 1e-9):.0f}%)"
                 for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1])]
        other = total_seconds - sum(self.seconds.values())
        parts.append(f"other {other:.1f}s ({100 * other / max(total_seconds, 1e-9):.0f}%)")
        beside = [f"{name} {seconds:.1f}s" for name, seconds in sorted(self.beside_seconds.items(), key=lambda item: -item[1])]
        return ", ".join(parts) + (f"; beside it: {', '.join(beside)}" if beside else "")


def profile_table(seconds: dict[str, float], calls: dict[str, int], total_seconds: float, env_steps: int,
                  beside_seconds: dict[str, float] | None = None, beside_calls: dict[str, int] | None = None) -> str:
    """A table of where a session's wall time went (``champion train --profile``), then the work done beside
    the loop on another thread."""
    width = max(len(name) for name in [*seconds, *(beside_seconds or {}), "other (loop, bookkeeping)"]) + 1

    def share(spent: float) -> str:
        return f"{100 * spent / max(total_seconds, 1e-9):>5.1f}%"

    def rows(spent_by_name: dict[str, float], calls_by_name: dict[str, int], shares: bool) -> list[str]:
        lines = []
        for name, spent in sorted(spent_by_name.items(), key=lambda item: -item[1]):
            count = calls_by_name.get(name, 0)
            per_call = f"{1000 * spent / count:.3f} ms" if count else "-"
            lines.append(f"{name:<{width}} {spent:>8.2f} {share(spent) if shares else '':>6} {count:>8,} {per_call:>10}")
        return lines

    lines = [f"{'phase':<{width}} {'seconds':>8} {'share':>6} {'calls':>8} {'per call':>10}"]
    lines += rows(seconds, calls, shares=True)
    other = total_seconds - sum(seconds.values())
    lines.append(f"{'other (loop, bookkeeping)':<{width}} {other:>8.2f} {share(other)}")
    lines.append(f"{'total':<{width}} {total_seconds:>8.2f} 100.0%   {env_steps:,} env steps, "
                 f"{env_steps / max(total_seconds, 1e-9):,.0f} steps/s")
    if beside_seconds:
        lines.append("beside the loop, on a worker thread (overlapping the phases above):")
        lines += rows(beside_seconds, beside_calls or {}, shares=False)
    return "\n".join(lines)
