"""The one module that uses private TensorFlow, TensorBoard and Ray APIs, only with the versions it was tested on.

The traced-graph cache (``graph_cache``) keeps a trace's FunctionDefs on disk and calls them in a later
process. TensorFlow has no public API for that: registering FunctionDefs in the eager context, calling one
by name, and keeping its unique-id counter from naming two functions alike. Those calls are here and
nowhere else (tests/test_layout.py fails if a private name appears in another file).

``available()`` says whether they may be used: TensorFlow's minor version is one in
``TESTED_TENSORFLOW``. Otherwise (and when ``CHAMPION_XLA_CACHE=off``, see ``graph_cache``) callers
take the public path: the tf.function is traced in every process and called as it is (same numbers,
tests/test_compile_fallback.py), and the XLA cache may then miss for a resumed run.

TensorBoard's summaries are written the same way: ``open_event_file`` gives TensorBoard's own event writer
and summary protos on a TensorBoard in ``TESTED_TENSORBOARD`` (no TensorFlow op per summary, serialised and
written on a background thread), and TensorFlow's public ``tf.summary`` writer otherwise, which writes the
same summaries (tests/test_compile_fallback.py reads both back and compares them).

Ray's internals serve ``runners/ray/cluster.py`` on a Ray in ``TESTED_RAY``: keeping Ray's pushed messages off
stdout (``replace_ray_printer``), reading the token settings again (``reload_ray_auth_settings``) and asking a
head whether it answers and takes this machine's token (``ask_ray_head``). On another Ray each says so and the
cluster code takes its public path (tests/test_ray_cluster.py runs it).

Importing this module imports neither TensorFlow, TensorBoard nor Ray; each function imports what it uses.
"""

from __future__ import annotations

import importlib.metadata
import re
import time
from typing import Any

import numpy as np

from champion.errors import first_line

TESTED_TENSORFLOW = ("2.20", "2.21")
"""TensorFlow minor versions whose private APIs below were tested (the suite runs on them)."""


def tensorflow_minor_version() -> str:
    """The installed TensorFlow's "major.minor" ("unknown" if its metadata is missing)."""
    try:
        version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        import tensorflow as tf

        version = getattr(tf, "__version__", "unknown")
    return ".".join(version.split(".")[:2])


def available() -> bool:
    """Whether the private APIs below may be used: the installed TensorFlow is one they were tested on."""
    return tensorflow_minor_version() in TESTED_TENSORFLOW


def new_library() -> Any:
    """An empty FunctionDefLibrary proto (TensorFlow exports its class only through GraphDef)."""
    import tensorflow as tf

    return type(tf.compat.v1.GraphDef().library)()


def parse_library(data: bytes) -> Any:
    """A FunctionDefLibrary from its serialised bytes (DecodeError if they are not one)."""
    library = new_library()
    library.ParseFromString(data)
    return library


def align_trace_names(stride: int = 10_000) -> None:
    """Move TensorFlow's unique-id counter to just before the next multiple of ``stride``, so that a trace's
    function names do not depend on what this process traced before (the XLA cache keys on them)."""
    from tensorflow.python.framework import ops

    while ops.uid() % stride != stride - 1:
        pass


def reserve_names(library: Any) -> None:
    """Move the unique-id counter past the ids in the library's function names, so that no later trace in
    this process names a function like a loaded one."""
    from tensorflow.python.framework import ops

    ids = [int(found) for definition in library.function
           for found in re.findall(r"_(\d+)$", definition.signature.name)]
    highest = max(ids, default=0)
    while ops.uid() < highest:
        pass


def replace_definitions(library: Any) -> None:
    """Swap the eager context's definitions of the library's functions for the library's own."""
    from tensorflow.python.eager import context

    eager = context.context()
    for definition in library.function:
        eager.remove_function(definition.signature.name)
        eager.add_function_def(definition)


def add_definitions(library: Any) -> list[str] | None:
    """Add the library's definitions to the eager context; the names added, or None (and nothing added)
    when one of them is defined otherwise already."""
    import tensorflow as tf
    from tensorflow.python.eager import context

    eager = context.context()
    added: list[str] = []
    for definition in library.function:
        try:
            eager.add_function_def(definition)
        except (tf.errors.OpError, ValueError):
            for name in added:
                eager.remove_function(name)
            return None
        added.append(definition.signature.name)
    return added


def remove_definitions(names: list[str]) -> None:
    """Drop definitions that ``add_definitions`` added."""
    from tensorflow.python.eager import context

    for name in names:
        context.context().remove_function(name)


