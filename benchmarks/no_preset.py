"""Without a preset: champion's defaults (`champion train ENV --no-preset`) against Stable-Baselines3's defaults.

    python benchmarks/no_preset.py                                    # every env, seeds 0 1 2, both libraries
    python benchmarks/no_preset.py --envs CartPole-v1 --seeds 0 --libraries sb3
    python benchmarks/no_preset.py --scale 0.05 --runs-dir /tmp/no-preset-smoke --out /tmp/no-preset-smoke/report.md
    python benchmarks/no_preset.py --collect-only --out docs/benchmarks.md   # rebuild the section from the records

Each (env, seed, library) run is a fresh process, one at a time:

- champion: ``champion train ENV --no-preset --seed S --total-steps B --eval-every E --eval-episodes 10
  --no-media -q`` (PPO, the default algo); its best mean return is read from the run folder's summary.json and
  the per-evaluation means from its evaluations.csv. ScaledCartPole-v0 (benchmarks/scaled_env.py: CartPole
  with observations on very different scales) runs from benchmarks/ as ``scaled_env:ScaledCartPole-v0``.
- SB3: ``PPO("MlpPolicy", gym.make(ENV), seed=S, verbose=0)`` with nothing else changed (1 env, n_steps 2048,
  batch 64, 10 epochs, lr 3e-4, no normalisation), learning for B steps; when the step count has crossed a
  multiple of E (checked after each update, as champion does) and at the end, the deterministic policy plays
  10 episodes from reset(seed=1000000 + i), i = 0..9 (champion's evaluation seeds), summing the raw rewards.
  Its best mean return is the best of those evaluations.

A finished run writes one JSON record to --runs-dir (default docs/benchmark-runs/no-preset/); a later
invocation skips every (env, library, seed, budget) that has a record without an error, so the runs can be
done in pieces. Each invocation's command line, date and ``uptime`` before and after are appended to
``invocations.jsonl`` there. --out writes (or replaces) only this script's section of the Markdown file.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
CHAMPION = ROOT / ".venv" / "bin" / "champion"
PYTHON = ROOT / ".venv" / "bin" / "python"
SECTION = "## Without a preset: champion's defaults against Stable-Baselines3's defaults"
EVAL_SEED = 1_000_000
EVAL_EPISODES = 10
LIBRARIES = ("champion", "sb3")


@dataclass(frozen=True)
class EnvCase:
    env_id: str
    budget: int
    eval_every: int
    champion_id: str = ""
    """The id champion is given, when it is not env_id (a module:id for an env registered outside gymnasium)."""
    champion_cwd: Path = ROOT


ENVS = {case.env_id: case for case in (
    EnvCase("CartPole-v1", 100_000, 10_000),
    EnvCase("ScaledCartPole-v0", 100_000, 10_000, "scaled_env:ScaledCartPole-v0", BENCHMARKS),
    EnvCase("Acrobot-v1", 100_000, 10_000),
    EnvCase("MountainCar-v0", 100_000, 10_000),
    EnvCase("MountainCarContinuous-v0", 100_000, 10_000),
    EnvCase("Pendulum-v1", 200_000, 10_000),
    EnvCase("LunarLander-v3", 300_000, 20_000),
    EnvCase("LunarLanderContinuous-v3", 300_000, 20_000),
)}
"""Cheapest first; the report lists them in this order."""


def budgets(case: EnvCase, scale: float) -> tuple[int, int]:
    return max(int(case.budget * scale), 1), max(int(case.eval_every * scale), 1)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_path(runs_dir: Path, env_id: str, library: str, seed: int) -> Path:
    return runs_dir / f"{env_id}--{library}--seed{seed}.json"


def load_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- champion


def champion_command(case: EnvCase, seed: int, budget: int, eval_every: int, results_dir: Path,
                     run_name: str) -> list[str]:
    return [str(CHAMPION), "train", case.champion_id or case.env_id, "--no-preset", "--seed", str(seed),
            "--total-steps", str(budget), "--eval-every", str(eval_every), "--eval-episodes", str(EVAL_EPISODES),
            "--no-media", "-q", "--results-dir", str(results_dir), "--run-name", run_name]


def find_run_dir(results_dir: Path, run_name: str) -> Path:
    matches = [path.parent for path in results_dir.glob(f"*/*/{run_name}/config.yaml")]
    if len(matches) != 1:
        raise RuntimeError(f"expected one run folder named {run_name} under {results_dir}, found {matches}")
    return matches[0]


def run_champion(case: EnvCase, seed: int, budget: int, eval_every: int, results_dir: Path,
                 timeout: float) -> dict[str, Any]:
    run_name = f"no-preset-{case.env_id}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = champion_command(case, seed, budget, eval_every, results_dir.resolve(), run_name)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=case.champion_cwd, env=environment,
                          timeout=timeout)
    wall = time.perf_counter() - start
    shown = " ".join(["champion"] + command[1:])
    record: dict[str, Any] = {"command": shown, "cwd": os.path.relpath(case.champion_cwd, ROOT),
                              "wall_seconds": round(wall, 1)}
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        record["error"] = lines[-1] if lines else f"exit code {done.returncode}"
        record["stderr_tail"] = "\n".join(lines[-15:])
        return record
    run_dir = find_run_dir(results_dir, run_name)
    record["settings"] = champion_settings(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "evaluations.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    record.update({
        "run_dir": str(run_dir),
        "env_steps": int(summary["env_steps"]),
        "best_mean_return": float(summary["best_mean_return"]),
        "best_step": int(summary["best_step"]),
        "evaluations": [[int(row["step"]), float(row["mean_return"])] for row in rows],
    })
    return record


SETTINGS = ("num_envs", "ppo.num_steps", "ppo.minibatch_size", "ppo.epochs", "ppo.learning_rate", "ppo.gamma",
            "ppo.gae_lambda", "ppo.entropy_coef", "network.hidden_sizes", "network.normalize_observations",
            "network.observation_clip", "network.log_std_init", "reward_scaling")
"""The config fields of a champion run that its record keeps (from the run folder's config.yaml)."""


def champion_settings(run_dir: Path) -> dict[str, Any]:
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    settings = {}
    for key in SETTINGS:
        value: Any = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        settings[key] = value
    return settings


def code_state() -> str:
    """The commit, and which of champion's source folders had uncommitted changes (read-only git calls)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "agents", "envs", "runners"], capture_output=True,
                           text=True, cwd=ROOT)
    changed = sorted({line[3:].strip() for line in dirty.stdout.splitlines() if line.strip()})
    return head.stdout.strip() + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


# --------------------------------------------------------------------------------------------------- SB3


def run_sb3(case: EnvCase, seed: int, budget: int, eval_every: int, timeout: float) -> dict[str, Any]:
    command = [str(PYTHON), str(Path(__file__).resolve()), "--sb3-child", case.env_id, str(seed), str(budget),
               str(eval_every)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    wall = time.perf_counter() - start
    record: dict[str, Any] = {"command": " ".join(["python"] + [os.path.relpath(command[1], ROOT)] + command[2:]),
                              "cwd": ".", "wall_seconds": round(wall, 1)}
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        record["error"] = lines[-1] if lines else f"exit code {done.returncode}"
        record["stderr_tail"] = "\n".join(lines[-15:])
        return record
    record.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return record


def sb3_child(env_id: str, seed: int, budget: int, eval_every: int) -> None:
    """SB3's PPO with its defaults on gym.make(env_id); prints one JSON line with the evaluations."""
    sys.modules["tensorflow"] = None  # type: ignore[assignment]  # keep TF out of SB3's TensorBoard import
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    sys.path.insert(0, str(BENCHMARKS))
    importlib.import_module("scaled_env")  # registers ScaledCartPole-v0

    torch.set_num_threads(1)
    eval_envs = [gym.make(env_id) for _ in range(EVAL_EPISODES)]

    def evaluate(model: PPO) -> float:
        """Episode i on eval env i from reset(seed=EVAL_SEED + i), deterministic actions, raw rewards summed."""
        observations = [env.reset(seed=EVAL_SEED + index)[0] for index, env in enumerate(eval_envs)]
        returns = np.zeros(EVAL_EPISODES)
        done = np.zeros(EVAL_EPISODES, bool)
        while not done.all():
            actions, _ = model.predict(np.stack(observations), deterministic=True)
            for index, env in enumerate(eval_envs):
                if done[index]:
                    continue
                observation, reward, terminated, truncated, _ = env.step(actions[index])
                observations[index] = observation
                returns[index] += float(reward)
                done[index] = terminated or truncated
        return float(returns.mean())

    evaluations: list[list[float]] = []

    class Evaluate(BaseCallback):
        """Evaluates the updated policy when num_timesteps has crossed a multiple of eval_every, and at the end.

        Checked at the start of each rollout (after the previous rollout's update) and at the end of
        training, so every evaluated policy has been trained on all the steps counted, as champion's
        are (champion evaluates after the update in which the count crosses a multiple, and at the end).
        With 2048-step rollouts the evaluations fall on the same steps as champion's (10240, 20480, ...).
        """

        def __init__(self) -> None:
            super().__init__()
            self.next_at = eval_every

        def _evaluate_if_due(self, finished: bool) -> None:
            due = self.num_timesteps >= self.next_at
            if due or (finished and (not evaluations or evaluations[-1][0] != self.num_timesteps)):
                evaluations.append([int(self.num_timesteps), evaluate(self.model)])
                while self.next_at <= self.num_timesteps:
                    self.next_at += eval_every

        def _on_rollout_start(self) -> None:
            self._evaluate_if_due(finished=False)

        def _on_training_end(self) -> None:
            self._evaluate_if_due(finished=True)

        def _on_step(self) -> bool:
            return True

    model = PPO("MlpPolicy", gym.make(env_id), seed=seed, verbose=0)
    model.learn(total_timesteps=budget, callback=Evaluate())
    print(json.dumps({"env_steps": int(model.num_timesteps),
                      "best_mean_return": max(mean for _, mean in evaluations),
                      "best_step": max(evaluations, key=lambda item: item[1])[0],
                      "evaluations": evaluations, "torch_threads": torch.get_num_threads(),
                      "versions": {"stable_baselines3": __import__("stable_baselines3").__version__,
                                   "torch": torch.__version__, "gymnasium": gym.__version__}}))


# ------------------------------------------------------------------------------------------------ report


def steps_text(steps: int) -> str:
    return f"{steps // 1000}k" if steps >= 1000 and steps % 1000 == 0 else f"{steps:,}"


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}"


