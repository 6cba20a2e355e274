"""champion against Stable-Baselines3 on ALE/Breakout-v5 with RL Zoo's Atari PPO settings.

    pip install -e '.[atari,bench]'
    nohup python benchmarks/atari_sb3.py --library champion --seed 0 &   # about half an hour each here
    nohup python benchmarks/atari_sb3.py --library sb3 --seed 0 &        # (one at a time, idle machine)
    python benchmarks/atari_sb3.py --report docs/atari-breakout.png      # the table and the curves

Each call trains one library's whole run (``--total-steps``, 500k by default; the learning rate and clip
range decay linearly over it, so a run is not split: an interrupted champion run is resumed from its
checkpoint by the next call, an interrupted SB3 run starts again). Both evaluate every 50k env steps the
same way: champion's evaluation envs (whole games, raw scores, 84x84x4 like training), 10 episodes on
seeds 1000000..1000009, deterministic actions. Each run appends a JSON line to
``docs/benchmark-runs/atari/<library>-seed<S>.jsonl``: steps, wall seconds (training and evaluations;
for champion the whole command), env steps per second, peak RSS, the evaluations and the machine's load.
Run the two libraries one after the other on an otherwise idle machine: the wall times are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_ID = "ALE/Breakout-v5"
EVAL_EVERY, EVAL_SEED, EVAL_EPISODES = 50_000, 1_000_000, 10
LOG_DIR = ROOT / "docs" / "benchmark-runs" / "atari"


def champion_run(seed: int, total: int, results: Path) -> dict:
    """Train (or resume) champion's run in a child process; its evaluations from the run folder."""
    run_dir = results / "champion" / ENV_ID.replace("/", "_") / "ppo" / f"seed{seed}"
    common = ["--total-steps", str(total), "-q", "--no-media"]
    if (run_dir / "checkpoints").is_dir():
        command = ["champion", "train", "--resume", str(run_dir), *common]
    else:
        command = ["champion", "train", ENV_ID, "--seed", str(seed), "--eval-every", str(EVAL_EVERY),
                   "--eval-episodes", str(EVAL_EPISODES), "--results-dir", str(results / "champion"),
                   "--run-name", f"seed{seed}", "--set", "checkpoint_every=25000", *common]
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / command[0]), *command[1:]], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"champion failed: {done.stderr.strip().splitlines()[-1:]}")
    rows = (run_dir / "evaluations.csv").read_text().splitlines()[1:]
    evaluations = [(int(row.split(",")[0]), float(row.split(",")[2])) for row in rows]
    summary = json.loads((run_dir / "summary.json").read_text())
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"steps": summary["env_steps"], "seconds": round(seconds, 1),
            "steps_per_second": summary.get("steps_per_second"), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "evaluations": evaluations}


