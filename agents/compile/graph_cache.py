"""Traced graphs kept on disk beside the XLA compile cache, so that a warm run skips Python tracing.

Tracing the graph engine's fused call builds about 1,000 graph ops in Python, as long as the rest of a
warm run's start (docs/architecture-notes.md has the figures). What a trace
produces is a library of FunctionDefs. Given champion's code, the versions of the libraries and the
settings the graph reads (not the seed or the step budget), it is always the same, so the first run
with a key saves the library and which of its variables (by path) each captured input is, and a later
run registers the saved definitions and calls them with its own variables.

A run that traces calls the definitions it saved, not the traced ones (which also carry Python stack
traces), so the traced and the loaded graph find the same XLA cache entry. An entry is written to a unique
temporary file and renamed into place, and checked against its sha256 and its variables' paths, dtypes and
shapes when read: one that can't be used is ignored, and the function is traced as if it were not there.

Registering and calling saved definitions needs private TensorFlow APIs (``compat``). Where they may not be
used (an untested TensorFlow, or ``CHAMPION_XLA_CACHE=off``), the tf.function is traced and called as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import keras
import tensorflow as tf

from champion.agents.compile import compat, xla_cache

MAGIC = b"champion-graph-1\n"
PACKAGES = ("champion.agents", "champion.envs", "champion.runners")
"""champion's packages whose code a traced graph may come from: any change to them is a new key."""


def source_files() -> list[tuple[str, Path]]:
    """Every .py file of PACKAGES, wherever the install put their folders, by package-relative name."""
    files = []
    for package in PACKAGES:
        for folder in importlib.util.find_spec(package).submodule_search_locations:
            files += [(f"{package}/{path.relative_to(folder)}", path) for path in Path(folder).rglob("*.py")]
    return sorted(files)


def source_digest() -> str:
    """sha256 of champion's Python source (``source_files``, by name and content)."""
    digest = hashlib.sha256()
    for name, path in source_files():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


SOURCE_DIGEST = source_digest()
"""The source this process imported (read when this module is, with the rest of champion's modules)."""


