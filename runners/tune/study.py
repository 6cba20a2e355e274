"""The study loop of ``champion tune``: Optuna's storage and study, workers that ask for trials and train each as an
ordinary champion run, pruning on the run's evaluations, and trials lost with a killed worker run again.

Counting: a study is done when ``trials`` of its trials are COMPLETE or PRUNED. A trial that FAILs (its settings
could not make a run, its env raised) does not count, nor does a trial whose worker was killed: it is marked FAIL
(``lost``) and its settings are enqueued again, so they are trained once more under a new trial number. A worker asks
for a trial only while fewer than ``trials`` are finished, running or waiting; one that gets a number past that
(two processes asked at once) marks it FAIL (``surplus``) without training, so no finished trial is lost or repeated
and the count ends at exactly ``trials``.

A worker holds a lock file in ``STUDY_DIR/workers/`` while it lives; its running trials name that file. A RUNNING
trial is lost when its worker's lock can be taken (the kernel frees it when the process dies, SIGKILL included) or,
for a worker on another machine (a database shared by several), when its heartbeat (a trial attribute renewed
every ``HEARTBEAT_S``) is older than ``LOST_AFTER_S``. A trial that names no worker yet, or a worker on another
machine that has written no heartbeat yet (both are written as soon as the trial is asked for), is lost once it
started ``LOST_AFTER_S`` ago: its worker was killed between asking and naming itself.

Sampling: the sampler is seeded again for every trial, from the study's seed and the trial's number, so workers
that ask at the same moment (and see the same history) still draw different settings.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from champion.callbacks import Callback, Stop
from champion.runners.tune.settings import JOURNAL_FILE, STUDY_FILE, StudySettings

HEARTBEAT_S = 30.0
LOST_AFTER_S = 300.0
"""A RUNNING trial of a worker on another machine whose heartbeat is older than this is lost; so is a trial that
started this long ago and names no worker (or, on another machine, has no heartbeat)."""
MAX_FAILURES_IN_A_ROW = 3
"""Trials failing one after another stop the worker: the study's settings, not a trial's, are likely wrong."""
COUNTED = ("COMPLETE", "PRUNED")
ACTIVE = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")


def open_storage(settings: StudySettings) -> Any:
    """The study's Optuna storage: the journal file in the study folder, or the database at ``settings.storage``."""
    import optuna

    if settings.storage is None:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(settings.folder / JOURNAL_FILE)))
    return optuna.storages.RDBStorage(settings.storage)


def load_study(settings: StudySettings, storage: Any, sampler_seed: int | None = None) -> Any:
    """The Optuna study (created if new), its sampler seeded by ``sampler_seed`` (default: the study's seed; a
    trial's settings are drawn with ``trial_sampler_seed``)."""
    import optuna

    quiet_optuna()
    seed = settings.seed if sampler_seed is None else sampler_seed
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, constant_liar=True)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials,
                                               n_warmup_steps=settings.trial_steps // 3)
              if settings.prune else optuna.pruners.NopPruner())
    return optuna.create_study(storage=storage, study_name=settings.study_name, direction="maximize",
                               sampler=sampler, pruner=pruner, load_if_exists=True)


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and its experimental-feature warnings off: the study prints its own lines."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def state_counts(study: Any) -> dict[str, int]:
    """How many trials are in each state (names as Optuna's TrialState)."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


class WorkerLock:
    """This process's lock file in ``STUDY_DIR/workers/`` (held while it lives): its trials name it, and another
    worker that can take it knows this one is gone."""

    def __init__(self, study_dir: Path) -> None:
        self.folder = study_dir / "workers"
        self.name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns() % 10**9}.lock"
        self.handle: Any = None

    def __enter__(self) -> WorkerLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.folder / self.name, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        (self.folder / self.name).unlink(missing_ok=True)
        self.handle.close()

    @property
    def identity(self) -> str:
        return f"{socket.gethostname()}/{self.name}"


def trial_lost(study_dir: Path, trial: Any) -> bool:
    """Whether a RUNNING trial's worker is gone. One that names no worker, or a worker on another machine and no
    heartbeat, was asked for moments ago or by a worker killed before it wrote them: lost once it started
    ``LOST_AFTER_S`` ago."""
    identity, heartbeat = trial.user_attrs.get("worker"), trial.user_attrs.get("heartbeat")
    elsewhere = isinstance(identity, str) and identity.partition("/")[0] != socket.gethostname()
    if not isinstance(identity, str) or elsewhere and heartbeat is None:
        started = trial.datetime_start
        return started is None or (datetime.now() - started).total_seconds() > LOST_AFTER_S
    return worker_gone(study_dir, identity, heartbeat)


def worker_gone(study_dir: Path, identity: str, heartbeat: float | None) -> bool:
    """Whether the worker named ``identity`` (``host/lockfile``) is gone: on this machine, its lock can be taken (or
    its file is gone); on another, its trial's heartbeat is older than ``LOST_AFTER_S``."""
    host, _, name = identity.partition("/")
    if host != socket.gethostname():
        return heartbeat is None or time.time() - heartbeat > LOST_AFTER_S
    from champion.runners.store.run_folder import lock_is_held

    path = study_dir / "workers" / name
    if lock_is_held(path):
        return False
    path.unlink(missing_ok=True)
    return True


