"""TensorBoard scalars and evaluations.csv: the one place that knows the tag names.

(Named run_logger rather than logging so that it never shadows the standard library.)
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import tensorflow as tf

from runners.evaluate import EvalResult

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
CSV_COLUMNS = ("step", "wall_seconds", "mean_return", "std_return", "min_return", "max_return",
               "mean_length", "best_mean_return", "saved")


class RunLogger:
    """Writes a run's TensorBoard events (``tb/``) and ``evaluations.csv``.

    Training metrics are averaged and written every ``log_every`` env steps, so that logging
    costs the same whether an update happens every 40 or every 2048 steps.
    """

    def __init__(self, run_dir: Path, log_every: int) -> None:
        self.writer = tf.summary.create_file_writer(str(run_dir / "tb"))
        self.csv_path = run_dir / "evaluations.csv"
        self.log_every = log_every
        self._next_write = log_every
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_count = 0
        self._returns: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        if not self.csv_path.exists():
            with open(self.csv_path, "w", newline="") as handle:
                csv.writer(handle).writerow(CSV_COLUMNS)

    def log_config(self, config_yaml: str) -> None:
        """The resolved config as a TensorBoard text summary."""
        with self.writer.as_default():
            tf.summary.text(CONFIG_TEXT, f"```\n{config_yaml}\n```", step=0)

    def log_update(self, step: int, metrics: dict[str, float], episode_returns: np.ndarray,
                   episode_lengths: np.ndarray, steps_per_second: float) -> None:
        """Accumulate one update's metrics and finished episodes; write averages when due."""
        for name, value in metrics.items():
            self._metric_sums[name] += value
        self._metric_count += 1
        self._returns.append(episode_returns)
        self._lengths.append(episode_lengths)
        if step >= self._next_write:
            self._write_training(step, steps_per_second)
            self._next_write = (step // self.log_every + 1) * self.log_every

    def _write_training(self, step: int, steps_per_second: float) -> None:
        returns, lengths = np.concatenate(self._returns), np.concatenate(self._lengths)
        with self.writer.as_default(step=step):
            for name, total in self._metric_sums.items():
                tf.summary.scalar(TRAIN_PREFIX + name, total / self._metric_count)
            tf.summary.scalar(STEPS_PER_SECOND, steps_per_second)
            if returns.size:
                tf.summary.scalar(ROLLOUT_RETURN, float(returns.mean()))
                tf.summary.scalar(ROLLOUT_LENGTH, float(lengths.mean()))
        self._metric_sums.clear()
        self._metric_count = 0
        self._returns, self._lengths = [], []

    def log_evaluation(self, step: int, wall_seconds: float, result: EvalResult, best_mean_return: float,
                       saved: bool) -> None:
        """One evaluation: TensorBoard scalars, a CSV row, and a flush of both to disk."""
        with self.writer.as_default(step=step):
            tf.summary.scalar(EVAL_MEAN, result.mean_return)
            tf.summary.scalar(EVAL_STD, result.std_return)
            tf.summary.scalar(EVAL_MIN, result.min_return)
            tf.summary.scalar(EVAL_MAX, result.max_return)
            tf.summary.scalar(EVAL_LENGTH, result.mean_length)
            tf.summary.scalar(BEST_MEAN, best_mean_return)
        self.writer.flush()
        row = (step, f"{wall_seconds:.3f}", result.mean_return, result.std_return, result.min_return,
               result.max_return, result.mean_length, best_mean_return, int(saved))
        with open(self.csv_path, "a", newline="") as handle:
            csv.writer(handle).writerow(row)
            handle.flush()
            os.fsync(handle.fileno())

    def close(self, step: int, steps_per_second: float) -> None:
        """Write what is still pending and close the event file."""
        if self._metric_count:
            self._write_training(step, steps_per_second)
        self.writer.flush()
        self.writer.close()
