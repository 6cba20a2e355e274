"""Crown benchmark: the racing crown (issue 31) beside the fixed 100 episodes per candidate on the same runs, on
LunarLander-v3 with the PPO and A2C presets, 3 seeds each.

    python benchmarks/crown.py --algos a2c ppo --seeds 0 1 2     # train, crown twice, fresh check (resumable)
    python benchmarks/crown.py --collect-only                      # the table from the kept records

Per (algo, seed), each step kept as soon as it is done, so a stopped invocation resumes where it was:

1. train with the preset; the run crowns itself at its end with the racing crown (rounds of 10, 20, 40, 80, 100
   held-out episodes, a candidate stopped once clearly worse than the leader, a time limit of crown.time_share of
   the training time, at least crown.min_seconds): that record is champion-race.json;
2. on a copy of the run folder, the fixed crown (crown.race false, crown.seconds 1e5: every candidate plays
   crown.episodes, 100): champion-fixed.json;
3. a fresh check the selection never saw: the training-time best, the race's pick and the fixed crown's pick (each
   distinct entry once) on 200 more episodes, seeds disjoint from the evaluation and held-out ones: fresh.json.

The records (config.yaml, evaluations.csv, summary.json, champion-race.json, champion-fixed.json, fresh.json) go to
docs/benchmark-runs/crown-race-issue31/<algo>-seed<N>/, written together once all three steps are done; a pair whose
fresh.json exists there is skipped. Runs and the copies stay under --results-dir (a temp folder), where a marker per
pair remembers the trained run, so a later invocation crowns it instead of training again. The table goes to --out.
The earlier fixed-crown benchmark (issue 21) is in docs/benchmark-runs/crown/.
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
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRESH_EPISODES = 200
FRESH_SEED = 30_000_000
"""The fresh check's seeds: FRESH_SEED + i, far from the evaluation (1,000,000 + i) and held-out (11,000,000 + i)."""
RECORDS = ROOT / "docs" / "benchmark-runs" / "crown-race-issue31"
FIXED_OVERRIDES = {"crown.race": False, "crown.seconds": 1e5}
"""The fixed crown: every candidate plays crown.episodes (100), with no time limit to speak of."""
KEPT = ("config.yaml", "evaluations.csv", "summary.json", "champion-race.json", "champion-fixed.json", "fresh.json")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def crowned_by(run_dir: Path, racing: bool) -> bool:
    """Whether the run folder's champion.json is a whole record from the race (or the fixed crown)."""
    record = read_json(run_dir / "best" / "champion.json")
    return bool(record and "race" in record and record["race"].get("racing") is racing)


def train_pair(env_id: str, algo: str, seed: int, results_dir: Path) -> Path:
    """Train one seed with the preset (the racing crown runs at its end); returns the run folder. A run this pair
    trained before (its marker in results_dir/pieces/) and the race crowned is used again."""
    marker = results_dir / "pieces" / f"{algo}-seed{seed}.json"
    known = read_json(marker)
    if known and crowned_by(Path(known["run_dir"]), racing=True) and (Path(known["run_dir"]) / "summary.json").exists():
        print(f"{algo} seed {seed}: trained before, {known['run_dir']}", flush=True)
        return Path(known["run_dir"])
    from champion.runners.configure import resolve_config
    from champion.runners.training import train

    config, _ = resolve_config(env_id, algo, {"seed": seed, "results_dir": str(results_dir), "media": False,
                                              "run_name": f"crown-race-{algo}-seed{seed}-{int(time.time())}"})
    started, load_before = now(), load()
    run_dir = Path(train(config, progress=False).run_dir)
    if not crowned_by(run_dir, racing=True):
        raise RuntimeError(f"{run_dir}: the run did not crown itself with the race (no race record in "
                           "best/champion.json); see the warnings above")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_dir": str(run_dir), "started": started, "finished": now(),
                                  "load_before": load_before, "load_after": load()}, indent=2) + "\n")
    return run_dir


def fixed_crown(run_dir: Path, algo: str, seed: int, results_dir: Path) -> tuple[Path, dict]:
    """The fixed crown (every candidate 100 episodes) on a copy of the run folder; the copy and when it ran. A copy
    the fixed crown finished before is used again; one it did not is made anew."""
    copy = results_dir / "fixed-copies" / f"{algo}-seed{seed}-{run_dir.name}"
    when = copy / "fixed-crown-piece.json"
    if crowned_by(copy, racing=False) and read_json(when):
        return copy, read_json(when)
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(run_dir, copy, symlinks=True)
    from champion.runners.crown import crown_saved_run

    started, load_before = now(), load()
    crown_saved_run(copy, dict(FIXED_OVERRIDES))
    piece = {"copy": str(copy), "started": started, "finished": now(), "load_before": load_before,
             "load_after": load()}
    when.write_text(json.dumps(piece, indent=2) + "\n")
    return copy, piece


