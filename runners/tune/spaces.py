"""Search spaces for ``champion tune``: the default one per algorithm, a user's YAML file, and sampling a trial's
settings from either (no Optuna import here: a space is checked before anything starts).

A space is a mapping of config keys (dotted, as ``--set`` takes them) to what a trial may try:

    ppo.learning_rate: {low: 1.0e-5, high: 3.0e-3, log: true}   # a float range (log: sampled on a log scale)
    ppo.num_steps: {low: 64, high: 1024, step: 64}             # a whole-number range (an integer field)
    ppo.epochs: [1, 5, 10, 20]                                 # choices
    network.hidden_sizes: [[64], [64, 64], [256, 256]]         # choices that are lists

The defaults follow RL Zoo's (``rl_zoo3/hyperparams_opt.py``), narrowed where a small budget would waste trials on
settings that cannot learn in it (see ``DEFAULT_SPACES``). Keys that decide what a study measures (the budget, the
seeds, the evaluation, the crown, where runs go) are the study's, not a trial's, and are refused in a space.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from champion.agents.config import ConfigError, TrainConfig

STUDY_KEYS = ("env_id", "algo", "seed", "total_steps", "schedule_steps", "results_dir", "run_name", "eval_every",
              "eval_episodes", "eval_seed", "eval_in_background", "engine", "media", "checkpoint_every",
              "checkpoint_keep", "log_every", "histogram_every", "vectorization", "max_nonfinite_updates")
"""Keys a space may not search: the study sets them the same for every trial, so trials compare."""
STUDY_SECTIONS = ("crown", "ray", "stop")
"""Sections a space may not search either (the crown is the objective; ray and stop decide how trials run)."""

_GAMMAS = [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]
_LAMBDAS = [0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0]
_GRAD_NORMS = [0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0, 5.0]
_NETWORKS = [[64], [64, 64], [256, 256]]  # RL Zoo's tiny, small and medium
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "ppo": {
        "ppo.learning_rate": {"low": 1.0e-5, "high": 3.0e-3, "log": True},  # RL Zoo: 1e-5 to 1
        "ppo.learning_rate_schedule": ["constant", "linear"],
        "ppo.num_steps": [16, 32, 64, 128, 256, 512],  # per env: x num_envs (default 8) transitions a rollout
        "ppo.minibatch_size": [32, 64, 128, 256],  # made a divisor of the rollout when it is not one
        "ppo.epochs": [1, 5, 10, 20],
        "ppo.gamma": _GAMMAS,
        "ppo.gae_lambda": _LAMBDAS,
        "ppo.clip_range": [0.1, 0.2, 0.3, 0.4],
        "ppo.entropy_coef": {"low": 1.0e-8, "high": 0.1, "log": True},
        "ppo.value_coef": {"low": 0.1, "high": 1.0},  # RL Zoo: 0 to 1 (0 never trains the value head)
        "ppo.max_grad_norm": _GRAD_NORMS,
        "network.hidden_sizes": _NETWORKS,
        "network.activation": ["tanh", "relu"],
    },
    "a2c": {
        "a2c.learning_rate": {"low": 1.0e-5, "high": 1.0e-2, "log": True},  # RL Zoo: 1e-5 to 1
        "a2c.learning_rate_schedule": ["constant", "linear"],
        "a2c.num_steps": [5, 8, 16, 32, 64, 128],  # RL Zoo: 8 to 2048 (with one env)
        "a2c.optimizer": ["rmsprop", "adam"],
        "a2c.gamma": _GAMMAS,
        "a2c.gae_lambda": _LAMBDAS,
        "a2c.normalize_advantages": [False, True],
        "a2c.entropy_coef": {"low": 1.0e-8, "high": 0.1, "log": True},
        "a2c.value_coef": {"low": 0.1, "high": 1.0},
        "a2c.max_grad_norm": _GRAD_NORMS,
        "network.hidden_sizes": _NETWORKS,
        "network.activation": ["tanh", "relu"],
        "network.ortho_init": [True, False],
    },
}
"""The default space per algorithm (``champion tune --show-space`` prints it as a space file)."""


class Suggester(Protocol):
    """What sampling needs of an Optuna trial (``optuna.Trial`` is one)."""

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Parameter:
    """One searched key: its choices, or a range (whole numbers for an integer field)."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def labels(self) -> list[Any]:
        """The choices as Optuna takes them: a list (hidden_sizes) becomes its JSON text."""
        return [json.dumps(choice) if isinstance(choice, (list, tuple)) else choice for choice in self.choices or ()]

    def sample(self, trial: Suggester) -> Any:
        """This key's value for ``trial``."""
        if self.choices is not None:
            label = trial.suggest_categorical(self.key, self.labels())
            return self.choices[self.labels().index(label)]
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def to_yaml_value(self) -> Any:
        if self.choices is not None:
            return [list(choice) if isinstance(choice, tuple) else choice for choice in self.choices]
        spec: dict[str, Any] = {"low": self.low, "high": self.high}
        spec.update({"log": True} if self.log else {})
        spec.update({"step": self.step} if self.step is not None else {})
        return spec