def collect(runs_dir: Path, envs: list[str], seeds: list[int], scale: float) -> tuple[list[str], list[str]]:
    """The section's table rows, and the notes on runs that failed or are missing."""
    header = ["| Env | Budget (eval every) | Library | Seed " + " | Seed ".join(str(seed) for seed in seeds)
              + " | Mean | champion ≥ SB3 |",
              "|---|---|---|" + "---:|" * len(seeds) + "---:|:---:|"]
    rows, notes = list(header), []
    verdicts: dict[str, tuple[float, float]] = {}
    for env_id in envs:
        case = ENVS[env_id]
        budget, eval_every = budgets(case, scale)
        means: dict[str, float | None] = {}
        cells: dict[str, list[str]] = {}
        for library in LIBRARIES:
            values = []
            cells[library] = []
            for seed in seeds:
                record = load_record(record_path(runs_dir, env_id, library, seed))
                if record is not None and record.get("budget") != budget:
                    record = None
                if record is None:
                    cells[library].append("not run")
                    notes.append(f"{env_id} {library} seed {seed}: not run")
                elif "error" in record:
                    cells[library].append("failed")
                    notes.append(f"{env_id} {library} seed {seed} failed: `{record['error']}`")
                else:
                    values.append(record["best_mean_return"])
                    cells[library].append(fmt(record["best_mean_return"]))
            complete = len(values) == len(seeds)
            means[library] = statistics.mean(values) if values else None
            mean_text = fmt(means[library]) + ("" if complete or not values else f" ({len(values)} seeds)")
            cells[library].append(mean_text)
        champion, sb3 = means["champion"], means["sb3"]
        verdict = "-" if champion is None or sb3 is None else ("yes" if champion >= sb3 else "**no**")
        if champion is not None and sb3 is not None:
            verdicts[env_id] = (champion, sb3)
        label = {"champion": "champion `--no-preset`", "sb3": "SB3 defaults"}
        for index, library in enumerate(LIBRARIES):
            first = index == 0
            budget_text = f"{steps_text(budget)} ({steps_text(eval_every)})" if first else ""
            rows.append(f"| {env_id if first else ''} | {budget_text}"
                        f" | {label[library]} | " + " | ".join(cells[library]) + f" | {verdict if first else ''} |")
    below = [f"{env_id} ({champion:.1f} against {sb3:.1f})" for env_id, (champion, sb3) in verdicts.items()
             if champion < sb3]
    summary = f"champion's mean best return is at least SB3's on {len(verdicts) - len(below)} of {len(verdicts)} envs"
    rows += ["", summary + (f"; below it on {', '.join(below)}." if below else ".")]
    return rows, notes


