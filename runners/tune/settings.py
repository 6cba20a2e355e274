"""A study's settings (``STUDY_DIR/study.yaml``) and its folder; no Optuna and no TensorFlow here, so bad input is
refused in one line before anything starts.

A study folder holds ``study.yaml`` (what every process of the study runs), the Optuna journal (``journal.log``,
unless ``--storage`` names a database), one ordinary champion run folder per trial
(``<env>/<algo>/trial-NNNN``), ``workers/`` (a lock file per live worker process), ``study.json`` (the trials as the
last worker to finish one saw them, for ``champion runs``) and, at the end, ``report.json``, ``report.md`` and
``winner.yaml``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import yaml

from champion.agents.config import SEED_LIMIT, ConfigError, TrainConfig
from champion.runners.tune.spaces import SearchSpace, default_space, parse_space

SETTINGS_FILE = "study.yaml"
JOURNAL_FILE = "journal.log"
STUDY_FILE = "study.json"
REPORT_FILE = "report.json"
REPORT_TABLE = "report.md"
WINNER_FILE = "winner.yaml"
FINAL_SEED = 2_000_000_000
"""The study's re-evaluation plays episode i on seed FINAL_SEED + i: far from every seed a trial gives with the
defaults (its training envs' seeded resets from the run seed up, evaluation from eval_seed = 1,000,000, the crown
from eval_seed + 10,000,000), and still below the seed limit (2**31) with 100,000 episodes. The study checks those
seeds against it before any trial trains and again at the end (``champion.runners.tune.report.check_disjoint``). A
training env's later episodes run on seeds hashed from its first (``champion.envs.env_state.episode_seed``, any of
2**32), which no range can exclude: one lands among 100 fresh seeds with odds of about 1 in 43 million."""
INSTALL_HINT = "pip install -e '.[tune]' (in champion's folder), or pip install 'optuna>=4'"
DEFAULT_TRIAL_SETTINGS = {"media": False, "crown.workers": 1}
"""What a trial runs with unless the study's settings say otherwise: no best-policy GIFs (time a trial would spend
on pictures nobody compares) and the crown in the trial's own process (trials already share the machine's cores)."""
CHANGEABLE = ("trials", "workers", "engine", "ray_address")
STUDY_KEYS = ("seed", "total_steps", "schedule_steps", "run_name", "results_dir")
"""Config keys the study sets for every trial (``--seed``, ``--trial-steps``, the study folder)."""
"""What a later ``champion tune`` of the same study may change; everything else must be as study.yaml records it."""


def require_optuna() -> None:
    """ConfigError (one line, with the install hint) when Optuna is missing."""
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise ConfigError(f"champion tune needs Optuna, which is not installed: {INSTALL_HINT}")


@dataclass(frozen=True)
class StudySettings:
    """Everything the processes of one study share (``study.yaml``)."""

    env_id: str
    algo: str
    trials: int
    """Trials that must end COMPLETE or PRUNED (failed ones, and trials lost with a killed worker, do not count)."""
    trial_steps: int
    study_dir: str
    study_name: str
    space: dict[str, Any]
    """The search space, as a space file writes it."""
    base: dict[str, Any]
    """Dotted config keys every trial runs with (``--set``, ``--config``), before the trial's own settings."""
    use_preset: bool = True
    seed: int = 0
    """Every trial trains with this seed (so that trials differ in their settings only); the sampler's seed too."""
    storage: str | None = None
    """An Optuna database URL (sqlite:///..., postgresql://...); None: the journal file in the study folder."""
    prune: bool = True
    startup_trials: int = 5
    """Trials that must finish before the median pruner judges any (Optuna's n_startup_trials; RL Zoo's 5)."""
    top: int = 3
    """Complete trials whose champions the study re-evaluates."""
    final_episodes: int = 100
    final_seed: int = FINAL_SEED
    workers: int = 1
    engine: str = "process"
    """process: worker processes on this machine; ray: one Ray task per trial (retried when its worker dies)."""
    ray_address: str | None = None

    @property
    def folder(self) -> Path:
        return Path(self.study_dir)

    def search_space(self) -> SearchSpace:
        return parse_space(self.space, self.algo, f"{self.folder / SETTINGS_FILE} (space)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_settings(env_id: str, algo: str, *, trials: int, trial_steps: int, results_dir: str | Path,
                  study_name: str | None, space: SearchSpace | None, base: Mapping[str, Any], use_preset: bool,
                  seed: int, storage: str | None, prune: bool, top: int, final_episodes: int, final_seed: int,
                  workers: int, engine: str, ray_address: str | None, startup_trials: int = 5) -> StudySettings:
    """The settings of a new study, checked (one line for the first problem)."""
    for name, value, least in (("trials", trials, 1), ("trial_steps", trial_steps, 1), ("workers", workers, 1),
                               ("top", top, 1), ("final_episodes", final_episodes, 1),
                               ("startup_trials", startup_trials, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name.replace('_', '-')} must be a whole number of at least {least}, got {value!r}")
    if engine not in ("process", "ray"):
        raise ConfigError(f"engine must be process or ray, got {engine!r}")
    if not 0 <= final_seed or final_seed + final_episodes > SEED_LIMIT:
        raise ConfigError(f"final_seed must be from 0 to {SEED_LIMIT - final_episodes:,} (the last episode's seed "
                          f"stays below 2**31), got {final_seed!r}")
    name = study_name or f"tune-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=,-]{0,100}", name):
        raise ConfigError(f"study name must be letters, digits and . _ - + = , (not first: . or -), at most 101 "
                          f"characters, got {name!r}")
    from champion.runners.store.run_folder import env_folder_name

    folder = Path(results_dir) / "tune" / env_folder_name(env_id) / algo / name
    space = space or default_space(algo)
    return StudySettings(env_id=env_id, algo=algo, trials=trials, trial_steps=trial_steps, study_dir=str(folder),
                         study_name=name, space=space.to_dict(), base=dict(base), use_preset=use_preset, seed=seed,
                         storage=storage, prune=prune, startup_trials=startup_trials, top=top,
                         final_episodes=final_episodes, final_seed=final_seed,
                         workers=workers, engine=engine, ray_address=ray_address)


