"""What carries a run across a stop: the loop's counters, stop requests (signals), why a run stopped (and
which errors count as a failed write in the run folder), and which config a resume may run with."""

from __future__ import annotations

import dataclasses
import errno
import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml
from rich.console import Console

from champion.errors import ChampionError
from champion.agents.config import ConfigError, TrainConfig, linear_schedules, validate
from champion.runners.store.best_store import list_entries
from champion.runners.configure import apply_overrides, load_run_config, valid_keys, validate_recorded
from champion.runners.store.checkpoints import LoadedCheckpoint, newest_good_step
from champion.runners.store.folder_trust import read_record, read_yaml_file

# What --resume may change: how long and how often, never what is being learned.
RESUMABLE_KEYS = ("total_steps", "eval_every", "checkpoint_every", "checkpoint_keep", "log_every",
                  "max_nonfinite_updates", "results_dir", "run_name", "media", "histogram_every",
                  # where and how the Ray engine runs, not what it computes (a new layout restarts the episodes)
                  "ray.workers", "ray.address", "ray.num_cpus", "ray.worker_cpus",
                  "ray.eval_workers", "ray.fragment_timeout_s", "ray.eval_timeout_s", "ray.eval_stall_s",
                  "ray.max_worker_restarts",
                  "ray.restart_window_s",
                  # which saved policy is crowned, not what is learned
                  "crown.at_end", "crown.candidates", "crown.episodes", "crown.seed", "crown.workers", "crown.race",
                  "crown.tolerance", "crown.time_share", "crown.min_seconds", "crown.seconds",
                  # when to stop early, which is how long a run goes
                  "stop.at_return", "stop.after_evaluations_without_best")


@dataclass
class LoopState:
    """Counters of the training loop that a checkpoint carries over."""

    step: int = 0
    nonfinite_streak: int = 0
    skipped_steps: int = 0
    wall_seconds: float = 0.0
    evaluation_in_flight: int = -1
    """The step of an evaluation still running when the checkpoint was written (-1: none): a resume from that
    checkpoint plays it again, unless evaluations.csv shows it was offered before the run stopped."""
    stopped_early: str = ""
    """Why the run ended before its budget (a stop rule's or callback's reason), "" if it did not."""


TEXT_FIELDS = ("stopped_early",)
"""LoopState's fields that are text; the others are numbers."""
MAX_REASON_CHARS = 1000
"""The longest stop reason kept (a callback's text is cut there)."""


class TrainingStopped(ChampionError, RuntimeError):
    """A session ended before it completed (a signal, a diverged run, lost workers); the message says why and
    how to go on."""

    label = ""  # the message says it: "error: ..." or "stopped by SIGINT ..."

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrainingInterrupted(TrainingStopped):
    """SIGINT or SIGTERM arrived; a checkpoint was written first."""

    def __init__(self, signal_number: int, step: int, run_dir: Path) -> None:
        name = signal.Signals(signal_number).name
        checkpointed = has_checkpoint(run_dir)
        saved = " with a checkpoint saved" if checkpointed else ""
        super().__init__(f"stopped by {name} at step {step:,}{saved}; {resume_hint(run_dir, checkpointed)}",
                         exit_code=128 + signal_number)
        self.signal_number = signal_number


class CrownInterrupted(TrainingStopped):
    """SIGTERM arrived during the end-of-run crown: the run is finished and its store as it was (a Ctrl-C there is
    a KeyboardInterrupt, as Python has it); only the crown was cut."""

    def __init__(self, signal_number: int, run_dir: Path, crowned: bool = False) -> None:
        name = signal.Signals(signal_number).name
        super().__init__(f"stopped by {name} during the crown: the run is finished; {crown_later(run_dir, crowned)}",
                         exit_code=128 + signal_number)
        self.signal_number = signal_number


def crown_later(run_dir: Path, crowned: bool = False) -> str:
    """What stands after a crown was cut short, and how to crown the run later (``crowned``: its record was
    written before the cut)."""
    if crowned:
        return f"the crown it had written stands; judge again with: champion crown {run_dir}"
    return f"the training-time best stands; crown later with: champion crown {run_dir}"


