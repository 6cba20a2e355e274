"""champion's Python API: train, resume, tune, load, evaluate, replay, presets.

Each function imports what it needs when it is called, so that ``import champion`` stays quick and loads no
TensorFlow. Errors are ``champion.ChampionError``s carrying the one line the ``champion`` command prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
import sys
from typing import TYPE_CHECKING, Any

from champion.callbacks import Callback
from champion.errors import UsageError
from champion.policy import Policy

if TYPE_CHECKING:
    from champion.runners.evaluate import EvalResult
    from champion.runners.export import ExportResult
    from champion.runners.replay import ReplayResult
    from champion.runners.store.run_metadata import TrainResult
    from champion.runners.tune.report import StudyResult


@dataclass(frozen=True)
class RunResult:
    """What a training session ended with; everything else is in its run folder."""

    run_dir: Path
    best_entry: Path | None
    """The training-time best entry (``RUN_DIR/best/NNNN-step-S``), None if no evaluation was finite."""
    best_mean_return: float
    """Its mean return over the evaluation episodes that made it best."""
    best_step: int | None
    champion_entry: Path | None
    """The crowned entry (chosen on held-out episodes at the end of the run), None when the run was not crowned."""
    champion_mean_return: float | None
    """The champion's mean return over its held-out episodes."""
    env_steps: int
    """Environment steps the run has reached (over all its sessions)."""
    stopped_early: str | None
    """Why the run ended before its budget (a callback's or a ``stop.*`` rule's reason), else None."""
    details: TrainResult
    """The session's timings, evaluations and engine report."""

    def load(self) -> Policy:
        """The run's policy: the champion if crowned, else the training-time best."""
        return load(self.run_dir)


@dataclass(frozen=True)
class Preset:
    """Tuned settings for one (env, algorithm) pair, shipped with champion."""

    env_id: str
    algo: str
    path: Path

    def settings(self) -> dict[str, Any]:
        """The preset's config keys (the YAML's mapping)."""
        from champion.envs import presets as preset_files

        return preset_files.load(self.env_id, self.algo) or {}


def train(env_id: str | None = None, algo: str | None = None, *, total_steps: int | None = None,
          seed: int | None = None, config: str | Path | Mapping[str, Any] | None = None,
          callbacks: Sequence[Callback] = (), progress: bool = True, use_preset: bool = True,
          torso: Callable[[int], Any] | str | None = None, value_torso: Callable[[int], Any] | str | None = None,
          **overrides: Any) -> RunResult:
    """Train ``algo`` (default ppo) on ``env_id`` and keep its best policy in a new run folder
    (``results/<env>/<algo>/<run>``).

    Settings go defaults -> the (env, algo) preset (unless ``use_preset`` is False) -> ``config`` (a mapping, or a
    YAML file shaped like a preset or a run's config.yaml, whose env_id and algo are used when these arguments are
    not given) -> ``overrides``. Overrides are config keys: top-level ones by name (``eval_every=5000``), a section
    as a mapping (``ppo={"learning_rate": 1e-3}``, ``stop={"at_return": 475}``). ``callbacks`` hear about
    evaluations, new bests and checkpoints and may stop the run (``champion.Callback``). ``seed`` (default 0) seeds
    the network, the sampling and the training envs. Bad settings raise ``champion.ConfigError`` before anything is
    written, and before TensorFlow is imported.

    ``torso`` puts your own Keras network in place of the MLP torso: a function that takes the width of the
    features (the observation, normalised when ``network.normalize_observations`` is on, or the encoders' output)
    and returns a ``keras.Model`` from [batch, width] to [batch, features], or its name ``"module:function"``
    (config key ``network.torso``). champion adds the heads, the normalisation and the distributions, and acts
    with it in TensorFlow. The value function gets its own copy (``value_torso``: another function), or shares it
    with ``network={"shared_torso": True}``. A run records the function by name (a lambda or a nested function is
    refused): resume, replay and export import its module again, from installed packages or a module you name.
    """
    from champion.runners.configure import resolve_config
    from champion.runners.hooks import Hooks

    _refuse_in_a_spawned_child("train")
    Hooks(callbacks)  # a wrong callbacks argument is refused before anything else
    env_id, algo, settings, config_file = _train_settings(env_id, algo, config, overrides)
    settings.update({key: value for key, value in (("seed", seed), ("total_steps", total_steps)) if value is not None})
    settings.update(_torso_settings(torso, value_torso))
    resolved, note = resolve_config(env_id, algo or "ppo", settings, use_preset=use_preset, config_file=config_file,
                                    strict=True)
    _import_torsos(resolved, config_file)
    _check_before_training(resolved)
    notes = [*(config_file.notes if config_file and "run_name" not in settings else ()), *([note] if note else [])]
    for text in notes if progress else ():
        _note(text)
    from champion.runners.training import train as run_training

    return _finished(run_training(resolved, progress=progress, callbacks=callbacks), callbacks)