def fresh_check(run_dir: Path, picks: dict[str, str]) -> dict:
    """Each distinct entry of ``picks`` (training_best, race, fixed -> entry name) on FRESH_EPISODES episodes that
    neither the evaluations nor the crowns played."""
    from champion.envs.factory import EnvOptions
    from champion.runners.evaluate import episode_seeds, play_episodes
    from champion.runners.race import mean_interval
    from champion.runners.replay import load_policy

    seeds = episode_seeds(FRESH_SEED, FRESH_EPISODES)
    entries = {}
    for entry in dict.fromkeys(picks.values()):
        policy, manifest = load_policy(run_dir, entry)
        result = play_episodes(manifest["env_id"], EnvOptions.from_dict(manifest.get("env_options")), policy.spec,
                               policy.weights, seeds)
        entries[entry] = {"mean": result.mean_return, "interval": list(mean_interval(result.returns, 0.05)),
                          "interval_method": "Student t, 95%, this entry alone", "returns": list(result.returns)}
    return {"seeds": [seeds[0], seeds[-1]], "picks": picks, "entries": entries}


def run_pair(env_id: str, algo: str, seed: int, results_dir: str) -> str:
    """Train (or find the trained run), crown the copy with the fixed crown, play the fresh check, keep the records;
    returns the record folder."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    results = Path(results_dir)
    run_dir = train_pair(env_id, algo, seed, results)
    trained = read_json(results / "pieces" / f"{algo}-seed{seed}.json") or {}
    copy, fixed_piece = fixed_crown(run_dir, algo, seed, results)
    race, fixed = read_json(run_dir / "best" / "champion.json"), read_json(copy / "best" / "champion.json")
    picks = {"training_best": race["training_best"], "race": race["entry"], "fixed": fixed["entry"]}
    fresh_started, fresh_load = now(), load()
    fresh = fresh_check(run_dir, picks)
    fresh["pieces"] = {"training_and_race": trained, "fixed_crown": fixed_piece,
                       "fresh": {"started": fresh_started, "finished": now(), "load_before": fresh_load,
                                 "load_after": load()},
                       "run_dir": str(run_dir)}
    return str(keep_records(run_dir, copy, fresh, algo, seed))


def keep_records(run_dir: Path, copy: Path, fresh: dict, algo: str, seed: int) -> Path:
    """Write the pair's records into a temporary folder, then move it to RECORDS/<algo>-seed<N>/ in one rename."""
    folder = RECORDS / f"{algo}-seed{seed}"
    partial = RECORDS / f".partial-{algo}-seed{seed}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    for name in ("config.yaml", "evaluations.csv", "summary.json"):
        shutil.copy(run_dir / name, partial / name)
    shutil.copy(run_dir / "best" / "champion.json", partial / "champion-race.json")
    shutil.copy(copy / "best" / "champion.json", partial / "champion-fixed.json")
    (partial / "fresh.json").write_text(json.dumps(fresh, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder


def done(algo: str, seed: int) -> bool:
    folder = RECORDS / f"{algo}-seed{seed}"
    return all((folder / name).exists() for name in KEPT)


def rounds(record: dict) -> str:
    """Rounds the race played (the champion plays every one) and why it ended."""
    played = len(record["returns"])
    count = sum(1 for look in record["race"]["looks"] if look <= played)
    ended = record["race"]["ended"]
    ended = {"one candidate left": "1 left", "all rounds played": "all rounds"}.get(ended, ended)
    return f"{count} ({played} ep.), {ended}"


def stops(record: dict) -> str:
    """The candidates that stopped early in a race, and after how many episodes."""
    names = [f"{c['entry']} after {c['episodes']}" for c in record["candidates"] if c["stopped"]]
    return ", ".join(names) or "none"


def row(folder: Path) -> tuple[str, str, dict]:
    """One table row from a record folder, a line on the race's candidates, and the numbers the summary needs."""
    race = json.loads((folder / "champion-race.json").read_text())
    fixed = json.loads((folder / "champion-fixed.json").read_text())
    fresh = json.loads((folder / "fresh.json").read_text())
    judged = {candidate["entry"]: candidate for candidate in race["candidates"]}
    naive = judged[race["training_best"]]
    fresh_of = {name: fresh["entries"][entry]["mean"] for name, entry in fresh["picks"].items()}
    agree = race["entry"] == fixed["entry"]
    nothing = (float("nan"), float("nan"))  # no interval: every episode returned the same
    (rlow, rhigh), (flow, fhigh) = race["interval"] or nothing, fixed["interval"] or nothing
    rcost, fcost = race["cost"], fixed["cost"]
    limit = rcost["time_limit_seconds"]
    text = (f"| {folder.name} | {naive['entry']} ({naive['training_mean_return']:.1f}) | {race['entry']} | "
            f"{race['held_out_mean']:.1f} [{rlow:.1f}, {rhigh:.1f}] | {rcost['episodes']} | {rounds(race)} | "
            f"{rcost['seconds']:.0f} s / {limit:.0f} s | {fixed['entry']} | {fixed['held_out_mean']:.1f} "
            f"[{flow:.1f}, {fhigh:.1f}] | {fcost['episodes']} | {fcost['seconds']:.0f} s | "
            f"{'yes' if agree else '**no**'} | {fresh_of['training_best']:.1f} | {fresh_of['race']:.1f} | "
            f"{'same' if agree else format(fresh_of['fixed'], '.1f')} |")
    fixed_means = {c["entry"]: c["held_out_mean"] for c in fixed["candidates"]}
    details = "; ".join(
        f"{c['entry']}{' (final)' if c['final_policy'] else ''}: {c['episodes']} ep., {c['held_out_mean']:.1f}"
        f"{' (' + c['stopped'] + ')' if c['stopped'] else ''}, fixed {fixed_means.get(c['entry'], float('nan')):.1f}"
        for c in race["candidates"])
    same_prefix = all(c["returns"] == next(f for f in fixed["candidates"] if f["entry"] == c["entry"])["returns"]
                      [:c["episodes"]] for c in race["candidates"] if c["entry"] in fixed_means)
    numbers = {"race_episodes": rcost["episodes"], "fixed_episodes": fcost["episodes"],
               "race_seconds": rcost["seconds"], "fixed_seconds": fcost["seconds"], "limit": limit,
               "agree": agree, "time_limit_hit": race["race"]["ended"].startswith("time limit"),
               "same_prefix": same_prefix, "race_fresh": fresh_of["race"], "fixed_fresh": fresh_of["fixed"],
               "naive_fresh": fresh_of["training_best"],
               "training_seconds": race["race"].get("training_seconds")}
    return text, f"- {folder.name}: {details}", numbers


def table(folders: list[Path]) -> str:
    rows = [row(folder) for folder in folders]
    header = ["| run | training-time best (eval mean, 10 ep.) | race: crowned | held-out mean [95% interval] | "
              "episodes | rounds, ended | took / limit | fixed 100: crowned | held-out mean [95% interval] | "
              "episodes | took | same pick | fresh 200 ep.: training-time best | fresh: race pick | "
              "fresh: fixed pick |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines = header + [text for text, _, _ in rows] + ["", "Candidates in the race (episodes played, held-out mean, why "
                                                         "stopped; the fixed crown's 100-episode mean):", ""]
    lines += [details for _, details, _ in rows] + [""]
    numbers = [values for _, _, values in rows]
    if numbers:
        total = lambda key: sum(values[key] for values in numbers)  # noqa: E731
        lines.append(f"- Over {len(numbers)} runs: the race played {total('race_episodes')} episodes in "
                     f"{total('race_seconds'):.0f} s, the fixed crown {total('fixed_episodes')} in "
                     f"{total('fixed_seconds'):.0f} s; same pick in {sum(v['agree'] for v in numbers)} of "
                     f"{len(numbers)}; time limit hit in {sum(v['time_limit_hit'] for v in numbers)}; the race's "
                     f"returns are the first of the fixed crown's for every candidate in "
                     f"{sum(v['same_prefix'] for v in numbers)} of {len(numbers)}.")
        for algo in sorted({folder.name.split("-")[0] for folder in folders}):
            mine = [v for v, folder in zip(numbers, folders) if folder.name.startswith(algo)]
            mean = lambda key: statistics.mean(v[key] for v in mine)  # noqa: E731
            lines.append(f"- {algo.upper()}, mean over {len(mine)} runs: race {mean('race_episodes'):.0f} episodes, "
                         f"{mean('race_seconds'):.1f} s (limit {mean('limit'):.0f} s); fixed "
                         f"{mean('fixed_episodes'):.0f} episodes, {mean('fixed_seconds'):.1f} s. Fresh: training-time "
                         f"best {mean('naive_fresh'):.1f}, race pick {mean('race_fresh'):.1f}, fixed pick "
                         f"{mean('fixed_fresh'):.1f}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LunarLander-v3")
    parser.add_argument("--algos", nargs="+", default=["ppo", "a2c"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=1, help="pairs at a time (each in a spawned process)")
    parser.add_argument("--results-dir", default="/tmp/crown-bench", help="runs and copies (not kept)")
    parser.add_argument("--out", type=Path, default=RECORDS / "table.md")
    parser.add_argument("--collect-only", action="store_true")
    args = parser.parse_args()
    if not args.collect_only:
        jobs = [(args.env, algo, seed, args.results_dir) for algo in args.algos for seed in args.seeds
                if not done(algo, seed)]
        for algo in args.algos:
            for seed in args.seeds:
                if done(algo, seed):
                    print(f"{algo} seed {seed}: records kept before, skipped", flush=True)
        if jobs:
            with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for (_, algo, seed, _), folder in zip(jobs, pool.map(run_pair, *zip(*jobs))):
                    print(f"{algo} seed {seed}: {folder} ({now()}, load {load()})", flush=True)
    RECORDS.mkdir(parents=True, exist_ok=True)
    folders = sorted(path for path in RECORDS.iterdir() if path.is_dir() and not path.name.startswith(".")
                     and all((path / name).exists() for name in KEPT))
    args.out.write_text(table(folders))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
