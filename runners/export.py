"""Export the best policy of a run as a standalone SavedModel or TFLite file, with a README and metadata.

The export needs only TensorFlow to load: observation normalisation is inside the graph, and the
deterministic action is exactly what ``champion replay`` sends to the env (the argmax of the
logits; the Gaussian mean clipped to the action bounds). It is written under a temporary name in
the destination's folder, checked against replay's actions, and only then renamed into place.

TensorFlow is imported inside the functions that need it, so that the CLI can name ExportError
without loading TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from runners.atomic_files import TEMP_PREFIX, atomic_write_bytes, atomic_write_text, fsync_directory
from runners.runs import choose_run

if TYPE_CHECKING:
    import tensorflow as tf

    from agents.networks import ActorCritic
    from agents.numpy_policy import NumpyPolicy

FORMATS = ("saved_model", "tflite")
ACT_SIGNATURE = "serving_default"
DISTRIBUTION_SIGNATURE = "distribution"
EXPORTED_BY = "champion"
PROBE_OBSERVATIONS = 256
ACTION_TOLERANCE = 1e-5
"""How far an exported continuous action may be from replay's (float32 rounding of another kernel)."""


class ExportError(ValueError):
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


def default_out(run_dir: Path, export_format: str) -> Path:
    """RUN_DIR/export/saved_model or RUN_DIR/export/policy.tflite."""
    return Path(run_dir) / "export" / ("policy.tflite" if export_format == "tflite" else "saved_model")


def sidecar_paths(out: Path, export_format: str) -> tuple[Path, Path]:
    """(README.md, metadata.json) of an export: inside a SavedModel folder, next to a .tflite file."""
    if export_format == "saved_model":
        return out / "README.md", out / "metadata.json"
    return out.with_name(f"{out.stem}.README.md"), out.with_name(f"{out.stem}.metadata.json")


def export_policy(run_dir: Path, export_format: str = "saved_model", out: Path | None = None,
                  best: bool = False) -> ExportResult:
    """Write the run's best policy as ``export_format`` to ``out`` (default: RUN_DIR/export/...).

    A folder of runs stands for its newest run, or with ``best`` the one with the highest best return. An
    earlier champion export at ``out`` is replaced (the new one is complete before it takes the name); any
    other file or folder there is refused.
    """
    if export_format not in FORMATS:
        raise ExportError(f"unknown export format {export_format!r}; choose one of: {', '.join(FORMATS)}")
    run_dir, picked = choose_run(run_dir, best)
    out = Path(out) if out is not None else default_out(run_dir, export_format)
    _check_destination(out, export_format)
    from runners.replay import load_policy

    policy, manifest = load_policy(run_dir)
    module = policy_module(policy.model)
    metadata = describe_export(manifest, module, export_format, out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create {out.parent} for the export ({error.strerror or error}); "
                          "choose another --out") from None
    if export_format == "saved_model":
        _write_saved_model(module, policy, metadata, out)
    else:
        _write_tflite(module, policy, metadata, out)
    readme, metadata_path = sidecar_paths(out, export_format)
    return ExportResult(out, export_format, readme, metadata_path, Path(manifest["entry"]), int(manifest["step"]),
                        float(manifest["mean_return"]), picked, run_dir)


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
    if out.is_file():
        raise ExportError(f"{out} is a file; a SavedModel is a folder, give a folder path")
    if out.is_dir() and any(out.iterdir()) and not _is_champion_export(out / "metadata.json"):
        raise ExportError(f"{out} exists and is not a champion export (no metadata.json from champion); "
                          "choose another --out, nothing else is ever overwritten")


def _is_champion_export(metadata_path: Path) -> bool:
    try:
        return json.loads(metadata_path.read_text()).get("exported_by") == EXPORTED_BY
    except (OSError, ValueError, AttributeError):
        return False


