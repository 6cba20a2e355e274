"""The end of a study: the top trials' champions re-evaluated on fresh held-out seeds that no trial saw, the table
(trial, settings, training-time best, trial crown, study re-evaluation with its interval), the winner as a config file
``champion train --config`` takes, and the path of its best policy. Also what ``champion runs`` shows of a study
(read from the study folder's files alone: no Optuna, no TensorFlow).

Why re-evaluate: a trial's crown is the best of its run's candidates on the run's held-out seeds, and the study's best
trial is the maximum of those over trials, so its number is biased upward a second time. Fresh seeds, played by the
top trials' champions alone, give an estimate no choice was made on.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from champion.agents.config import ConfigError, TrainConfig
from champion.runners.tune.settings import (REPORT_FILE, REPORT_TABLE, SETTINGS_FILE, STUDY_FILE, WINNER_FILE,
                                            StudySettings)

CONFIDENCE = 0.95


@dataclass
class TrialRow:
    """One finished trial as the study's table shows it."""

    number: int
    state: str
    """COMPLETE or PRUNED."""
    settings: dict[str, Any]
    run_dir: str | None
    best_mean_return: float | None
    best_step: int | None
    crown_mean: float | None
    crown_interval: list[float] | None
    crown_episodes: int
    pruned_at: int | None = None
    study_mean: float | None = None
    """The trial's champion on the study's fresh seeds (the top trials only)."""
    study_interval: list[float] | None = None


@dataclass
class StudyResult:
    """What ``champion.tune`` ended with; everything is also in the study folder (report.json, report.md)."""

    study_dir: Path
    trials: list[TrialRow]
    """Every COMPLETE or PRUNED trial, best crown first (pruned ones after)."""
    winner: int | None
    """The trial whose champion did best on the study's fresh seeds (None when no trial completed)."""
    winner_config: Path | None
    """``winner.yaml``: the winner's settings, for ``champion train --config``."""
    winner_policy: Path | None
    """The winner's crowned entry (``champion.load`` takes it)."""
    final_seeds: tuple[int, int] = (0, 0)
    """The study's re-evaluation seeds: from the first to the last (inclusive)."""
    counts: dict[str, int] = field(default_factory=dict)

    def row(self, number: int) -> TrialRow:
        return next(row for row in self.trials if row.number == number)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(study_dir=str(self.study_dir), winner_config=_text(self.winner_config),
                    winner_policy=_text(self.winner_policy))
        return data


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def final_seeds(settings: StudySettings) -> list[int]:
    """The study's re-evaluation seeds."""
    return list(range(settings.final_seed, settings.final_seed + settings.final_episodes))


def trial_seeds(config: TrainConfig) -> dict[str, range]:
    """The seeds a trial's run gives: its training envs' seeded resets (env i of a session that starts at step s is
    reset with the run seed + s + i, so all of them lie from the run seed to the seed plus its steps plus its envs),
    its evaluation seeds and its crown's held-out seeds. A training env's later episodes take seeds hashed from its
    seeded one (``champion.envs.env_state.episode_seed``, any of 2**32): no range holds them, and they are not here."""
    held_out = config.crown.held_out_seed(config.eval_seed)
    return {"training": range(config.seed, config.seed + config.rounded_total_steps + config.num_envs + 1),
            "evaluation": range(config.eval_seed, config.eval_seed + config.eval_episodes),
            "crown": range(held_out, held_out + config.crown.episodes)}


def check_disjoint(settings: StudySettings, run_dirs: Sequence[Path]) -> None:
    """ConfigError when a seed of the study's re-evaluation is one a trial trained, evaluated or crowned on."""
    from champion.runners.configure import load_run_config

    for run_dir in run_dirs:
        check_config_disjoint(settings, load_run_config(run_dir), str(run_dir))