class FolderLock:
    """An exclusive flock on a file of the study folder, held for a short job (finding lost trials, the report)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: Any = None

    def __enter__(self) -> FolderLock:
        self.handle = open(self.path, "a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def recover_lost_trials(opened: OpenStudy, keep: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """RUNNING trials whose worker is gone: marked FAIL (``lost``) and their settings enqueued again. Returns their
    numbers. ``keep``: trial numbers this process runs (never lost while it lives)."""
    from optuna.trial import TrialState

    lost = []
    with FolderLock(opened.settings.folder / "recover.lock"):
        for trial in opened.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number in keep or not trial_lost(opened.settings.folder, trial):
                continue
            if give_back(opened, trial.number, "its worker was killed"):
                lost.append(trial.number)
    return lost


@dataclass
class OpenStudy:
    """An Optuna study with the storage it was opened on and the study's settings."""

    study: Any
    storage: Any
    settings: StudySettings

    def trial_id(self, number: int) -> int:
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def set_attr(self, number: int, key: str, value: Any) -> bool:
        """A user attribute on trial ``number``, by the storage's public API; False (nothing written) when the trial
        has finished meanwhile (another worker found it lost and gave it back)."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.storage.set_trial_user_attr(self.trial_id(number), key, value)
        except UpdateFinishedTrialError:
            return False
        return True

    def trial(self, number: int) -> Any:
        return self.storage.get_trial(self.trial_id(number))


@dataclass
class Heartbeat:
    """Renews the ``heartbeat`` attribute of this process's running trials every ``HEARTBEAT_S`` (for workers on
    other machines, which cannot take this machine's lock files)."""

    opened: OpenStudy
    running: set[int] = field(default_factory=set)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._beat, name="champion-tune-heartbeat", daemon=True)
        self.thread.start()

    def add(self, number: int) -> None:
        self.running.add(number)
        self.opened.set_attr(number, "heartbeat", time.time())

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            for number in list(self.running):
                try:
                    self.opened.set_attr(number, "heartbeat", time.time())
                except Exception:  # a storage hiccup: the next beat tries again
                    pass

    def close(self) -> None:
        self.stopped.set()


def open_study(settings: StudySettings) -> OpenStudy:
    """``load_study`` on a fresh storage object."""
    storage = open_storage(settings)
    return OpenStudy(load_study(settings, storage), storage, settings)


def trial_sampler_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial ``number`` of a study seeded ``seed``: one of its own for every trial number, so
    two workers asking at once draw apart, a one-worker study draws the same trials again from scratch, and a resumed
    one does not draw its first trials' settings again."""
    import numpy as np

    return int(np.random.SeedSequence([seed % 2**63, number]).generate_state(1, np.uint32)[0])


def seeded_trial(opened: OpenStudy, number: int) -> Any:
    """Trial ``number`` (just asked for) on a study object whose sampler is seeded by ``trial_sampler_seed``: Optuna
    draws a trial's parameters when they are suggested, so its settings come from that seed."""
    import optuna

    study = load_study(opened.settings, opened.storage, trial_sampler_seed(opened.settings.seed, number))
    return optuna.trial.Trial(study, opened.trial_id(number))


