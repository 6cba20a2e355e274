"""TensorBoard scalars and evaluations.csv: the one place that knows the tag names.

Events go through ``compat.open_event_file``: on a tested TensorBoard, its own EventFileWriter, which
serialises and writes on a background thread, so that no TensorFlow op runs per summary and logging stays
off the training path; elsewhere TensorFlow's public tf.summary writer. Either way the summaries are the
ones tf.summary.scalar/text/histogram and the hparams API write (same tensors, same plugin metadata), so
TensorBoard and its readers see no difference.
(Named run_logger rather than logging so that it never shadows the standard library.)
"""

from __future__ import annotations

import csv
import io
import math
import os
import stat
from collections import defaultdict
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from champion.agents.compile import compat
from champion.runners.store.atomic_files import atomic_write_text, remove_temporaries
from champion.runners.store.folder_trust import MAX_EVALUATIONS_BYTES, read_bytes
from champion.runners.store.run_metadata import hparam_domains
from champion.runners.store.run_folder import RunFolderError

from champion.runners.engines.base import EpisodeStats
from champion.runners.evaluate import EvalResult

TRAIN_PREFIX = "train/"
ROLLOUT_RETURN = "rollout/episode_return"
ROLLOUT_LENGTH = "rollout/episode_length"
STEPS_PER_SECOND = "perf/steps_per_second"
EVAL_MEAN = "eval/mean_return"
EVAL_STD = "eval/std_return"
EVAL_MIN = "eval/min_return"
EVAL_MAX = "eval/max_return"
EVAL_LENGTH = "eval/mean_length"
BEST_MEAN = "eval/best_mean_return"
CONFIG_TEXT = "config"
CROWN_MEAN = "crown/held_out_mean"
"""One point per crown candidate, at the step its policy comes from."""
CROWN_CHAMPION = "crown/champion_held_out_mean"
CROWN_TEXT = "crown"
CROWN_SUFFIX = ".crown"
BEST_POLICY_GIF = "eval/best_policy"
HPARAMS_METRICS = {BEST_MEAN: "best evaluation return", EVAL_MEAN: "latest evaluation return",
                   CROWN_CHAMPION: "champion's held-out mean"}
"""The scalars TensorBoard's hparams dashboard shows beside each run's hyperparameters (each one's last value),
with the names it shows them under."""
CSV_COLUMNS = ("step", "wall_seconds", "mean_return", "std_return", "min_return", "max_return",
               "mean_length", "best_mean_return", "saved")