def _train_settings(env_id: str | None, algo: str | None, config: str | Path | Mapping[str, Any] | None,
                    overrides: Mapping[str, Any]) -> tuple[str, str | None, dict[str, Any], Any]:
    """``train``'s env id, algorithm, dotted settings and config file (or None). A file's or a mapping's env_id
    and algo stand where the arguments are not given. A module the caller named (``module:Env-v0``) may live in the
    current folder, as for ``champion train``; one a file names is imported only from installed packages, as a run
    folder's is."""
    from champion.envs.factory import allow_current_folder_modules, import_recorded_env_module
    from champion.runners.configure import read_config_file

    config_file, mapping = None, {}
    if isinstance(config, (str, Path)):
        config_file = read_config_file(config)
        chosen = {"env_id": config_file.env_id, "algo": config_file.algo}
    elif isinstance(config, Mapping):
        mapping = _flatten(config)
        chosen = {key: mapping.pop(key, None) for key in ("env_id", "algo")}
    elif config is not None:
        raise UsageError(f"config must be a mapping of config keys or the path of a YAML file, got "
                         f"{type(config).__name__}")
    else:
        chosen = {"env_id": None, "algo": None}
    named = isinstance(env_id, str) and bool(env_id)
    env_id, algo = env_id or chosen["env_id"], algo or chosen["algo"]
    if config_file is not None and not env_id:
        raise UsageError(f"{config_file.path} names no env_id: give one as well (champion train ENV_ID --config "
                         "FILE, or env_id= in Python)")
    if not isinstance(env_id, str) or not env_id:
        raise UsageError(f"env_id must be a gymnasium id such as 'CartPole-v1' (or a config file naming one), got "
                         f"{env_id!r}")
    if ":" in env_id and named:
        allow_current_folder_modules()
    elif ":" in env_id:
        import_recorded_env_module(env_id, str(config_file.path if config_file else "config"))
    return env_id, algo, {**mapping, **_flatten(overrides)}, config_file


def _torso_settings(torso: Any, value_torso: Any) -> dict[str, str]:
    """``train``'s torso arguments as config keys: each function's recorded name (one line when it has none)."""
    from champion.agents.torso import torso_reference

    given = (("network.torso", torso, "torso"), ("network.value_torso", value_torso, "value_torso"))
    return {key: torso_reference(value, argument) for key, value, argument in given if value is not None}


def _import_torsos(config: Any, config_file: Any) -> None:
    """Import the network torsos' modules: from installed packages only when a config file names them (as a run
    folder's config.yaml does), else (the caller named them) from the current folder too."""
    from champion.runners.configure import import_torso_modules

    named_by_file = config_file is not None and all(
        config_file.settings.get(f"network.{key}") == getattr(config.network, key) for key in ("torso", "value_torso"))
    import_torso_modules(config.network, str(config_file.path) if named_by_file else None)