def check_config_disjoint(settings: StudySettings, config: TrainConfig, where: str) -> None:
    """ConfigError when a seed of the study's re-evaluation is among ``trial_seeds(config)``; ``where`` names the
    run (or "every trial", for the study's base config before any trial trains)."""
    first, last = settings.final_seed, settings.final_seed + settings.final_episodes - 1
    for kind, seeds in trial_seeds(config).items():
        if seeds.start <= last and first < seeds.stop:
            raise ConfigError(f"the study's re-evaluation seeds {first:,}-{last:,} overlap the {kind} seeds of "
                              f"{where} ({seeds.start:,}-{seeds.stop - 1:,}); start a study with another "
                              "--final-seed")


def collect_rows(study: Any) -> list[TrialRow]:
    """The COMPLETE and PRUNED trials, best crowned mean first (pruned ones after, by their last report)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name not in ("COMPLETE", "PRUNED"):
            continue
        attrs = trial.user_attrs
        rows.append(TrialRow(number=trial.number, state=trial.state.name, settings=attrs.get("settings") or {},
                             run_dir=attrs.get("run_dir"), best_mean_return=attrs.get("best_mean_return"),
                             best_step=attrs.get("best_step"), crown_mean=attrs.get("crown_mean"),
                             crown_interval=attrs.get("crown_interval"),
                             crown_episodes=attrs.get("crown_episodes") or 0,
                             pruned_at=attrs.get("pruned_at")))

    def rank(row: TrialRow) -> tuple[int, float]:
        value = row.crown_mean if row.crown_mean is not None else -math.inf
        return (row.state == "COMPLETE", value)

    return sorted(rows, key=rank, reverse=True)


def reevaluate(settings: StudySettings, rows: list[TrialRow], say: Any) -> None:
    """Play the top COMPLETE trials' champions on the study's fresh seeds (sets ``study_mean`` and its interval)."""
    from champion.runners.race import mean_interval

    top = [row for row in rows if row.state == "COMPLETE" and row.run_dir][:settings.top]
    reachable = [row for row in top if (settings.folder / row.run_dir).is_dir()]
    for row in top:
        if row not in reachable:
            say(f"note: trial {row.number}'s run folder {settings.folder / row.run_dir} is not on this machine; it is "
                "left out of the study's re-evaluation")
    check_disjoint(settings, [settings.folder / row.run_dir for row in rows if row.run_dir
                              and (settings.folder / row.run_dir).is_dir()])
    seeds = final_seeds(settings)
    for row in reachable:
        say(f"re-evaluating trial {row.number}'s champion on {len(seeds)} fresh held-out episodes "
            f"(seeds {seeds[0]:,}-{seeds[-1]:,})")
        result = play_champion(settings.folder / row.run_dir, seeds)
        low, high = mean_interval(result.returns, 1.0 - CONFIDENCE)
        row.study_mean, row.study_interval = float(result.mean_return), [float(low), float(high)]


def play_champion(run_dir: Path, seeds: list[int]) -> Any:
    """The run's crowned champion (verified by its sha256), one deterministic episode per seed, acting in numpy as
    ``champion.evaluate`` does (``EvalResult``)."""
    from champion.agents.spec import NetworkSpec
    from champion.envs.factory import EnvOptions, import_recorded_env_module
    from champion.runners.evaluate import play_episodes
    from champion.runners.store.best_store import load_champion

    found = load_champion(run_dir / "best")
    if found is None:
        raise ConfigError(f"{run_dir} has no crowned champion to re-evaluate (champion crown {run_dir} crowns it)")
    stored, _ = found
    manifest = stored.manifest
    import_recorded_env_module(str(manifest["env_id"]), str(stored.entry / "manifest.json"))
    return play_episodes(manifest["env_id"], EnvOptions.from_dict(manifest.get("env_options")),
                         NetworkSpec.from_dict(manifest["network"]), stored.weights, seeds)


def winner_yaml(settings: StudySettings, row: TrialRow) -> str:
    """The winner's config as ``champion train --config`` takes it: the trial's config.yaml (every key, so no preset
    or default changes it) without its run name and folder, under a header saying where it came from."""
    from champion.runners.configure import load_run_config

    config = load_run_config(settings.folder / row.run_dir).to_dict()
    for key in ("run_name", "results_dir"):
        config.pop(key, None)
    if config.get("schedule_steps") == config.get("total_steps"):
        config.pop("schedule_steps")
    other = "a2c" if settings.algo == "ppo" else "ppo"
    config.pop(other, None)
    tuned = ", ".join(f"{key}={value}" for key, value in row.settings.items())
    head = (f"# champion tune: the winner of study {settings.study_name} ({settings.folder}), trial {row.number}.\n"
            f"# Trained {settings.trial_steps:,} steps with seed {settings.seed}: crowned held-out mean "
            f"{row.crown_mean:.2f}, on the study's fresh seeds {row.study_mean:.2f} "
            f"({CONFIDENCE:.0%} interval {row.study_interval[0]:.2f} to {row.study_interval[1]:.2f}).\n"
            f"# Tuned: {tuned}\n"
            f"# Train it again with: champion train --config {WINNER_FILE} --seed 1\n")
    return head + yaml.safe_dump(config, sort_keys=False, width=120)


def write_report(settings: StudySettings, study: Any, say: Any) -> StudyResult:
    """Re-evaluate, pick the winner, and write report.json, report.md and winner.yaml (each atomically)."""
    from champion.runners.store.atomic_files import atomic_write_text
    from champion.runners.tune.study import state_counts

    rows = collect_rows(study)
    reevaluate(settings, rows, say)
    judged = [row for row in rows if row.study_mean is not None]
    winner = max(judged, key=lambda row: row.study_mean) if judged else None
    seeds = final_seeds(settings)
    result = StudyResult(settings.folder, rows, winner.number if winner else None, None, None,
                         (seeds[0], seeds[-1]), state_counts(study))
    if winner is not None:
        result.winner_config = settings.folder / WINNER_FILE
        atomic_write_text(result.winner_config, winner_yaml(settings, winner))
        from champion.runners.store.best_store import read_champion

        crown = read_champion(settings.folder / winner.run_dir / "best") or {}
        result.winner_policy = settings.folder / winner.run_dir / "best" / crown.get("entry", "")
    atomic_write_text(settings.folder / REPORT_FILE, json.dumps(result.to_dict(), indent=1))
    atomic_write_text(settings.folder / REPORT_TABLE, markdown_table(result))
    return result


def read_report(folder: Path) -> StudyResult | None:
    """A study's report.json as a StudyResult (None when there is none or it cannot be read)."""
    from champion.runners.store.folder_trust import read_json

    try:
        data = read_json(folder / REPORT_FILE)
        rows = [TrialRow(**row) for row in data["trials"]]
        return StudyResult(folder, rows, data["winner"], _path(data["winner_config"]), _path(data["winner_policy"]),
                           tuple(data["final_seeds"]), data.get("counts") or {})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


