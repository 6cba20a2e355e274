"""Trials on Ray (``champion tune --engine ray``): the driver asks Optuna for trials and tells it how they ended; each
trial trains in a Ray task of its own, up to ``workers`` at once. A task whose worker process dies (killed, out of
memory) is run again by Ray (``RAY_RETRIES`` times): it goes on from the trial's newest checkpoint with champion's
own resume when the run folder has one (only up to the step the pruner stopped it at, when it had been pruned), else
trains the trial again in a fresh folder beside it.

Every worker of a Ray cluster reads ``study.yaml`` and writes its trial's run folder in the study folder, so with
``--ray-address`` the study folder must be on a file system the cluster's machines share (the same path on each).
On Ctrl-C or SIGTERM the driver cancels the running tasks at once (``ray.cancel(force=True)``: no checkpoint is
written then; each run folder keeps its last periodic one) and gives their trials back.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from champion.runners.tune.settings import StudySettings, read_settings
from champion.runners.tune.study import (Heartbeat, TrialOutcome, WorkerLock, _run_path, give_back, next_trial,
                                         open_study, result_attrs, settings_text, stopped_study, tell, told_line,
                                         train_trial, write_snapshot)

RAY_RETRIES = 3
"""Times Ray runs a trial's task again after its worker process died."""


def ray_trial(study_dir: str, number: int, trial_settings: dict[str, Any]) -> dict[str, Any]:
    """One trial, in a Ray worker: resume its run folder when a killed attempt left one that can go on (a trial the
    pruner had stopped only up to that step: it stays pruned)."""
    settings = read_settings(study_dir)
    opened = open_study(settings)
    opened.set_attr(number, "pid", os.getpid())
    pruned_at = opened.trial(number).user_attrs.get("pruned_at")
    run_dir = settings.folder / _run_path(settings, f"trial-{number:04d}")
    if pruned_at is not None and run_dir.exists():
        return dataclasses.asdict(_kept_pruned(opened, number, trial_settings, run_dir, pruned_at))
    resume, run_name = None, None
    if run_dir.exists():
        resume = run_dir if _can_resume(run_dir) else None
        run_name = None if resume else _free_name(run_dir)
        opened.set_attr(number, "attempt", f"{'resumed' if resume else 'restarted in ' + str(run_name)} after its "
                                           "worker died")
    outcome = train_trial(opened, number, trial_settings, resume=resume, run_name=run_name)
    return dataclasses.asdict(outcome)


def _kept_pruned(opened: Any, number: int, trial_settings: dict[str, Any], run_dir: Path,
                 pruned_at: int) -> TrialOutcome:
    """A trial the pruner had stopped when its worker died (in the run's end: final evaluation, checkpoint, crown)
    stays pruned: champion's resume finishes its run at the step it stopped at (its newest checkpoint, or the
    pruned step when that is older) when it can; a run that had ended is taken as its folder has it (summary.json,
    the crown if it was written). It never trains on as if it had not been pruned."""
    from champion.runners.store.checkpoints import newest_good_manifest

    manifest = newest_good_manifest(run_dir / "checkpoints")
    stop = max(pruned_at, int(manifest["step"]) if manifest is not None else 0)
    if _can_resume(run_dir, stop):
        opened.set_attr(number, "attempt", f"resumed up to step {stop:,} (it was pruned at {pruned_at:,}) after its "
                                           "worker died")
        return train_trial(opened, number, trial_settings, resume=run_dir, pruned_at=pruned_at, resume_to=stop)
    opened.set_attr(number, "attempt", "kept as its run had ended, pruned, when its worker died")
    return _pruned_as_saved(opened.settings, number, run_dir, pruned_at)