def resume(run_dir: str | Path, *, total_steps: int | None = None, callbacks: Sequence[Callback] = (),
           progress: bool = True, **overrides: Any) -> RunResult:
    """Continue a run from its newest intact checkpoint, exactly where it stopped. ``total_steps`` and the keys
    that change how long or where a run goes (``eval_every``, ``checkpoint_every``, ``stop``, ``crown``, ``ray``)
    may change; what it learns may not."""
    from champion.runners.hooks import Hooks

    _refuse_in_a_spawned_child("resume")
    Hooks(callbacks)
    run_dir, settings = Path(run_dir), _flatten(overrides)
    if total_steps is not None:
        settings["total_steps"] = total_steps
    _check_before_resuming(run_dir, settings, progress)
    from champion.runners.training import resume as run_resume

    return _finished(run_resume(run_dir, settings, progress=progress, callbacks=callbacks), callbacks)


def tune(env_id: str | None = None, algo: str | None = None, *, trials: int | None = None,
         trial_steps: int | None = None, workers: int | None = None, engine: str | None = None,
         storage: str | None = None, space: str | Path | Mapping[str, Any] | None = None,
         study_name: str | None = None, results_dir: str | Path = "results",
         config: str | Path | Mapping[str, Any] | None = None, use_preset: bool = True, seed: int = 0, top: int = 3,
         final_episodes: int = 100, final_seed: int | None = None, prune: bool = True, startup_trials: int = 5,
         ray_address: str | None = None, resume: str | Path | None = None, progress: bool = True,
         **overrides: Any) -> StudyResult | None:
    """Search ``algo``'s settings on ``env_id`` with Optuna: ``trials`` trials of ``trial_steps`` steps, each an
    ordinary champion run under the study folder (``results/tune/<env>/<algo>/<study_name>``), ranked by its crowned
    held-out mean, pruned on its evaluations (a median pruner, once ``startup_trials`` trials finished); then the top
    ``top`` trials' champions are re-evaluated on ``final_episodes`` fresh seeds no trial saw, and the winner is
    written as ``winner.yaml`` (``champion train --config``).

    ``space``: a space file or mapping (default: the algorithm's documented space); ``config`` and ``overrides``:
    settings every trial runs with (a trial's own ``engine`` goes in ``config``: ``engine`` here is the study's). ``workers`` trials at once, as processes on this machine or, with
    ``engine="ray"``, as Ray tasks; ``storage``: an Optuna database URL shared by several machines (default: a
    journal file in the study folder). ``resume``: a study folder to go on with (it may change ``trials``,
    ``workers``, ``engine`` and ``ray_address``). Needs Optuna (``pip install -e '.[tune]'``). Returns the report,
    or None when other processes of the study still run trials (the last one reports)."""
    from champion.runners.tune.settings import FINAL_SEED, make_settings
    from champion.runners.tune.spaces import load_space, parse_space
    from champion.runners.tune.tuning import prepare, resumed, run_study

    _refuse_in_a_spawned_child("tune")
    if resume is not None:
        changed = {"trials": trials, "workers": workers, "engine": engine, "ray_address": ray_address}
        return run_study(prepare(resumed(resume, **changed)), progress)
    env_id, algo, settings, config_file = _train_settings(env_id, algo, config, overrides)
    algo = algo or "ppo"
    file_settings: dict[str, Any] = {}
    if config_file is not None:  # a run's config.yaml or a study's winner.yaml: the study sets seed, budget, folder
        from champion.runners.tune.settings import without_study_keys

        file_settings, note = without_study_keys(config_file.settings, config_file.path)
        if note:
            print(f"note: {note}", file=sys.stderr)
    base = {**file_settings, **settings}
    if trials is None or trial_steps is None:
        raise UsageError("give trials= and trial_steps= (how many trials, and each one's env steps), or resume= a "
                         "study folder")
    if isinstance(space, (str, Path)):
        search = load_space(space, algo)
    elif isinstance(space, Mapping):
        search = parse_space(dict(space), algo, "space")
    else:
        search = None
    from champion.runners.tune.spaces import plain

    study = make_settings(env_id, algo, trials=trials, trial_steps=trial_steps, results_dir=results_dir,
                          study_name=study_name, space=search, base=plain(base), use_preset=use_preset, seed=seed,
                          storage=storage, prune=prune, startup_trials=startup_trials, top=top,
                          final_episodes=final_episodes,
                          final_seed=FINAL_SEED if final_seed is None else final_seed, workers=workers or 1,
                          engine=engine or "process", ray_address=ray_address)
    return run_study(prepare(study), progress)


