"""Find and summarise run folders (no TensorFlow needed)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import yaml

from champion.errors import ChampionError, first_line
from champion.runners.store.best_store import MANIFEST_FILE, list_entries, pointer_name, read_champion
from champion.runners.store.checkpoints import newest_good_manifest
from champion.runners.store.folder_trust import (MAX_EVALUATIONS_BYTES, check_links, is_number, is_whole, read_bytes, read_record,
                                  read_yaml_file)
from champion.runners.store.run_folder import RunFolderError, is_locked, read_status


class RunNotFoundError(ChampionError, FileNotFoundError):
    """The path is not a run folder and holds none; the message says what was expected."""


class ReplayError(ChampionError, RuntimeError):
    """A replay cannot run as asked; the message says why and what to do."""


class UnreadableRunError(ChampionError, ValueError):
    """A run folder whose config cannot be read as champion writes it; the message says what is wrong."""


@dataclass(frozen=True)
class RunSummary:
    """One line of ``champion runs``."""

    path: str
    env_id: str
    algo: str
    run_name: str
    best_mean_return: float | None
    best_step: int | None
    env_steps: int
    total_steps: int
    date: str
    crowned_entry: str | None = None
    """The crowned champion's entry (None before a crown)."""
    crowned_step: int | None = None
    crowned_mean_return: float | None = None
    """The champion's mean over its held-out episodes."""
    crowned_interval: list[float] | None = None
    status: str = "?"
    """running, finished, stopped (by a signal, with a checkpoint), failed, crashed (killed while training) or
    unknown (a run from before status.json)."""
    resume_step: int | None = None
    """The step a resume starts from: the newest checkpoint that verifies (None: there is none)."""
    envs_exact: list[bool] | None = None
    """Per training env, whether a resume from that checkpoint restores it exactly."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_run_dir(path: Path) -> bool:
    """A run folder is one with a config.yaml written by ``champion train``."""
    return (path / "config.yaml").is_file()


def find_run_dirs(results_dir: Path) -> list[Path]:
    """Run folders at results_dir/<env>/<algo>/<run>, or below any folder given, in the order they last started a
    session (a new run or a resume writes its config.yaml): "the newest run" is the one started or resumed last."""
    results_dir = Path(results_dir)
    if is_run_dir(results_dir):
        return [results_dir]
    found = {config.parent for config in results_dir.rglob("config.yaml") if is_run_dir(config.parent)}
    return sorted(found, key=_session_start)


def _session_start(run_dir: Path) -> float:
    """When the run last started a session: its config.yaml's modification time (0 if it has just gone)."""
    try:
        return (run_dir / "config.yaml").stat().st_mtime
    except OSError:
        return 0.0


def resolve_run_dir(path: Path, best: bool = False) -> Path:
    """The run folder itself, or, below a folder of runs, the newest run with a best policy (with ``best``,
    the one with the highest best return)."""
    return choose_run(path, best)[0]


def choose_run(path: Path, best: bool = False) -> tuple[Path, str]:
    """``resolve_run_dir``'s run and why it was picked (empty when ``path`` is a run folder itself); RunFolderError
    when the run holds a link out of its folder (``folder_trust.check_links``), whichever way it was picked."""
    run_dir, why = _pick_run(Path(path), best)
    check_links(run_dir)
    return run_dir, why


def _pick_run(path: Path, best: bool) -> tuple[Path, str]:
    if not path.exists():
        raise RunNotFoundError(f"{path} does not exist; give a run folder such as results/CartPole-v1/ppo/<run>")
    if is_run_dir(path):
        return path, ""
    with_best = [run for run in find_run_dirs(path) if list_entries(run / "best")]
    if not with_best:
        raise RunNotFoundError(f"{path} is not a run folder (no config.yaml) and holds no run with a best policy")
    count = f"of the {len(with_best)} run{'s' if len(with_best) != 1 else ''} with a best policy below {path}"
    if not best:
        return with_best[-1], (f"the newest {count} (the one started or resumed last; --best picks the highest "
                               "best return)")
    finite = [summary for summary in summarize_all(with_best)[0]
              if summary.best_mean_return is not None and math.isfinite(summary.best_mean_return)]
    if not finite:
        return with_best[-1], f"the newest {count} (none records a finite best return)"
    chosen = max(finite, key=_rank)  # a tie goes to the earlier best step, as in the leaderboard
    return Path(chosen.path), f"the highest best return ({chosen.best_mean_return:.2f}) {count}"


def summarize_all(run_dirs: Sequence[Path]) -> tuple[list[RunSummary], list[tuple[Path, str]]]:
    """The summaries of the runs that can be read, and (folder, why) for each one that cannot: one bad folder never
    hides the others."""
    summaries, unreadable = [], []
    for run_dir in run_dirs:
        try:
            summaries.append(summarize(run_dir))
        except (UnreadableRunError, RunFolderError, OSError) as error:
            unreadable.append((run_dir, str(error)))
    return summaries, unreadable


