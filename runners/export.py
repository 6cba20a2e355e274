"""Export the best policy of a run as a standalone SavedModel, TFLite file or Keras model, with a README and metadata.

The export needs only TensorFlow to load: observation normalisation is inside the graph, and the
deterministic action is exactly what ``champion replay`` sends to the env (the argmax of the
logits; the Gaussian mean clipped to the action bounds); the Keras export (``policy.keras``, and its weights
alone in ``policy.weights.h5``) is made of built-in Keras layers only (``champion.agents.keras_policy``). It is
written under a temporary name in the destination's folder, checked against replay's actions, and only then
renamed into place. What a killed export left there is cleaned up or finished by the next export into that folder
(``recover_leftovers``).

TensorFlow is imported inside the functions that need it, so that the CLI can name ExportError
without loading TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from champion.errors import ChampionError, first_line
from champion.runners.store.atomic_files import TEMP_PREFIX, atomic_write_text, fsync_directory, process_is_alive
from champion.runners.faults import write_point
from champion.runners.store.runs import choose_run

if TYPE_CHECKING:
    import tensorflow as tf

    from champion.agents.networks import ActorCritic
    from champion.agents.numpy_policy import NumpyPolicy

FORMATS = ("saved_model", "tflite", "keras")
FORMAT_HELP = ("SavedModel (acting + distribution signatures), TFLite (acting only) or Keras (policy.keras and "
               "policy.weights.h5 of built-in layers: the action, the distribution and the value).")
"""``champion export --format``'s help."""
FOLDER_FORMATS = ("saved_model", "keras")
"""The formats whose export is a folder (README.md and metadata.json inside it)."""
KERAS_MODEL, KERAS_WEIGHTS = "policy.keras", "policy.weights.h5"
"""The files of a Keras export: the whole model, and its weights alone."""
KERAS_BUILDER = "champion.agents.keras_policy.keras_policy"
ACT_SIGNATURE = "serving_default"
DISTRIBUTION_SIGNATURE = "distribution"
EXPORTED_BY = "champion"
PROBE_OBSERVATIONS = 256
ACTION_TOLERANCE = 1e-5
"""How far an exported continuous action may be from replay's (float32 rounding of another kernel)."""
METADATA_LIMIT = 10_000_000
"""Bytes beyond which a metadata.json is not read (champion's are a few kB)."""
LEFTOVER = re.compile(re.escape(TEMP_PREFIX) + r"(export|replaced|commit)-(\d+)-(.+)")
"""The folders an export makes beside its destination, by kind, pid and destination name: ``export`` (a new export
being written), ``replaced`` (an earlier SavedModel or Keras folder moved aside), ``commit`` (a TFLite export's files
being moved into place)."""


class ExportError(ChampionError, ValueError):
    """The export cannot be written as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and which best policy it holds."""

    path: Path
    export_format: str
    readme: Path
    metadata: Path
    entry: Path
    step: int
    mean_return: float
    picked: str = ""
    """Why this run, when a folder of runs was given."""
    run_dir: Path | None = None
    """The run whose best policy was exported."""
    crowned: bool = False
    """Whether it is the crowned champion (its mean return is then the held-out one)."""


def default_out(run_dir: Path, export_format: str) -> Path:
    """RUN_DIR/export/saved_model, RUN_DIR/export/policy.tflite or RUN_DIR/export/keras."""
    name = {"tflite": "policy.tflite", "keras": "keras"}.get(export_format, "saved_model")
    return Path(run_dir) / "export" / name


def sidecar_paths(out: Path, export_format: str) -> tuple[Path, Path]:
    """(README.md, metadata.json) of an export: inside a SavedModel or Keras folder, next to a .tflite file."""
    if export_format in FOLDER_FORMATS:
        return out / "README.md", out / "metadata.json"
    return out.with_name(f"{out.stem}.README.md"), out.with_name(f"{out.stem}.metadata.json")


def export_policy(run_dir: Path, export_format: str = "saved_model", out: Path | None = None,
                  best: bool = False, entry: str | None = None) -> ExportResult:
    """Write the run's best policy as ``export_format`` to ``out`` (default: RUN_DIR/export/...).

    A folder of runs stands for its newest run, or with ``best`` the one with the highest best return. An
    earlier champion export at ``out`` is replaced (the new one is complete before it takes the name); any
    other file or folder there is refused. What killed exports left in ``out``'s folder is first cleaned up or
    finished (``recover_leftovers``).
    """
    if export_format not in FORMATS:
        raise ExportError(f"unknown export format {export_format!r}; choose one of: {', '.join(FORMATS)}")
    run_dir, picked = choose_run(run_dir, best)
    out = Path(out) if out is not None else default_out(run_dir, export_format)
    recover_leftovers(out.parent)
    _check_destination(out, export_format)
    from champion.runners.replay import load_policy

    policy, manifest = load_policy(run_dir, entry)
    module = keras_export_model(policy) if export_format == "keras" else policy_module(policy.model)
    metadata = describe_export(manifest, module, export_format, out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create {out.parent} for the export ({error.strerror or error}); "
                          "choose another --out") from None
    if export_format == "saved_model":
        _write_saved_model(module, policy, metadata, out)
    elif export_format == "keras":
        _write_keras(module, policy, metadata, out)
    else:
        _write_tflite(module, policy, metadata, out)
    readme, metadata_path = sidecar_paths(out, export_format)
    return ExportResult(out, export_format, readme, metadata_path, Path(manifest["entry"]), int(manifest["step"]),
                        float(manifest["mean_return"]), picked, run_dir, bool(manifest.get("crowned")))