def next_trial(settings: StudySettings, worker: str, running: set[int]) -> tuple[OpenStudy, int, dict[str, Any],
                                                                                   list[str]] | None:
    """Ask for the next trial and sample its settings: (study, trial number, settings, notes), or None when the study
    needs no more trials from this worker (enough are finished, running or waiting)."""
    from optuna.trial import TrialState

    from champion.runners.tune.settings import check_base

    base = check_base(settings)
    while True:
        opened = open_study(settings)
        recover_lost_trials(opened, running)
        trials = opened.study.get_trials(deepcopy=False)
        done = sum(trial.state.name in COUNTED for trial in trials)
        waiting = any(trial.state == TrialState.WAITING for trial in trials)
        active = sum(trial.state.name in ACTIVE for trial in trials)
        if done >= settings.trials or (active >= settings.trials and not waiting):
            return None
        trial = opened.study.ask()
        before = [other for other in opened.study.get_trials(deepcopy=False)
                  if other.number < trial.number and other.state.name in ACTIVE]
        if len(before) >= settings.trials:  # another process asked at the same moment and came first
            opened.set_attr(trial.number, "surplus", True)
            opened.study.tell(trial, state=TrialState.FAIL)
            continue
        opened.set_attr(trial.number, "worker", worker)  # with its heartbeat: then it is never taken for lost
        opened.set_attr(trial.number, "heartbeat", time.time())  # while its worker lives
        trial_settings, notes = settings.search_space().sample(seeded_trial(opened, trial.number), base)
        opened.set_attr(trial.number, "settings", _plain(trial_settings))
        return opened, trial.number, trial_settings, notes


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in settings.items()}


class ReportToStudy(Callback):
    """Reports each evaluation's mean return to the trial (at the evaluation's step rounded down to a multiple of
    ``eval_every``, so trials with other rollout sizes report at the same steps) and stops the run when the pruner
    says so: the run then ends as at its budget (final evaluation, checkpoint, crown), keeping all it saved. The
    evaluation at the budget (``total_steps``) is reported but never pruned: the trial has trained its budget."""

    def __init__(self, opened: OpenStudy, trial_number: int, eval_every: int, total_steps: int,
                 pruned_at: int | None = None) -> None:
        self.opened = opened
        self.trial_number = trial_number
        self.eval_every = eval_every
        self.total_steps = total_steps
        self.pruned_at = pruned_at
        """The step the pruner stopped the run at (given: a retried trial that had been pruned already)."""

    def on_evaluation(self, step: int, result: Any) -> Stop | None:
        from optuna.exceptions import UpdateFinishedTrialError

        if self.pruned_at is not None or not math.isfinite(result.mean_return):
            return None
        trial_id = self.opened.trial_id(self.trial_number)
        report_step = step // self.eval_every * self.eval_every
        try:
            self.opened.storage.set_trial_intermediate_value(trial_id, report_step, float(result.mean_return))
        except UpdateFinishedTrialError:  # another worker found the trial lost and gave it back: no use going on
            return Stop("given back by the study (another worker took it for lost); its settings train again")
        if step < self.total_steps and self.opened.study.pruner.prune(self.opened.study,
                                                                     self.opened.storage.get_trial(trial_id)):
            self.pruned_at = step
            self.opened.set_attr(self.trial_number, "pruned_at", step)  # a retried Ray task keeps it pruned
            return Stop(f"pruned by the study: mean return {result.mean_return:.2f} at step {step:,} is below the "
                        "median of the earlier trials at that step")
        return None

    @property
    def name(self) -> str:
        return "champion tune"


@dataclass
class TrialOutcome:
    """How a trial's run ended, for ``study.tell`` and the trial's attributes."""

    state: str
    """COMPLETE, PRUNED or FAIL."""
    value: float | None
    attrs: dict[str, Any]
    line: str