def cache_key(name: str, settings: dict[str, Any]) -> str:
    """The key of a traced function: its name, the settings it reads, champion's code, and what else
    shapes a trace (TensorFlow, Keras and gymnasium versions, Keras' float type)."""
    text = json.dumps({"function": name, "settings": settings, "source": SOURCE_DIGEST, "versions": VERSIONS,
                       "floatx": keras.config.floatx()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


VERSIONS = {package: _version(package) for package in ("champion", "tensorflow", "keras", "gymnasium")}
"""Read once: looking them up costs a few milliseconds each time."""


def uses_private_apis() -> bool:
    """Whether saved definitions are registered and called (``compat``): on a tested TensorFlow, unless
    ``CHAMPION_XLA_CACHE=off`` turns the caches off."""
    return compat.available() and not xla_cache.turned_off()


def tracked_variables(root: Any) -> dict[str, tf.Variable]:
    """Every tf.Variable reachable from ``root`` by TensorFlow's object tracking, by its path from the root
    (Keras variables are unwrapped to the tf.Variable that graphs capture)."""
    view = tf.train.TrackableView(root)
    found: dict[str, tf.Variable] = {}
    seen = {id(root)}
    queue: list[tuple[str, Any]] = [("", root)]
    while queue:
        path, trackable = queue.pop(0)
        for name, child in view.children(trackable).items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            child_path = f"{path}/{name}" if path else name
            variable = child.value if isinstance(child, keras.Variable) else child
            if isinstance(variable, tf.Variable):
                found[child_path] = variable
            else:
                queue.append((child_path, child))
    return found


class CachedGraphFunction:
    """Calls a tf.function with a fixed input signature through FunctionDefs, traced or loaded from disk.

    ``list_variables`` gives the variables the function may capture, by a path that names the same
    variable in every process; a function that captures anything else (or creates variables while it
    is traced) is still called this way, only not saved. ``key`` None or no cache directory turn saving
    and loading off. Where ``uses_private_apis`` is False the tf.function is traced and called as it is.
    """

    def __init__(self, function: tf.types.experimental.PolymorphicFunction,
                 list_variables: Callable[[], dict[str, tf.Variable]], key: str | None) -> None:
        self.function, self.list_variables, self.key = function, list_variables, key
        self.source = ""  # "traced" or "loaded" once prepared
        self._name = b""
        self._inputs: list[tf.Tensor] = []
        self._traced: Any = None  # the concrete function: while it lives, the definitions it registered do
        self._loaded_names: list[str] = []
        self._plain = False  # called as the tf.function it is (public APIs only)

    @property
    def prepared(self) -> bool:
        """Whether the graph is there to call (traced or loaded)."""
        return bool(self.source)

    def prepare(self) -> str:
        """Load the graph from the cache, or trace (and save) it; returns "loaded" or "traced"."""
        if not uses_private_apis():
            self.function.get_concrete_function()
            self._plain, self.source = True, "traced"
            return self.source
        directory = xla_cache.configured_cache_dir() if self.key else None
        path = directory / f"champion-graph-{self.key}.pb" if directory else None
        loaded = self._load(path) if path is not None else "unusable"
        if loaded == "loaded":
            self.source = "loaded"
        else:  # a clash with this process' own definitions says nothing against the entry: keep it
            self._trace(path if loaded == "unusable" else None)
            self.source = "traced"
        return self.source

    def build_count(self) -> int:
        """Times the graph was built: traced, or loaded from the cache."""
        return self.function.experimental_get_tracing_count() + (self.source == "loaded")

    def __call__(self, *arguments: tf.Tensor) -> tf.Tensor:
        """The function's output (it has one) for ``arguments``."""
        if not self.prepared:
            self.prepare()
        if self._plain:
            return self.function(*arguments)
        return compat.call_definition(self._name, [*arguments, *self._inputs])

    def close(self) -> None:
        """Drop the definitions this object loaded (traced ones go with the traced function)."""
        if self._loaded_names:
            compat.remove_definitions(self._loaded_names)
            self._loaded_names = []

    def _trace(self, path: Path | None) -> None:
        before = self.list_variables()
        compat.align_trace_names()
        concrete = self.function.get_concrete_function()
        if len(concrete.function_def.signature.output_arg) != 1:
            raise ValueError(f"{concrete.name} must return one tensor")
        library = compat.new_library()
        library.function.extend(concrete.graph.as_graph_def().library.function)
        library.function.append(concrete.function_def)
        compat.replace_definitions(library)
        self._traced, self._name = concrete, concrete.function_def.signature.name.encode()
        self._inputs = list(concrete.captured_inputs)
        names = {id(variable.handle): name for name, variable in before.items()}
        captures = [names.get(id(handle)) for handle in self._inputs]
        if path is not None and None not in captures and self.list_variables().keys() == before.keys() \
                and source_digest() == SOURCE_DIGEST:  # not when the code on disk has changed since import
            header = {"function": self._name.decode(),
                      "captures": [[name, *_describe(before[name])] for name in captures]}
            _write(path, json.dumps(header).encode() + b"\n" + library.SerializeToString())

    def _load(self, path: Path) -> str:
        """"loaded", "clash" (a name of this process' own, defined otherwise) or "unusable" (missing,
        damaged, or traced with other variables)."""
        payload = _read(path)
        if payload is None:
            return "unusable"
        try:
            header_text, _, library_bytes = payload.partition(b"\n")
            header = json.loads(header_text)
            library = compat.parse_library(library_bytes)
            available = self.list_variables()
            variables = [available[name] for name, *_ in header["captures"]]
            if [[name, *_describe(variable)] for (name, *_), variable in zip(header["captures"], variables)] \
                    != header["captures"]:
                return "unusable"  # not the variables it was traced with: never call it on these
            name = header["function"].encode()
        except Exception:  # noqa: BLE001 - whatever is wrong with an entry, it is only not used
            return "unusable"
        compat.reserve_names(library)
        added = compat.add_definitions(library)
        if added is None:
            return "clash"
        self._name, self._inputs, self._loaded_names = name, [variable.handle for variable in variables], added
        return "loaded"


def _describe(variable: tf.Variable) -> list[Any]:
    """A captured variable's dtype and shape, as the header records them."""
    return [variable.dtype.name, variable.shape.as_list()]


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
        os.chmod(temporary, 0o666 & ~_umask())  # as TensorFlow's own entries (mkstemp makes them private)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(temporary)


def _umask() -> int:
    """The process' umask, read from /proc (setting it to read it would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


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
