"""The crown's race against a fixed 100 episodes per candidate, on the known-answer env of tests/test_crown_race.py
(RaceBandit: four candidates holding 1.0, 0.8, 0.0 and -1.0, each episode off by N(0, 1)), over many repetitions.

    python benchmarks/crown_race.py --repetitions 2000

Each repetition crowns the same four entries on fresh held-out seeds, racing and with 100 episodes each on the
same seeds, and counts: how often each crowned the truly best, the episodes each played, and how often the race's
stated 95% intervals covered the true means. The test runs 200 repetitions; this runs more, on other seeds. Then
the same coverage for returns that are mostly 0 (``skewed_coverage``), where Student t is only approximate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def skewed_coverage(repetitions: int, zero_shares: tuple[float, ...], seed: int = 0) -> dict:
    """The race's statistics alone (``champion.runners.race``, no env) on returns that are mostly 0, as a weak Atari
    policy scores: candidate i's episode is 0 with probability ``zero_shares[i]``, else 1 + Poisson(3) (true mean
    4 x the share of non-zero games). How often every interval of a race covered its candidate's true mean, and
    how often the truly best (fewest zeros) was crowned. A candidate whose episodes all returned the same gets no
    interval (as in the crown), so it cannot miss."""
    import numpy as np

    from champion.runners.race import Race, reported_interval

    generator, covered, episodes, right = np.random.default_rng(seed), 0, 0, 0
    true_means = [(1.0 - share) * 4.0 for share in zero_shares]
    for _ in range(repetitions):
        returns: list[list[float]] = [[] for _ in zero_shares]
        race, played = Race([str(index) for index in range(len(zero_shares))], 100), 0
        while True:
            target = race.next_count(played)
            for index in race.running:
                scored = generator.random(target - played) >= zero_shares[index]
                returns[index].extend(np.where(scored, 1.0 + generator.poisson(3.0, target - played), 0.0).tolist())
            played = target
            if race.look(returns):
                break
        episodes += sum(len(each) for each in returns)
        right += true_means[race.leader(returns)] == max(true_means)
        intervals = [reported_interval(each, race.interval_error) for each in returns]  # None: no claim made
        covered += all(interval is None or interval[0] <= mean <= interval[1]
                       for mean, interval in zip(true_means, intervals))
    return {"zero_shares": list(zero_shares), "repetitions": repetitions, "all_intervals_covered": covered,
            "best_crowned": right, "episodes_per_race": episodes / repetitions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=2_000)
    parser.add_argument("--first-seed", type=int, default=900_000_000)
    parser.add_argument("--out", type=Path, help="Also write the figures to this JSON file.")
    arguments = parser.parse_args()
    import test_crown_race as known  # the known-answer env and its run, as the test builds them

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        run_dir, config, _, truth = known.make_race_run(Path(folder))
        figures = known.race_against_fixed(run_dir, config, truth, arguments.repetitions, arguments.first_seed)
    repetitions = figures["repetitions"]
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{repetitions:,} repetitions ({figures['seconds']} s): truly best crowned {figures['right_racing']:,} "
          f"times racing, {figures['right_fixed']:,} with 100 episodes each; episodes per crown "
          f"{figures['episodes_racing'] / repetitions:.1f} racing against {figures['episodes_fixed'] / repetitions:.0f}; "
          f"the race's 95% intervals covered every true mean in {figures['all_intervals_covered'] / repetitions:.1%} "
          f"of the repetitions, the champion's in {figures['champion_interval_covered'] / repetitions:.1%}")
    cases = [(0.5, 0.5), (0.85, 0.85), (0.85, 0.5), (0.95, 0.85, 0.7, 0.5)]
    figures["skewed"] = [skewed_coverage(arguments.repetitions, shares) for shares in cases]
    for skewed in figures["skewed"]:
        print(f"returns 0 with probabilities {skewed['zero_shares']}: every interval covered its true mean in "
              f"{skewed['all_intervals_covered'] / repetitions:.1%} of the races, the best was crowned in "
              f"{skewed['best_crowned'] / repetitions:.1%} ({skewed['episodes_per_race']:.0f} episodes per race)")
    if arguments.out:
        arguments.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
