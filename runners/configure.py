"""Build a TrainConfig from defaults, a preset and overrides (TensorFlow-free, so it is quick).

Overrides use dotted keys (``ppo.learning_rate``, ``network.hidden_sizes``); a bare key such as
``learning_rate`` means the selected algorithm's field, or the network's. Values are parsed as
YAML and then coerced to the field's type, so ``1e-3``, ``[64, 64]`` and ``null`` all work.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from champion.agents.config import TORSO_REFERENCE, ConfigError, TrainConfig, validate
from champion.envs import presets
from champion.runners.store.folder_trust import read_yaml_file

SECTIONS = ("network", "ppo", "a2c", "ray", "crown", "stop")

YAML_NULLS = ("null", "Null", "NULL", "~")
"""The texts YAML reads as null."""


def parse_set_pairs(pairs: typing.Sequence[str]) -> dict[str, str | None]:
    """Turn ``["key=value", ...]`` into a dict, refusing entries without '='. A value that YAML reads as null
    ("null", "~") unsets the key, text fields included (``--set ray.address=null``)."""
    overrides: dict[str, str | None] = {}
    for pair in pairs:
        key, separator, value = (part.strip() for part in pair.partition("="))
        if not separator or not key:
            raise ConfigError(f"--set expects key=value (for example ppo.learning_rate=1e-3), got {pair!r}")
        overrides[key] = None if value in YAML_NULLS else value
    return overrides


def valid_keys(config: TrainConfig | None = None) -> list[str]:
    """Every dotted key that an override may name."""
    config = config or TrainConfig()
    keys = []
    for item in dataclasses.fields(config):
        if item.name in SECTIONS:
            keys += [f"{item.name}.{sub.name}" for sub in dataclasses.fields(getattr(config, item.name))]
        else:
            keys.append(item.name)
    return keys


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Return a copy of config with each dotted key set; unknown keys name the closest valid key."""
    for raw_key, raw_value in overrides.items():
        key = _resolve_key(config, raw_key)
        if "." in key:
            section_name, name = key.split(".", 1)
            section = getattr(config, section_name)
            value = _coerce(raw_key, raw_value, _field_type(type(section), name))
            config = dataclasses.replace(config, **{section_name: dataclasses.replace(section, **{name: value})})
        else:
            config = dataclasses.replace(config, **{key: _coerce(raw_key, raw_value, _field_type(TrainConfig, key))})
    return config


def resolve_config(
    env_id: str,
    algo: str = "ppo",
    overrides: dict[str, Any] | None = None,
    use_preset: bool = True,
    config_file: ConfigFile | None = None,
    strict: bool = False,
) -> tuple[TrainConfig, str | None]:
    """Defaults, then the (env, algo) preset, then the config file's settings, then overrides; validated. An error
    in the preset or the file names it. A file's settings of the algorithm the run does not train are refused
    unless they are that section's defaults (a run's config.yaml holds both sections); with ``strict`` (a user's
    command or call) so are the overrides' (they would do nothing), and env_id or algo among them (they choose
    the preset, so they are arguments, not overrides).

    Returns the config and a note for the user when no preset exists for this pair.
    """
    config = TrainConfig(env_id=env_id, algo=algo)
    if algo not in ("ppo", "a2c"):
        raise ConfigError(f"algo must be one of ppo, a2c, got {algo!r}")
    overrides = dict(overrides or {})
    if strict:
        _refuse_choosers(overrides)
    preset = presets.load(env_id, algo) if use_preset else None
    if preset is not None:
        config = _apply_from(config, _flatten(preset), f"preset {presets.preset_path(env_id, algo)}: ")
    else:
        config = apply_overrides(config, NO_PRESET)
    file_settings = _file_settings(config, config_file, overrides) if config_file is not None else {}
    config = _apply_from(config, file_settings, f"{config_file.path}: " if config_file else "")
    overrides = _used_settings(config, overrides, "", keep_defaults=False) if strict else overrides
    config = apply_overrides(config, overrides)
    config = _ray_layout(config, {**file_settings, **overrides})
    note = None
    if preset is None:
        given = {_resolve_key(config, key) for key in {**file_settings, **overrides}}
        if algo == "ppo" and "ppo.num_steps" not in given:
            config = apply_overrides(config, {"ppo.num_steps": _rollout_steps(config)})
        note = _no_preset_note(config, use_preset, config_file)
    validate(config)
    return config, note