def load(path: str | Path, *, entry: str | None = None, best: bool = False, seed: int | None = None) -> Policy:
    """A saved policy, ready to act: ``path`` is a run folder (its crowned champion, else its training-time best),
    a folder of runs (the newest run with a best policy; with ``best``, the highest best return) or one entry
    folder (``RUN_DIR/best/0003-step-40000``). ``entry`` picks an entry of the run by name, or ``"best"`` for the
    training-time best. The weights are verified (sha256) and must fit the network the entry records; the env is
    not made (``Policy.make_env`` makes it). ``seed`` seeds ``act(..., deterministic=False)``."""
    from champion.runners.replay import load_policy
    from champion.runners.store.folder_trust import is_entry_name
    from champion.runners.store.runs import choose_run

    path = Path(path).absolute()
    if entry is None and is_entry_name(path.name) and path.parent.name == "best" and path.is_dir():
        path, entry = path.parent.parent, path.name
    run_dir, _ = choose_run(path, best)
    numpy_policy, manifest = load_policy(run_dir, entry)
    return Policy(numpy_policy, manifest, seed=seed)


def evaluate(policy: Policy, env_id: str | None = None, episodes: int = 10,
             seeds: Sequence[int] | None = None) -> EvalResult:
    """Play ``episodes`` deterministic episodes with ``policy`` (one per seed: by default the run's evaluation
    seeds, so the figures compare with its evaluations) on its env, or on ``env_id`` when its spaces are the
    same. Returns the returns, lengths and seeds (``.mean_return``, ``.std_return``)."""
    from champion.envs.factory import EnvOptions
    from champion.runners.configure import load_run_config
    from champion.runners.evaluate import episode_seeds, play_episodes
    from champion.runners.replay import check_env_fits

    from champion.agents.config import SEED_LIMIT

    manifest = dict(policy.manifest, env_id=env_id or policy.env_id)
    if env_id is not None:
        check_env_fits(manifest)
    if seeds is None:
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise UsageError(f"episodes must be a positive integer, got {episodes!r}")
        seeds = episode_seeds(load_run_config(policy.run_dir).eval_seed, episodes)
    seeds = list(seeds)
    if not seeds or not all(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < SEED_LIMIT
                            for seed in seeds):
        raise UsageError(f"seeds must be a non-empty list of integers from 0 to {SEED_LIMIT - 1:,}, got {seeds[:5]!r}")
    options = EnvOptions.from_dict(manifest.get("env_options"))
    return play_episodes(manifest["env_id"], options, policy.spec, policy.weights, seeds)


def replay(path: str | Path, *, episodes: int | None = None, seed: int | None = None, entry: str | None = None,
           best: bool = False, video: str | Path | None = None, render: bool = False) -> ReplayResult:
    """What ``champion replay`` does: play the run's champion (or ``entry``) on the episodes its recorded mean is
    over, by default, and report both; ``video`` (.gif or .mp4) records the first episode, ``render`` shows it."""
    from champion.runners.replay import replay as run_replay

    return run_replay(Path(path), episodes=episodes, seed=seed, render=render, video=Path(video) if video else None,
                      best=best, entry=entry)


def export(path: str | Path, export_format: str = "saved_model", *, out: str | Path | None = None,
           entry: str | None = None, best: bool = False) -> ExportResult:
    """What ``champion export`` does: write the run's champion (or ``entry``) as a standalone ``saved_model``,
    ``tflite`` or ``keras`` artifact with a README and metadata.json, checked against replay's actions first."""
    from champion.runners.export import export_policy

    return export_policy(Path(path), export_format, Path(out) if out else None, best=best, entry=entry)


def presets() -> list[Preset]:
    """The tuned (env, algorithm) presets champion ships (``champion.train`` uses them by default)."""
    from champion.envs import presets as preset_files

    return [Preset(env_id, algo, path) for env_id, algo, path in preset_files.available()]