class TrainingDiverged(TrainingStopped):
    """Too many consecutive updates had a non-finite loss or gradient."""

    def __init__(self, streak: int, step: int, run_dir: Path, best: float, best_step: int | None) -> None:
        if best_step is not None:
            kept = f"the best policy (mean return {best:.2f} at step {best_step}) is untouched in {run_dir / 'best'}"
        else:
            kept = best_policy_note(run_dir)
        super().__init__(
            f"{streak} updates in a row had a non-finite loss or gradient (the last at step {step:,}), so training "
            f"stopped; {kept}. Lower the learning rate or check the environment for NaN or infinite rewards and "
            "observations")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run folder holds a resume checkpoint that verifies (read-only)."""
    return newest_good_step(Path(run_dir) / "checkpoints") is not None


def resume_hint(run_dir: Path, checkpointed: bool | None = None) -> str:
    """How to go on after a stop: resume when a good checkpoint exists (``checkpointed``, looked up when None);
    otherwise there is nothing to resume."""
    if has_checkpoint(run_dir) if checkpointed is None else checkpointed:
        address = _recorded_ray_address(run_dir)
        return f"continue with: champion train --resume {run_dir}" + (f" --ray-address {address}" if address else "")
    return (f"start a new run: no checkpoint was written yet, so there is nothing to resume (delete {run_dir} "
            "first to use its name again)")


def _recorded_ray_address(run_dir: Path) -> str | None:
    """The Ray cluster the run's config.yaml names (a resume joins it only when named again), if any."""
    try:
        ray = read_yaml_file(Path(run_dir) / "config.yaml").get("ray") or {}
        return str(ray["address"]) if isinstance(ray, dict) and ray.get("address") else None
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None


def best_policy_note(run_dir: Path) -> str:
    """What a stop left of the best policy: the one saved before it, or none yet."""
    if list_entries(Path(run_dir) / "best"):
        return f"the best policy saved before it is unchanged in {Path(run_dir) / 'best'}"
    return "no best policy had been saved yet"


