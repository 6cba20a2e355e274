"""The one module that uses private TensorFlow APIs, only with the TensorFlow versions it was tested on.

The traced-graph cache (``graph_cache``) keeps a trace's FunctionDefs on disk and calls them in a later
process. TensorFlow has no public API for that: registering FunctionDefs in the eager context, calling one
by name, and keeping its unique-id counter from naming two functions alike. Those calls are here and
nowhere else (tests/test_layout.py fails if a private name appears in another file).

``available()`` says whether they may be used: TensorFlow's minor version is one in
``TESTED_TENSORFLOW``. Otherwise (and when ``CHAMPION_XLA_CACHE=off``, see ``graph_cache``) callers
take the public path: the tf.function is traced in every process and called as it is (same numbers,
tests/test_compile_fallback.py), and the XLA cache may then miss for a resumed run.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

import tensorflow as tf

TESTED_TENSORFLOW = ("2.20", "2.21")
"""TensorFlow minor versions whose private APIs below were tested (the suite runs on them)."""


def tensorflow_minor_version() -> str:
    """The installed TensorFlow's "major.minor" ("unknown" if its metadata is missing)."""
    try:
        version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        version = getattr(tf, "__version__", "unknown")
    return ".".join(version.split(".")[:2])


def available() -> bool:
    """Whether the private APIs below may be used: the installed TensorFlow is one they were tested on."""
    return tensorflow_minor_version() in TESTED_TENSORFLOW


def new_library() -> Any:
    """An empty FunctionDefLibrary proto (TensorFlow exports its class only through GraphDef)."""
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