class RunLogger:
    """Writes a run's TensorBoard events (``tb/``) and ``evaluations.csv``.

    Training metrics are averaged (over their finite values) and written every ``log_every`` env
    steps, so that logging costs the same whether an update happens every 40 or 2048 steps.
    """

    def __init__(self, run_dir: Path, log_every: int, resume_step: int | None = None) -> None:
        if resume_step is not None:
            truncate_logs(run_dir, resume_step)
        self.writer = compat.open_event_file(str(run_dir / "tb"))
        self.csv_path = run_dir / "evaluations.csv"
        self.log_every = log_every
        self._next_write = ((resume_step or 0) // log_every + 1) * log_every
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_counts: dict[str, int] = defaultdict(int)
        self._last_step, self._last_steps_per_second = 0, 0.0
        self._episodes = EpisodeStats()
        self._pending_updates = 0
        text = csv_text(self.csv_path)
        if not text.strip() or self.csv_path.stat().st_nlink > 1:  # a hard link is copied: rows are appended here
            atomic_write_text(self.csv_path, text if text.strip() else ",".join(CSV_COLUMNS) + "\n")

    def log_config(self, config_yaml: str) -> None:
        """The resolved config as a TensorBoard text summary."""
        self.writer.text(0, CONFIG_TEXT, f"```\n{config_yaml}\n```")

    def log_hparams(self, hparams: dict[str, bool | int | float | str], run_name: str) -> None:
        """The run's hyperparameters for TensorBoard's hparams dashboard (once, when the run starts), and the
        experiment they belong to: as columns, every key a run may record (``run_metadata.hparam_domains``, the
        same in every run: TensorBoard takes one run's experiment as the whole folder's, and a PPO run's keys
        alone would hide an A2C run's), and as metrics ``HPARAMS_METRICS`` only (without an experiment
        TensorBoard shows every scalar tag as a metric)."""
        from tensorboard.plugins.hparams import api

        columns = [api.HParam(name, None if values is None else api.Discrete(values))
                   for name, values in hparam_domains().items()]
        metrics = [api.Metric(tag, display_name=name) for tag, name in HPARAMS_METRICS.items()]
        self.writer.hparams(hparams, trial_id=run_name, columns=columns, metrics=metrics)

    def log_image(self, step: int, tag: str, encoded: bytes, width: int, height: int) -> None:
        """An encoded image (PNG, or an animated GIF, which TensorBoard's browser view plays)."""
        self.writer.image(step, tag, encoded, width, height)
        self.writer.flush()

    def log_histograms(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        """A histogram of each array, under its name as the tag (e.g. weights/..., gradients/...)."""
        self.writer.histograms(step, arrays)

    def log_update(self, step: int, metrics: dict[str, float], episodes: EpisodeStats, steps_per_second: float,
                   updates: int = 1) -> None:
        """Accumulate metrics (averaged over ``updates`` updates) and finished episodes; write averages when due."""
        for name, value in metrics.items():
            if math.isfinite(value):
                self._metric_sums[name] += value * updates
                self._metric_counts[name] += updates
        self._last_step, self._last_steps_per_second = step, steps_per_second
        self._episodes += episodes
        self._pending_updates += updates
        if step >= self._next_write:
            self._write_training(step, steps_per_second)
            self._next_write = (step // self.log_every + 1) * self.log_every

    def _write_training(self, step: int, steps_per_second: float) -> None:
        values = {(name if "/" in name else TRAIN_PREFIX + name): total / self._metric_counts[name]  # e.g. ray/...
                  for name, total in self._metric_sums.items()}
        values[STEPS_PER_SECOND] = steps_per_second
        if self._episodes.count:
            values[ROLLOUT_RETURN] = self._episodes.return_sum / self._episodes.count
            values[ROLLOUT_LENGTH] = self._episodes.length_sum / self._episodes.count
        self._write_scalars(step, values)
        self._metric_sums.clear()
        self._metric_counts.clear()
        self._episodes = EpisodeStats()
        self._pending_updates = 0

    def log_evaluation(self, step: int, wall_seconds: float, result: EvalResult, best_mean_return: float,
                       saved: bool) -> None:
        """One evaluation: TensorBoard scalars, a CSV row, and a flush of both to disk."""
        self._write_scalars(step, {EVAL_MEAN: result.mean_return, EVAL_STD: result.std_return,
                                   EVAL_MIN: result.min_return, EVAL_MAX: result.max_return,
                                   EVAL_LENGTH: result.mean_length, BEST_MEAN: best_mean_return})
        self.writer.flush()
        row = (step, f"{wall_seconds:.3f}", result.mean_return, result.std_return, result.min_return,
               result.max_return, result.mean_length, best_mean_return, int(saved))
        with open(self.csv_path, "a", newline="") as handle:
            csv.writer(handle).writerow(row)
            handle.flush()
            os.fsync(handle.fileno())

    def has_evaluation(self, step: int) -> bool:
        """Whether evaluations.csv has a row for ``step``."""
        return any(row.get("step") == str(step) for row in csv.DictReader(io.StringIO(csv_text(self.csv_path), newline="")))

    def _write_scalars(self, step: int, values: dict[str, float]) -> None:
        self.writer.scalars(step, values)

    def flush(self, step: int, steps_per_second: float) -> None:
        """Write pending averages and push everything to disk (before a checkpoint)."""
        if self._pending_updates:
            self._write_training(step, steps_per_second)
        self.writer.flush()

    def close(self) -> None:
        """Write what is still pending and close the event file."""
        if self._pending_updates:
            self._write_training(self._last_step, self._last_steps_per_second)
        self.writer.flush()
        self.writer.close()


MAX_EVENT_FILE_BYTES = 2**30
"""The largest TensorBoard event file a resume rewrites (a long run's scalars and a few GIFs: tens of MB)."""


def csv_text(path: Path) -> str:
    """The text of a run's evaluations.csv ("" when there is none), read as ``folder_trust.read_bytes`` reads:
    RunFolderError (one line) for a file champion would not have written (too large, not a plain file)."""
    try:
        return read_bytes(path, MAX_EVALUATIONS_BYTES).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path} is not the file champion writes ({error}); move it aside to continue the "
                             "run") from None


def truncate_logs(run_dir: Path, step: int) -> None:
    """Drop what was logged after ``step`` (by a run that died after its last checkpoint).

    The resumed run logs those steps again, so without this TensorBoard would show two values
    per step and evaluations.csv duplicate rows. Both files are rewritten atomically.
    """
    import tensorflow as tf  # only a resume after a crash needs it

    csv_path = run_dir / "evaluations.csv"
    if csv_path.exists():
        rows = list(csv.reader(io.StringIO(csv_text(csv_path), newline="")))
        complete = [row for row in rows[1:] if len(row) == len(CSV_COLUMNS) and row[0].isascii() and row[0].isdigit()
                    and len(row[0]) <= 18]
        kept = [list(CSV_COLUMNS)] + [row for row in complete if int(row[0]) <= step]
        buffer = io.StringIO()
        csv.writer(buffer).writerows(kept)
        atomic_write_text(csv_path, buffer.getvalue())
    remove_temporaries(run_dir / "tb")
    for index, event_file in enumerate(sorted((run_dir / "tb").glob("events.out.tfevents.*"))):
        status = event_file.lstat()
        if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_EVENT_FILE_BYTES:
            raise RunFolderError(f"{event_file} is not an event file champion writes (not a plain file, or over "
                                 f"{MAX_EVENT_FILE_BYTES:,} bytes); move it aside to continue the run")
        records = []
        try:
            for record in tf.data.TFRecordDataset(str(event_file)):
                try:
                    event = tf.compat.v1.Event.FromString(record.numpy())
                except DecodeError:  # not an event: dropped
                    continue
                if event.step <= step:
                    records.append(record.numpy())
        except tf.errors.DataLossError:
            pass  # a record cut short by the crash: everything before it is kept
        temporary = event_file.with_name(f".tmp-rewrite-{index}")  # no "tfevents": TensorBoard must not read it
        with tf.io.TFRecordWriter(str(temporary)) as writer:
            for record in records:
                writer.write(record)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, event_file)


def log_crown(run_dir: Path, held_out_means: dict[int, float], champion_step: int, champion_mean: float,
              table: str) -> None:
    """The crown in TensorBoard (an event file of its own in ``tb/``, so it can be written after the run, without
    TensorFlow ops): ``crown/held_out_mean`` at each candidate's step, the champion's, and the table as text. An
    earlier crown's file goes once this one is written, so TensorBoard shows one crown."""
    earlier = list((run_dir / "tb").glob(f"events.out.tfevents.*{CROWN_SUFFIX}"))
    writer = compat.open_event_file(str(run_dir / "tb"), filename_suffix=CROWN_SUFFIX)
    try:
        for step, mean in sorted(held_out_means.items()):
            writer.scalars(step, {CROWN_MEAN: mean})
        writer.scalars(champion_step, {CROWN_CHAMPION: champion_mean})
        writer.text(champion_step, CROWN_TEXT, table)
    finally:
        writer.close()
    for path in earlier:
        path.unlink(missing_ok=True)
