"""A user's training loop in a resume checkpoint (``champion.BestKeeper.save_state`` / ``restore_state``): the
model's weights and random state and the optimizer's state as a tf.train.Checkpoint, the loop's step, its random
generators and the keeper's standing at that step, in champion's resume checkpoints (``checkpoints``: verified, the
newest intact one found).

Model and optimizer variables are saved as lists, in the order ``model.weights``, ``model.variables`` and
``optimizer.variables`` give them: Keras does not expose layers held in plain Python lists to TensorFlow's object
tracking, so saving the model object could miss weights, while its list of variables is the whole model, and
rebuilding the same model gives the same order. ``model.weights`` lacks the model's random state: each ``Dropout``
(any layer drawing random numbers) has a ``keras.random.SeedGenerator`` whose state variable only
``model.variables`` lists, saved as the part ``model_state``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from champion.errors import UsageError, first_line
from champion.runners.store.atomic_files import warn
from champion.runners.store.checkpoints import LoadedCheckpoint, ResumeCheckpoints
from champion.runners.store.folder_trust import BEST_ENTRY_NAME, is_number, is_whole

KEEP_CHECKPOINTS = 2
CHECKPOINT_KIND = "champion.BestKeeper checkpoint"
RNG_KINDS = "a numpy Generator, random.Random, keras.random.SeedGenerator or tf.random.Generator (or a list of them)"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


Standing = list[tuple[str, int, float]]
"""The models a keeper held at a step, best first: (entry name, step, value) each."""


@dataclass(frozen=True)
class RestoredLoop:
    """What ``restore`` found: the checkpoint's step, and the keeper's standing at that step (None in a checkpoint
    written before it was recorded)."""

    step: int
    standing: Standing | None


def save(directory: Path, model: Any, optimizer: Any, step: int, rng: Any, identity: dict[str, str],
         standing: Standing) -> Path:
    """Write a checkpoint of the loop at ``step`` in ``directory``, with the keeper's ``standing`` then (the newest
    ``KEEP_CHECKPOINTS`` stay)."""
    generators = _generators(rng)
    _build(model, optimizer, "save_state")
    trackables = _trackables(model, optimizer, generators, with_model_state=True)
    state = {"step": step, "rng_kinds": [kind for kind, _ in generators],
             "rng": [_host_state(kind, generator) for kind, generator in generators],
             "model_state": len(trackables.get("model_state", [])),
             "standing": [[name, kept_step, value] for name, kept_step, value in standing]}
    return ResumeCheckpoints(directory, keep=KEEP_CHECKPOINTS).save(step, trackables, state,
                                                                    dict(identity, kind=CHECKPOINT_KIND))


def restore(directory: Path, model: Any, optimizer: Any, rng: Any) -> RestoredLoop | None:
    """Load the newest intact checkpoint of ``directory`` into the loop's objects and return its step and standing;
    None when there is none. CheckpointError when every one is damaged; UsageError when the objects are not the
    saved kinds and shapes.

    A checkpoint written before the model's random state was saved (no ``model_state`` in its state) is restored
    without it, with a warning when the model has any: the weights, optimizer and generators are exact, the model's
    Dropout masks from then on are not those of a loop never stopped."""
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
    with_model_state = "model_state" in loaded.state
    trackables = _trackables(model, optimizer, generators, with_model_state)
    if not with_model_state and _model_state(model):
        warn(f"{loaded.path.name} was written before champion saved a model's random state (its Dropout layers' "
             "seed generators): resuming without it, so the loop's random masks will differ from an uninterrupted "
             "run's")
    _check_fits(loaded, trackables)
    loaded.restore(trackables)
    for (kind, generator), saved in zip(generators, loaded.state["rng"]):
        _set_host_state(kind, generator, saved)
    return RestoredLoop(step, _standing(loaded))


def _standing(loaded: LoadedCheckpoint) -> Standing | None:
    """The checkpoint's recorded standing, checked to be what ``save`` writes (UsageError otherwise)."""
    standing = loaded.state.get("standing")
    if standing is None:
        return None
    if not isinstance(standing, list) or not all(
            isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
            and BEST_ENTRY_NAME.fullmatch(item[0]) and is_whole(item[1]) and is_number(item[2]) for item in standing):
        raise UsageError(f"{loaded.path} was not written by BestKeeper.save_state (its standing is not a list of "
                         "kept models)")
    return [(name, step, float(value)) for name, step, value in standing]


def _build(model: Any, optimizer: Any, caller: str) -> None:
    """Make the optimizer's variables exist (Keras creates them at its first step), so that a checkpoint saved
    before it and one after it hold the same list."""
    if not getattr(model, "built", False) or not model.weights:
        raise UsageError(f"the model has no weights yet: build it (call it on a batch, or model.build(shape)) before "
                         f"{caller}")
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


def _trackables(model: Any, optimizer: Any, generators: list[tuple[str, Any]],
                with_model_state: bool) -> dict[str, list[Any]]:
    """The TensorFlow variables a checkpoint holds, as lists by part (the model's random state if
    ``with_model_state``)."""
    parts = {"model": list(model.weights)}
    state = _model_state(model) if with_model_state else []
    if state:
        parts["model_state"] = state
    if optimizer is not None:
        parts["optimizer"] = list(optimizer.variables)
    variables = [generator.state for kind, generator in generators if kind in ("keras", "tensorflow")]
    if variables:
        parts["generators"] = variables
    return parts


def _model_state(model: Any) -> list[Any]:
    """The model's variables that are not weights: the seed generators' states of its Dropout (and other random)
    layers, in ``model.variables`` order."""
    weights = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


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