def describe_settings(records: list[dict[str, Any]]) -> str:
    """champion's settings as its records' config.yaml had them (the defaults of the code of the day)."""
    found = [record["settings"] for record in records if record.get("library") == "champion" and "settings" in record]
    if not found:
        return "its defaults"
    varying = sorted({key for settings in found for key in settings if settings[key] != found[0].get(key)})
    first = found[0]
    text = (f"with its defaults as the runs' config.yaml has them: {first['num_envs']} envs × {first['ppo.num_steps']}"
            f" steps per rollout, {first['ppo.epochs']} epochs of minibatches of {first['ppo.minibatch_size']},"
            f" learning rate {first['ppo.learning_rate']:g}, gamma {first['ppo.gamma']}, GAE {first['ppo.gae_lambda']},"
            f" entropy coefficient {first['ppo.entropy_coef']:g},"
            f" {'×'.join(str(size) for size in first['network.hidden_sizes'])} actor and critic, log std init"
            f" {first['network.log_std_init']:g}, observations "
            + (f"normalised (clipped at {first['network.observation_clip']:g})"
               if first["network.normalize_observations"] else "not normalised")
            + ", rewards " + ("scaled by their running return's std" if first["reward_scaling"] else "not scaled"))
    codes: dict[str, int] = {}
    for record in sorted(records, key=lambda record: record.get("started_at", "")):
        if record.get("library") == "champion" and "code" in record:
            codes[record["code"]] = codes.get(record["code"], 0) + 1
    if codes:
        text += ("; code (HEAD when each run started, and uncommitted changes to agents/, envs/, runners/): "
                 + ", ".join(f"{code} ({count} run{'s' if count > 1 else ''})" for code, count in codes.items()))
    if varying:
        text += f" (these varied between runs: {', '.join(varying)})"
    return text


