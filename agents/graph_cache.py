"""Traced graphs kept on disk beside the XLA compile cache, so that a warm run skips Python tracing.

Tracing the graph engine's fused call builds about 1,300 graph ops in Python, at about half a
millisecond each: 0.7-1.2 s on a 2-core CPU, as long as the rest of a warm run's start. What a trace
produces is a library of FunctionDefs. It depends only on champion's code, the versions of TensorFlow
and Keras, and the settings the graph reads (not on the seed or the step budget), so the first run
with a key saves the library and which of its variables each captured input is, and a later run
registers the saved definitions and calls them with its own variables.

A run that traces calls the definitions it saved, not the traced ones (which also carry Python stack
traces), so a run's numbers never depend on where its graph came from, and the traced and the loaded
graph find the same XLA cache entry. An entry is written to a unique temporary file and renamed into
place, and checked against its sha256 when read: one that can't be used is ignored, and the function
is traced as if it were not there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf
from tensorflow.core.framework import function_pb2
from tensorflow.python.eager import context
from tensorflow.python.framework import ops

from agents import xla_cache

MAGIC = b"champion-graph-1\n"
PACKAGES = ("agents", "envs", "runners")
"""champion's packages whose code a traced graph may come from: any change to them is a new key."""


@lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 of champion's Python source (every .py file of PACKAGES, by relative path)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(name: str, settings: dict[str, Any]) -> str:
    """The key of a traced function: its name, the settings it reads, champion's code, TF and Keras."""
    text = json.dumps({"function": name, "settings": settings, "source": source_digest(),
                       "tensorflow": tf.__version__, "keras": keras.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def variables_of(*roots: Any) -> list[tf.Variable]:
    """Every tf.Variable reachable from ``roots`` by TensorFlow's object tracking, in a fixed order
    (Keras variables are unwrapped to the tf.Variable that graphs capture)."""
    found: dict[int, tf.Variable] = {}
    for root in roots:
        for trackable in tf.train.TrackableView(root).descendants():
            variable = trackable.value if isinstance(trackable, keras.Variable) else trackable
            if isinstance(variable, tf.Variable):
                found.setdefault(id(variable), variable)
    return list(found.values())


class CachedGraphFunction:
    """Calls a tf.function with a fixed input signature through FunctionDefs, traced or loaded from disk.

    ``variables`` lists the variables the function may capture, in the same order in every process
    with the same ``key``; a function that captures anything else is still called this way, only not
    saved. ``key`` None (or no cache directory) turns saving and loading off.
    """

    def __init__(self, function: Any, variables: Callable[[], Sequence[tf.Variable]], key: str | None) -> None:
        self.function, self.variables, self.key = function, variables, key
        self.source = ""  # "traced" or "loaded" once prepared
        self._name = b""
        self._inputs: list[tf.Tensor] = []
        self._num_outputs = 0
        self._traced: Any = None  # the concrete function: while it lives, the definitions it registered do

    @property
    def prepared(self) -> bool:
        """Whether the graph is there to call (traced or loaded)."""
        return bool(self.source)

    def prepare(self, allow_loading: bool = True) -> str:
        """Load the graph from the cache, or trace (and save) it; returns "loaded" or "traced"."""
        directory = xla_cache.configured_cache_dir() if self.key else None
        path = directory / f"champion-graph-{self.key}.pb" if directory else None
        if allow_loading and path is not None and self._load(path):
            self.source = "loaded"
        else:
            self._trace(path)
            self.source = "traced"
        return self.source

    def build_count(self) -> int:
        """Times the graph was built: traced, or loaded from the cache."""
        return self.function.experimental_get_tracing_count() + (self.source == "loaded")

    def __call__(self, *arguments: tf.Tensor) -> tf.Tensor:
        """The function's (single) output for ``arguments``."""
        if not self.prepared:
            self.prepare()
        return context.context().call_function(self._name, [*arguments, *self._inputs], self._num_outputs)[0]

    def _trace(self, path: Path | None) -> None:
        xla_cache.align_trace_names()
        concrete = self.function.get_concrete_function()
        library = function_pb2.FunctionDefLibrary()
        library.function.extend(concrete.graph.as_graph_def().library.function)
        library.function.append(concrete.function_def)
        if not _register(library, replace=True):
            raise RuntimeError(f"could not register the traced definitions of {concrete.name}")
        self._traced = concrete
        self._name = concrete.function_def.signature.name.encode()
        self._num_outputs = len(concrete.function_def.signature.output_arg)
        self._inputs = list(concrete.captured_inputs)
        variables = list(self.variables())
        positions = {id(variable.handle): index for index, variable in enumerate(variables)}
        captures = [positions.get(id(handle)) for handle in self._inputs]
        if path is not None and None not in captures:
            header = {"function": self._name.decode(), "outputs": self._num_outputs, "captures": captures,
                      "variables": [_describe(variables[index]) for index in captures]}
            _write(path, json.dumps(header).encode() + b"\n" + library.SerializeToString())

    def _load(self, path: Path) -> bool:
        payload = _read(path)
        if payload is None:
            return False
        try:
            header_text, _, library_bytes = payload.partition(b"\n")
            header = json.loads(header_text)
            library = function_pb2.FunctionDefLibrary.FromString(library_bytes)
            available = list(self.variables())
            variables = [available[index] for index in header["captures"]]
        except (ValueError, KeyError, IndexError, TypeError):
            return False
        if [_describe(variable) for variable in variables] != header.get("variables"):
            return False  # not the variables it was traced with: never call it on these
        if not _register(library, replace=False):
            return False
        _reserve_names(library)
        self._name, self._num_outputs = header["function"].encode(), header["outputs"]
        self._inputs = [variable.handle for variable in variables]
        return True


def _describe(variable: tf.Variable) -> list[Any]:
    """A captured variable as the header records it: dtype and shape."""
    return [variable.dtype.name, variable.shape.as_list()]


def _register(library: function_pb2.FunctionDefLibrary, replace: bool) -> bool:
    """Add the library's definitions to the eager context. ``replace`` first drops the traced ones of the
    same names; otherwise a name already there with another definition means False (and nothing added)."""
    eager = context.context()
    added = []
    for definition in library.function:
        name = definition.signature.name
        if replace:
            eager.remove_function(name)
        try:
            eager.add_function_def(definition)
        except (tf.errors.OpError, ValueError):
            for done in added:
                eager.remove_function(done)
            return False
        added.append(name)
    return True


def _reserve_names(library: function_pb2.FunctionDefLibrary) -> None:
    """Move TensorFlow's unique-id counter past the ids in the loaded names, so that no later trace in
    this process names a function like one of them."""
    ids = [int(found) for definition in library.function
           for found in re.findall(r"_(\d+)$", definition.signature.name)]
    highest = max(ids, default=0)
    while ops.uid() < highest:
        pass


def _write(path: Path, payload: bytes) -> None:
    """Write an entry (magic, sha256, payload) to a temporary file and rename it into place; a failure
    only means no entry."""
    content = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.chmod(temporary, 0o644)  # as TensorFlow's own entries: others sharing the directory may read it
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(temporary)


def _read(path: Path) -> bytes | None:
    """An entry's payload, or None when it is missing, unreadable or fails its checksum."""
    try:
        content = path.read_bytes()
    except OSError:
        return None
    if not content.startswith(MAGIC):
        return None
    digest, _, payload = content[len(MAGIC):].partition(b"\n")
    return payload if hashlib.sha256(payload).hexdigest().encode() == digest else None