def _check_destination(out: Path, export_format: str) -> None:
    """Refuse a destination that would overwrite something that is not an earlier export."""
    if export_format == "tflite":
        if out.suffix != ".tflite":
            raise ExportError(f"--out for --format tflite must end in .tflite, got {out}")
        if out.is_dir():
            raise ExportError(f"{out} is a folder; give a file path ending in .tflite")
        if out.exists() and not _is_champion_export(sidecar_paths(out, "tflite")[1]):
            raise ExportError(f"{out} exists and is not a champion export (no {sidecar_paths(out, 'tflite')[1].name} "
                              "from champion); choose another --out, nothing else is ever overwritten")
        return
    what = "a SavedModel" if export_format == "saved_model" else "a Keras export"
    if out.is_file():
        raise ExportError(f"{out} is a file; {what} is a folder, give a folder path")
    if export_format == "keras" and out.suffix in (".keras", ".h5"):
        raise ExportError(f"--out for --format keras is a folder (it holds {KERAS_MODEL} and {KERAS_WEIGHTS}), "
                          f"got {out}; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not _is_champion_export(out / "metadata.json"):
        raise ExportError(f"{out} exists and is not a champion export (no metadata.json from champion); "
                          "choose another --out, nothing else is ever overwritten")


def _is_champion_export(metadata_path: Path) -> bool:
    """Whether ``metadata_path`` is a metadata.json that champion wrote (a FIFO or device there is never read)."""
    try:
        if not metadata_path.is_file() or metadata_path.stat().st_size > METADATA_LIMIT:
            return False
        return json.loads(metadata_path.read_text()).get("exported_by") == EXPORTED_BY
    except (OSError, ValueError, AttributeError):
        return False


def policy_module(model: ActorCritic) -> tf.Module:
    """A tf.Module with the two serving functions and the model's variables (so SavedModel tracks them).

    Both take the raw observation leaf by leaf, one named input each (``observations`` for a space that is
    one leaf), in ``export_dtype``: ``act`` gives {"actions"}, the action replay sends to the env;
    ``distribution`` gives the distribution's parameters ({"logits"} or {"mean", "log_std"}) and {"value"}.
    """
    import tensorflow as tf

    from champion.agents.distributions import make_distribution
    from champion.agents.spec import export_dtype

    spec = model.spec
    distribution = make_distribution(model)
    leaves = spec.observation_leaves
    input_specs = [tf.TensorSpec([None, *leaf.shape], export_dtype(leaf), name=leaf.name) for leaf in leaves]

    def flat(inputs: tuple[tf.Tensor, ...]) -> tf.Tensor:
        parts = []
        for leaf, values in zip(leaves, inputs):
            if leaf.kind != "onehot":
                parts.append(tf.reshape(tf.cast(values, tf.float32), [-1, leaf.size]))
                continue
            indices = tf.reshape(tf.cast(values, tf.int32), [-1, len(leaf.categories)]) - np.int32(leaf.start)
            parts += [tf.one_hot(indices[:, index], size) for index, size in enumerate(leaf.categories)]
        return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)

    def act(*inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"actions": _env_actions(spec, distribution.mode(model(flat(inputs))[0]))}

    def parameters(*inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs, values = model(flat(inputs))
        if spec.action_kind != "continuous":
            return {"logits": outputs, "value": values}
        size = spec.action_size
        return {"mean": outputs[:, :size], "log_std": outputs[:, size:], "value": values}

    module = tf.Module(name="champion_policy")
    # Keras 3 variables are not tracked through the model object (layers sit in Python lists).
    module.model_variables = [variable.value for variable in model.weights]
    module.act = tf.function(act, input_signature=input_specs)
    module.distribution = tf.function(parameters, input_signature=input_specs)
    return module


def _env_actions(spec: Any, actions: tf.Tensor) -> tf.Tensor:
    """In TF, what ``NumpyPolicy.env_actions`` sends to the env: clipped, moved to the space's start, in its
    shape (int32 for category and binary actions)."""
    import tensorflow as tf

    if spec.action_kind == "continuous":
        actions = tf.clip_by_value(actions, np.float32(spec.action_low), np.float32(spec.action_high))
    else:
        actions = tf.cast(actions, tf.int32)
        if any(spec.action_start):
            actions = actions + np.int32(spec.action_start if spec.action_kind == "multidiscrete" else spec.action_start[0])
    if spec.action_kind == "discrete":
        return actions
    return tf.reshape(actions, [-1, *(spec.action_env_shape or spec.action_shape)])


def _write_saved_model(module: tf.Module, policy: NumpyPolicy, metadata: dict[str, Any], out: Path) -> None:
    """Save, reload and check the SavedModel in a temporary folder next to ``out``, then rename it into place."""
    import tensorflow as tf

    def save(temporary: Path) -> Callable[..., np.ndarray]:
        tf.saved_model.save(module, str(temporary),
                            signatures={ACT_SIGNATURE: module.act, DISTRIBUTION_SIGNATURE: module.distribution})
        act = tf.saved_model.load(str(temporary)).signatures[ACT_SIGNATURE]
        return lambda **inputs: act(**{name: tf.constant(value) for name, value in inputs.items()})["actions"].numpy()

    _write_folder(save, policy, metadata, out, "SavedModel")


def _write_folder(save: Callable[[Path], Callable[..., np.ndarray]], policy: NumpyPolicy, metadata: dict[str, Any],
                  out: Path, what: str) -> None:
    """Write a folder export under a temporary name next to ``out``, check it and rename it into place.

    ``save`` writes the model into the folder it is given and returns its reloaded act function (raw observations
    leaf by leaf -> env actions), which must act like replay (``_check_against_replay``); then metadata.json and
    README.md are added, everything is fsynced, and the folder replaces ``out`` (``_replace_folder``). Nothing is left
    behind when any step fails.
    """
    temporary = out.parent / f"{TEMP_PREFIX}export-{os.getpid()}-{out.name}"
    try:
        act = save(temporary)
        _check_against_replay(act, policy, what)
        readme, metadata_path = sidecar_paths(temporary, metadata["format"])
        atomic_write_text(metadata_path, json.dumps(metadata, indent=2) + "\n")
        atomic_write_text(readme, render_readme(metadata))
        _fsync_tree(temporary)
        _replace_folder(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def keras_export_model(policy: NumpyPolicy) -> Any:
    """The policy as a Keras model of built-in layers (``champion.agents.keras_policy``), or ExportError."""
    from champion.agents.keras_policy import keras_policy

    try:
        return keras_policy(policy.spec, policy.weights)
    except ValueError as error:  # e.g. an observation key Keras does not take as a layer name
        raise ExportError(f"this policy cannot be built as a Keras model ({first_line(error, limit=200)}); "
                          "export it with --format saved_model") from None


def _write_keras(model: Any, policy: NumpyPolicy, metadata: dict[str, Any], out: Path) -> None:
    """Save policy.keras and policy.weights.h5 in a temporary folder, check that policy.keras reloads (safe mode:
    built-in layers only) and acts like replay, and that policy.weights.h5 loaded into a freshly built model of zero
    weights gives policy.keras's outputs; then rename the folder into place."""
    import keras

    from champion.agents.keras_policy import keras_policy

    single = len(policy.spec.observation_leaves) == 1

    def save(temporary: Path) -> Callable[..., np.ndarray]:
        temporary.mkdir()
        model.save(temporary / KERAS_MODEL)
        model.save_weights(temporary / KERAS_WEIGHTS)
        loaded = keras.saving.load_model(temporary / KERAS_MODEL)
        rebuilt = keras_policy(policy.spec)
        rebuilt.load_weights(temporary / KERAS_WEIGHTS)
        probes = probe_observations(policy.model)
        inputs = probes["observations"] if single else probes
        expected, actual = loaded(inputs), rebuilt(inputs)
        for name, value in expected.items():
            value, other = np.asarray(value), np.asarray(actual[name])
            if value.shape != other.shape or not np.allclose(value, other, rtol=1e-6, atol=1e-6):
                raise ExportError(f"{KERAS_WEIGHTS} loaded into {KERAS_BUILDER}'s model does not give {KERAS_MODEL}'s "
                                  f"{name}; nothing was written")
        return lambda **inputs: np.asarray(loaded(inputs["observations"] if single else inputs)["actions"])

    _write_folder(save, policy, metadata, out, "Keras model")


def _write_tflite(module: tf.Module, policy: NumpyPolicy, metadata: dict[str, Any], out: Path) -> None:
    """Convert the deterministic policy, check it, then replace the model, metadata and README together."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.act.get_concrete_function()], module)
    try:
        data = converter.convert()
        with warnings.catch_warnings():  # tf.lite.Interpreter points to ai_edge_litert; it still works
            warnings.simplefilter("ignore")
            runner = tf.lite.Interpreter(model_content=data).get_signature_runner(ACT_SIGNATURE)
    except Exception as error:  # the converter's and interpreter's errors have no common type
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ExportError(f"TFLite cannot hold this policy ({first_line}); export it with --format saved_model") from None
    _check_against_replay(lambda **inputs: runner(**inputs)["actions"], policy, "TFLite model")
    metadata = dict(metadata, sha256=hashlib.sha256(data).hexdigest())
    commit_tflite_files(out, data, metadata, render_readme(metadata))


def tflite_files(out: Path) -> list[Path]:
    """A TFLite export's files in the order they are moved into place: metadata.json, README.md, the model."""
    readme, metadata = sidecar_paths(out, "tflite")
    return [metadata, readme, out]


def commit_tflite_files(out: Path, model: bytes, metadata: dict[str, Any], readme: str) -> None:
    """Write a TFLite export's model, metadata.json and README.md so that they replace the earlier ones together.

    The three sit side by side and no rename moves three files at once, so the commit is a folder: they are
    written and fsynced in .tmp-export-PID-NAME, which is renamed to .tmp-commit-PID-NAME once complete (the commit
    point), and then each is renamed over its final name, metadata first and the model last. A kill before the
    commit point leaves the earlier export as it was; one after it can leave new files beside old ones, which the
    next export into this folder completes from the commit folder before anything else (``recover_leftovers``).
    So the destination holds the complete earlier export or, once the next export has looked, the complete new
    one; meanwhile metadata.json's sha256 tells whether the model beside it is the one it describes.
    """
    contents = dict(zip(tflite_files(out), [(json.dumps(metadata, indent=2) + "\n").encode(), readme.encode(), model]))
    staging = out.parent / f"{TEMP_PREFIX}export-{os.getpid()}-{out.name}"
    committing = out.parent / f"{TEMP_PREFIX}commit-{os.getpid()}-{out.name}"
    try:
        staging.mkdir()
        for path, data in contents.items():
            with open(staging / path.name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            write_point(f"export: staged {path.name}")
        fsync_directory(staging)
        os.rename(staging, committing)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(out.parent)
    write_point(f"export: committed {out.name}")
    for path in contents:
        os.replace(committing / path.name, path)
        write_point(f"export: {path.name} in place")
    fsync_directory(out.parent)
    os.rmdir(committing)


def _fsync_tree(folder: Path) -> None:
    """Make every file and folder of a freshly written tree durable before it is renamed."""
    for directory, _, files in os.walk(folder):
        for name in files:
            with open(Path(directory) / name, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(Path(directory))


def _replace_folder(temporary: Path, out: Path) -> None:
    """Give a complete folder its final name; an earlier export there is moved aside first, then deleted.

    A crash between the two renames leaves no export at ``out`` (the old one is kept under a
    .tmp-replaced- name, which the next export puts back), never a half-written one.
    """
    replaced = out.parent / f"{TEMP_PREFIX}replaced-{os.getpid()}-{out.name}"
    if out.exists():
        os.rename(out, replaced)
        write_point(f"export: earlier {out.name} moved aside")
    os.rename(temporary, out)
    fsync_directory(out.parent)
    write_point(f"export: {out.name} in place")
    shutil.rmtree(replaced, ignore_errors=True)


def recover_leftovers(folder: Path) -> None:
    """Clean up after exports into ``folder`` that were killed (their pid is no longer a live process).

    Only real folders named as ``LEFTOVER`` describes are touched: a new export's staging folder is deleted; an
    earlier SavedModel moved aside is put back if nothing took its name (the kill came between the two renames of
    ``_replace_folder``, so it is the only complete copy), else deleted; a committed TFLite export is moved into
    place (``commit_tflite_files``). One that cannot be handled now is left for a later export.
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError:  # no such folder yet, or not readable: the export says so itself
        return
    for name in names:
        match, path = LEFTOVER.fullmatch(name), folder / name
        if match is None or not _is_real_folder(path) or process_is_alive(int(match[2])):
            continue
        kind, destination = match[1], folder / match[3]
        try:
            if kind == "export":
                shutil.rmtree(path)
            elif kind == "replaced" and _is_champion_export(path / "metadata.json"):
                if os.path.lexists(destination):
                    shutil.rmtree(path)
                else:
                    os.rename(path, destination)
            elif kind == "commit" and destination.suffix == ".tflite":
                _finish_commit(path, destination)
            fsync_directory(folder)
        except OSError:
            continue


def _finish_commit(committing: Path, out: Path) -> None:
    """Move the files a killed TFLite export had committed into place, in its order, unless a file there is not
    from champion (then nothing is moved); then remove the commit folder."""
    finals = tflite_files(out)
    if _is_champion_export(finals[0]) or not any(os.path.lexists(path) for path in finals):
        for path in finals:
            if _is_regular_file(committing / path.name):
                os.replace(committing / path.name, path)
    shutil.rmtree(committing)


def _is_real_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def probe_observations(model: ActorCritic, count: int = PROBE_OBSERVATIONS, seed: int = 0) -> dict[str, np.ndarray]:
    """Raw observations, leaf by leaf, spread over what the policy may see: vectors around its normaliser's mean
    +- 3 std (else N(0, 1)), images of random pixels, every category value and bit."""
    from champion.agents.spec import export_dtype

    random, spec = np.random.default_rng(seed), model.spec
    if model.normalizer is not None:
        mean, scale = model.normalizer.mean.numpy(), 3.0 * np.sqrt(model.normalizer.variance.numpy())
    probes, vector_offset = {}, 0
    for leaf in spec.observation_leaves:
        if leaf.kind == "box":
            values = random.standard_normal((count, leaf.size))
            if model.normalizer is not None:
                columns = slice(vector_offset, vector_offset + leaf.size)
                values = mean[columns] + scale[columns] * values
            vector_offset += leaf.size
        elif leaf.kind == "onehot":
            values = np.stack([random.integers(start, start + size, count)
                               for start, size in zip(leaf.start, leaf.categories)], axis=-1)
        else:  # image pixels, or bits
            values = random.integers(0, 256 if leaf.kind == "image" else 2, (count, leaf.size))
        probes[leaf.name] = values.reshape(count, *leaf.shape).astype(export_dtype(leaf))
    return probes


def _check_against_replay(act: Callable[..., np.ndarray], policy: NumpyPolicy, what: str) -> None:
    """Refuse an export whose actions differ from replay's on probe observations (but for near-ties, which
    float rounding may decide either way)."""
    from champion.agents.spec import flat_observations

    probes = probe_observations(policy.model)
    observations = flat_observations(policy.spec, probes)
    expected = policy.env_actions(policy.mode(observations))
    actual = np.asarray(act(**probes))
    if policy.spec.action_kind == "continuous":
        worst = float(np.max(np.abs(actual - expected)))
        if worst <= ACTION_TOLERANCE:
            return
        detail = f"largest difference {worst:.3g}"
    else:
        clear = _clear_choices(policy, observations)
        differs = (actual.reshape(len(actual), -1) != expected.reshape(len(expected), -1)).any(axis=-1)
        mismatched = int(np.sum(differs & clear))
        if mismatched == 0:
            return
        detail = f"{mismatched} of {len(actual)} actions differ"
    raise ExportError(f"the exported {what} does not act like replay on probe observations ({detail}); "
                      "nothing was written")


def _clear_choices(policy: NumpyPolicy, observations: np.ndarray) -> np.ndarray:
    """Per observation: whether no choice of its action is a near-tie of logits."""
    logits, _ = policy.forward(observations)
    if policy.spec.action_kind == "multibinary":
        return (np.abs(logits) > ACTION_TOLERANCE).all(axis=-1)
    parts = np.split(logits, np.cumsum(policy.spec.action_nvec)[:-1], axis=-1) if policy.spec.action_nvec else [logits]
    gaps = [np.diff(np.sort(part, axis=-1)[:, -2:], axis=-1)[:, 0] for part in parts]
    return np.all([gap > ACTION_TOLERANCE for gap in gaps], axis=0)


def describe_export(manifest: dict[str, Any], module: Any, export_format: str, out: Path) -> dict[str, Any]:
    """The metadata.json of an export: the policy's env and spaces, its score, and how to call it.

    ``module`` is ``policy_module``'s tf.Module, or for ``keras`` the Keras model (``keras_export_model``); a Keras
    export's metadata also names its files, the builder of its architecture and the network spec that builder takes.
    """
    from champion.runners.store.run_metadata import package_versions

    network = manifest["network"]
    if export_format == "keras":
        signatures = {KERAS_MODEL: _describe_keras(module)}
    else:
        signatures = {ACT_SIGNATURE: _describe_function(module.act)}
    if export_format == "saved_model":
        signatures[DISTRIBUTION_SIGNATURE] = _describe_function(module.distribution)
    keras_only = {}
    if export_format == "keras":
        keras_only = {"files": {"model": KERAS_MODEL, "weights": KERAS_WEIGHTS},
                      "builder": f"{KERAS_BUILDER}(spec, weights)", "network": network}
    return {
        "exported_by": EXPORTED_BY,
        "format": export_format,
        "file": out.name,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "env_id": manifest["env_id"],
        "algo": manifest["algo"],
        "best_entry": manifest["entry"],
        "step": int(manifest["step"]),
        "mean_return": float(manifest["mean_return"]),
        "std_return": float(manifest["std_return"]),
        "episodes": int(manifest["episodes"]),
        "eval_seeds": [int(seed) for seed in manifest["eval_seeds"]],
        "crowned": bool(manifest.get("crowned")),
        "observation_space": _observation_space(manifest),
        "action_space": _action_space(network),
        "normalize_observations": bool(network["normalize_observations"]),
        "deterministic_action": _action_rule(network, export_format),
        "signatures": signatures,
        **keras_only,
        "versions": {"exported_with": package_versions(), "trained_with": manifest.get("versions", {})},
    }


def _describe_keras(model: Any) -> dict[str, Any]:
    """Inputs and outputs of the Keras model: name -> {shape (null = any batch size), dtype}."""
    def info(tensor: Any) -> dict[str, Any]:
        return {"shape": list(tensor.shape), "dtype": str(tensor.dtype)}

    return {"inputs": {tensor.name: info(tensor) for tensor in model.inputs},
            "outputs": {name: info(tensor) for name, tensor in model.output.items()}}


def _describe_function(function: Any) -> dict[str, Any]:
    """Inputs and outputs of a serving function: name -> {shape (null = any batch size), dtype}."""
    concrete = function.get_concrete_function()
    outputs = concrete.structured_outputs
    return {"inputs": {spec.name: _tensor_info(spec) for spec in concrete.structured_input_signature[0]},
            "outputs": {name: _tensor_info(outputs[name]) for name in outputs}}


def _tensor_info(tensor: Any) -> dict[str, Any]:
    return {"shape": list(tensor.shape.as_list()), "dtype": tensor.dtype.name}


def _observation_space(manifest: dict[str, Any]) -> dict[str, Any]:
    """Each input (a leaf of the env's observation space): its kind, shape and dtype, and for vectors the env's
    bounds (null where unbounded, or where the env cannot be made here)."""
    from champion.agents.spec import NetworkSpec, export_dtype

    spec = NetworkSpec.from_dict(manifest["network"])
    spaces = _leaf_spaces(manifest)
    inputs = {}
    for leaf in spec.observation_leaves:
        described: dict[str, Any] = {"kind": leaf.kind, "shape": list(leaf.shape), "dtype": export_dtype(leaf)}
        if leaf.kind == "onehot":
            described.update(categories=list(leaf.categories), start=list(leaf.start))
        space = spaces.get(leaf.name)
        if leaf.kind == "box":
            described.update(env_dtype=str(space.dtype) if space is not None else None,
                             low=_json_floats(space.low) if space is not None else None,
                             high=_json_floats(space.high) if space is not None else None)
        inputs[leaf.name] = described
    return {"inputs": inputs}


def _leaf_spaces(manifest: dict[str, Any]) -> dict[str, Any]:
    """The env's space of each observation leaf, by input name ({} when the env cannot be made here)."""
    from champion.agents.spec import NetworkSpec
    from champion.envs.factory import EnvOptions, make_env

    try:
        env = make_env(manifest["env_id"], EnvOptions.from_dict(manifest.get("env_options")), flatten=False)
    except Exception:  # noqa: BLE001 - the policy exports without its env; only the bounds are then unknown
        return {}
    try:
        found = {}
        for leaf in NetworkSpec.from_dict(manifest["network"]).observation_leaves:
            space = env.observation_space
            for key in leaf.path:
                space = space[key] if hasattr(space, "spaces") and isinstance(space.spaces, dict) else space[int(key)]
            found[leaf.name] = space
        return found
    finally:
        env.close()


def _json_floats(values: np.ndarray) -> list[float | None]:
    return [float(value) if math.isfinite(value) else None for value in np.asarray(values, np.float64).ravel()]


def _action_space(network: dict[str, Any]) -> dict[str, Any]:
    from champion.agents.spec import NetworkSpec

    spec = NetworkSpec.from_dict(network)
    shape = list(spec.action_env_shape or spec.action_shape)
    if spec.action_kind == "discrete":
        return {"kind": "discrete", "n": spec.action_size, "start": spec.action_start[0] if spec.action_start else 0,
                "shape": [], "dtype": "int32"}
    if spec.action_kind == "multidiscrete":
        return {"kind": "multidiscrete", "nvec": list(spec.action_nvec), "start": list(spec.action_start),
                "shape": shape, "dtype": "int32"}
    if spec.action_kind == "multibinary":
        return {"kind": "multibinary", "shape": shape, "dtype": "int32"}
    return {"kind": "continuous", "shape": shape, "dtype": "float32",
            "low": [float(value) for value in spec.action_low], "high": [float(value) for value in spec.action_high]}


def _action_rule(network: dict[str, Any], export_format: str = "saved_model") -> str:
    kind = network["action_kind"]
    if kind in ("discrete", "multidiscrete"):
        each = " of each component" if kind == "multidiscrete" else ""
        return f"the argmax of the logits{each} (plus the space's start), as champion replay acts"
    if kind == "multibinary":
        return "1 where a logit is positive, else 0, as champion replay acts"
    unclipped = ("the model's `mean` and `log_std` outputs are the unclipped distribution" if export_format == "keras"
                 else f"the {DISTRIBUTION_SIGNATURE} signature of the SavedModel gives the unclipped mean and log_std")
    return ("the Gaussian mean clipped to the action bounds, which is what champion replay sends to the env "
            f"({unclipped})")


def render_readme(metadata: dict[str, Any]) -> str:
    """The README.md of an export: what it acts in, how well it scored, its signatures, and how to act."""
    observation, action = metadata["observation_space"], metadata["action_space"]
    seeds = metadata["eval_seeds"]
    lines = [
        f"# {metadata['env_id']} policy ({metadata['algo'].upper()}), exported by champion",
        "",
        f"The {'crowned champion' if metadata.get('crowned') else 'best policy'} of `{metadata['best_entry']}`: "
        f"mean return {metadata['mean_return']:.2f} ± {metadata['std_return']:.2f} over {metadata['episodes']} "
        f"deterministic {'held-out' if metadata.get('crowned') else 'evaluation'} episodes "
        f"(seeds {seeds[0]}..{seeds[-1]}) at env step {metadata['step']:,}.",
        "",
        f"- Format: {_format_text(metadata)}; {_loads_with(metadata['format'])}",
        f"- Observations: {_describe_observations(observation['inputs'])}; "
        + ("the normalisation learned in training is inside the model." if metadata["normalize_observations"]
           else "the model has no observation normalisation."),
        f"- Actions: {_describe_actions(action)}; the exported action is {metadata['deterministic_action']}.",
        "",
        "## Inputs and outputs" if metadata["format"] == "keras" else "## Signatures",
        "",
    ]
    for name, signature in metadata["signatures"].items():
        outputs = ", ".join(f"`{key}` {_shape_text(info)}" for key, info in signature["outputs"].items())
        inputs = ", ".join(f"`{key}` {_shape_text(info)}" for key, info in signature["inputs"].items())
        lines.append(f"- `{name}`: {inputs} -> {outputs}")
    lines += ["", "## Load and act", "", "```python", *_snippet(metadata), "```", ""]
    if metadata["format"] == "keras":
        lines += _keras_sections(metadata)
    lines += [f"Exported with {_versions_text(metadata['versions']['exported_with'])}; details in "
              f"`{sidecar_paths(Path(metadata['file']), metadata['format'])[1].name}`.", ""]
    return "\n".join(lines)


def _format_text(metadata: dict[str, Any]) -> str:
    if metadata["format"] != "keras":
        return f"{metadata['format']} (`{metadata['file']}`)"
    torso = metadata["network"].get("torso")
    if torso:
        return (f"Keras 3, the whole model in `{KERAS_MODEL}` and its weights alone in `{KERAS_WEIGHTS}`; its torso is "
                f"the run's own network ({', '.join(_torso_names(metadata['network']))}), as its function builds it: "
                "built-in Keras layers load anywhere, a custom layer class only where its module is importable and "
                "registered with keras.saving.register_keras_serializable")
    return (f"Keras 3, the whole model in `{KERAS_MODEL}` and its weights alone in `{KERAS_WEIGHTS}`, built-in layers "
            "only (no custom classes, no Lambda layers)")


def _torso_names(network: dict[str, Any]) -> list[str]:
    """The "module:function" names of a network's own torsos, as `a:b` code spans."""
    return [f"`{network[key]}`" for key in ("torso", "value_torso") if network.get(key)]


def _loads_with(export_format: str) -> str:
    if export_format == "saved_model":
        return "loads with TensorFlow alone, no champion needed."
    if export_format == "keras":
        return (f"`{KERAS_MODEL}` loads with `keras.saving.load_model` in a Python with only TensorFlow (which brings "
                "Keras 3 and h5py) and numpy, no champion needed.")
    return ("loads with LiteRT alone (`pip install ai-edge-litert`), no TensorFlow or champion needed; "
            "TensorFlow's `tf.lite.Interpreter` loads it too but is deprecated in favour of LiteRT.")


def _describe_observations(inputs: dict[str, Any]) -> str:
    def one(info: dict[str, Any]) -> str:
        text = f"{info['dtype']} of shape {info['shape']}"
        if info["kind"] == "onehot":
            ranges = [f"{start}..{start + size - 1}" for start, size in zip(info["start"], info["categories"])]
            text += f" (values {', '.join(ranges)})"
        return text

    if list(inputs) == ["observations"]:
        cast = " (cast float64 observations)" if inputs["observations"]["kind"] == "box" else ""
        return f"the raw env observation, {one(inputs['observations'])}, batch first{cast}"
    return ("one input per leaf of the env's observation, batch first: "
            + ", ".join(f"`{name}` {one(info)}" for name, info in inputs.items()))


def _describe_actions(action: dict[str, Any]) -> str:
    kind = action["kind"]
    if kind == "discrete":
        return f"discrete, {action['start']}..{action['start'] + action['n'] - 1} (int32)"
    if kind == "multidiscrete":
        ranges = ", ".join(f"{start}..{start + size - 1}" for start, size in zip(action["start"], action["nvec"]))
        return f"multidiscrete, int32 of shape {action['shape']} (values {ranges})"
    if kind == "multibinary":
        return f"multibinary, int32 of shape {action['shape']} (0 or 1)"
    return f"continuous, float32 of shape {action['shape']}, low {action['low']}, high {action['high']}"


def _shape_text(info: dict[str, Any]) -> str:
    shape = ", ".join("batch" if size is None else str(size) for size in info["shape"])
    return f"{info['dtype']}[{shape}]"


def _versions_text(versions: dict[str, str]) -> str:
    names = [name for name in ("tensorflow", "keras", "numpy", "python") if name in versions]
    return ", ".join(f"{name} {versions[name]}" for name in names)


def _snippet(metadata: dict[str, Any]) -> list[str]:
    """A few lines that load the export and act on a batch of observations."""
    inputs = metadata["observation_space"]["inputs"]
    single = list(inputs) == ["observations"]

    def zeros(info: dict[str, Any]) -> str:
        sizes = [str(size) for size in [1, *info["shape"]]]
        return f"np.zeros(({', '.join(sizes)}{',' if len(sizes) == 1 else ''}), np.{info['dtype']})"

    if single:
        observations = f"observations = {zeros(inputs['observations'])}  # a batch of raw env observations"
    else:
        observations = ("observations = {" + ", ".join(f"{json.dumps(name)}: {zeros(info)}" for name, info in inputs.items())
                        + "}  # a batch of raw env observations, leaf by leaf")
    if metadata["format"] == "keras":
        if not single:  # category values from each component's start: 0 may be outside the space
            observations = ("observations = {" + ", ".join(f"{json.dumps(name)}: {_keras_example(info)}"
                                                            for name, info in inputs.items())
                            + "}  # a batch of raw env observations, leaf by leaf")
        elif inputs["observations"]["kind"] == "onehot":
            observations = f"observations = {_keras_example(inputs['observations'])}  # a batch of raw env observations"
        return ["import keras, numpy as np",
                f"policy = keras.saving.load_model({json.dumps(KERAS_MODEL)})  # from this README's folder",
                observations,
                "outputs = policy(observations)  # a dict of tensors; policy.predict(observations) gives numpy arrays",
                "actions = np.asarray(outputs[\"actions\"])  # what champion replay sends to the env"]
    if metadata["format"] == "saved_model":
        call = ("act(observations=tf.constant(observations))" if single
                else "act(**{name: tf.constant(value) for name, value in observations.items()})")
        return ["import numpy as np, tensorflow as tf",
                f"policy = tf.saved_model.load({json.dumps(metadata['file'])})  # path from the folder that holds it",
                f"act = policy.signatures[{json.dumps(ACT_SIGNATURE)}]",
                observations,
                f"actions = {call}[\"actions\"].numpy()"]
    call = "act(observations=observations)" if single else "act(**observations)"
    return ["import numpy as np",
            "from ai_edge_litert.interpreter import Interpreter  # pip install ai-edge-litert",
            f"interpreter = Interpreter(model_path={json.dumps(metadata['file'])})  # from this README's folder",
            f"act = interpreter.get_signature_runner({json.dumps(ACT_SIGNATURE)})",
            observations,
            f"actions = {call}[\"actions\"]"]


def _keras_example(info: dict[str, Any]) -> str:
    """A batch of one observation of a leaf, for the Keras README's snippet: zeros, or each component's start."""
    sizes = [str(size) for size in [1, *info["shape"]]]
    shape = f"({', '.join(sizes)}{',' if len(sizes) == 1 else ''})"
    if info["kind"] != "onehot":
        return f"np.zeros({shape}, np.{info['dtype']})"
    starts = info["start"]
    if len(set(starts)) == 1:
        return f"np.full({shape}, {starts[0]}, np.{info['dtype']})"
    return f"np.reshape(np.array({starts}, np.{info['dtype']}), {shape})"


def _keras_sections(metadata: dict[str, Any]) -> list[str]:
    """The Keras README's notes on its outputs and on rebuilding the architecture for policy.weights.h5."""
    inputs = list(metadata["observation_space"]["inputs"])
    taken = ("an array (its one input, `observations`)" if inputs == ["observations"]
             else "a dict of arrays by input name (" + ", ".join(f"`{name}`" for name in inputs) + ")")
    continuous = metadata["action_space"]["kind"] == "continuous"
    distribution = ("`mean` and `log_std` (a diagonal Gaussian, log standard deviation independent of the observation)"
                    if continuous else "`logits`")
    held = ["the layers' kernels and biases"]
    if metadata["normalize_observations"]:
        held.append("the observation normaliser's running mean and variance")
    if continuous:
        held.append("log_std")
    return [
        f"The model takes {taken}, batch first, and returns a dict: {distribution}, `value` (the state value) and "
        "`actions`, the deterministic action in the env's action shape. Observations of another float dtype are cast "
        "to the input's dtype by Keras.",
        "",
        "## The weights alone",
        "",
        f"`{KERAS_WEIGHTS}` holds the model's weights ({', '.join(held)}); it loads into a model of this "
        f"architecture with `model.load_weights`. Without champion, the architecture is `{KERAS_MODEL}`'s own:",
        "",
        "```python",
        "import keras",
        f"model = keras.saving.load_model({json.dumps(KERAS_MODEL)})",
        f"model.load_weights({json.dumps(KERAS_WEIGHTS)})",
        "```",
        "",
        f"With champion installed, `{metadata['builder']}` builds it from the network spec in `metadata.json` "
        "(`weights` by name as champion saves them; without them the weights are placeholders to load into):",
        "",
        "```python",
        "import json",
        *sorted({f"import {name.strip('`').split(':')[0]}  # the module of the run's torso"
                 for name in _torso_names(metadata["network"])}),
        "from champion.agents.keras_policy import keras_policy",
        "from champion.agents.spec import NetworkSpec",
        "",
        "spec = NetworkSpec.from_dict(json.load(open(\"metadata.json\"))[\"network\"])",
        "model = keras_policy(spec)",
        f"model.load_weights({json.dumps(KERAS_WEIGHTS)})",
        "```",
        "",
    ]
