"""``champion tune`` / ``champion.tune``: make or join a study, run its trials, and end it with the report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from champion.runners.tune.report import StudyResult, print_table, read_report, write_report
from champion.runners.tune.settings import (SETTINGS_FILE, StudySettings, check_base, check_same_study, read_settings,
                                            require_optuna, settings_yaml)


def prepare(settings: StudySettings) -> StudySettings:
    """Check the study's settings (one line for bad input, before TensorFlow or Optuna start; the re-evaluation's
    seeds apart from the trials') and write study.yaml, or, when the folder holds that study already, go on with it
    (``trials``, ``workers``, ``engine`` and ``ray_address`` may change)."""
    require_optuna()
    settings.search_space()
    config = check_base(settings)
    from champion.runners.tune.report import check_config_disjoint

    check_config_disjoint(settings, config, "every trial")  # seeds are the study's keys; the end checks each trial
    from champion.envs.factory import EnvOptions, describe_env

    describe_env(config.env_id, EnvOptions.from_config(config))
    if settings.engine == "ray":
        from champion.runners.ray.cluster import require_ray

        require_ray()
    if (settings.folder / SETTINGS_FILE).exists():
        recorded = read_settings(settings.folder)
        check_same_study(recorded, settings)
    from champion.runners.store.atomic_files import atomic_write_text

    settings.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(settings.folder / SETTINGS_FILE, settings_yaml(settings))
    return settings


def resumed(study_dir: str | Path, **changes: Any) -> StudySettings:
    """A study folder's settings, with the changes a later run may make (those given, not None)."""
    settings = read_settings(study_dir)
    given = {key: value for key, value in changes.items() if value is not None}
    return dataclasses.replace(settings, **given)


def run_study(settings: StudySettings, progress: bool = True) -> StudyResult | None:
    """Run the study's trials here (worker processes or Ray tasks) and, once it has all its trials, its report. None
    when trials of another process are still running: that process writes the report."""
    say = print if progress else (lambda *_: None)
    if settings.engine == "ray":
        from champion.runners.tune.ray_trials import run_on_ray

        run_on_ray(settings, progress)
    else:
        from champion.runners.tune.study import run_processes

        run_processes(settings, progress)
    return finish(settings, say, progress)


def finish(settings: StudySettings, say: Any, progress: bool) -> StudyResult | None:
    """The report, written by the first process to find the study done (others wait for it and read it)."""
    from champion.runners.tune.study import (COUNTED, FolderLock, open_study, quiet_retracing_warning, state_counts,
                                             write_snapshot)

    quiet_retracing_warning()
    opened = open_study(settings)
    write_snapshot(opened)
    counts = state_counts(opened.study)
    done = sum(counts.get(state, 0) for state in COUNTED)
    if done < settings.trials:
        say(f"the study has {done} of {settings.trials} trials finished and {counts.get('RUNNING', 0)} running in "
            "other processes; the last of them writes the report (champion tune --resume "
            f"{settings.folder} goes on with it if they were stopped)")
        return None
    with FolderLock(settings.folder / "report.lock"):
        result = read_report(settings.folder)
        finished = sorted(trial.number for trial in opened.study.get_trials(deepcopy=False)
                          if trial.state.name in COUNTED)
        if result is None or sorted(row.number for row in result.trials) != finished:
            result = write_report(settings, opened.study, say)
    if progress:
        print_table(result)
    return result