def train_trial(opened: OpenStudy, number: int, trial_settings: dict[str, Any], resume: Path | None = None,
                run_name: str | None = None, pruned_at: int | None = None,
                resume_to: int | None = None) -> TrialOutcome:
    """Train one trial as an ordinary champion run (``STUDY_DIR/<env>/<algo>/trial-NNNN``, or ``run_name``;
    ``resume``: go on with that run folder instead, as a retried Ray task does, up to step ``resume_to`` when given;
    ``pruned_at``: the trial had been pruned there, so nothing is reported and it ends PRUNED) and say how it ended:
    its value is the run's crowned held-out mean. It runs the same loop as ``champion.train`` and ``champion.resume``
    (``champion.runners.training``; the runners never import the public API, which imports them)."""
    from champion.errors import ChampionError
    from champion.runners import training
    from champion.runners.tune.settings import trial_config

    settings = opened.settings
    name = run_name or f"trial-{number:04d}"
    run_dir = resume or settings.folder / _run_path(settings, name)
    opened.set_attr(number, "run_dir", _relative(settings, run_dir))
    started = time.time()
    try:
        config = trial_config(settings, trial_settings, name)
        reporter = ReportToStudy(opened, number, config.eval_every, config.total_steps, pruned_at)
        if resume is not None:
            budget = {} if resume_to is None else {"total_steps": resume_to}
            result = training.resume(resume, budget, progress=False, callbacks=[reporter])
        else:
            result = training.train(config, progress=False, callbacks=[reporter])
    except ChampionError as error:
        if _is_signal(error):
            raise
        return TrialOutcome("FAIL", None, {"error": str(error), "started": started, "ended": time.time()},
                            f"trial {number}: failed: {error}")
    attrs = {**result_attrs(settings, result, reporter.pruned_at), "started": started, "ended": time.time()}
    seconds = attrs["ended"] - started
    crowned = attrs["crown_mean"]
    if reporter.pruned_at is not None:
        return TrialOutcome("PRUNED", None, attrs,
                            f"trial {number}: pruned at step {reporter.pruned_at:,} (best {result.best_mean_return:.2f}"
                            f"; kept in {attrs['run_dir']}) in {seconds:.0f} s")
    if crowned is None:
        return TrialOutcome("FAIL", None, {**attrs, "error": "no crowned held-out mean"},
                            f"trial {number}: failed: its run has no crowned held-out mean")
    return TrialOutcome("COMPLETE", float(crowned), attrs,
                        f"trial {number}: crowned held-out mean {crowned:.2f} (training-time best "
                        f"{result.best_mean_return:.2f} at step {result.best_step or 0:,}) in {seconds:.0f} s")


def _run_path(settings: StudySettings, run_name: str) -> Path:
    from champion.runners.store.run_folder import env_folder_name

    return Path(env_folder_name(settings.env_id)) / settings.algo / run_name


def _relative(settings: StudySettings, run_dir: Path) -> str:
    try:
        return str(Path(run_dir).relative_to(settings.folder))
    except ValueError:
        return str(run_dir)


def result_attrs(settings: StudySettings, result: Any, pruned_at: int | None) -> dict[str, Any]:
    """What the trial records of its run (``result``: its ``run_dir``, ``best_mean_return``, ``best_step`` and
    ``env_steps``): the training-time best and the crown (as ``champion.load`` reads it: not a crown older than the
    best)."""
    from champion.runners.store.best_store import load_champion

    found = load_champion(Path(result.run_dir) / "best", on_warning=lambda _: None)
    crown = found[1] if found is not None else {}
    return {"run_dir": _relative(settings, result.run_dir), "best_mean_return": _finite(result.best_mean_return),
            "best_step": result.best_step, "crown_mean": _finite(crown.get("held_out_mean")),
            "crown_interval": crown.get("interval"), "crown_episodes": len(crown.get("returns") or []),
            "crown_entry": crown.get("entry"), "pruned_at": pruned_at, "env_steps": result.env_steps}


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _is_signal(error: Exception) -> bool:
    """A run stopped by Ctrl-C or SIGTERM: the study stops too (the trial is retried when it goes on)."""
    from champion.runners.run_state import CrownInterrupted, TrainingInterrupted

    return isinstance(error, (TrainingInterrupted, CrownInterrupted))


