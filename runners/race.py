"""The crown's race: its candidates play held-out episodes in rounds, a candidate that is clearly worse than the
leader (or as good within ``crown.tolerance``) stops playing, and the race ends once one is left or at the last
round. Pure arithmetic, no env: ``champion.runners.crown`` plays the rounds.

Why these statistics. The race looks at the returns after each round, and a look that may stop the race makes
an ordinary 95% interval too narrow (looking until it excludes something is how one gets fooled). The number of
looks is fixed before the first episode (``looks``: 10, 20, 40, 80, ... episodes, then the maximum), so a
Bonferroni split of the error over the looks keeps every statement valid whichever look the race stops at:

- a candidate is dropped when the Student t interval of its paired differences with the leader (the same seeds,
  so the episodes' shared luck cancels) lies above zero, or within ``tolerance`` of it, at error
  ``(1 - CONFIDENCE) / (looks x (candidates - 1))``;
- every reported interval is a Student t interval at error ``(1 - CONFIDENCE) / (looks x candidates)``, so all
  candidates' intervals hold together with probability at least ``CONFIDENCE``, at any stopping look, and the
  champion's interval stays valid although it is the one with the highest mean (the winner's curse the crown is
  there to measure).

A fully sequential bound (a confidence sequence) would look after every episode, but the ones that need no
known range of the returns are wider at these sample sizes, and an RL return has no known range. Student t is
exact for normal returns and close for the sums of many rewards that returns are; the race's coverage on a
known-answer env is measured in ``tests/test_crown_race.py`` and ``benchmarks/crown_race.py``. The t interval
needs returns that vary: differences that are the same on every seed played (two CartPole policies at 500
each time) decide nothing before the last look, and a candidate whose returns are all equal gets that value as
no interval at all (``reported_interval``): its lines say every episode returned that value.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
FIRST_LOOK = 10
"""Episodes per candidate at the race's first look; each look after it doubles them, up to crown.episodes."""


def looks(max_episodes: int, racing: bool = True) -> list[int]:
    """The episode counts at which the race looks: 10, 20, 40, ... below ``max_episodes``, then ``max_episodes``
    (racing off, or at most 10 episodes: one look, at the maximum)."""
    counts, count = [], FIRST_LOOK
    while racing and count < max_episodes:
        counts.append(count)
        count *= 2
    return counts + [max_episodes]


def student_t_cdf(value: float, degrees: int) -> float:
    """P(T <= value) for Student's t with a whole number of degrees of freedom: the finite series of Abramowitz and
    Stegun 26.7.3-4 (exact; a normal approximation past 2,000 degrees, where they differ by under 1e-4)."""
    if degrees > 2_000:
        return statistics.NormalDist().cdf(value)
    theta = math.atan(value / math.sqrt(degrees))
    sine, cosine_squared = math.sin(theta), math.cos(theta) ** 2
    if degrees % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, total = 1.0, 1.0 if degrees > 1 else 0.0
        for power in range(1, (degrees - 1) // 2):
            term *= cosine_squared * (2 * power) / (2 * power + 1)
            total += term
        central = 2.0 / math.pi * (theta + sine * math.cos(theta) * total) if degrees > 1 else 2.0 / math.pi * theta
    else:  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term, total = 1.0, 1.0
        for power in range(1, degrees // 2):
            term *= cosine_squared * (2 * power - 1) / (2 * power)
            total += term
        central = sine * total
    return 0.5 + 0.5 * central  # central is P(-value < T < value), signed with value


def student_t_quantile(probability: float, degrees: int) -> float:
    """The value t with P(T <= t) = ``probability`` (bisection on ``student_t_cdf``, to 1e-9)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"a probability strictly between 0 and 1 is needed, got {probability}")
    if probability < 0.5:
        return -student_t_quantile(1.0 - probability, degrees)
    low, high = 0.0, 1.0
    while student_t_cdf(high, degrees) < probability:
        low, high = high, high * 2.0
    while high - low > 1e-9:
        middle = 0.5 * (low + high)
        low, high = (middle, high) if student_t_cdf(middle, degrees) < probability else (low, middle)
    return 0.5 * (low + high)


def mean_interval(values: Sequence[float], error: float) -> tuple[float, float]:
    """A two-sided Student t interval for the mean of ``values`` that misses with probability ``error``; equal
    values (or one) give the point itself."""
    data = np.asarray(values, np.float64)
    mean = float(data.mean())
    if len(data) < 2 or np.all(data == data[0]):
        return mean, mean
    half = student_t_quantile(1.0 - error / 2.0, len(data) - 1) * float(data.std(ddof=1)) / math.sqrt(len(data))
    return mean - half, mean + half


def reported_interval(values: Sequence[float], error: float) -> tuple[float, float] | None:
    """The interval a crown reports for a candidate: ``mean_interval``, or None when every value is the same (no
    spread to build one from: ten zeros say nothing about how often a weak Atari policy scores)."""
    return None if len(set(values)) <= 1 else mean_interval(values, error)


@dataclass
class Race:
    """Which candidates still play, and why the others stopped. ``order`` breaks ties in the leader's favour
    (higher first: the training-time best, then the newest step)."""

    names: list[str]
    max_episodes: int
    tolerance: float = 0.0
    racing: bool = True
    order: list[tuple] = field(default_factory=list)
    running: list[int] = field(init=False)
    dropped: dict[int, str] = field(init=False, default_factory=dict)
    """Candidate index -> why it stopped playing (with the look it stopped at)."""

    def __post_init__(self) -> None:
        self.running = list(range(len(self.names)))
        self.order = self.order or [()] * len(self.names)
        self.schedule = looks(self.max_episodes, self.racing)

    @property
    def pair_error(self) -> float:
        """The error of one leader-against-candidate test at one look."""
        return (1.0 - CONFIDENCE) / (len(self.schedule) * max(len(self.names) - 1, 1))

    @property
    def interval_error(self) -> float:
        """The error of one candidate's reported interval."""
        return (1.0 - CONFIDENCE) / (len(self.schedule) * len(self.names))

    def leader(self, returns: Sequence[Sequence[float]]) -> int:
        """The running candidate with the highest mean over the seeds all running ones have played."""
        played = min(len(returns[index]) for index in self.running)
        return max(self.running, key=lambda index: (float(np.mean(returns[index][:played])), self.order[index]))

    def look(self, returns: Sequence[Sequence[float]]) -> bool:
        """After a round: drop the running candidates the leader clearly beats (or matches within the tolerance);
        whether the race is over (one left, or the last look, where nobody is dropped: all have played all)."""
        played = len(returns[self.running[0]])
        if played >= self.schedule[-1]:
            return True
        leader = self.leader(returns)
        for index in [index for index in self.running if index != leader]:
            gaps = np.asarray(returns[leader][:played], np.float64) - np.asarray(returns[index][:played], np.float64)
            if np.all(gaps == gaps[0]):  # no spread to judge by (both capped, say): decided at the last look only
                continue
            low, high = mean_interval(gaps, self.pair_error)
            if low > 0:  # the leader is better, at this look's error
                why = f"worse than {self.names[leader]}"
            elif -self.tolerance <= low and high <= self.tolerance:
                why = f"within {self.tolerance:g} of {self.names[leader]}"
            else:
                continue
            self.running.remove(index)
            self.dropped[index] = f"{why} after {played} episodes"
        return len(self.running) == 1

    def next_count(self, played: int) -> int:
        """Episodes per running candidate after the next round."""
        return next(count for count in self.schedule if count > played)