@dataclass(frozen=True)
class SearchSpace:
    """The keys a study searches, in order."""

    parameters: tuple[Parameter, ...]
    source: str
    """Where it came from: 'the default PPO space' or the file's path."""

    def sample(self, trial: Suggester, config: TrainConfig) -> tuple[dict[str, Any], list[str]]:
        """A trial's settings (dotted keys) over ``config`` (the study's base), and notes on what was adjusted to
        make them a valid run (a minibatch that does not divide the rollout is made its largest divisor that does)."""
        settings = {parameter.key: parameter.sample(trial) for parameter in self.parameters}
        return fitted(settings, config)

    def to_dict(self) -> dict[str, Any]:
        return {parameter.key: parameter.to_yaml_value() for parameter in self.parameters}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)


def fitted(settings: dict[str, Any], config: TrainConfig) -> tuple[dict[str, Any], list[str]]:
    """``settings`` with ``ppo.minibatch_size`` made a divisor of the rollout (num_steps x num_envs) when it is not."""
    settings, notes = dict(settings), []
    if config.algo == "ppo" and "ppo.minibatch_size" in settings:
        num_steps = settings.get("ppo.num_steps", config.ppo.num_steps)
        rollout = int(num_steps) * int(settings.get("num_envs", config.num_envs))
        minibatch = int(settings["ppo.minibatch_size"])
        if rollout % minibatch:
            settings["ppo.minibatch_size"] = math.gcd(minibatch, rollout)
            notes.append(f"ppo.minibatch_size {minibatch} -> {settings['ppo.minibatch_size']} (a divisor of the "
                         f"{rollout:,}-transition rollout)")
    return settings, notes


def default_space(algo: str) -> SearchSpace:
    """The documented default space of ``algo``."""
    if algo not in DEFAULT_SPACES:
        raise ConfigError(f"algo must be one of {', '.join(DEFAULT_SPACES)}, got {algo!r}")
    return parse_space(DEFAULT_SPACES[algo], algo, f"the default {algo.upper()} space")


def load_space(path: str | Path, algo: str) -> SearchSpace:
    """A space file, checked: ConfigError in one line naming the file and the key when anything is wrong."""
    from champion.runners.configure import read_user_yaml

    path = Path(path)
    return parse_space(read_user_yaml(path, "space file"), algo, str(path))