def tell(opened: OpenStudy, number: int, outcome: TrialOutcome) -> bool:
    """Record a trial's outcome in the storage and ``study.json``; False (nothing recorded) when the trial had
    finished meanwhile: another worker took it for lost and gave it back, so its settings train again."""
    from optuna.trial import TrialState

    if opened.trial(number).state != TrialState.RUNNING:
        return False
    for key, value in outcome.attrs.items():
        opened.set_attr(number, key, value)
    state = TrialState[outcome.state]
    opened.study.tell(number, outcome.value if state == TrialState.COMPLETE else None, state=state,
                      skip_if_finished=True)
    write_snapshot(opened)
    return opened.trial(number).state == state


def told_line(number: int, outcome: TrialOutcome, recorded: bool) -> str:
    """The line saying how a trial ended, or that the study had given it back before it ended."""
    if recorded:
        return outcome.line
    return (f"trial {number}: ended after the study took it for lost and gave it back (its settings train again, "
            "under a new number); its outcome is not counted")


def give_back(opened: OpenStudy, number: int, why: str) -> bool:
    """A trial that will not finish (its worker was killed, or stopped by Ctrl-C or SIGTERM): FAIL, and its
    settings enqueued again, so the study trains them under a new number. False when it had finished meanwhile."""
    from optuna.trial import TrialState

    trial = opened.trial(number)
    if trial.state != TrialState.RUNNING:
        return False
    opened.set_attr(number, "lost", why)
    opened.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    opened.study.enqueue_trial(trial.params, user_attrs={"retry_of": number})
    return True


def write_snapshot(opened: OpenStudy) -> None:
    """``study.json``: every trial's number, state, value and attributes, for ``champion runs`` (which reads no
    Optuna storage)."""
    import json

    from champion.runners.store.atomic_files import atomic_write_text

    trials = [{"number": trial.number, "state": trial.state.name, "value": trial.value,
               **{key: trial.user_attrs.get(key) for key in ("run_dir", "best_mean_return", "crown_mean", "retry_of",
                                                             "lost", "surplus", "pruned_at")}}
              for trial in opened.study.get_trials(deepcopy=False)]
    record = {"study_name": opened.study.study_name, "trials_wanted": opened.settings.trials, "trials": trials}
    atomic_write_text(opened.settings.folder / STUDY_FILE, json.dumps(record, indent=1, default=str))


def run_worker(settings: StudySettings, progress: bool = True) -> int:
    """Ask for trials and train them until the study needs no more from this worker; returns how many it ran."""
    quiet_retracing_warning()
    ran, failures = 0, 0
    with WorkerLock(settings.folder) as lock:
        heartbeat = None
        try:
            while True:
                asked = next_trial(settings, lock.identity, set())
                if asked is None:
                    return ran
                opened, number, trial_settings, notes = asked
                heartbeat = heartbeat or Heartbeat(opened)
                heartbeat.add(number)
                _say(progress, f"trial {number}: {settings_text(trial_settings)}"
                     + "".join(f" ({note})" for note in notes))
                try:
                    outcome = train_trial(opened, number, trial_settings)
                except BaseException as error:  # Ctrl-C, SIGTERM: the trial is given back before the study stops
                    give_back(opened, number, "stopped by a signal")
                    write_snapshot(opened)
                    raise stopped_study(error, settings, [number]) from None
                finally:
                    heartbeat.running.discard(number)
                _say(progress, told_line(number, outcome, tell(opened, number, outcome)))
                ran += 1
                failures = failures + 1 if outcome.state == "FAIL" else 0
                if failures >= MAX_FAILURES_IN_A_ROW:
                    from champion.agents.config import ConfigError

                    raise ConfigError(f"{failures} trials failed in a row, the last with: "
                                      f"{outcome.attrs.get('error')}; fix the study's settings or space")
        finally:
            if heartbeat is not None:
                heartbeat.close()