def _pruned_as_saved(settings: StudySettings, number: int, run_dir: Path, pruned_at: int) -> TrialOutcome:
    """The PRUNED outcome of a trial whose run has ended, read from its summary.json and best store."""
    import json
    from types import SimpleNamespace

    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    best = summary.get("best_mean_return")
    result = SimpleNamespace(run_dir=run_dir, best_mean_return=best if isinstance(best, (int, float)) else math.nan,
                             best_step=summary.get("best_step"), env_steps=summary.get("env_steps"))
    attrs = result_attrs(settings, result, pruned_at)
    return TrialOutcome("PRUNED", None, attrs, f"trial {number}: pruned at step {pruned_at:,} (kept in "
                                               f"{attrs['run_dir']}; its worker died after its run had ended)")


def _can_resume(run_dir: Path, stop: int | None = None) -> bool:
    """Whether champion's resume takes the folder (a killed run with a checkpoint, not yet at its budget, or at
    step ``stop`` when given)."""
    from champion.errors import ChampionError
    from champion.runners.run_state import check_resumable, resumed_config
    from champion.runners.store.checkpoints import newest_good_manifest

    try:
        if newest_good_manifest(run_dir / "checkpoints") is None:  # killed before its first checkpoint
            return False
        check_resumable(run_dir, resumed_config(run_dir, {} if stop is None else {"total_steps": stop}))
    except (ChampionError, OSError):
        return False
    return True


def _free_name(run_dir: Path) -> str:
    attempt = 2
    while run_dir.with_name(f"{run_dir.name}-attempt{attempt}").exists():
        attempt += 1
    return f"{run_dir.name}-attempt{attempt}"


def run_on_ray(settings: StudySettings, progress: bool) -> None:
    """Up to ``settings.workers`` trials at once as Ray tasks (one CPU each) on a local Ray of the study's own, or on
    the cluster at ``settings.ray_address``."""
    from champion.runners.ray.cluster import connect

    connection = connect(settings.ray_address, settings.workers if settings.ray_address is None else None)
    try:
        import ray

        task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(ray_trial)
        _drive(settings, task, progress)
    finally:
        connection.close()


def _drive(settings: StudySettings, task: Any, progress: bool) -> None:
    import ray

    pending: dict[Any, tuple[Any, int]] = {}
    with WorkerLock(settings.folder) as lock:
        heartbeat = None
        try:
            while True:
                while len(pending) < settings.workers:
                    asked = next_trial(settings, lock.identity, {number for _, number in pending.values()})
                    if asked is None:
                        break
                    opened, number, trial_settings, notes = asked
                    heartbeat = heartbeat or Heartbeat(opened)
                    heartbeat.add(number)
                    _say(progress, f"trial {number}: {settings_text(trial_settings)}"
                         + "".join(f" ({note})" for note in notes))
                    pending[task.remote(str(settings.folder), number, trial_settings)] = (opened, number)
                if not pending:
                    return
                ready, _ = ray.wait(list(pending), num_returns=1)
                for reference in ready:
                    opened, number = pending.pop(reference)
                    heartbeat.running.discard(number)
                    outcome = _outcome(reference, number)
                    _say(progress, told_line(number, outcome, tell(opened, number, outcome)))
        except BaseException as error:  # Ctrl-C, SIGTERM: the running trials are given back, to be trained again
            for reference, (opened, number) in pending.items():
                ray.cancel(reference, force=True)
                give_back(opened, number, "stopped by a signal")
            if pending:
                write_snapshot(open_study(settings))
            raise stopped_study(error, settings, sorted(number for _, number in pending.values())) from None
        finally:
            if heartbeat is not None:
                heartbeat.close()


def _outcome(reference: Any, number: int) -> TrialOutcome:
    """The task's outcome, or FAIL when it raised or its worker died more often than Ray retries."""
    import ray

    try:
        return TrialOutcome(**ray.get(reference))
    except Exception as error:  # a task's error, or its worker lost RAY_RETRIES + 1 times
        from champion.errors import first_line

        return TrialOutcome("FAIL", None, {"error": first_line(error)},
                            f"trial {number}: failed on Ray: {first_line(error)}")


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, flush=True)

