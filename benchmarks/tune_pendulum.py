"""champion tune on Pendulum-v1 (no preset): 20 trials x 50k steps, against champion's no-preset defaults at 50k,
all judged on the study's fresh held-out seeds; then the winner's settings trained again on 3 new seeds.

    python benchmarks/tune_pendulum.py study     # the study (resumable: run it again after a stop or a kill)
    python benchmarks/tune_pendulum.py defaults  # champion train Pendulum-v1 --no-preset at 50k, seeds 0-3
    python benchmarks/tune_pendulum.py retrain   # champion train --config winner.yaml, seeds 1-3
    python benchmarks/tune_pendulum.py report    # docs/benchmark-runs/tune-pendulum/{comparison.md,results.json}

Each step skips what is already done, so each can be stopped and run again; ``study --max-minutes M`` stops the
study with a Ctrl-C after M minutes (a stopped trial is trained again when it goes on), to run it in pieces.
Every policy is played on the same fresh seeds (the study's re-evaluation seeds, 2,000,000,000 + i, 100 episodes),
which no run here trained, evaluated or crowned on. The runs go to ``--results`` (default /tmp/tune-pendulum).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmark-runs" / "tune-pendulum"
ENV_ID, TRIALS, STEPS, STUDY = "Pendulum-v1", 20, 50_000, "pendulum-20x50k"
DEFAULT_SEEDS, RETRAIN_SEEDS = (0, 1, 2, 3), (1, 2, 3)
CHAMPION = str(Path(sys.executable).with_name("champion"))


def study_dir(results: Path) -> Path:
    return results / "tune" / ENV_ID / "ppo" / STUDY


def run_study(results: Path, workers: int, max_minutes: float | None) -> None:
    command = [CHAMPION, "tune", ENV_ID, "--no-preset", "--trials", str(TRIALS), "--trial-steps", str(STEPS),
               "--study-name", STUDY, "--results-dir", str(results), "--workers", str(workers)]
    started = time.time()
    child = subprocess.Popen(command)
    try:
        child.wait(timeout=max_minutes * 60 if max_minutes else None)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGINT)
        child.wait()
        print(f"stopped after {max_minutes} minutes: run it again to go on")
    log = {"piece_seconds": round(time.time() - started, 1), "load": os.getloadavg(), "exit": child.returncode}
    with open(OUT / "pieces.jsonl", "a") as handle:
        handle.write(json.dumps(log) + "\n")


def train(results: Path, name: str, seed: int, extra: list[str]) -> Path:
    run_dir = results / name / ENV_ID / "ppo" / f"seed-{seed}"
    if (run_dir / "summary.json").exists():
        return run_dir
    if (run_dir / "checkpoints").is_dir():
        command = [CHAMPION, "train", "--resume", str(run_dir), "-q"]
    else:
        command = [CHAMPION, "train", *extra, "--seed", str(seed), "--results-dir", str(results / name),
                   "--run-name", f"seed-{seed}", "--no-media", "-q"]
    started = time.time()
    subprocess.run(command, check=True)
    with open(OUT / "pieces.jsonl", "a") as handle:
        handle.write(json.dumps({"run": f"{name}/seed-{seed}", "seconds": round(time.time() - started, 1),
                                 "load": os.getloadavg()}) + "\n")
    return run_dir


def defaults(results: Path) -> None:
    for seed in DEFAULT_SEEDS:
        train(results, "defaults", seed, [ENV_ID, "--no-preset", "--total-steps", str(STEPS)])


def retrain(results: Path) -> None:
    winner = study_dir(results) / "winner.yaml"
    for seed in RETRAIN_SEEDS:
        train(results, "retrain", seed, ["--config", str(winner)])


def judged(run_dir: Path, seeds: list[int]) -> dict:
    import champion
    from champion.runners.race import mean_interval
    from champion.runners.store.best_store import read_champion

    result = champion.evaluate(champion.load(run_dir), seeds=seeds)
    low, high = mean_interval(result.returns, 0.05)
    crown = read_champion(run_dir / "best") or {}
    return {"run": str(run_dir), "crown": crown.get("held_out_mean"), "fresh_mean": result.mean_return,
            "fresh_interval": [low, high]}


def report(results: Path) -> None:
    import numpy as np

    from champion.runners.tune.report import read_report

    study = read_report(study_dir(results))
    seeds = list(range(study.final_seeds[0], study.final_seeds[1] + 1))
    rows = {"defaults": [judged(results / "defaults" / ENV_ID / "ppo" / f"seed-{seed}", seeds)
                         for seed in DEFAULT_SEEDS],
            "retrain": [judged(results / "retrain" / ENV_ID / "ppo" / f"seed-{seed}", seeds)
                        for seed in RETRAIN_SEEDS]}
    winner = study.row(study.winner)
    lines = ["| policy | seed | its own crown (held-out) | fresh seeds: mean [95% interval] |", "|---|---|---|---|",
             f"| study champion (trial {winner.number}) | 0 | {winner.crown_mean:.1f} | {winner.study_mean:.1f} "
             f"[{winner.study_interval[0]:.1f}, {winner.study_interval[1]:.1f}] |"]
    for name, seeds_used in (("defaults", DEFAULT_SEEDS), ("retrain", RETRAIN_SEEDS)):
        label = "no-preset defaults" if name == "defaults" else "winner.yaml retrained"
        for seed, row in zip(seeds_used, rows[name]):
            lines.append(f"| {label} | {seed} | {row['crown']:.1f} | {row['fresh_mean']:.1f} "
                         f"[{row['fresh_interval'][0]:.1f}, {row['fresh_interval'][1]:.1f}] |")
    retrained = np.array([row["fresh_mean"] for row in rows["retrain"]])
    default = np.array([row["fresh_mean"] for row in rows["defaults"]])
    lines += ["", f"no-preset defaults at {STEPS:,}: mean over seeds {default.mean():.1f} (range {default.min():.1f} "
              f"to {default.max():.1f})",
              f"winner retrained on seeds 1-3: mean {retrained.mean():.1f} (range {retrained.min():.1f} to "
              f"{retrained.max():.1f}, spread {retrained.max() - retrained.min():.1f}); the study's estimate "
              f"{winner.study_mean:.1f}",
              f"fresh seeds: {seeds[0]:,}-{seeds[-1]:,}; load when written: {os.getloadavg()[0]:.1f}"]
    (OUT / "comparison.md").write_text("\n".join(lines) + "\n")
    (OUT / "results.json").write_text(json.dumps({"study": study.to_dict(), **rows}, indent=1))
    for name in ("report.md", "winner.yaml"):
        (OUT / name).write_text((study_dir(results) / name).read_text())
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["study", "defaults", "retrain", "report"])
    parser.add_argument("--results", type=Path, default=Path("/tmp/tune-pendulum"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-minutes", type=float)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.step == "study":
        run_study(args.results, args.workers, args.max_minutes)
    elif args.step == "defaults":
        defaults(args.results)
    elif args.step == "retrain":
        retrain(args.results)
    else:
        report(args.results)


if __name__ == "__main__":
    main()