def policy_module(model: ActorCritic) -> tf.Module:
    """A tf.Module with the two serving functions and the model's variables (so SavedModel tracks them).

    ``act``: raw observations -> {"actions"}, the deterministic action replay sends to the env.
    ``distribution``: raw observations -> the distribution's parameters ({"logits"} or
    {"mean", "log_std"}) and {"value"}.
    """
    import tensorflow as tf

    from agents.distributions import make_distribution

    spec = model.spec
    distribution = make_distribution(model)
    observations_spec = tf.TensorSpec([None, *spec.observation_shape], tf.float32, name="observations")

    def act(observations: tf.Tensor) -> dict[str, tf.Tensor]:
        actions = distribution.mode(model(observations)[0])
        if spec.action_kind == "continuous":
            actions = tf.clip_by_value(actions, np.float32(spec.action_low), np.float32(spec.action_high))
        return {"actions": actions}

    def parameters(observations: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs, values = model(observations)
        if spec.action_kind == "discrete":
            return {"logits": outputs, "value": values}
        size = spec.action_size
        return {"mean": outputs[:, :size], "log_std": outputs[:, size:], "value": values}

    module = tf.Module(name="champion_policy")
    # Keras 3 variables are not tracked through the model object (layers sit in Python lists).
    module.model_variables = [variable.value for variable in model.weights]
    module.act = tf.function(act, input_signature=[observations_spec])
    module.distribution = tf.function(parameters, input_signature=[observations_spec])
    return module


def _write_saved_model(module: tf.Module, policy: NumpyPolicy, metadata: dict[str, Any], out: Path) -> None:
    """Save, reload and check in a temporary folder next to ``out``, then rename it into place."""
    import tensorflow as tf

    temporary = out.parent / f"{TEMP_PREFIX}export-{os.getpid()}-{out.name}"
    try:
        tf.saved_model.save(module, str(temporary),
                            signatures={ACT_SIGNATURE: module.act, DISTRIBUTION_SIGNATURE: module.distribution})
        act = tf.saved_model.load(str(temporary)).signatures[ACT_SIGNATURE]
        _check_against_replay(lambda observations: act(observations=tf.constant(observations))["actions"].numpy(),
                              policy, "SavedModel")
        readme, metadata_path = sidecar_paths(temporary, "saved_model")
        atomic_write_text(metadata_path, json.dumps(metadata, indent=2) + "\n")
        atomic_write_text(readme, render_readme(metadata))
        _fsync_tree(temporary)
        _replace_folder(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _write_tflite(module: tf.Module, policy: NumpyPolicy, metadata: dict[str, Any], out: Path) -> None:
    """Convert the deterministic policy, check it, then write metadata, README and the model (last)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.act.get_concrete_function()], module)
    data = converter.convert()
    with warnings.catch_warnings():  # tf.lite.Interpreter points to ai_edge_litert; it still works
        warnings.simplefilter("ignore")
        runner = tf.lite.Interpreter(model_content=data).get_signature_runner(ACT_SIGNATURE)
    _check_against_replay(lambda observations: runner(observations=observations)["actions"], policy, "TFLite model")
    metadata = dict(metadata, sha256=hashlib.sha256(data).hexdigest())
    readme, metadata_path = sidecar_paths(out, "tflite")
    atomic_write_text(metadata_path, json.dumps(metadata, indent=2) + "\n")
    atomic_write_text(readme, render_readme(metadata))
    atomic_write_bytes(out, data)


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
    .tmp- name), never a half-written one.
    """
    replaced = out.parent / f"{TEMP_PREFIX}replaced-{os.getpid()}-{out.name}"
    if out.exists():
        os.rename(out, replaced)
    os.rename(temporary, out)
    fsync_directory(out.parent)
    shutil.rmtree(replaced, ignore_errors=True)


def probe_observations(model: ActorCritic, count: int = PROBE_OBSERVATIONS, seed: int = 0) -> np.ndarray:
    """Observations spread over what the policy has seen: its normaliser's mean +- 3 std (else N(0, 1))."""
    spec = model.spec
    noise = np.random.default_rng(seed).standard_normal((count, model.flat_size))
    if model.normalizer is not None:
        mean, variance = model.normalizer.mean.numpy(), model.normalizer.variance.numpy()
        noise = mean + 3.0 * np.sqrt(variance) * noise
    return noise.reshape(count, *spec.observation_shape).astype(np.float32)


def _check_against_replay(act: Callable[[np.ndarray], np.ndarray], policy: NumpyPolicy, what: str) -> None:
    """Refuse an export whose deterministic actions differ from replay's on probe observations."""
    observations = probe_observations(policy.model)
    expected = policy.env_actions(policy.mode(observations))
    actual = np.asarray(act(observations))
    if policy.spec.action_kind == "continuous":
        worst = float(np.max(np.abs(actual - expected)))
        if worst <= ACTION_TOLERANCE:
            return
        detail = f"largest difference {worst:.3g}"
    else:
        logits, _ = policy.forward(observations)
        top_two = np.sort(logits, axis=-1)[:, -2:]
        clear = top_two[:, 1] - top_two[:, 0] > ACTION_TOLERANCE  # a near-tie may round either way
        mismatched = int(np.sum(actual[clear] != expected[clear]))
        if mismatched == 0:
            return
        detail = f"{mismatched} of {len(actual)} actions differ"
    raise ExportError(f"the exported {what} does not act like replay on probe observations ({detail}); "
                      "nothing was written")


def describe_export(manifest: dict[str, Any], module: tf.Module, export_format: str, out: Path) -> dict[str, Any]:
    """The metadata.json of an export: the policy's env and spaces, its score, and how to call it."""
    from runners.run_metadata import package_versions

    network = manifest["network"]
    signatures = {ACT_SIGNATURE: _describe_function(module.act)}
    if export_format == "saved_model":
        signatures[DISTRIBUTION_SIGNATURE] = _describe_function(module.distribution)
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
        "observation_space": _observation_space(manifest["env_id"], network),
        "action_space": _action_space(network),
        "normalize_observations": bool(network["normalize_observations"]),
        "deterministic_action": _action_rule(network),
        "signatures": signatures,
        "versions": {"exported_with": package_versions(), "trained_with": manifest.get("versions", {})},
    }


def _describe_function(function: Any) -> dict[str, Any]:
    """Inputs and outputs of a serving function: name -> {shape (null = any batch size), dtype}."""
    concrete = function.get_concrete_function()
    [observations] = concrete.structured_input_signature[0]
    outputs = concrete.structured_outputs
    return {"inputs": {"observations": _tensor_info(observations)},
            "outputs": {name: _tensor_info(outputs[name]) for name in outputs}}


def _tensor_info(tensor: Any) -> dict[str, Any]:
    return {"shape": list(tensor.shape.as_list()), "dtype": tensor.dtype.name}


def _observation_space(env_id: str, network: dict[str, Any]) -> dict[str, Any]:
    """Shape, dtype and bounds (null where unbounded, or where the env cannot be made here)."""
    space: dict[str, Any] = {"shape": list(network["observation_shape"]), "dtype": "float32", "env_dtype": None,
                             "low": None, "high": None}
    try:
        import gymnasium as gym

        env = gym.make(env_id)
        try:
            box = env.observation_space
            space.update(env_dtype=str(box.dtype), low=_json_floats(box.low), high=_json_floats(box.high))
        finally:
            env.close()
    except Exception:  # noqa: BLE001 - the policy exports without its env; only the bounds are then unknown
        pass
    return space


def _json_floats(values: np.ndarray) -> list[float | None]:
    return [float(value) if math.isfinite(value) else None for value in np.asarray(values, np.float64).ravel()]


def _action_space(network: dict[str, Any]) -> dict[str, Any]:
    if network["action_kind"] == "discrete":
        return {"kind": "discrete", "n": int(network["action_size"]), "shape": [], "dtype": "int32"}
    return {"kind": "continuous", "shape": [int(network["action_size"])], "dtype": "float32",
            "low": [float(value) for value in network["action_low"]],
            "high": [float(value) for value in network["action_high"]]}


def _action_rule(network: dict[str, Any]) -> str:
    if network["action_kind"] == "discrete":
        return "the argmax of the logits, as champion replay acts"
    return ("the Gaussian mean clipped to the action bounds, which is what champion replay sends to the env "
            f"(the {DISTRIBUTION_SIGNATURE} signature of the SavedModel gives the unclipped mean and log_std)")


def render_readme(metadata: dict[str, Any]) -> str:
    """The README.md of an export: what it acts in, how well it scored, its signatures, and how to act."""
    observation, action = metadata["observation_space"], metadata["action_space"]
    seeds = metadata["eval_seeds"]
    lines = [
        f"# {metadata['env_id']} policy ({metadata['algo'].upper()}), exported by champion",
        "",
        f"The best policy of `{metadata['best_entry']}`: mean return {metadata['mean_return']:.2f} "
        f"± {metadata['std_return']:.2f} over {metadata['episodes']} deterministic evaluation episodes "
        f"(seeds {seeds[0]}..{seeds[-1]}) at env step {metadata['step']:,}.",
        "",
        f"- Format: {metadata['format']} (`{metadata['file']}`); {_loads_with(metadata['format'])}",
        f"- Observations: the raw env observation, {observation['dtype']} of shape {observation['shape']}, "
        "batch first (cast float64 observations); "
        + ("the normalisation learned in training is inside the model." if metadata["normalize_observations"]
           else "the model has no observation normalisation."),
        f"- Actions: {_describe_actions(action)}; the exported action is {metadata['deterministic_action']}.",
        "",
        "## Signatures",
        "",
    ]
    for name, signature in metadata["signatures"].items():
        outputs = ", ".join(f"`{key}` {_shape_text(info)}" for key, info in signature["outputs"].items())
        lines.append(f"- `{name}`: `observations` {_shape_text(signature['inputs']['observations'])} -> {outputs}")
    lines += ["", "## Load and act", "", "```python", *_snippet(metadata), "```", "",
              f"Exported with {_versions_text(metadata['versions']['exported_with'])}; details in "
              f"`{sidecar_paths(Path(metadata['file']), metadata['format'])[1].name}`.", ""]
    return "\n".join(lines)


def _loads_with(export_format: str) -> str:
    if export_format == "saved_model":
        return "loads with TensorFlow alone, no champion needed."
    return ("loads with LiteRT alone (`pip install ai-edge-litert`), no TensorFlow or champion needed; "
            "TensorFlow's `tf.lite.Interpreter` loads it too but is deprecated in favour of LiteRT.")


def _describe_actions(action: dict[str, Any]) -> str:
    if action["kind"] == "discrete":
        return f"discrete, 0..{action['n'] - 1} (int32)"
    return f"continuous, float32 of shape {action['shape']}, low {action['low']}, high {action['high']}"


def _shape_text(info: dict[str, Any]) -> str:
    shape = ", ".join("batch" if size is None else str(size) for size in info["shape"])
    return f"{info['dtype']}[{shape}]"


def _versions_text(versions: dict[str, str]) -> str:
    names = [name for name in ("tensorflow", "keras", "numpy", "python") if name in versions]
    return ", ".join(f"{name} {versions[name]}" for name in names)


def _snippet(metadata: dict[str, Any]) -> list[str]:
    """A few lines that load the export and act on a batch of observations."""
    shape = ", ".join(str(size) for size in [1, *metadata["observation_space"]["shape"]])
    observations = f"observations = np.zeros(({shape}), np.float32)  # a batch of raw env observations"
    if metadata["format"] == "saved_model":
        return ["import numpy as np, tensorflow as tf",
                f"policy = tf.saved_model.load({json.dumps(metadata['file'])})  # path from the folder that holds it",
                f"act = policy.signatures[{json.dumps(ACT_SIGNATURE)}]",
                observations,
                "actions = act(observations=tf.constant(observations))[\"actions\"].numpy()"]
    return ["import numpy as np",
            "from ai_edge_litert.interpreter import Interpreter  # pip install ai-edge-litert",
            f"interpreter = Interpreter(model_path={json.dumps(metadata['file'])})  # from this README's folder",
            f"act = interpreter.get_signature_runner({json.dumps(ACT_SIGNATURE)})",
            observations,
            "actions = act(observations=observations)[\"actions\"]"]
