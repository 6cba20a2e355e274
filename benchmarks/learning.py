"""Learning benchmark: returns reached per (env, algo) over several seeds, against the issue's bars.

    python benchmarks/learning.py                                  # every pair, seeds 0 1 2
    python benchmarks/learning.py --pairs CartPole-v1:ppo Pendulum-v1:ppo --seeds 0 1 2 --workers 2
    python benchmarks/learning.py --scale 0.1                       # a tenth of each budget (a smoke test)
    python benchmarks/learning.py --collect-only                    # rebuild the table from finished runs

Runs go to --results-dir (default results/benchmarks); the table goes to --out (default
docs/benchmarks.md) and one PNG of evaluation curves per env next to it. Needs the `bench`
extra (matplotlib, box2d).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# (env, algo): (env-step budget, threshold, RL Zoo's published figure for comparison)
BARS: dict[tuple[str, str], tuple[int, float, str]] = {
    ("CartPole-v1", "ppo"): (100_000, 475.0, "500 at 100k"),
    ("CartPole-v1", "a2c"): (500_000, 475.0, "500 at 500k"),
    ("Acrobot-v1", "ppo"): (500_000, -100.0, "-73.5 at 1M"),
    ("Acrobot-v1", "a2c"): (500_000, -100.0, "-83.4 at 500k"),
    ("MountainCar-v0", "ppo"): (1_000_000, -115.0, "-110.4 at 1M"),
    ("MountainCar-v0", "a2c"): (1_000_000, -115.0, "-"),
    ("Pendulum-v1", "ppo"): (300_000, -200.0, "-172 at 100k (gSDE)"),
    ("Pendulum-v1", "a2c"): (1_000_000, -200.0, "-163 at 1M"),
    ("LunarLander-v3", "ppo"): (1_000_000, 200.0, "242 at 1M"),
    ("LunarLander-v3", "a2c"): (1_000_000, 200.0, "156 at 200k"),
    ("LunarLanderContinuous-v3", "ppo"): (1_000_000, 200.0, "271 at 1M"),
    # MuJoCo (the mujoco extra): the bar is RL Zoo's PPO figure at 1M steps itself
    ("HalfCheetah-v5", "ppo"): (1_000_000, 5819.0, "5819 at 1M"),
    ("Hopper-v5", "ppo"): (1_000_000, 2410.0, "2410 at 1M"),
    ("Walker2d-v5", "ppo"): (1_000_000, 3479.0, "3479 at 1M"),
    ("Ant-v5", "ppo"): (1_000_000, 1327.0, "1327 at 1M"),
    ("Swimmer-v5", "ppo"): (1_000_000, 282.0, "282 at 1M"),
}


@dataclass(frozen=True)
class RunOutcome:
    """One seed's run, read back from its evaluations.csv."""

    env_id: str
    algo: str
    seed: int
    steps: list[int]
    means: list[float]
    wall_seconds: float
    threshold: float

    @property
    def best(self) -> float:
        return max(self.means) if self.means else float("nan")

    @property
    def first_step_at_threshold(self) -> int | None:
        return next((step for step, mean in zip(self.steps, self.means) if mean >= self.threshold), None)


