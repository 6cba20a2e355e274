"""A run's TensorBoard events read back with TensorFlow's public API, the way TensorBoard's loader reads a folder.

TensorBoard reads the files of a folder whose names hold "tfevents", in name order, each from its start; with
the file version champion's writers record ("brain.Event:2") it keeps every value, a repeated step included.
Here each summary value comes back with its step, its tensor as numpy, and the plugin that shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf


class Point(NamedTuple):
    """One summary value as TensorBoard receives it."""

    step: int
    value: np.ndarray
    plugin: str
    """The dashboard that shows it (plugin name in the metadata): scalars, text, images, histograms, hparams."""
    content: bytes
    """The plugin's own metadata (hparams: the session's hyperparameters)."""
    wall_time: float


def event_files(folder: Path) -> list[Path]:
    """The files TensorBoard reads in ``folder``, in the order it reads them."""
    return sorted(path for path in Path(folder).iterdir() if "tfevents" in path.name and path.is_file())


def summaries(folder: Path) -> dict[str, list[Point]]:
    """tag -> its values in the order TensorBoard reads them, each with the tag's metadata: the first one
    written, which is the one TensorBoard keeps (a writer may send it with the first value only)."""
    found: dict[str, list[Point]] = {}
    metadata: dict[str, tuple[str, bytes]] = {}
    for path in event_files(folder):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag not in metadata and value.metadata.plugin_data.plugin_name:
                    metadata[value.tag] = (value.metadata.plugin_data.plugin_name, value.metadata.plugin_data.content)
                plugin, content = metadata.get(value.tag, ("", b""))
                found.setdefault(value.tag, []).append(
                    Point(event.step, tf.make_ndarray(value.tensor), plugin, content, event.wall_time))
    return found


def scalar_values(folder: Path, tag: str) -> dict[int, float]:
    """step -> value of a scalar tag."""
    return {point.step: float(point.value) for point in summaries(folder).get(tag, [])}


def hparams_plugin_data(content: bytes):
    """The hparams dashboard's record from a value's plugin content (its session-start info: the hyperparameters
    and the trial's group). The message class is the one protobuf's public descriptor pool holds under the
    record's name in the event-file format, registered when the public hparams API is imported."""
    from google.protobuf import descriptor_pool, message_factory
    from tensorboard.plugins.hparams import api  # noqa: F401 - registers the hparams records' descriptors

    descriptor = descriptor_pool.Default().FindMessageTypeByName("tensorboard.hparams.HParamsPluginData")
    return message_factory.GetMessageClass(descriptor).FromString(content)
