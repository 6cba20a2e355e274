"""What a run records about itself: package versions, the network it built, hparams, best-entry manifests and
the session summary."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from champion.agents.config import ALGORITHMS, ENGINES, ConfigError, TrainConfig
from champion.agents.spec import NetworkSpec, check_network_size, cnn_output_size
from champion.envs.factory import EnvInfo, EnvOptions
from champion.runners.store.atomic_files import atomic_write_text
from champion.runners.evaluate import EvalResult


@dataclass(frozen=True)
class TrainResult:
    """What a finished run reports; everything else is in its run folder."""

    run_dir: Path
    best_mean_return: float
    best_step: int | None
    env_steps: int
    """Environment steps the run has reached (over all sessions, when resumed)."""
    wall_seconds: float
    """Wall time of this session."""
    session_steps: int
    """Environment steps taken in this session."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase of this session (env_stepping, acting, update, tracing, evaluation, saving, logging)."""
    timing_calls: dict[str, int] = field(default_factory=dict)
    """How many times each phase ran."""
    evaluations: list[tuple[int, float]] = field(default_factory=list)
    beside_timings: dict[str, float] = field(default_factory=dict)
    """Seconds of work done on another thread while the loop went on (evaluation), per phase."""
    beside_calls: dict[str, int] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    """The engine's own report (``Engine.report``): its kind, and for Ray the layout, restarts and workers' memory."""
    stopped_early: str = ""
    """Why the run ended before total_steps (a stop rule's or callback's reason); "" when it ran to its budget."""
    startup_seconds: float = 0.0
    """From the train/resume call to the loop's first advance (checks, run folder, model, engine; on resume,
    the rest of the run and the restore too): evaluations.csv's wall_seconds count from the loop's start."""
    run_wall_seconds: float = 0.0
    """Wall time of the loop over all sessions (a resumed run adds the earlier ones): the crown's time limit."""

    @property
    def steps_per_second(self) -> float:
        """Env steps per wall-clock second of this session, evaluation included."""
        return self.session_steps / max(self.wall_seconds, 1e-9)


def hparams(config: TrainConfig, engine: str) -> dict[str, bool | int | float | str]:
    """The config as flat hparams (dotted keys; the other algorithm's section left out; the engine used)."""
    flat: dict[str, bool | int | float | str] = {"engine": engine}
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            if key in ("ppo", "a2c") and key != config.algo:
                continue
            flat.update({f"{key}.{name}": _hparam_value(item) for name, item in value.items()})
        else:
            flat.setdefault(key, _hparam_value(value))
    return flat


def hparam_domains() -> dict[str, tuple[bool | str, ...] | None]:
    """Every key ``hparams`` may record, for either algorithm, with the values a key is limited to (None: any).

    TensorBoard's hparams dashboard takes the columns from the experiment record of whichever run it reads first,
    so every run declares this same list: a folder of PPO and A2C runs shows both algorithms' keys."""
    domains: dict[str, tuple[bool | str, ...] | None] = {
        "engine": tuple(engine for engine in ENGINES if engine != "auto"),  # the engine used, never "auto"
        "algo": ALGORITHMS}
    for key, value in TrainConfig().to_dict().items():
        for name, item in (value.items() if isinstance(value, dict) else [(None, value)]):
            domains.setdefault(key if name is None else f"{key}.{name}",
                               (False, True) if isinstance(item, bool) else None)
    return domains


def _hparam_value(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def network_spec(env_info: EnvInfo, config: TrainConfig) -> NetworkSpec:
    """The network for this env and config; ConfigError (one line) when an image is too small for the CNN, the
    network too large for this machine's memory, or a torso of the user's (``network.torso``, its module imported
    already) fails to build (TensorFlow is imported then)."""
    network, action = config.network, env_info.action
    for leaf in env_info.observation_leaves:
        if leaf.kind == "image" and cnn_output_size(*leaf.image_shape[:2], network.cnn_layers) is None:
            name = f"observation {'/'.join(leaf.path)}" if leaf.path else "the observation"
            raise ConfigError(f"{name} is a {leaf.image_shape[0]}x{leaf.image_shape[1]} image, too small for "
                              f"network.cnn_layers={[list(layer) for layer in network.cnn_layers]}; use smaller "
                              f"kernels and strides, e.g. --set network.cnn_layers=[[32,3,1],[64,3,2],[64,3,1]]")
    spec = NetworkSpec(
        observation_leaves=env_info.observation_leaves,
        action_kind=action.kind,
        action_size=action.size,
        hidden_sizes=() if network.torso else network.hidden_sizes,  # the user's torso stands in their place
        activation=network.activation,
        shared_torso=network.shared_torso,
        value_hidden_sizes=None if network.torso else network.value_hidden_sizes,
        ortho_init=network.ortho_init,
        action_low=action.low,
        action_high=action.high,
        log_std_init=network.log_std_init,
        normalize_observations=network.normalize_observations,
        observation_clip=network.observation_clip,
        action_nvec=action.nvec,
        action_start=action.start,
        action_env_shape=action.env_shape,
        cnn_layers=network.cnn_layers,
        cnn_features=network.cnn_features,
        torso=network.torso,
        value_torso=network.value_torso,
    )
    if spec.user_torso:  # its weights and widths, as the user's function builds them now (ConfigError if it fails)
        from champion.agents.networks import with_torso_layout

        spec = with_torso_layout(spec, config.seed)
    try:
        check_network_size(spec)
    except ValueError as error:
        raise ConfigError(f"network.hidden_sizes={list(network.hidden_sizes)}: {error}") from None
    return spec


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide how a saved policy behaves."""
    versions = {"python": platform.python_version()}
    for package in ("champion", "tensorflow", "keras", "gymnasium", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def best_manifest(config: TrainConfig, spec: NetworkSpec, step: int, result: EvalResult) -> dict[str, Any]:
    """What a best-policy entry records beside its weights (the store adds the sha256)."""
    return {
        "env_id": config.env_id,
        "algo": config.algo,
        "step": step,
        "mean_return": result.mean_return,
        "std_return": result.std_return,
        "min_return": result.min_return,
        "max_return": result.max_return,
        "mean_length": result.mean_length,
        "episodes": len(result.returns),
        "eval_seeds": list(result.seeds),
        "returns": list(result.returns),
        "network": spec.to_dict(),
        "env_options": EnvOptions.from_config(config).to_dict(),
        "seed": config.seed,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }


def write_summary(result: TrainResult, nonfinite_steps_skipped: int) -> None:
    """summary.json: what the finished session measured (written atomically; the crown adds its part after)."""
    summary = {
        "env_steps": result.env_steps,
        "session_steps": result.session_steps,
        "wall_seconds": round(result.wall_seconds, 3),
        "run_wall_seconds": round(result.run_wall_seconds or result.wall_seconds, 3),
        "startup_seconds": round(result.startup_seconds, 3),
        "steps_per_second": round(result.steps_per_second, 1),
        "best_mean_return": result.best_mean_return,
        "best_step": result.best_step,
        "nonfinite_steps_skipped": nonfinite_steps_skipped,
        "stopped_early": result.stopped_early or None,
        "timings": {name: round(seconds, 3) for name, seconds in result.timings.items()},
        "timing_calls": dict(result.timing_calls),
        "beside_timings": {name: round(seconds, 3) for name, seconds in result.beside_timings.items()},
        "beside_calls": dict(result.beside_calls),
        "engine": result.engine,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(result.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