def sb3_run(seed: int, total: int, results: Path) -> dict:
    """Train SB3's PPO (RL Zoo's Atari settings) for ``total`` steps, evaluating every EVAL_EVERY steps."""
    sys.modules["tensorflow"] = None  # type: ignore[assignment]  # keep TF out of SB3's TensorBoard import (its RSS)
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from champion.envs.atari import register
    from champion.envs.factory import EnvOptions, make_eval_env
    from champion.runners.evaluate import episode_seeds

    register()
    torch.set_num_threads(2)
    eval_envs = make_eval_env(ENV_ID, EVAL_EPISODES, options=EnvOptions(frame_stack=4))
    evaluations: list = []
    evaluating = [0.0]

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % EVAL_EVERY < 8:  # 8 envs: the step that crosses a multiple
                started = time.perf_counter()
                evaluations.append((self.num_timesteps, _sb3_evaluate(self.model, eval_envs,
                                                                      episode_seeds(EVAL_SEED, EVAL_EPISODES))))
                evaluating[0] += time.perf_counter() - started
            return True

    started = time.perf_counter()
    # SB3's AtariWrapper skips 4 frames itself, so the v5 env must not skip too (its default is 4: 16 in all)
    envs = VecFrameStack(make_atari_env(ENV_ID, n_envs=8, seed=seed, env_kwargs={"frameskip": 1}), n_stack=4)
    model = PPO("CnnPolicy", envs, n_steps=128, n_epochs=4, batch_size=256, vf_coef=0.5, ent_coef=0.01, seed=seed,
                verbose=0, learning_rate=lambda remaining: 2.5e-4 * remaining,
                clip_range=lambda remaining: 0.1 * remaining)
    model.learn(total, callback=Evaluate())
    seconds = time.perf_counter() - started
    return {"steps": int(model.num_timesteps), "seconds": round(seconds, 1),
            "steps_per_second": round(model.num_timesteps / (seconds - evaluating[0]), 1),
            "evaluation_seconds": round(evaluating[0], 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "evaluations": evaluations}


def _sb3_evaluate(model, eval_envs, seeds) -> float:
    """Mean return of whole games, one per seed, with SB3's deterministic actions."""
    import numpy as np

    observations, _ = eval_envs.reset(seed=list(seeds))
    returns, done = np.zeros(len(seeds)), np.zeros(len(seeds), bool)
    while not done.all():
        actions, _ = model.predict(observations, deterministic=True)
        observations, rewards, terminated, truncated, _ = eval_envs.step(actions)
        returns += np.where(done, 0.0, rewards)
        done |= terminated | truncated
    return float(returns.mean())


def report(log_dir: Path, plot: Path) -> None:
    """Print a Markdown table of the newest run of each library and seed, and draw their evaluation curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for path in sorted(log_dir.glob("*.jsonl")):
        lines = path.read_text().splitlines()
        if lines:
            runs[path.stem] = json.loads(lines[-1])
    print("| run | env steps | best eval (at step) | last eval | wall time | env steps/s | peak RSS | load before/after |")
    print("|---|---|---|---|---|---|---|---|")
    figure, axes = plt.subplots(figsize=(7, 4))
    for name, run in runs.items():
        steps, returns = zip(*run["evaluations"])
        best = max(range(len(returns)), key=returns.__getitem__)
        print(f"| {name} | {run['steps']:,} | {returns[best]:.1f} ({steps[best]:,}) | {returns[-1]:.1f} | "
              f"{run['seconds'] / 60:.1f} min | {run['steps_per_second']:,.0f} | {run['peak_rss_mb']:,} MB | "
              f"{run['load_before']} / {run['load_after']} |")
        axes.plot(steps, returns, marker="o", label=name)
    axes.set(xlabel="env steps", ylabel="mean score, 10 whole games", title=f"{ENV_ID}, PPO (RL Zoo's settings)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(plot, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=["champion", "sb3"])
    parser.add_argument("--report", type=Path, metavar="PNG", help="tabulate the logs and draw the curves to PNG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-steps", type=int, default=500_000)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "results" / "atari_sb3")
    parser.add_argument("--log-dir", type=Path, default=LOG_DIR, help="where the JSON lines go")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.report:
        report(args.log_dir, args.report)
        return
    if args.library is None:
        parser.error("give --library champion or sb3 (or --report PNG)")
    load = os.getloadavg()[0]
    if args.library == "champion":
        record = champion_run(args.seed, args.total_steps, args.results_dir)
    else:
        record = sb3_run(args.seed, args.total_steps, args.results_dir)
    record.update(library=args.library, seed=args.seed, load_before=round(load, 2),
                  load_after=round(os.getloadavg()[0], 2), date=time.strftime("%Y-%m-%d %H:%M"))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    with open(args.log_dir / f"{args.library}-seed{args.seed}.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")
    print(json.dumps({key: value for key, value in record.items() if key != "evaluations"}))
    print("evaluations:", record["evaluations"])


if __name__ == "__main__":
    main()