def run_one(env_id: str, algo: str, seed: int, budget: int, threshold: float, results_dir: str) -> RunOutcome:
    """Train one seed with the preset (in a worker process) and read its evaluations back."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from champion.runners.configure import resolve_config
    from champion.runners.training import train

    config, _ = resolve_config(env_id, algo, {"seed": seed, "total_steps": budget, "results_dir": results_dir,
                                              "run_name": f"bench-seed{seed}-{int(time.time())}"})
    started = time.perf_counter()
    result = train(config, progress=False)
    with open(result.run_dir / "evaluations.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return RunOutcome(env_id, algo, seed, [int(row["step"]) for row in rows], [float(row["mean_return"]) for row in rows],
                      time.perf_counter() - started, threshold)


def collect(results_dir: Path) -> list[RunOutcome]:
    """Outcomes of every finished benchmark run (``bench-seed<N>-*`` with a summary.json) below results_dir."""
    import json

    import yaml

    outcomes = []
    for summary in sorted(Path(results_dir).glob("*/*/bench-seed*/summary.json")):
        run_dir = summary.parent
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        pair = (config["env_id"], config["algo"])
        if pair not in BARS:
            continue
        with open(run_dir / "evaluations.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        outcomes.append(RunOutcome(pair[0], pair[1], int(config["seed"]), [int(row["step"]) for row in rows],
                                   [float(row["mean_return"]) for row in rows],
                                   float(json.loads(summary.read_text())["wall_seconds"]), BARS[pair][1]))
    return outcomes


def table(outcomes: list[RunOutcome], scale: float) -> str:
    """The markdown table: one row per (env, algo)."""
    lines = ["| env | algo | env steps | seeds | best eval return (mean ± std over seeds) | bar | every seed reached it | "
             "first step at the bar, per seed | wall time per run | RL Zoo |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (env_id, algo), (budget, threshold, zoo) in BARS.items():
        runs = sorted((run for run in outcomes if (run.env_id, run.algo) == (env_id, algo)), key=lambda run: run.seed)
        if not runs:
            continue
        bests = [run.best for run in runs]
        spread = statistics.pstdev(bests) if len(bests) > 1 else 0.0
        reached = all(best >= threshold for best in bests)
        firsts = ", ".join(f"{run.first_step_at_threshold:,}" if run.first_step_at_threshold else "never" for run in runs)
        wall = statistics.mean(run.wall_seconds for run in runs)
        lines.append(f"| {env_id} | {algo} | {int(budget * scale):,} | {len(runs)} | {statistics.mean(bests):.1f} ± "
                     f"{spread:.1f} | >= {threshold:g} | {'yes' if reached else '**no**'} | {firsts} | {wall:.0f} s | {zoo} |")
    return "\n".join(lines) + "\n"


def plot(outcomes: list[RunOutcome], folder: Path) -> list[Path]:
    """One PNG per env: every seed's evaluation curve, coloured by algorithm, with the bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for env_id in sorted({run.env_id for run in outcomes}):
        figure, axes = plt.subplots(figsize=(7, 4))
        for index, algo in enumerate(sorted({run.algo for run in outcomes if run.env_id == env_id})):
            for number, run in enumerate(run for run in outcomes if (run.env_id, run.algo) == (env_id, algo)):
                axes.plot(run.steps, run.means, color=f"C{index}", alpha=0.8, marker="o", markersize=3,
                          label=algo if number == 0 else None)
        threshold = next(run.threshold for run in outcomes if run.env_id == env_id)
        axes.axhline(threshold, color="gray", linestyle="--", label=f"bar {threshold:g}")
        axes.set(title=env_id, xlabel="env steps", ylabel="evaluation mean return (10 episodes)")
        axes.legend()
        path = folder / f"learning-{env_id}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=[f"{env}:{algo}" for env, algo in BARS])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each budget to run")
    parser.add_argument("--results-dir", default="results/benchmarks")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--collect-only", action="store_true", help="train nothing; tabulate finished runs")
    args = parser.parse_args()
    if args.collect_only:
        outcomes = collect(Path(args.results_dir))
        write_report(outcomes, args, seconds=None)
        return
    jobs = []
    for pair in args.pairs:
        env_id, _, algo = pair.rpartition(":")
        budget, threshold, _ = BARS[(env_id, algo)]
        jobs += [(env_id, algo, seed, int(budget * args.scale), threshold, args.results_dir) for seed in args.seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = list(pool.map(run_one, *zip(*jobs)))
    for outcome in outcomes:
        print(f"{outcome.env_id} {outcome.algo} seed {outcome.seed}: best {outcome.best:.1f}, "
              f"first at the bar {outcome.first_step_at_threshold}, {outcome.wall_seconds:.0f} s", flush=True)
    write_report(outcomes, args, seconds=time.perf_counter() - started)


def write_report(outcomes: list[RunOutcome], args: argparse.Namespace, seconds: float | None) -> None:
    """docs/benchmarks.md (the table) and one PNG per env beside it."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plots = plot(outcomes, args.out.parent)
    how = f"in {seconds:.0f} s, {args.workers} runs at a time" if seconds is not None else "from finished runs"
    header = (f"# Learning benchmark\n\nProduced by `python benchmarks/learning.py {' '.join(os.sys.argv[1:])}` "
              f"on a {os.cpu_count()}-core machine ({how}; load average {os.getloadavg()[0]:.2f} when written). "
              "Best evaluation return = the highest mean over 10 deterministic episodes on fixed seeds at any "
              "evaluation. Rows missing from the table have not been run yet.\n\n")
    images = "".join(f"![{path.stem}]({path.name})\n" for path in plots)
    args.out.write_text(header + table(outcomes, args.scale) + "\n" + images)
    print(f"wrote {args.out} and {len(plots)} plot(s)")


if __name__ == "__main__":
    main()