def read_settings(study_dir: str | Path) -> StudySettings:
    """A study folder's study.yaml; ConfigError naming the file when it is missing or not what tune writes."""
    from champion.runners.configure import read_user_yaml

    path = Path(study_dir) / SETTINGS_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; give a study folder champion tune made (it holds study.yaml)")
    data = read_user_yaml(path, "study settings")
    names = {item.name for item in dataclasses.fields(StudySettings)}
    if not isinstance(data, dict) or not {"env_id", "algo", "trials", "trial_steps", "space"} <= set(data):
        raise ConfigError(f"{path} is not a study's settings as champion tune writes them")
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{path} has the key {unknown[0]!r}, which champion tune does not write")
    settings = StudySettings(**{**data, "study_dir": str(Path(study_dir))})
    settings.search_space()  # an edited space is refused here, in one line
    return settings


def settings_yaml(settings: StudySettings) -> str:
    head = ("# champion tune: the settings every process of this study runs with (a later champion tune of the study\n"
            "# may change trials, workers, engine and ray_address; everything else must stay as it is)\n")
    return head + yaml.safe_dump(settings.to_dict(), sort_keys=False, width=120)


def check_same_study(recorded: StudySettings, given: StudySettings) -> None:
    """A second ``champion tune`` of an existing study must ask for the same study (except ``CHANGEABLE``)."""
    for item in dataclasses.fields(StudySettings):
        if item.name in CHANGEABLE or item.name in ("study_dir",):
            continue
        before, now = getattr(recorded, item.name), getattr(given, item.name)
        if before != now:
            raise ConfigError(f"{recorded.folder} is a study with {item.name}={_short(before)}, and this command asks "
                              f"for {_short(now)}; give the same settings to go on with it (or champion tune --resume "
                              f"{recorded.folder}), or another --study-name for a new study")


def _short(value: Any) -> str:
    import reprlib

    return reprlib.repr(value)


def trial_config(settings: StudySettings, trial_settings: Mapping[str, Any], run_name: str) -> TrainConfig:
    """The config a trial trains with: defaults -> preset -> the study's base -> the trial's settings, its budget,
    seed and folder (checked, TensorFlow-free)."""
    from champion.runners.configure import resolve_config

    overrides = trial_overrides(settings, trial_settings, run_name)
    config, _ = resolve_config(settings.env_id, settings.algo, overrides, use_preset=settings.use_preset, strict=True)
    return config


def trial_overrides(settings: StudySettings, trial_settings: Mapping[str, Any], run_name: str) -> dict[str, Any]:
    """The dotted keys ``champion.train`` gets for one trial."""
    return {**DEFAULT_TRIAL_SETTINGS, **settings.base, **trial_settings, "total_steps": settings.trial_steps,
            "seed": settings.seed, "results_dir": settings.study_dir, "run_name": run_name}


def without_study_keys(file_settings: Mapping[str, Any], path: str | Path) -> tuple[dict[str, Any], str | None]:
    """A ``--config`` file's settings without the keys the study sets (a run's config.yaml and winner.yaml have
    them), and the note saying which were left out (None when none were)."""
    kept = {key: value for key, value in file_settings.items() if key not in STUDY_KEYS}
    dropped = [key for key in STUDY_KEYS if key in file_settings]
    if not dropped:
        return kept, None
    return kept, (f"{path}'s {', '.join(dropped)} {'is' if len(dropped) == 1 else 'are'} left out: the study sets "
                  "them for every trial (--seed, --trial-steps, its folder)")


def check_base(settings: StudySettings) -> TrainConfig:
    """The study's base settings as one trial would get them, with the space's first choices (ConfigError in one
    line when they cannot make a run); the crown must stay on, since it is the objective."""
    from champion.runners.configure import _resolve_key

    probe = TrainConfig(algo=settings.algo)
    for key in settings.base:
        resolved = _resolve_key(probe, key)
        if resolved in ("total_steps", "seed", "results_dir", "run_name"):
            option = {"total_steps": "--trial-steps", "seed": "--seed", "results_dir": "--results-dir",
                      "run_name": "--study-name"}[resolved]
            raise ConfigError(f"{resolved} is set by the study for every trial: give it as {option}")
    config = trial_config(settings, {}, "trial-probe")
    if not config.crown.at_end:
        raise ConfigError("crown.at_end=false leaves trials without the crowned held-out mean the study ranks them "
                          "by; leave the crown on")
    return config