def stopped_study(error: BaseException, settings: StudySettings, numbers: list[int]) -> BaseException:
    """What a signal that stopped trials ``numbers`` becomes: one line saying the study stopped and how it goes on
    (a trial's own resume hint would name the trial's folder, which the study trains again itself)."""
    from champion.runners.run_state import TrainingStopped

    if not isinstance(error, (TrainingStopped, KeyboardInterrupt)):
        return error
    how = str(error).split(" at step")[0].split(" during")[0] if isinstance(error, TrainingStopped) else "stopped"
    code = error.exit_code if isinstance(error, TrainingStopped) else 130
    return study_stop(how, code, settings, numbers)


def study_stop(how: str, code: int, settings: StudySettings, numbers: list[int]) -> BaseException:
    """The study's stop error: ``how`` it stopped (``stopped by SIGINT``), the trials given back, how to go on."""
    from champion.runners.run_state import TrainingStopped

    if len(numbers) == 1:
        given = f", and trial {numbers[0]} is given back (its settings train again, under a new number)"
    else:
        given = (f", and trials {', '.join(map(str, numbers))} are given back (their settings train again, under new "
                 "numbers)") if numbers else ""
    return TrainingStopped(f"{how}: the study stopped{given}; go on with: champion tune --resume {settings.folder}",
                           code)


def quiet_retracing_warning() -> None:
    """TensorFlow's Python logger warns, from a process's sixth run on, that each run's new weight-reading
    tf.function "triggered retracing": true and harmless here (one trace per run). Only its errors are shown."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def settings_text(trial_settings: dict[str, Any]) -> str:
    return ", ".join(f"{key.split('.')[-1]}={_short_value(value)}" for key, value in trial_settings.items())


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, flush=True)


STOP_CODES = {130: signal.SIGINT, 143: signal.SIGTERM, -signal.SIGINT: signal.SIGINT,
              -signal.SIGTERM: signal.SIGTERM}
"""A worker process's exit code after a stop by a signal: its own (128 + the signal) or the signal's, when it died
of it before its handlers were in place."""


def run_processes(settings: StudySettings, progress: bool) -> None:
    """``settings.workers`` worker processes on this machine (one runs here when there is one), each asking for
    trials until the study needs no more. The workers run in a session of their own: Ctrl-C and SIGTERM reach them
    once, forwarded from here, and each gives its trial back with a checkpoint; then this process ends the study with
    one line naming the trials given back."""
    if settings.workers == 1:
        run_worker(settings, progress)
        return
    import subprocess

    command = [sys.executable, "-m", "champion.runners.tune.worker", str(settings.folder)]
    if not progress:
        command.append("--quiet")
    earlier = {trial.number for trial in open_study(settings).study.get_trials(deepcopy=False)}
    children = [subprocess.Popen(command, start_new_session=True) for _ in range(settings.workers)]
    with ForwardSignals(children) as forwarded:
        codes = [child.wait() for child in children]
    stop = forwarded.signal_number or next((STOP_CODES[code] for code in codes if code in STOP_CODES), None)
    failed = [code for code in codes if code != 0 and code not in STOP_CODES]
    if stop is None and not failed:
        return
    opened = open_study(settings)
    recover_lost_trials(opened)  # a worker that died of its signal (or was killed) left its trial RUNNING
    write_snapshot(opened)
    if stop is not None:
        given = sorted(trial.number for trial in opened.study.get_trials(deepcopy=False)
                       if trial.number not in earlier and trial.user_attrs.get("lost"))
        raise study_stop(f"stopped by {signal.Signals(stop).name}", 128 + stop, settings, given)
    from champion.errors import ChampionError

    raise ChampionError(f"{len(failed)} of {len(codes)} worker processes ended with an error (exit codes "
                        f"{', '.join(map(str, failed))}); what each said is above. Run the same champion tune "
                        "again to go on with the study")


class ForwardSignals:
    """While in its block (in the main thread), SIGINT and SIGTERM are sent on to the worker processes still running
    (a second Ctrl-C too: it stops them at once, as it stops ``champion train``). ``signal_number``: the first."""

    def __init__(self, children: list[Any]) -> None:
        self.children = children
        self.signal_number: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> ForwardSignals:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self.forward)
        return self

    def forward(self, number: int, frame: Any) -> None:
        self.signal_number = self.signal_number or number
        for child in self.children:
            if child.poll() is None:
                child.send_signal(number)

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