def summarize(run_dir: Path) -> RunSummary:
    """Read a run's config, best manifest, progress and status without verifying weights (a checkpoint's files are
    verified, never decoded); UnreadableRunError when its config is not one champion wrote, RunFolderError when it
    holds a link out of it."""
    check_links(run_dir)
    config = _read_config(run_dir / "config.yaml")
    manifest = _best_manifest(run_dir / "best")
    crown = read_champion(run_dir / "best") or {}
    checkpoint = newest_good_manifest(run_dir / "checkpoints") or {}
    env_steps, status = _env_steps(run_dir), run_status(run_dir)
    if status != "finished" and checkpoint:
        env_steps = int(checkpoint["step"])  # where it stands: what a resume starts from, not the last evaluation
    interval = crown.get("interval")
    exact = checkpoint.get("envs_exact")
    return RunSummary(
        path=str(run_dir),
        env_id=_text(config.get("env_id")),
        algo=_text(config.get("algo")),
        run_name=run_dir.name,
        best_mean_return=_float_or_none(manifest.get("mean_return")),
        best_step=_int_or_none(manifest.get("step")),
        env_steps=env_steps,
        total_steps=_int_or_none(config.get("total_steps")) or 0,
        date=datetime.fromtimestamp((run_dir / "config.yaml").stat().st_mtime).strftime("%Y-%m-%d %H:%M"),
        crowned_entry=crown.get("entry"),
        crowned_step=_int_or_none(crown.get("step")),
        crowned_mean_return=_float_or_none(crown.get("held_out_mean")),
        crowned_interval=([float(value) for value in interval] if isinstance(interval, list)
                          and all(is_number(value) for value in interval) else None),
        status=status,
        resume_step=_int_or_none(checkpoint.get("step")),
        envs_exact=[bool(value) for value in exact] if isinstance(exact, list) else None,
    )


def _float_or_none(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def _int_or_none(value: Any) -> int | None:
    return value if is_whole(value) else None


def _read_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a mapping; UnreadableRunError (why) for anything else."""
    try:
        config = read_yaml_file(path)
    except (OSError, ValueError, yaml.YAMLError) as error:
        reason = error.strerror if isinstance(error, OSError) else first_line(error)
        raise UnreadableRunError(f"{path.name} cannot be read ({reason})") from None
    if not isinstance(config, dict):
        raise UnreadableRunError(f"{path.name} holds a {type(config).__name__}, not the mapping champion writes")
    wrong = [key for key, kind in (("env_id", str), ("algo", str), ("total_steps", int))
             if key in config and (not isinstance(config[key], kind) or isinstance(config[key], bool))]
    if wrong:
        raise UnreadableRunError(f"{path.name}'s {wrong[0]} is {str(config[wrong[0]])[:40]!r}, not a "
                                 f"{'whole number' if wrong[0] == 'total_steps' else 'name'}")
    return config


def _text(value: Any) -> str:
    return printable(value[:200]) if isinstance(value, str) else "?"


def printable(text: str) -> str:
    """``text`` safe to print from a folder that may be anyone's: control characters and lone surrogates escaped,
    so that a name cannot move the cursor, set a title or stop the output."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)


def run_status(run_dir: Path) -> str:
    """How a run stands (``RunSummary.status``): a held lock means running, whatever status.json says."""
    if is_locked(run_dir):
        return "running"
    recorded = read_status(run_dir).get("status")
    if recorded == "running":  # the trainer that wrote it is gone without a word (killed), or one just started
        return "running" if is_locked(run_dir) else "crashed"
    if recorded == "finished" and str(read_status(run_dir).get("reason", "")).startswith("stopped early"):
        return "stopped early"  # by a stop rule or a callback: complete, and resumable
    if recorded in ("finished", "stopped", "failed"):
        return recorded
    return "finished" if (run_dir / "summary.json").is_file() else "unknown"


def status_text(summary: RunSummary) -> str:
    """The status as ``champion runs`` shows it: where a resume would start, and how many envs it restores
    exactly."""
    if summary.status in ("finished", "running") or summary.resume_step is None:
        return summary.status
    exact = summary.envs_exact or []
    exact_text = f", {sum(exact)}/{len(exact)} envs exact" if exact else ""
    return f"{summary.status}, resumes at {summary.resume_step:,}{exact_text}"


def leaderboard(summaries: Sequence[RunSummary]) -> list[RunSummary]:
    """The best run of each env (by env id): highest best mean return, a tie to the earlier best step. Runs are
    ranked by their training-time best, which every run has; a crowned run's held-out mean is shown beside it.

    Runs without a (finite) best return are left out; among full ties the first given wins.
    """
    leaders: dict[str, RunSummary] = {}
    for summary in summaries:
        if summary.best_mean_return is None or not math.isfinite(summary.best_mean_return):
            continue
        leader = leaders.get(summary.env_id)
        if leader is None or _rank(summary) > _rank(leader):
            leaders[summary.env_id] = summary
    return [leaders[env_id] for env_id in sorted(leaders)]


def _rank(summary: RunSummary) -> tuple[float, float]:
    best_step = math.inf if summary.best_step is None else summary.best_step
    return (float(summary.best_mean_return or 0.0), -best_step)


def _best_manifest(best_dir: Path) -> dict[str, Any]:
    """The manifest of the entry the pointer names, else of the newest entry (read, not verified: a listing)."""
    candidates = []
    try:
        candidates.append(best_dir / pointer_name(best_dir))
    except (OSError, ValueError):
        pass
    candidates += list_entries(best_dir)[::-1]
    for entry in candidates:
        try:
            return read_record(entry / MANIFEST_FILE)
        except (OSError, ValueError):
            continue
    return {}


def _env_steps(run_dir: Path) -> int:
    try:
        steps = read_record(run_dir / "summary.json")["env_steps"]
        if is_whole(steps):
            return steps
    except (OSError, ValueError, KeyError):
        pass
    try:
        text = read_bytes(run_dir / "evaluations.csv", MAX_EVALUATIONS_BYTES).decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        return int(rows[-1]["step"]) if rows else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0