def earlier_tables(runs_dir: Path, envs: list[str], seeds: list[int], scale: float) -> list[str]:
    """For each subfolder of runs_dir with a label.txt: champion's earlier runs against the same SB3 runs."""
    lines: list[str] = []
    for folder in sorted(path for path in runs_dir.iterdir() if (path / "label.txt").exists()):
        label = (folder / "label.txt").read_text().strip()
        lines += [f"Earlier runs, kept in `{folder.name}/`: {label}.", "",
                  "| Env | champion " + " | ".join(f"seed {seed}" for seed in seeds) + " | champion mean | SB3 mean"
                  " (above) | champion ≥ SB3 |", "|---|" + "---:|" * (len(seeds) + 2) + ":---:|"]
        for env_id in envs:
            budget = budgets(ENVS[env_id], scale)[0]
            cells, values, sb3 = [], [], []
            for seed in seeds:
                record = load_record(record_path(folder, env_id, "champion", seed))
                ok = record is not None and "error" not in record and record.get("budget") == budget
                cells.append(fmt(record["best_mean_return"]) if ok else "-")
                if ok:
                    values.append(record["best_mean_return"])
                other = load_record(record_path(runs_dir, env_id, "sb3", seed))
                if other is not None and "error" not in other and other.get("budget") == budget:
                    sb3.append(other["best_mean_return"])
            if not values:
                continue
            champion_mean = statistics.mean(values)
            sb3_mean = statistics.mean(sb3) if sb3 else None
            verdict = "-" if sb3_mean is None else ("yes" if champion_mean >= sb3_mean else "**no**")
            lines.append(f"| {env_id} | " + " | ".join(cells)
                         + f" | {fmt(champion_mean)} | {fmt(sb3_mean)} | {verdict} |")
        lines.append("")
    return lines