def call_definition(name: bytes, inputs: list[tf.Tensor]) -> tf.Tensor:
    """Call a registered function of one output by name."""
    from tensorflow.python.eager import context

    return context.context().call_function(name, inputs, 1)[0]


def has_definition(name: str) -> bool:
    """Whether the eager context holds a function of this name."""
    from tensorflow.python.eager import context

    return context.context().has_function(name)


def tensorflow_has_started() -> bool:
    """Whether TensorFlow's runtime has started in this process (it reads ``TF_XLA_FLAGS`` when it starts).
    On an untested TensorFlow, where this can't be asked, False."""
    if not available():
        return False
    from tensorflow.python.eager import context

    return bool(context.context()._initialized)


# TensorBoard ---------------------------------------------------------------------------------------------------

TESTED_TENSORBOARD = ("2.20", "2.21")
"""TensorBoard minor versions whose internal event writer and summary protos below were tested."""
IMAGE_PLUGIN = "images"
"""The plugin name that puts a value on TensorBoard's image dashboard (in the event files' format)."""


def installed_minor_version(package: str) -> str:
    """The installed ``package``'s "major.minor" from its metadata ("unknown" if it is missing)."""
    try:
        return ".".join(importlib.metadata.version(package).split(".")[:2])
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tensorboard_minor_version() -> str:
    """The installed TensorBoard's "major.minor" ("unknown" if its metadata is missing)."""
    return installed_minor_version("tensorboard")


def tensorboard_available() -> bool:
    """Whether TensorBoard's internal writer may be used: the installed TensorBoard is one it was tested on."""
    return tensorboard_minor_version() in TESTED_TENSORBOARD


def open_event_file(directory: str, filename_suffix: str = "") -> TensorBoardEventFile | PublicEventFile:
    """A new event file in ``directory`` (its name ending in ``filename_suffix``) that writes TensorBoard's
    summaries: TensorBoard's own writer on a tested TensorBoard, else TensorFlow's public tf.summary writer."""
    if tensorboard_available():
        return TensorBoardEventFile(directory, filename_suffix)
    return PublicEventFile(directory, filename_suffix)


