"""Speed of champion on CartPole-v1 with the presets: steps/s, time to 475, where the time goes.

    python benchmarks/cartpole_speed.py [--seeds 0 1 2] [--algos ppo a2c] [--out docs/cartpole_speed.md]

Also measures raw env stepping (random actions, same vector env, no agent) for reference, and
prints the machine's load average next to every figure, since these machines are shared.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from envs.factory import make_vector_env
from runners.configure import resolve_config
from runners.training import train


def raw_env_steps_per_second(num_envs: int = 8, steps: int = 20_000) -> float:
    """Random actions through the training vector env: the ceiling for any agent."""
    envs = make_vector_env("CartPole-v1", num_envs)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps // num_envs):
        envs.step(rng.integers(0, 2, num_envs))
    envs.close()
    return steps / (time.perf_counter() - start)


def time_to_threshold(run_dir: Path, threshold: float) -> tuple[int | None, float | None]:
    """(env step, wall seconds) of the first evaluation at or above the threshold."""
    with open(run_dir / "evaluations.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if float(row["mean_return"]) >= threshold:
                return int(row["step"]), float(row["wall_seconds"])
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--algos", nargs="+", default=["ppo", "a2c"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    raw = raw_env_steps_per_second()
    lines = [f"Raw CartPole-v1 stepping, 8 sync envs, random actions: {raw:,.0f} steps/s "
             f"(load {os.getloadavg()[0]:.2f})", "",
             "| algo | seed | steps | wall s | steps/s | % of raw | step to 475 | s to 475 | best | update | acting | env | eval | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for algo in args.algos:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as results:
                config, _ = resolve_config("CartPole-v1", algo, {"seed": seed, "results_dir": results})
                result = train(config, progress=False)
                step, seconds = time_to_threshold(result.run_dir, 475)
            share = {name: 100 * value / result.wall_seconds for name, value in result.timings.items()}
            lines.append(
                f"| {algo} | {seed} | {result.env_steps:,} | {result.wall_seconds:.1f} | {result.steps_per_second:,.0f} | "
                f"{100 * result.steps_per_second / raw:.0f}% | {step if step else '-'} | "
                f"{f'{seconds:.1f}' if seconds else '-'} | {result.best_mean_return:.1f} | "
                f"{share.get('update', 0) + share.get('tracing (first update)', 0):.0f}% | {share.get('acting', 0):.0f}% | "
                f"{share.get('env_stepping', 0):.0f}% | {share.get('evaluation', 0):.0f}% | {os.getloadavg()[0]:.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
