"""A user's training loop in a resume checkpoint (``champion.BestKeeper.save_state`` / ``restore_state``): the
model's weights and the optimizer's state as a tf.train.Checkpoint, the loop's step and its random generators, in
champion's resume checkpoints (``checkpoints``: verified, the newest intact one found).

Model and optimizer variables are saved as lists, in the order ``model.weights`` and ``optimizer.variables`` give
them: Keras does not expose layers held in plain Python lists to TensorFlow's object tracking, so saving the model
object could miss weights, while its list of variables is the whole model, and rebuilding the same model gives the
same order.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from champion.errors import UsageError, first_line
from champion.runners.store.checkpoints import LoadedCheckpoint, ResumeCheckpoints
from champion.runners.store.folder_trust import is_whole

KEEP_CHECKPOINTS = 2
CHECKPOINT_KIND = "champion.BestKeeper checkpoint"
RNG_KINDS = "a numpy Generator, random.Random, keras.random.SeedGenerator or tf.random.Generator (or a list of them)"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def save(directory: Path, model: Any, optimizer: Any, step: int, rng: Any, identity: dict[str, str]) -> Path:
    """Write a checkpoint of the loop at ``step`` in ``directory`` (the newest ``KEEP_CHECKPOINTS`` stay)."""
    generators = _generators(rng)
    _build(model, optimizer, "save_state")
    state = {"step": step, "rng_kinds": [kind for kind, _ in generators],
             "rng": [_host_state(kind, generator) for kind, generator in generators]}
    return ResumeCheckpoints(directory, keep=KEEP_CHECKPOINTS).save(
        step, _trackables(model, optimizer, generators), state, dict(identity, kind=CHECKPOINT_KIND))


def restore(directory: Path, model: Any, optimizer: Any, rng: Any) -> int | None:
    """Load the newest intact checkpoint of ``directory`` into the loop's objects and return its step; None when
    there is none. CheckpointError when every one is damaged; UsageError when the objects are not the saved kinds
    and shapes."""
    checkpoints = ResumeCheckpoints(directory, keep=KEEP_CHECKPOINTS) if directory.is_dir() else None
    if checkpoints is None or not checkpoints.all():
        return None
    generators = _generators(rng)
    _build(model, optimizer, "restore_state")
    loaded = checkpoints.latest()
    saved_kinds, step = loaded.state.get("rng_kinds"), loaded.state.get("step")
    if not is_whole(step) or loaded.manifest.get("kind") != CHECKPOINT_KIND:
        raise UsageError(f"{loaded.path} was not written by BestKeeper.save_state")
    if saved_kinds != [kind for kind, _ in generators]:
        raise UsageError(f"{loaded.path.name} holds random generators of the kinds {saved_kinds}, restore_state was "
                         f"given {[kind for kind, _ in generators]}: pass the rng you passed to save_state")
    trackables = _trackables(model, optimizer, generators)
    _check_fits(loaded, trackables)
    loaded.restore(trackables)
    for (kind, generator), saved in zip(generators, loaded.state["rng"]):
        _set_host_state(kind, generator, saved)
    return step


def _build(model: Any, optimizer: Any, caller: str) -> None:
    """Make the optimizer's variables exist (Keras creates them at its first step), so that a checkpoint saved
    before it and one after it hold the same list."""
    if not getattr(model, "built", False) or not model.weights:
        raise UsageError(f"the model has no weights yet: build it (call it on a batch, or model.build(shape)) before "
                         f"{caller}")
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


def _trackables(model: Any, optimizer: Any, generators: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    """The TensorFlow variables a checkpoint holds, as lists by part."""
    parts = {"model": list(model.weights)}
    if optimizer is not None:
        parts["optimizer"] = list(optimizer.variables)
    variables = [generator.state for kind, generator in generators if kind in ("keras", "tensorflow")]
    if variables:
        parts["generators"] = variables
    return parts


def _check_fits(loaded: LoadedCheckpoint, trackables: dict[str, list[Any]]) -> None:
    """UsageError (saying where they first differ) unless the checkpoint holds exactly these variables' shapes."""
    expected = {f"{part}/{index}{VALUE_SUFFIX}": [int(size) for size in variable.shape]
                for part, variables in trackables.items() for index, variable in enumerate(variables)}
    found = {key: shape for key, shape in loaded.tensor_shapes.items() if key.endswith(VALUE_SUFFIX)}
    if found != expected:
        differ = sorted(set(found) ^ set(expected)) or sorted(key for key in found if found[key] != expected[key])
        name = differ[0].removesuffix(VALUE_SUFFIX)
        raise UsageError(f"{loaded.path.name} holds another model or optimizer than the ones given ({name}: saved "
                         f"{found.get(differ[0], 'nothing')}, given {expected.get(differ[0], 'nothing')}); build them "
                         "as the loop that saved it did")


def _generators(rng: Any) -> list[tuple[str, Any]]:
    """``rng`` as (kind, generator) pairs; UsageError for anything else."""
    items = [] if rng is None else list(rng) if isinstance(rng, (list, tuple)) else [rng]
    return [(_rng_kind(item), item) for item in items]


def _rng_kind(generator: Any) -> str:
    if isinstance(generator, np.random.Generator):
        return "numpy"
    if isinstance(generator, random.Random):
        return "python"
    import keras
    import tensorflow as tf

    if isinstance(generator, keras.random.SeedGenerator):
        return "keras"
    if isinstance(generator, tf.random.Generator):
        return "tensorflow"
    raise UsageError(f"rng must be {RNG_KINDS}, not a {type(generator).__name__}")


def _host_state(kind: str, generator: Any) -> Any:
    """A generator's state kept as data (the TensorFlow ones are variables of the checkpoint: None here)."""
    if kind == "numpy":
        return generator
    return generator.getstate() if kind == "python" else None


def _set_host_state(kind: str, generator: Any, saved: Any) -> None:
    try:
        if kind == "numpy":
            generator.bit_generator.state = saved.bit_generator.state
        elif kind == "python":
            generator.setstate(saved)
    except (ValueError, TypeError, AttributeError) as error:
        raise UsageError(f"the saved {kind} random state does not fit the generator given ({first_line(error)}); "
                         "pass the rng you passed to save_state") from None
