"""Wall-time accounting per phase of training (env stepping, acting, update, ...)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator


class Timings:
    """Accumulates seconds per named phase; cheap enough for the per-step path."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block and add it to ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def summary(self, total_seconds: float) -> str:
        """One line: each phase's seconds and share of the total."""
        parts = [f"{name} {seconds:.1f}s ({100 * seconds / max(total_seconds, 1e-9):.0f}%)"
                 for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1])]
        other = total_seconds - sum(self.seconds.values())
        parts.append(f"other {other:.1f}s ({100 * other / max(total_seconds, 1e-9):.0f}%)")
        return ", ".join(parts)
