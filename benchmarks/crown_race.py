"""The crown's race against a fixed 100 episodes per candidate, on the known-answer env of tests/test_crown_race.py
(RaceBandit: four candidates holding 1.0, 0.8, 0.0 and -1.0, each episode off by N(0, 1)), over many repetitions.

    python benchmarks/crown_race.py --repetitions 2000

Each repetition crowns the same four entries on fresh held-out seeds, racing and with 100 episodes each on the
same seeds, and counts: how often each crowned the truly best, the episodes each played, and how often the race's
stated 95% intervals covered the true means. The test runs 200 repetitions; this runs more, on other seeds.
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
    if arguments.out:
        arguments.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