def quiet_tensorflow() -> bool:
    """Keep TensorFlow's C++ start-up and log notes off stderr, as the champion command does, and pass everything
    else (a crash message above all) on. Call it before importing TensorFlow and before starting threads; POSIX
    only, and CHAMPION_TF_LOGS=1 turns it off. Returns whether the filter is on."""
    from champion.runners.logs import stderr_filter

    return stderr_filter.quiet_tensorflow()


def _check_before_training(config: Any) -> None:
    """The checks a run makes before its folder exists, made before TensorFlow is imported, so that bad input gets
    its one line in a fraction of a second and without TensorFlow's start-up messages first."""
    from champion.agents.config import validate
    from champion.envs.factory import EnvOptions, describe_env
    from champion.runners.engines import choose_engine
    from champion.runners.store.run_folder import check_run_name_free, preflight

    validate(config)
    describe_env(config.env_id, EnvOptions.from_config(config))  # an unknown, refused or broken env: one line
    check_run_name_free(config)
    if choose_engine(config) == "ray" and config.ray.address is not None:  # a stopped head or a token fails here
        from champion.runners.ray.cluster import check_cluster

        check_cluster(config.ray.address)
    preflight(Path(config.results_dir))


def _check_before_resuming(run_dir: Path, settings: dict[str, Any], progress: bool) -> None:
    """A resume's checks that need no TensorFlow (a missing or finished run, refused changes, a link out of the
    folder, a full disk), made before it is imported; a lowered budget is told."""
    from champion.runners.configure import load_run_config
    from champion.runners.run_state import check_resumable, resumed_config
    from champion.runners.store.folder_trust import check_links
    from champion.runners.store.run_folder import preflight

    if run_dir.is_dir():
        check_links(run_dir)
    resumed = resumed_config(run_dir, settings)
    check_resumable(run_dir, resumed)
    if resumed.engine == "ray" and resumed.ray.address is not None:  # as for a new run: the head, its token
        from champion.runners.ray.cluster import check_cluster

        check_cluster(resumed.ray.address)
    preflight(run_dir)
    before = load_run_config(run_dir).total_steps
    if resumed.total_steps < before and progress:
        _note(f"the run's budget is lowered from {before:,} to {resumed.total_steps:,} steps")


def _refuse_in_a_spawned_child(function: str) -> None:
    """champion plays held-out episodes and renders some GIFs in spawned processes, which import the caller's
    script again as ``__mp_main__``: a call at its top level would train a second run there."""
    import inspect

    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            raise UsageError(f"champion.{function} was called while a worker process imported your script; put the "
                             "script's calls under `if __name__ == \"__main__\":`")
        frame = frame.f_back


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections to dotted keys: {"ppo": {"epochs": 4}} -> {"ppo.epochs": 4}."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and key != "env_kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _finished(details: TrainResult, callbacks: Sequence[Callback]) -> RunResult:
    """The session's result with the run's best and crowned entries, handed to each callback's ``on_end``."""
    from champion.runners.store.best_store import load_champion, pointer_name

    best_dir = details.run_dir / "best"
    try:
        best_name: str | None = pointer_name(best_dir)
    except (OSError, ValueError):  # no evaluation was finite, so no best was saved
        best_name = None
    found = load_champion(best_dir, on_warning=lambda _: None)  # as load reads it: not a crown older than the best
    crowned = found[1] if found is not None else None
    result = RunResult(
        run_dir=details.run_dir,
        best_entry=best_dir / best_name if best_name else None,
        best_mean_return=details.best_mean_return, best_step=details.best_step,
        champion_entry=best_dir / crowned["entry"] if crowned else None,
        champion_mean_return=float(crowned["held_out_mean"]) if crowned else None,
        env_steps=details.env_steps, stopped_early=details.stopped_early or None, details=details)
    from champion.runners.hooks import Hooks

    Hooks(callbacks).end(result)  # an exception in on_end is a CallbackError naming the callback
    return result


def _note(text: str) -> None:
    import sys

    print(f"note: {text}", file=sys.stderr)