def _cells(row: TrialRow, winner: int | None) -> list[str]:
    from champion.runners.tune.study import settings_text

    best = "-" if row.best_mean_return is None else f"{row.best_mean_return:.2f} at {row.best_step or 0:,}"
    crown = "-" if row.crown_mean is None else f"{row.crown_mean:.2f}"
    if row.crown_interval:
        crown += f" [{row.crown_interval[0]:.2f}, {row.crown_interval[1]:.2f}]"
    if row.crown_mean is not None:
        crown += f" ({row.crown_episodes} ep.)"
    study = "-" if row.study_mean is None else (f"{row.study_mean:.2f} [{row.study_interval[0]:.2f}, "
                                                f"{row.study_interval[1]:.2f}]")
    state = row.state.lower() + (f" at {row.pruned_at:,}" if row.pruned_at else "")
    name = f"{row.number}{' (winner)' if row.number == winner else ''}"
    return [name, state, settings_text(row.settings), best, crown, study]


HEADERS = ["trial", "state", "settings", "training-time best (at step)", "trial crown (held-out)",
           "study re-evaluation (95% interval)"]


def markdown_table(result: StudyResult) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(row, result.winner)) + " |" for row in result.trials]
    return "\n".join(lines + [""] + summary_lines(result)) + "\n"