class TensorBoardEventFile:
    """TensorBoard's EventFileWriter with the summaries tf.summary would write (same tensors and plugin
    metadata), built as protos: no TensorFlow op runs per summary, and the events are serialised and written on
    the writer's background thread, off the training loop."""

    def __init__(self, directory: str, filename_suffix: str) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.histogram import summary_v2 as histogram_summary
        from tensorboard.plugins.image import metadata as image_metadata
        from tensorboard.plugins.scalar import metadata as scalar_metadata
        from tensorboard.plugins.text import metadata as text_metadata
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        from tensorboard.util import tensor_util

        self.writer = EventFileWriter(directory, filename_suffix=filename_suffix)
        self.event, self.summary, self.tensor = event_pb2.Event, summary_pb2.Summary, tensor_util.make_tensor_proto
        self.histogram = histogram_summary.histogram_pb
        unnamed = {"display_name": None, "description": None}
        self.scalar_plugin = scalar_metadata.create_summary_metadata(**unnamed)
        self.text_plugin = text_metadata.create_summary_metadata(**unnamed)
        self.image_plugin = image_metadata.create_summary_metadata(**unnamed)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One float32 scalar per tag, all in one event at ``step``."""
        self._write(step, [(tag, self.tensor(np.float32(value)), self.scalar_plugin) for tag, value in values.items()])

    def text(self, step: int, tag: str, text: str) -> None:
        """A text summary (TensorBoard renders it as markdown)."""
        self._write(step, [(tag, self.tensor(text.encode()), self.text_plugin)])

    def image(self, step: int, tag: str, encoded: bytes, width: int, height: int) -> None:
        """An encoded image (PNG or animated GIF) as the image dashboard stores it: [width, height, bytes]."""
        tensor = self.tensor([str(width).encode(), str(height).encode(), encoded])
        self._write(step, [(tag, tensor, self.image_plugin)])

    def histograms(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        """A histogram (30 buckets) of each array, one event per tag."""
        for tag, values in arrays.items():
            self._add(step, self.histogram(tag, np.asarray(values, np.float64).ravel()))

    def hparams(self, hparams: dict[str, bool | int | float | str], trial_id: str, columns: list[Any],
                metrics: list[Any]) -> None:
        """The hparams dashboard's records for this run (at step 0), from the public hparams API: the experiment
        (``columns``, a list of ``api.HParam``, and ``metrics``, of ``api.Metric``), then the session's start."""
        from tensorboard.plugins.hparams import api

        self._add(0, api.hparams_config_pb(hparams=columns, metrics=metrics))
        self._add(0, api.hparams_pb(hparams, trial_id=trial_id))

    def flush(self) -> None:
        """Write what is queued to the file."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self.writer.close()

    def _write(self, step: int, values: list[tuple[str, Any, Any]]) -> None:
        """One event of (tag, tensor proto, plugin metadata) values."""
        self._add(step, self.summary(value=[self.summary.Value(tag=tag, tensor=tensor, metadata=plugin)
                                            for tag, tensor, plugin in values]))

    def _add(self, step: int, summary: Any) -> None:
        self.writer.add_event(self.event(wall_time=time.time(), step=step, summary=summary))


class PublicEventFile:
    """The same summaries through TensorFlow's public API (``tf.summary``, the hparams plugin's public ``api``):
    TensorFlow ops per summary, run on the caller's thread, so it serves an untested TensorBoard only."""

    def __init__(self, directory: str, filename_suffix: str) -> None:
        import tensorflow as tf

        self.writer = tf.summary.create_file_writer(directory, filename_suffix=filename_suffix or None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One float32 scalar per tag, all at ``step``."""
        import tensorflow as tf

        with self.writer.as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, np.float32(value))

    def text(self, step: int, tag: str, text: str) -> None:
        """A text summary (TensorBoard renders it as markdown)."""
        import tensorflow as tf

        with self.writer.as_default(step=step):
            tf.summary.text(tag, text)

    def image(self, step: int, tag: str, encoded: bytes, width: int, height: int) -> None:
        """An encoded image (PNG or animated GIF) as the image dashboard stores it: [width, height, bytes]."""
        import tensorflow as tf

        metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name=IMAGE_PLUGIN))
        with self.writer.as_default(step=step):
            tf.summary.write(tag, tf.constant([str(width).encode(), str(height).encode(), encoded]),
                             metadata=metadata)

    def histograms(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        """A histogram (30 buckets) of each array."""
        import tensorflow as tf

        with self.writer.as_default(step=step):
            for tag, values in arrays.items():
                tf.summary.histogram(tag, np.asarray(values, np.float64).ravel())

    def hparams(self, hparams: dict[str, bool | int | float | str], trial_id: str, columns: list[Any],
                metrics: list[Any]) -> None:
        """The hparams dashboard's records for this run (at step 0): the experiment, then the session's start."""
        from tensorboard.plugins.hparams import api

        with self.writer.as_default():
            api.hparams_config(hparams=columns, metrics=metrics)
            api.hparams(hparams, trial_id=trial_id)

    def flush(self) -> None:
        """Write what is queued to the file."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self.writer.close()


# Ray -----------------------------------------------------------------------------------------------------------

TESTED_RAY = ("2.60",)
"""Ray minor versions whose internals below were tested (``runners/ray/cluster.py`` uses them through here)."""


def ray_minor_version() -> str:
    """The installed Ray's "major.minor" ("unknown" if it is not installed)."""
    return installed_minor_version("ray")


def ray_available() -> bool:
    """Whether Ray's internals below may be used: the installed Ray is one they were tested on."""
    return ray_minor_version() in TESTED_RAY


def replace_ray_printer(printer: Any) -> Any:
    """Have Ray call ``printer(data, ignore_prefix)`` for the messages it pushes to the driver ("(raylet) A worker
    died...", which Ray prints on stdout even with ``log_to_driver=False``); Ray's own printer, to put back with
    this function. On an untested Ray nothing is replaced (None): those lines may then reach stdout."""
    if not ray_available():
        return None
    from ray._private import worker

    previous = getattr(worker, "print_to_stdstream", None)
    if not callable(previous):
        return None
    worker.print_to_stdstream = printer
    return previous


def reload_ray_auth_settings() -> bool:
    """Have Ray read RAY_AUTH_MODE and its token again (it keeps what it read first for the life of the process),
    as Ray does when it turns token mode on itself. False on an untested Ray: a process then keeps the settings
    of its first connection."""
    if not ray_available():
        return False
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    return True


def ask_ray_head(address: str, timeout_s: float) -> dict[str, str]:
    """One request to the Ray head at ``address`` with this process's token settings: {"answer": "ok"}, or
    "token" (it refused the token or its absence) or "error", with a "message". Only on a tested Ray (Ray has no
    public call that asks a head without joining it as a driver): ``{"answer": "untested"}`` otherwise."""
    if not ray_available():
        return {"answer": "untested"}
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=address).internal_kv_get(b"session_name", None, timeout=timeout_s)
        return {"answer": "ok"}
    except AuthenticationError as error:
        return {"answer": "token", "message": first_line(error)}
    except Exception as error:
        return {"answer": "error", "message": first_line(error)}
