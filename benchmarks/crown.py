"""Crown benchmark: how far the training-time best's evaluation mean sits above what it holds on held-out episodes
(the winner's curse), and what the crown recovers. LunarLander-v3 with the PPO and A2C presets, 3 seeds each.

    python benchmarks/crown.py --algos ppo a2c --seeds 0 1 2     # train (each run crowns itself at its end)
    python benchmarks/crown.py --collect-only                      # the table from the finished runs

Per run: the training-time best's evaluation mean (10 episodes) and its held-out mean (100 episodes), the crowned
entry, its held-out mean and 95% interval; then a fresh check the selection never saw: the training-time best and
the champion each played on 200 more episodes, seeds disjoint from the evaluation and held-out ones. The records
(champion.json, evaluations.csv, summary.json, fresh.json) are copied to docs/benchmark-runs/crown/; the table
goes to --out. Runs one seed at a time per worker; returns do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRESH_EPISODES = 200
FRESH_SEED = 30_000_000
"""The fresh check's seeds: FRESH_SEED + i, far from the evaluation (1,000,000 + i) and held-out (11,000,000 + i)."""
RECORDS = ROOT / "docs" / "benchmark-runs" / "crown"


def run_one(env_id: str, algo: str, seed: int, results_dir: str) -> str:
    """Train one seed with the preset (the crown runs at its end); returns the run folder."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from champion.runners.configure import resolve_config
    from champion.runners.training import train

    config, _ = resolve_config(env_id, algo, {"seed": seed, "results_dir": results_dir, "media": False,
                                              "run_name": f"crown-seed{seed}-{int(time.time())}"})
    return str(train(config, progress=False).run_dir)


def fresh_check(run_dir: Path) -> dict:
    """The training-time best and the champion on FRESH_EPISODES episodes neither evaluation nor crown played."""
    from champion.envs.factory import EnvOptions
    from champion.runners.race import mean_interval
    from champion.runners.evaluate import episode_seeds, play_episodes
    from champion.runners.replay import load_policy

    seeds = episode_seeds(FRESH_SEED, FRESH_EPISODES)
    played = {}
    for name, entry in (("training_best", "best"), ("champion", None)):
        policy, manifest = load_policy(run_dir, entry)
        result = play_episodes(manifest["env_id"], EnvOptions.from_dict(manifest.get("env_options")), policy.spec,
                               policy.weights, seeds)
        played[name] = {"entry": Path(manifest["entry"]).name, "mean": result.mean_return,
                        "interval": list(mean_interval(result.returns, 0.05)), "returns": list(result.returns)}
    return {"seeds": [seeds[0], seeds[-1]], **played}


def keep_records(run_dir: Path, algo: str, seed: int) -> Path:
    """Copy what the table is built from into docs/benchmark-runs/crown/<algo>-seed<N>/ (and write fresh.json)."""
    folder = RECORDS / f"{algo}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "evaluations.csv", "summary.json"):
        shutil.copy(run_dir / name, folder / name)
    shutil.copy(run_dir / "best" / "champion.json", folder / "champion.json")
    (folder / "fresh.json").write_text(json.dumps(fresh_check(run_dir), indent=2) + "\n")
    return folder


def row(folder: Path) -> tuple[str, dict]:
    """One table row from a record folder, and the numbers the summary lines need."""
    crown = json.loads((folder / "champion.json").read_text())
    fresh = json.loads((folder / "fresh.json").read_text())
    judged = {candidate["entry"]: candidate for candidate in crown["candidates"]}
    naive = judged[crown["training_best"]]
    low, high = crown["interval"]
    numbers = {"naive_training": naive["training_mean_return"], "naive_held_out": naive["held_out_mean"],
               "champion_held_out": crown["held_out_mean"], "naive_fresh": fresh["training_best"]["mean"],
               "champion_fresh": fresh["champion"]["mean"], "seconds": crown["cost"]["seconds"]}
    text = (f"| {folder.name} | {naive['entry']} | {naive['training_mean_return']:.1f} | {naive['held_out_mean']:.1f} | "
            f"{naive['held_out_mean'] - naive['training_mean_return']:+.1f} | {crown['entry']} | "
            f"{crown['held_out_mean']:.1f} [{low:.1f}, {high:.1f}] | {fresh['training_best']['mean']:.1f} | "
            f"{fresh['champion']['mean']:.1f} | {crown['cost']['seconds']:.0f} s |")
    return text, numbers


def table(folders: list[Path]) -> str:
    rows = [row(folder) for folder in folders]
    header = ["| run | training-time best | its eval mean (10 ep.) | its held-out mean (100 ep.) | bias | crowned | "
              "crowned held-out mean [95% interval] | fresh 200 ep.: training-time best | fresh: champion | crown took |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lines = header + [text for text, _ in rows] + [""]
    for algo in sorted({folder.name.split("-")[0] for folder in folders}):
        numbers = [values for (_, values), folder in zip(rows, folders) if folder.name.startswith(algo)]
        mean = lambda key: statistics.mean(values[key] for values in numbers)  # noqa: E731
        lines.append(f"- {algo.upper()}, mean over {len(numbers)} runs: the training-time best recorded "
                     f"{mean('naive_training'):.1f} and holds {mean('naive_held_out'):.1f} on held-out episodes "
                     f"(bias {mean('naive_held_out') - mean('naive_training'):+.1f}); the champion holds "
                     f"{mean('champion_held_out'):.1f}. On fresh episodes: training-time best "
                     f"{mean('naive_fresh'):.1f}, champion {mean('champion_fresh'):.1f}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LunarLander-v3")
    parser.add_argument("--algos", nargs="+", default=["ppo", "a2c"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--results-dir", default="results/crown")
    parser.add_argument("--out", type=Path, default=RECORDS / "table.md")
    parser.add_argument("--collect-only", action="store_true")
    args = parser.parse_args()
    if not args.collect_only:
        jobs = [(args.env, algo, seed, args.results_dir) for algo in args.algos for seed in args.seeds]
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for (_, algo, seed, _), run_dir in zip(jobs, pool.map(run_one, *zip(*jobs))):
                print(f"{algo} seed {seed}: {keep_records(Path(run_dir), algo, seed)}", flush=True)
    folders = sorted(path for path in RECORDS.iterdir() if (path / "fresh.json").exists())
    args.out.write_text(table(folders))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