def parse_space(data: Any, algo: str, source: str) -> SearchSpace:
    """``data`` (a space file's mapping) as a SearchSpace for ``algo``; ConfigError starting with ``source``."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: a space is a mapping of config keys to choices or ranges, e.g. "
                          f"{algo}.learning_rate: {{low: 1.0e-5, high: 1.0e-3, log: true}}, got {reprlib.repr(data)}")
    parameters = []
    for key, spec in data.items():
        try:
            parameters.append(_parameter(key, spec, algo))
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
    keys = [parameter.key for parameter in parameters]
    repeated = next((key for key in keys if keys.count(key) > 1), None)
    if repeated:
        raise ConfigError(f"{source}: {repeated} is given twice (once by its short name); give it once")
    return SearchSpace(tuple(parameters), source)


def _parameter(raw_key: Any, spec: Any, algo: str) -> Parameter:
    """One entry of a space, checked against champion's config fields."""
    from champion.runners import configure

    if not isinstance(raw_key, str):
        raise ConfigError(f"the key {raw_key!r} is not text; keys are config keys such as {algo}.learning_rate")
    base = TrainConfig(algo=algo)
    key = configure._resolve_key(base, raw_key)
    section = key.partition(".")[0] if "." in key else ""
    if key in STUDY_KEYS or section in STUDY_SECTIONS:
        raise ConfigError(f"{key} is the study's, the same for every trial (give it with --set or the tune options), "
                          "so a space may not search it")
    other = "a2c" if algo == "ppo" else "ppo"
    if section == other:
        raise ConfigError(f"{key} is a setting of {other.upper()}, and this study tunes {algo.upper()}")
    field_type = _field_type(base, key)
    if isinstance(spec, list):
        return _choices(key, spec, base)
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}: give a list of choices or a range {{low: ..., high: ...}}, got {reprlib.repr(spec)}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list):
            raise ConfigError(f"{key}: choices must be a list alone, e.g. {key}: {{choices: [...]}}")
        return _choices(key, spec["choices"], base)
    return _range(key, spec, field_type)


def _choices(key: str, choices: list[Any], base: TrainConfig) -> Parameter:
    from champion.runners import configure

    if not choices:
        raise ConfigError(f"{key}: the list of choices is empty; give at least one")
    values = []
    for choice in choices:
        config = configure.apply_overrides(base, {key: choice})  # the field's own check: "must be an integer ..."
        value = _get(config, key)
        values.append(tuple(value) if isinstance(value, list) else value)
    labels = [json.dumps(value) if isinstance(value, tuple) else value for value in values]
    if len(set(map(repr, labels))) < len(labels):
        raise ConfigError(f"{key}: a choice is listed twice in {reprlib.repr(choices)}; list each once")
    return Parameter(key, choices=tuple(values))


def _range(key: str, spec: dict[str, Any], field_type: Any) -> Parameter:
    unknown = sorted(set(spec) - {"low", "high", "log", "step"})
    if unknown:
        raise ConfigError(f"{key}: unknown range field {unknown[0]!r}; a range has low, high and optionally log or "
                          "step")
    if field_type not in (int, float, float | None, int | None):
        raise ConfigError(f"{key} is not a number, so it takes a list of choices, not a range")
    integer = field_type in (int, int | None)
    for name in ("low", "high"):
        value = spec.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}: {name} must be a number, got {value!r}")
        if integer and not float(value).is_integer():
            raise ConfigError(f"{key} is an integer field, so {name} must be a whole number, got {value!r}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if not low < high:
        raise ConfigError(f"{key}: low must be below high, got low={low!r} high={high!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{key}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{key}: a log range needs low > 0, got low={low!r}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
            raise ConfigError(f"{key}: step must be a positive number, got {step!r}")
        if log:
            raise ConfigError(f"{key}: give log or step, not both (Optuna samples a log range without steps)")
        if integer and not float(step).is_integer():
            raise ConfigError(f"{key} is an integer field, so step must be a whole number, got {step!r}")
    return Parameter(key, low=low, high=high, log=log, step=step, integer=integer)


def _get(config: TrainConfig, key: str) -> Any:
    if "." in key:
        section, name = key.split(".", 1)
        return getattr(getattr(config, section), name)
    return getattr(config, key)


def _field_type(config: TrainConfig, key: str) -> Any:
    import typing

    if "." in key:
        section, name = key.split(".", 1)
        return typing.get_type_hints(type(getattr(config, section)))[name]
    return typing.get_type_hints(TrainConfig)[key]


def space_fields(space: SearchSpace) -> list[str]:
    """The keys a space searches."""
    return [parameter.key for parameter in space.parameters]


def plain(value: Any) -> Any:
    """A setting as YAML and JSON write it (tuples as lists)."""
    if dataclasses.is_dataclass(value):
        return plain(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value