def _no_preset_note(config: TrainConfig, use_preset: bool, config_file: ConfigFile | None) -> str:
    """What an env without a preset starts from (or, with a config file, that the file's settings go over it)."""
    why = f"no preset for {config.env_id} with {config.algo}" if use_preset else "--no-preset"
    if config_file is not None:
        return f"{why}: {config_file.path}'s settings over the defaults for any env (champion presets --fields)"
    rollout = config.algo_config.num_steps * config.num_envs
    return (f"{why}: the defaults for any env ({rollout:,}-transition rollouts of {config.algo_config.num_steps:,} "
            f"steps x {config.num_envs} envs, normalised observations and rewards); champion presets lists the tuned "
            "ones")


def _refuse_choosers(overrides: dict[str, Any]) -> None:
    """env_id and algo choose the preset the overrides go over: given as overrides, they would come too late."""
    for key, option in (("env_id", "ENV_ID"), ("algo", "--algo")):
        if key in overrides:
            raise ConfigError(f"{key} is not a key to set: it chooses the preset, so give it as {option} "
                              f"(env_id and algo in a --config file work too)")


def _file_settings(config: TrainConfig, config_file: ConfigFile, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config file's settings this run uses: refused when the file is another algorithm's run; its
    schedule_steps left out when the overrides set a new total_steps (the schedule follows the new budget)."""
    source = f"{config_file.path}: "
    if config_file.algo is not None and config_file.algo != config.algo:
        article = "an" if config_file.algo == "a2c" else "a"
        raise ConfigError(f"{source}it is the config of {article} {config_file.algo.upper()} run, and this run trains "
                          f"{config.algo.upper()}, whose settings it does not hold (its {config.algo} section was "
                          f"never used); train {config_file.algo.upper()}, or leave out --algo")
    settings = dict(config_file.settings)
    given = {_resolve_key(config, key) for key in overrides}
    if "total_steps" in given and "schedule_steps" not in given:
        settings.pop("schedule_steps", None)
    return _used_settings(config, settings, source, keep_defaults=True)


def _apply_from(config: TrainConfig, settings: dict[str, Any], source: str) -> TrainConfig:
    """``apply_overrides`` whose errors start with where the settings came from (a preset's or a file's path)."""
    try:
        return apply_overrides(config, settings)
    except ConfigError as error:
        raise ConfigError(f"{source}{error}") from None


def _used_settings(config: TrainConfig, settings: dict[str, Any], source: str,
                   keep_defaults: bool) -> dict[str, Any]:
    """``settings`` without those of the algorithm the run does not train: refused in one line, except, with
    ``keep_defaults``, those equal to that section's defaults (left out: a run's config.yaml holds both sections)."""
    other = "a2c" if config.algo == "ppo" else "ppo"
    defaults = getattr(TrainConfig(), other)
    used = {}
    for key, value in settings.items():
        try:
            section, _, name = _resolve_key(config, key).partition(".")
            if section == other and keep_defaults:
                at_default = _coerce(key, value, _field_type(type(defaults), name)) == getattr(defaults, name)
        except ConfigError as error:
            raise ConfigError(f"{source}{error}") from None
        if section != other:
            used[key] = value
            continue
        if keep_defaults and at_default:
            continue
        instead = (f"set {config.algo}.{name} instead, or " if name in {item.name for item in
                                                                       dataclasses.fields(config.algo_config)} else "")
        raise ConfigError(f"{source}{key} is a setting of {other.upper()}, and this run trains "
                          f"{config.algo.upper()}: {instead}train {other.upper()} with --algo {other}")
    return used


def _ray_layout(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """With ray.envs_per_worker given and num_envs not, num_envs becomes workers x envs_per_worker."""
    given = {_resolve_key(config, key) for key in overrides}
    if config.ray.envs_per_worker and "num_envs" not in given:
        return dataclasses.replace(config, num_envs=config.ray.workers * config.ray.envs_per_worker)
    return config


NO_PRESET = {"network.normalize_observations": True, "reward_scaling": True}
"""What an env without a preset starts from, besides the defaults (docs/benchmarks.md has the measurements):
observations normalised inside the model, since a user's env may measure them on any scale, and rewards
scaled by their running return's std, as VecNormalize does (without it, normalised observations made
Pendulum-v1 worse: -738 and -943 against -144 and -145 with it, seeds 0 and 1). PPO's rollout is sized
by ``_rollout_steps``."""
PPO_ROLLOUT = 2048
"""Transitions per PPO rollout for an env without a preset, whatever the number of envs (SB3's default)."""


def _rollout_steps(config: TrainConfig) -> int:
    """Vector steps per PPO rollout so that a rollout holds about PPO_ROLLOUT transitions, rounded up so that
    the minibatch size divides it (with the default 8 envs: 256 steps)."""
    step = config.ppo.minibatch_size // math.gcd(config.ppo.minibatch_size, config.num_envs)
    return max(step, -(-(PPO_ROLLOUT // config.num_envs) // step) * step)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from its to_dict() form (e.g. a run's config.yaml)."""
    return apply_overrides(TrainConfig(), _flatten(data))


@dataclass(frozen=True)
class ConfigFile:
    """A YAML file of config keys (``champion train --config FILE``): shaped like a preset, or a run's config.yaml.
    Its env_id and algo are defaults for the command's; its run_name is not reused (a new run gets a folder of its
    own), and its schedule_steps only when the run it describes changed its budget after it started."""

    path: Path
    settings: dict[str, Any]
    """Dotted keys, without env_id, algo and run_name."""
    env_id: str | None = None
    algo: str | None = None
    notes: tuple[str, ...] = ()
    """What the file holds that is not used, for the user."""


def read_user_yaml(path: Path, kind: str) -> Any:
    """A YAML file a user hands champion (a config file, a search space), read as bounded as a run folder's files:
    ConfigError in one line naming the ``kind`` of file and its path when it cannot be read or is not YAML."""
    try:
        return read_yaml_file(path)
    except OSError as error:
        raise ConfigError(f"{kind} {path} cannot be read ({error.strerror or error})") from None
    except (ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{kind} {path} is not valid YAML: {' '.join(str(error).split())}") from None


def read_config_file(path: str | Path) -> ConfigFile:
    """Read ``path`` as ``ConfigFile``; ConfigError (one line naming the file) when it cannot be read, is not YAML
    or is not a mapping of config keys. Read as bounded as a run folder's files: it may come from anyone."""
    path = Path(path)
    data = read_user_yaml(path, "config file")
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise ConfigError(f"config file {path} must be a mapping of config keys, as a preset or a run's config.yaml "
                          f"is (e.g. total_steps: 100000 and ppo: {{learning_rate: 3.0e-4}})")
    section = next((key for key in SECTIONS if key in data and not isinstance(data[key], dict)), None)
    if section is not None:
        raise ConfigError(f"config file {path} has {section}: {reprlib.repr(data[section])} instead of a mapping of "
                          f"{section}.* fields (e.g. {section}: {{...}})")
    settings = _flatten(data)
    env_id, algo, run_name = (settings.pop(key, None) for key in ("env_id", "algo", "run_name"))
    if env_id is not None and not isinstance(env_id, str):
        raise ConfigError(f"config file {path}: env_id must be text, got {env_id!r}")
    if algo is not None and algo not in ("ppo", "a2c"):
        raise ConfigError(f"config file {path}: algo must be ppo or a2c, got {algo!r}")
    if settings.get("schedule_steps") is not None and settings.get("schedule_steps") == settings.get("total_steps"):
        del settings["schedule_steps"]  # the run's own budget: a new run sets it from its own total_steps
    if settings.get("ray.envs_per_worker") and settings.get("num_envs") == (
            settings.get("ray.workers", 0) * settings["ray.envs_per_worker"]):
        del settings["num_envs"]  # workers x envs_per_worker: made again from them, so --workers may change it
    notes = (f"{path}'s run_name {run_name} is not reused: a new run gets a folder of its own (--run-name names it)",
             ) if run_name else ()
    return ConfigFile(path, settings, env_id, algo, notes)


RECORDED_KEYS = ("env_id", "algo")
"""What every config.yaml champion writes names: without them it would be some other problem."""
WRITTEN = "the mapping of config fields champion train writes (env_id: ..., algo: ..., ppo: {...}, ...)"


OLD_EVAL_TIMEOUT_S = 600.0
"""ray.eval_timeout_s as champion wrote it into every run's config.yaml before ray.eval_stall_s: its default wait for
an evaluation actor then, which later champions find by a stall instead (eval_timeout_s is now a cap that stops the
run)."""


def _forget_old_evaluation_wait(data: dict[str, Any]) -> None:
    """A run recorded before ray.eval_stall_s (its config.yaml has none) wrote the old default wait 600 s as
    ray.eval_timeout_s: that was no cap the user chose, so it is dropped (a long evaluation is never cut short)."""
    ray = data.get("ray")
    if isinstance(ray, dict) and "eval_stall_s" not in ray and ray.get("eval_timeout_s") == OLD_EVAL_TIMEOUT_S:
        ray["eval_timeout_s"] = None


def load_run_config(run_dir: Path) -> TrainConfig:
    """A run folder's config.yaml as a TrainConfig; ConfigError (one line naming the file, what is wrong and what is
    right) when it cannot be read, expands past a sane size, is not champion's mapping, or holds a key or value
    champion does not take; EnvError when its env's module is not an installed package (nor already imported,
    e.g. by ``--env-module``), ConfigError when its network torso's module is not. The run name is not checked
    again: the folder exists, and older champions allowed names a new run may not take."""
    path = Path(run_dir) / "config.yaml"
    try:
        data = read_yaml_file(path)
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror or error}); a run folder needs the config.yaml "
                          "champion train wrote") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}; a run folder needs its config as champion train wrote "
                          "it") from None
    except ValueError as error:
        raise ConfigError(f"{path} is not a config champion wrote: {error}") from None
    problem = _shape_problem(data)
    if problem:
        raise ConfigError(f"{path} {problem}, where it should hold {WRITTEN}; fix or restore it")
    _forget_old_evaluation_wait(data)
    try:
        config = config_from_dict(data)
        validate_recorded(config)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}; fix or restore it") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise ConfigError(f"{path} holds a setting champion cannot take ({type(error).__name__}: {error})") from None
    from champion.envs.factory import import_recorded_env_module

    import_recorded_env_module(config.env_id, str(path))
    import_torso_modules(config.network, str(path))
    return config