def section_text(runs_dir: Path, envs: list[str], seeds: list[int], scale: float) -> str:
    rows, notes = collect(runs_dir, envs, seeds, scale)
    records = [record for env_id in envs for library in LIBRARIES for seed in seeds
               if (record := load_record(record_path(runs_dir, env_id, library, seed))) is not None]
    invocations = []
    log = runs_dir / "invocations.jsonl"
    if log.exists():
        invocations = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    versions = next((record["versions"] for record in records if "versions" in record), {})
    dates = sorted(record["finished_at"][:10] for record in records if "finished_at" in record)
    try:
        shown_runs_dir = runs_dir.resolve().relative_to(ROOT)
    except ValueError:
        shown_runs_dir = runs_dir
    lines = [
        SECTION,
        "",
        "Can an env without a preset be trained with `champion train ENV --no-preset` and learn at least as well",
        "as Stable-Baselines3's PPO with its own defaults, at the same step budget? Best evaluation return per run",
        "(mean over 10 deterministic episodes, the best of the run's evaluations), 3 seeds each.",
        "",
        "- **champion**: `champion train ENV --no-preset --seed S --total-steps B --eval-every E --eval-episodes 10",
        f"  --no-media -q` (PPO, the default algo), {describe_settings(records)}.",
        f"- **SB3** {versions.get('stable_baselines3', '')}: `PPO(\"MlpPolicy\", gym.make(ENV), seed=S, verbose=0)`"
        " with nothing changed",
        "  (1 env × 2048 steps per rollout, 10 epochs of minibatches of 64, learning rate 3e-4, gamma 0.99, GAE",
        "  0.95, clip 0.2, 64×64 tanh, no normalisation of observations or rewards), `learn(B)`. After each update",
        "  in which the step count crosses a multiple of E, and at the end (as champion evaluates), a callback",
        "  plays the deterministic policy for 10 episodes, episode i from `reset(seed=1000000 + i)` (champion's",
        "  evaluation seeds), and sums the raw rewards. Both collect 2048 steps per update, so both evaluate at",
        "  the same steps (10240, 20480, ...) and both overshoot B to the next multiple of 2048.",
        "- **ScaledCartPole-v0** (`benchmarks/scaled_env.py`): CartPole-v1's dynamics, rewards, termination",
        "  and 500-step limit, with observations multiplied by [1000, 0.001, 1000, 0.001] (cart position and",
        "  pole angle in the thousands, the two velocities in the thousandths). champion runs it from",
        "  `benchmarks/` as `scaled_env:ScaledCartPole-v0`.",
        "",
        "The last column compares the means of the seeds (\"yes\": champion's mean best return ≥ SB3's).",
        "",
    ]
    if scale != 1.0:
        lines += [f"**Smoke test: every budget × {scale}.**", ""]
    lines += rows
    lines.append("")
    notes_file = runs_dir / "notes.md"
    if notes_file.exists():
        lines += [notes_file.read_text().strip(), ""]
    lines += earlier_tables(runs_dir, envs, seeds, scale)
    if notes:
        lines += ["Not in the table (failed or not run):", ""] + [f"- {note}" for note in notes] + [""]
    walls = [record["wall_seconds"] for record in records if "wall_seconds" in record]
    lines += [
        f"Runs: {len(records)} records in `{shown_runs_dir}/` (one JSON per run: per-evaluation means, best,",
        "wall seconds, exact command), run one at a time on a 2-core machine shared with other work"
        + (f" on {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "") if dates else "")
        + f"; {sum(walls) / 60:.0f} minutes of runs in all."
        + (f" Library versions: SB3 {versions.get('stable_baselines3')}, torch {versions.get('torch')}"
           f" (1 thread), gymnasium {versions.get('gymnasium')}." if versions else ""),
        "",
    ]
    if invocations:
        lines += ["Invocations (each with `uptime` before and after):", ""]
        for item in invocations:
            lines.append(f"- `{item['command']}` ({item['started_at']} to {item.get('finished_at', '?')})")
            lines.append(f"  - before: `{item['uptime_before']}`")
            lines.append(f"  - after: `{item.get('uptime_after', '?')}`")
        lines.append("")
    lines += [
        "Rebuild this section from the records with",
        "`python benchmarks/no_preset.py --collect-only --out docs/benchmarks.md`.",
        "",
    ]
    return "\n".join(lines)


def write_section(out: Path, text: str) -> None:
    """Replace this script's section of ``out`` (from its heading to the next ``## `` heading), or append it."""
    existing = out.read_text() if out.exists() else ""
    lines = existing.splitlines(keepends=True)
    start = next((index for index, line in enumerate(lines) if line.rstrip("\n") == SECTION), None)
    if start is None:
        separator = "" if not existing or existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
        out.write_text(existing + separator + text)
        return
    end = next((index for index in range(start + 1, len(lines)) if lines[index].startswith("## ")), len(lines))
    tail = "".join(lines[end:])
    out.write_text("".join(lines[:start]) + text + ("\n" + tail if tail else ""))


# -------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", choices=list(ENVS), default=list(ENVS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget (e.g. 0.05: a smoke test)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "docs" / "benchmark-runs" / "no-preset",
                        help="where the per-run JSON records go")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "results" / "no-preset",
                        help="champion's run folders (weights, checkpoints)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run is stopped")
    parser.add_argument("--collect-only", action="store_true", help="only tabulate the records")
    parser.add_argument("--out", type=Path, help="write/replace this script's section of this Markdown file")
    parser.add_argument("--sb3-child", nargs=4, metavar=("ENV", "SEED", "BUDGET", "EVAL_EVERY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sb3_child:
        env_id, seed, budget, eval_every = args.sb3_child
        sb3_child(env_id, int(seed), int(budget), int(eval_every))
        return

    runs_dir: Path = args.runs_dir
    if not args.collect_only:
        runs_dir.mkdir(parents=True, exist_ok=True)
        invocation = {"command": "python benchmarks/no_preset.py " + " ".join(sys.argv[1:]),
                      "started_at": now(), "uptime_before": uptime()}
        print(f"start {invocation['started_at']}  {invocation['uptime_before']}", flush=True)
        for env_id in args.envs:
            case = ENVS[env_id]
            budget, eval_every = budgets(case, args.scale)
            for seed in args.seeds:
                for library in args.libraries:
                    path = record_path(runs_dir, env_id, library, seed)
                    previous = load_record(path)
                    if previous and "error" not in previous and previous.get("budget") == budget:
                        print(f"skip {env_id} {library} seed {seed}: done ({previous['best_mean_return']:.1f})",
                              flush=True)
                        continue
                    record = {"env": env_id, "library": library, "seed": seed, "budget": budget,
                              "eval_every": eval_every, "eval_episodes": EVAL_EPISODES, "code": code_state(),
                              "started_at": now(),
                              "uptime_before": uptime()}
                    try:
                        if library == "champion":
                            record.update(run_champion(case, seed, budget, eval_every, args.results_dir,
                                                       args.timeout))
                        else:
                            record.update(run_sb3(case, seed, budget, eval_every, args.timeout))
                    except subprocess.TimeoutExpired:
                        record["error"] = f"stopped after the {args.timeout:.0f} s timeout"
                    record["finished_at"], record["uptime_after"] = now(), uptime()
                    path.write_text(json.dumps(record, indent=1) + "\n")
                    outcome = record.get("error") or f"best {record['best_mean_return']:.1f}"
                    print(f"{env_id} {library} seed {seed}: {outcome} ({record.get('wall_seconds', '?')} s)",
                          flush=True)
        invocation["finished_at"], invocation["uptime_after"] = now(), uptime()
        with open(runs_dir / "invocations.jsonl", "a") as handle:
            handle.write(json.dumps(invocation) + "\n")
        print(f"end {invocation['finished_at']}  {invocation['uptime_after']}", flush=True)
    text = section_text(runs_dir, list(ENVS), args.seeds, args.scale)
    if args.out:
        write_section(args.out, text)
        print(f"wrote the section to {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