class _StopSignals:
    """While in its block (in the main thread: only it may set handlers), SIGINT and SIGTERM go to ``_handle``;
    the handlers from before come back after. ``signal_number`` is the first that arrived."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: FrameType | None) -> None:
        raise NotImplementedError

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class StopRequests(_StopSignals):
    """Turns the first SIGINT/SIGTERM into a request that the loop honours after the current update.

    A second Ctrl-C stops at once (KeyboardInterrupt), without a checkpoint.
    """

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal_number is not None:
            raise KeyboardInterrupt
        self.signal_number = number
        self.console.print(f"{signal.Signals(number).name} received: stopping after this update with a checkpoint "
                           "(Ctrl-C again stops at once, without one)")


class CrownSignals(_StopSignals):
    """While the end-of-run crown plays, SIGINT and SIGTERM stop it at once as a KeyboardInterrupt (what the
    crown's players and any other code already stop on), so that every context manager unwinds: the run
    folder's lock is released and the store stays as it was. ``signal_number`` is the first that arrived."""

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal_number is None:
            self.signal_number = number
        raise KeyboardInterrupt


def check_checkpoint_fits(loaded: LoadedCheckpoint, config: TrainConfig, spec: Any) -> None:
    """Refuse (ConfigError) a checkpoint made for another environment or network."""
    network, expected = loaded.manifest.get("network"), spec.to_dict()
    layout = ("torso_weights", "torso_widths")
    if (spec.user_torso and loaded.manifest.get("env_id") == config.env_id and isinstance(network, dict)
            and network != expected and {key: value for key, value in network.items() if key not in layout}
            == {key: value for key, value in expected.items() if key not in layout}):
        raise ConfigError(f"network.torso {spec.torso} now builds other weights than checkpoint {loaded.path} holds "
                          f"({len(spec.torso_weights)} against {len(network.get('torso_weights') or ())}, or other "
                          "shapes): the function changed since the run started; put it back as it was to resume")
    if loaded.manifest.get("env_id") != config.env_id or network != expected:
        raise ConfigError(f"checkpoint {loaded.path} was made for {loaded.manifest.get('env_id')} with network "
                          f"{network}, but this run is {config.env_id} with {expected}; refusing to load it")


def resumed_config(run_dir: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The run's own config with overrides that only change how long or how often; others are refused."""
    config_path = Path(run_dir) / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml); give the folder that champion train created")
    original = load_run_config(run_dir)
    if original.schedule_steps is None:  # a run from before schedule_steps: its schedules ran over its budget
        original = dataclasses.replace(original, schedule_steps=original.total_steps)
    if original.ray.address is not None and "ray.address" not in overrides:
        raise ConfigError(f"{Path(run_dir) / 'config.yaml'} records ray.address={original.ray.address}; a resume "
                          "joins only a Ray cluster you name (a run folder from anyone could name any): add "
                          f"--ray-address {original.ray.address} to join it, or --set ray.address=null for a Ray "
                          "of the run's own")
    changed = apply_overrides(original, overrides)
    for key in valid_keys(original):
        before, after = _lookup(original, key), _lookup(changed, key)
        if before != after and key not in RESUMABLE_KEYS:
            raise ConfigError(f"--resume cannot change {key} (the run has {before!r}, you asked for {after!r}): "
                              "that would be a different problem; start a new run instead")
    if changed.run_name != original.run_name:
        validate(changed)
    else:
        validate_recorded(changed)
    return changed


def check_resumable(run_dir: Path, config: TrainConfig) -> None:
    """Refuse (ConfigError) to resume a finished run, before anything in it changes: one whose newest checkpoint
    has reached the budget and whose summary.json says it ended there. A run stopped after its last checkpoint
    but before its summary (a crash at the very end) is resumed, which finishes it."""
    step = newest_good_step(Path(run_dir) / "checkpoints")
    # a run's own budget, rounded up to whole rollouts, may end a little past it; a budget given now may not
    limit = config.rounded_total_steps if config.total_steps == _recorded_total_steps(run_dir) else config.total_steps
    if step is not None and step > limit:
        raise ConfigError(f"the run in {run_dir} is at step {step:,} already, past --total-steps "
                          f"{config.total_steps:,}; give at least {step:,} (it cannot go back)")
    if step is not None and step >= config.total_steps and _summary_steps(Path(run_dir)) >= step:
        linear = linear_schedules(config)
        if linear and step >= (config.schedule_steps or config.total_steps):
            raise ConfigError(f"the run in {run_dir} is already at step {step:,} of {config.total_steps:,}, where its "
                              f"linear {linear[0]} reaches 0; to train longer start a new run with a larger "
                              "--total-steps")
        example = config.schedule_steps if linear else 2 * config.total_steps  # a linear run stops at its schedule
        raise ConfigError(f"the run in {run_dir} is already at step {step:,} of {config.total_steps:,}; pass a "
                          f"larger --total-steps to train longer (e.g. --total-steps {example})")


def _recorded_total_steps(run_dir: Path) -> int | None:
    """The total_steps in the run's config.yaml (None when it cannot be read, is not a mapping or has none)."""
    try:
        data = read_yaml_file(Path(run_dir) / "config.yaml")
        steps = data.get("total_steps") if isinstance(data, dict) else None
        return int(steps) if isinstance(steps, (int, float, str)) and not isinstance(steps, bool) else None
    except (OSError, yaml.YAMLError, ValueError, OverflowError):
        return None


def _summary_steps(run_dir: Path) -> int:
    """The env steps summary.json records (-1 when it is missing or unreadable)."""
    try:
        return int(read_record(run_dir / "summary.json")["env_steps"])
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return -1


def _lookup(config: TrainConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


CHECKPOINT_WRITE_OPS = ("[Op:SaveV2]", "[Op:MergeV2Checkpoints]")
"""TensorFlow's ops that write a checkpoint: their errors are write failures wherever their message points."""
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)
"""What a failed write says: a full, over-quota or read-only disk, a file too large, no permission, an I/O error."""
WRITE_MESSAGES = ("No space left", "Disk quota", "File too large", "Read-only file system", "Permission denied",
                  "Input/output error")


def is_write_failure(error: Exception, run_dir: Path) -> bool:
    """A failed write in the run folder: an OS error of a writing kind on a file in it (or naming no file),
    or TensorFlow failing to write there (its checkpoint writer, or an event file whose path it names);
    not an env's error, nor a compiler's."""
    if isinstance(error, OSError):
        names = [name for name in (error.filename, error.filename2) if name is not None]
        return error.errno in WRITE_ERRNOS and (not names or any(_inside(str(name), run_dir) for name in names))
    message = getattr(error, "message", "")
    if any(marker in message for marker in CHECKPOINT_WRITE_OPS):
        return True
    # "{{function_node ...}} results/.../tb/events...; No space left on device": the path before the reason
    path, _, reason = re.sub(r"^\{\{[^}]*\}\}\s*", "", message).partition(";")
    return any(text in reason for text in WRITE_MESSAGES) and _inside(path.strip(), run_dir)


def _inside(path: str, folder: Path) -> bool:
    """Whether ``path`` (absolute, or relative to the working directory) lies in ``folder``."""
    return bool(path) and Path(path).resolve().is_relative_to(folder.resolve())


def write_failure(error: Exception, run_dir: Path) -> TrainingStopped:
    """A failed write (disk full, file too large, permissions) as one line that says what is safe."""
    if not isinstance(error, OSError):  # TensorFlow's "{{function_node ...}} /path/...; No space left on device [Op:SaveV2]"
        reason = re.sub(r"\s*\[Op:\w+\]\s*$", "", error.message.split(";")[-1])
    else:
        reason = error.strerror or str(error)
    return TrainingStopped(f"error: a write in {run_dir} failed ({reason.strip()}); {best_policy_note(run_dir)}. "
                           f"Free space or fix the folder, then {resume_hint(run_dir)}")