def validate_recorded(config: TrainConfig) -> None:
    """``validate`` for the config of a run folder that exists: its name is not checked again (older champions
    allowed names a new run may not take; ``validate``'s rules are for names about to become folders)."""
    validate(dataclasses.replace(config, run_name=None))


def _shape_problem(data: Any) -> str | None:
    """What keeps ``data`` (a parsed config.yaml) from being a config's mapping, if anything."""
    if not isinstance(data, dict):
        kinds = {type(None): "nothing", list: "a list", str: "a text", int: "a number", float: "a number"}
        return f"holds {kinds.get(type(data), 'a ' + type(data).__name__)}"
    missing = [key for key in RECORDED_KEYS if key not in data]
    if missing:
        return f"has no {missing[0]}"
    wrong = next((key for key in data if not isinstance(key, str)), None)
    if wrong is not None:
        return f"has the key {wrong!r}, which is not text"
    section = next((key for key in SECTIONS if key in data and not isinstance(data[key], dict)), None)
    if section is not None:
        return f"has {section}: {reprlib.repr(data[section])} instead of a mapping of {section}.* fields"
    return None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and not prefix and key in SECTIONS:
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _resolve_key(config: TrainConfig, key: str) -> str:
    keys = valid_keys(config)
    if key in keys:
        return key
    for section in (config.algo, "network"):
        if f"{section}.{key}" in keys:
            return f"{section}.{key}"
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not close:
        bare = {full.split(".")[-1]: full for full in keys}
        close = [bare[match] for match in difflib.get_close_matches(key.split(".")[-1], list(bare), n=1, cutoff=0.6)]
    hint = f"did you mean {close[0]}?" if close else "champion presets --fields lists the valid keys"
    raise ConfigError(f"unknown config key {key!r}; {hint}")


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(key: str, value: Any, target: Any) -> Any:
    """Parse strings as YAML, then convert to the annotated type or say what was expected. A text field keeps
    the text as given (YAML would read a run named "off" or "no" as false)."""
    if isinstance(value, str) and target in (str, str | None):
        return value
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            pass
    origin = typing.get_origin(target)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(target) if option is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, options[0])
    if origin is dict:  # env_kwargs: whatever the env takes
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{key} must be a mapping, e.g. {key}={{frame_skip: 4}}, got {value!r}")
    try:
        if origin is tuple and typing.get_origin(typing.get_args(target)[0]) is tuple:  # e.g. cnn_layers
            if not isinstance(value, (list, tuple)) or not all(isinstance(item, (list, tuple)) for item in value):
                raise ConfigError(f"{key} must be a list of lists of integers, e.g. [[32, 8, 4], [64, 4, 2]], "
                                  f"got {value!r}")
            return tuple(_coerce(key, item, typing.get_args(target)[0]) for item in value)
        if origin is tuple:
            if not isinstance(value, (list, tuple)):
                raise TypeError
            if not all(_is_whole(item) for item in value):
                raise TypeError
            return tuple(_to_int(item) for item in value)
        if target is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if target is int:
            if _is_whole(value):
                return _to_int(value)
            raise TypeError
        if target is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if target is str and value is not None:
            return str(value)
    except ConfigError:
        raise
    except (TypeError, ValueError):
        pass
    if typing.get_origin(target) is tuple:  # hidden_sizes=64: one layer or two? the user says which
        one = _is_whole(value) and _to_int(value) > 0
        example = f"[{value}] for one layer of {value}, [{value}, {value}] for two" if one else "[64, 64]"
        raise ConfigError(f"{key} must be a list of integers, one per layer (e.g. {example}), got {value!r}")
    expected = {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(target, "text")
    raise ConfigError(f"{key} must be {expected}, got {value!r}")


def _is_whole(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float) and value.is_integer():
        return True
    if isinstance(value, str):
        try:
            return float(value).is_integer()
        except ValueError:
            return False
    return False


def _to_int(value: Any) -> int:
    return value if isinstance(value, int) else int(float(value))


def import_torso_modules(network: Any, source: str | None) -> None:
    """Import the modules of a network's torso functions (``network.torso`` and ``network.value_torso``: a
    NetworkConfig or NetworkSpec) and check that each names a function. A name ``source`` read from a file (a run
    folder's config.yaml or manifest, a config file) is imported from installed packages only, as a recorded env's
    module is (``champion.envs.factory.import_recorded_module``); one the user named (``source`` None) may also be in
    the current folder. ConfigError (one line) otherwise."""
    import importlib

    from champion.agents.torso import GIVEN_TORSOS, find_torso, running_script
    from champion.envs.factory import allow_current_folder_modules, import_recorded_module

    for setting in ("torso", "value_torso"):
        reference = getattr(network, setting)
        if reference is None or reference in GIVEN_TORSOS:
            continue
        if not isinstance(reference, str) or TORSO_REFERENCE.fullmatch(reference) is None:
            raise ConfigError(f"{source or 'the config'} names the network {setting} {reference!r}, which is not "
                              "module:function")
        module = reference.split(":", 1)[0]
        if running_script(module) is not None:  # the program being run (python module.py) defines it
            find_torso(reference)
            continue
        if source is not None:
            import_recorded_module(module, f"the network torso {reference!r}", source, ConfigError, "a network torso")
        elif module not in sys.modules:
            allow_current_folder_modules()
            try:
                importlib.import_module(module)
            except Exception as error:  # a user's module can fail in any way while importing
                raise ConfigError(f"network.{setting} {reference}: cannot import {module!r} ({type(error).__name__}: "
                                  f"{error})") from None
        find_torso(reference)