def print_table(result: StudyResult) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(*HEADERS, title=f"study {result.study_dir}")
    for row in result.trials:
        table.add_row(*map(escape, _cells(row, result.winner)))
    console = Console(width=220)
    console.print(table)
    for line in summary_lines(result):
        console.print(escape(line))


def summary_lines(result: StudyResult) -> list[str]:
    """The selection bias, the winner's files, the seeds."""
    counts = ", ".join(f"{count} {state.lower()}" for state, count in sorted(result.counts.items()))
    lines = [f"trials: {counts}; study re-evaluation on seeds {result.final_seeds[0]:,}-{result.final_seeds[1]:,}, "
             "which no trial trained, evaluated or crowned on"]
    if result.winner is None:
        return lines + ["no trial completed, so there is no winner"]
    row = result.row(result.winner)
    lines.append(f"selection bias of the winner (trial {row.number}): training-time best {row.best_mean_return:.2f} "
                 f"and trial crown {row.crown_mean:.2f} against {row.study_mean:.2f} on fresh seeds (differences "
                 f"{row.best_mean_return - row.study_mean:+.2f} and {row.crown_mean - row.study_mean:+.2f})")
    judged = [other for other in result.trials if other.study_mean is not None]
    if len(judged) > 1:
        best_gap = sum(other.best_mean_return - other.study_mean for other in judged) / len(judged)
        crown_gap = sum(other.crown_mean - other.study_mean for other in judged) / len(judged)
        lines.append(f"over the {len(judged)} re-evaluated trials, the training-time best was {best_gap:+.2f} and the "
                     f"trial crown {crown_gap:+.2f} from the fresh-seed mean, on average")
    top = max((other for other in result.trials if other.crown_mean is not None and other.state == "COMPLETE"),
              key=lambda other: other.crown_mean)
    if top.study_mean is not None:
        lines.append(f"the study's best crown (trial {top.number}, {top.crown_mean:.2f}) on fresh seeds: "
                     f"{top.study_mean:.2f} ({top.crown_mean - top.study_mean:+.2f})")
    lines.append(f"winner's settings: {result.winner_config} (champion train --config {result.winner_config})")
    lines.append(f"winner's best policy: {result.winner_policy}")
    return lines


@dataclass(frozen=True)
class StudySummary:
    """One line of ``champion runs``' studies table."""

    path: str
    env_id: str
    algo: str
    study_name: str
    trials_wanted: int
    counts: dict[str, int]
    best_trial: int | None
    best_crown: float | None
    winner: int | None
    winner_mean: float | None


def find_studies(results_dir: Path) -> list[Path]:
    """Study folders (holding study.yaml) under ``results_dir``."""
    return sorted(path.parent for path in Path(results_dir).rglob(SETTINGS_FILE)
                  if (path.parent / STUDY_FILE).is_file() or (path.parent / REPORT_FILE).is_file())


def summarize_study(folder: Path) -> StudySummary:
    """A study's progress from study.json and report.json; ValueError when they cannot be read."""
    from champion.runners.store.folder_trust import read_json, read_yaml_file

    settings = read_yaml_file(folder / SETTINGS_FILE)
    snapshot = read_json(folder / STUDY_FILE) if (folder / STUDY_FILE).is_file() else {"trials": []}
    if not isinstance(settings, dict) or not isinstance(snapshot, dict):
        raise ValueError("study.yaml or study.json is not what champion tune writes")
    counts: dict[str, int] = {}
    finished = []
    for trial in snapshot.get("trials") or []:
        counts[str(trial.get("state"))] = counts.get(str(trial.get("state")), 0) + 1
        if trial.get("state") == "COMPLETE" and isinstance(trial.get("value"), (int, float)):
            finished.append(trial)
    best = max(finished, key=lambda trial: trial["value"]) if finished else None
    report = read_report(folder)
    winner_mean = report.row(report.winner).study_mean if report and report.winner is not None else None
    return StudySummary(str(folder), str(settings.get("env_id")), str(settings.get("algo")),
                        str(settings.get("study_name")), int(settings.get("trials") or 0), counts,
                        best["number"] if best else None, float(best["value"]) if best else None,
                        report.winner if report else None, winner_mean)
