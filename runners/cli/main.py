"""The ``champion`` command: train, tune, replay, export, crown, runs, plot, presets.

Usage errors print one line (``champion <command>: error: ...``) and exit with code 2, before
anything is written to disk. TensorFlow is imported only by the commands that need it.
"""

from __future__ import annotations

import json
import os
import select
import sys
from pathlib import Path
from typing import Any, Sequence

import click

from champion.errors import ChampionError
from champion.runners.logs import stderr_filter
from champion.runners.export import FORMAT_HELP, FORMATS
from champion.runners.store.run_folder import RunFolderError
from champion.runners.store.runs import choose_run, find_run_dirs, status_text

USAGE_EXIT = 2
ENV_MODULE_OPTION = click.option(
    "--env-module", "env_modules", multiple=True, metavar="MODULE",
    help="Import MODULE first, from the installed packages or the current folder (trust it: it goes on the path). "
         "The module of a run folder's env (module:Env-v0) or network torso (network.torso module:function) is "
         "otherwise imported only from installed packages (repeatable).")
ENTRY_HELP = ("Use this entry of RUN_DIR/best instead of the champion: a folder name such as 0003-step-40000, "
              "or 'best' for the training-time best.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="champion")
def cli() -> None:
    """Train PPO/A2C agents on gymnasium environments and keep the best policy safe."""


@cli.command(short_help="Train PPO or A2C on an environment, or continue a stopped run.")
@click.argument("env_id", required=False)
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="Continue the run in this folder from its newest good checkpoint (read as data: nothing in a run "
                   "folder runs as code, nothing outside it is touched).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Start from the settings in this YAML file: shaped like a preset (champion presets lists them) or "
                   "a run's config.yaml, which reruns that run. Its env_id and algo stand unless given here; the "
                   "other options and --set go on top.")
@click.option("--algo", type=click.Choice(["ppo", "a2c"]), help="Learning algorithm (default: ppo, or --config's).")
@click.option("--seed", type=int, help="Seed for network, sampling and training envs (default 0).")
@click.option("--total-steps", type=int, help="Environment steps to train for (default: preset's).")
@click.option("--num-envs", type=int, help="Training envs stepped together (default: preset's, else 8).")
@click.option("--eval-every", type=int, help="Evaluate every this many env steps (default: preset's, else 10,000).")
@click.option("--eval-episodes", type=int, help="Episodes per evaluation, on fixed seeds (default: preset's, else 10).")
@click.option("--results-dir", type=click.Path(file_okay=False), help="Where run folders go (default: results).")
@click.option("--run-name", help="Run folder name (default: time and seed).")
@click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE",
              help="Override any config field, e.g. --set ppo.learning_rate=1e-3 (repeatable).")
@click.option("--no-preset", is_flag=True, help="Start from the defaults instead of the (env, algo) preset.")
@click.option("--quiet", "-q", is_flag=True, help="Print only warnings and errors.")
@click.option("--profile", is_flag=True, help="At the end, print a table of where the time went.")
@click.option("--no-media", is_flag=True, help="No best-policy GIFs in TensorBoard (same as --set media=false).")
@click.option("--engine", type=click.Choice(["auto", "graph", "gymnasium", "ray"]),
              help="How rollouts run (default auto: graph where possible, else gymnasium); ray: workers on Ray.")
@click.option("--workers", type=int, help="Ray engine: rollout workers (default 2; implies --engine ray).")
@click.option("--envs-per-worker", type=int, help="Ray engine: envs per worker (num_envs = workers x this).")
@click.option("--ray-address", help="Ray engine: join this cluster (auto or HOST:PORT); default: a local Ray for the run.")
@ENV_MODULE_OPTION
def train(env_id: str | None, resume_dir: Path | None, config_file: Path | None, algo: str | None, seed: int | None,
          total_steps: int | None,
          num_envs: int | None, eval_every: int | None, eval_episodes: int | None, results_dir: str | None,
          run_name: str | None, set_pairs: Sequence[str], no_preset: bool, quiet: bool, profile: bool,
          no_media: bool, engine: str | None, workers: int | None, envs_per_worker: int | None,
          ray_address: str | None, env_modules: Sequence[str]) -> None:
    """Train ALGO on ENV_ID (the best policy lands in RESULTS_DIR/ENV_ID/ALGO/RUN_NAME/best),
    or continue a stopped run with --resume RUN_DIR."""
    from champion.envs.factory import allow_current_folder_modules
    from champion.runners.configure import parse_set_pairs

    _import_env_modules(env_modules)
    if env_id is not None and ":" in env_id and resume_dir is None:  # a module the user typed: it may live here
        allow_current_folder_modules()
    named = {"seed": seed, "total_steps": total_steps, "num_envs": num_envs, "eval_every": eval_every,
             "eval_episodes": eval_episodes, "results_dir": results_dir, "run_name": run_name, "engine": engine,
             **_ray_options(engine, workers, envs_per_worker, ray_address)}
    overrides: dict[str, Any] = {key: value for key, value in named.items() if value is not None}
    overrides.update(parse_set_pairs(set_pairs))
    if no_media:
        overrides["media"] = False
    if resume_dir is not None:
        if config_file is not None:
            raise click.UsageError("--config starts a new run; a resume continues with the run's own config.yaml "
                                   "(what may change is given with --set or the options)")
        if env_id is not None:
            overrides["env_id"] = env_id
        if algo is not None:
            overrides["algo"] = algo
        import champion

        _print_profile(champion.resume(resume_dir, progress=not quiet, **overrides).details, profile)
        return
    if env_id is None and config_file is None:
        raise click.UsageError("give ENV_ID to start a run (e.g. champion train CartPole-v1), a --config FILE that "
                               "names one, or --resume RUN_DIR")
    import champion

    result = champion.train(env_id, algo, config=config_file, use_preset=not no_preset, progress=not quiet,
                            **overrides)
    _print_profile(result.details, profile)


def _ray_options(engine: str | None, workers: int | None, envs_per_worker: int | None,
                 address: str | None) -> dict[str, Any]:
    """The Ray flags as config keys; any of them means --engine ray, and contradicts another --engine."""
    given = {"ray.workers": workers, "ray.envs_per_worker": envs_per_worker, "ray.address": address}
    named = [f"--{key.split('.')[1].replace('_', '-')}" for key, value in given.items() if value is not None]
    if named and engine not in (None, "ray"):
        raise click.UsageError(f"{', '.join(named).replace('--address', '--ray-address')} are for --engine ray, "
                               f"not --engine {engine}")
    return {**given, "engine": "ray"} if named else given


def _print_profile(result: Any, profile: bool) -> None:
    if profile:
        from champion.agents.compile.xla_cache import configured_cache_dir
        from champion.runners.timing import profile_table

        click.echo(profile_table(result.timings, result.timing_calls, result.wall_seconds, result.session_steps,
                                 result.beside_timings, result.beside_calls))
        click.echo(f"before the loop: {result.startup_seconds:.2f} s (checks, run folder, model, learner, engine, "
                   "evaluation envs, logger, store; on resume, the restore too)")
        cache = configured_cache_dir()
        click.echo(f"XLA compile cache: {cache if cache else 'off'} (a run with the same shapes loads its compiled "
                   f"code from there instead of compiling it again)")


@cli.command(short_help="Search settings with Optuna; every trial is a champion run.")
@click.argument("env_id", required=False)
@click.option("--algo", type=click.Choice(["ppo", "a2c"]), help="Learning algorithm (default: ppo, or --config's).")
@click.option("--trials", type=int, help="Trials that must end complete or pruned (a later run of the study may "
                                         "raise it).")
@click.option("--trial-steps", type=int, help="Environment steps each trial trains for.")
@click.option("--workers", type=int, help="Trials at once: worker processes, or Ray tasks with --engine ray "
                                          "(default 1).")
@click.option("--engine", type=click.Choice(["process", "ray"]),
              help="process: workers on this machine (default); ray: one Ray task per trial, retried when its worker "
                   "dies.")
@click.option("--storage", metavar="URL", help="Optuna database shared by several machines (sqlite:///..., "
                                               "postgresql://...); default: a journal file in the study folder.")
@click.option("--space", "space_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Search space YAML (default: the algorithm's; --show-space prints it).")
@click.option("--study-name", help="The study's folder name under RESULTS_DIR/tune/ENV/ALGO (default: tune-<time>); "
                                   "the same name goes on with that study.")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), metavar="STUDY_DIR",
              help="Go on with this study (its study.yaml); --trials, --workers, --engine may change.")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--config", "config_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Settings every trial starts from (a preset-shaped file or a run's config.yaml).")
@click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE",
              help="A setting every trial runs with, e.g. --set num_envs=4 (repeatable).")
@click.option("--no-preset", is_flag=True,
              help="Start every trial from the defaults instead of the (env, algo) preset.")
@click.option("--seed", type=int, default=0, show_default=True, help="Every trial's run seed, and the sampler's.")
@click.option("--top", type=int, default=3, show_default=True,
              help="Complete trials whose champions the study re-evaluates on fresh seeds.")
@click.option("--final-episodes", type=int, default=100, show_default=True,
              help="Fresh held-out episodes of that re-evaluation.")
@click.option("--final-seed", type=int, help="Its first seed (default 2,000,000,000; checked against every trial's).")
@click.option("--no-prune", is_flag=True, help="Train every trial to its budget (no median pruner).")
@click.option("--startup-trials", type=int, default=5, show_default=True,
              help="Trials that finish before the median pruner judges any.")
@click.option("--ray-address", help="--engine ray: join this cluster (auto or HOST:PORT); default: a local Ray.")
@click.option("--show-space", is_flag=True, help="Print the search space as a space file and exit.")
@click.option("--quiet", "-q", is_flag=True, help="Print only warnings, errors and the final table.")
@ENV_MODULE_OPTION
def tune(env_id: str | None, algo: str | None, trials: int | None, trial_steps: int | None, workers: int | None,
         engine: str | None, storage: str | None, space_file: Path | None, study_name: str | None,
         resume_dir: Path | None, results_dir: str, config_file: Path | None, set_pairs: Sequence[str],
         no_preset: bool, seed: int, top: int, final_episodes: int, final_seed: int | None, no_prune: bool,
         startup_trials: int, ray_address: str | None, show_space: bool, quiet: bool,
         env_modules: Sequence[str]) -> None:
    """Tune ALGO on ENV_ID: --trials trials of --trial-steps steps, each a champion run in the study folder, ranked
    by its crowned held-out mean; the top ones re-evaluated on fresh seeds; the winner written as winner.yaml."""
    from champion.runners.configure import parse_set_pairs

    _import_env_modules(env_modules)
    if show_space:
        from champion.runners.tune.spaces import default_space, load_space

        space = load_space(space_file, algo or "ppo") if space_file else default_space(algo or "ppo")
        click.echo(space.to_yaml(), nl=False)
        return
    if resume_dir is None and (env_id is None and config_file is None or trials is None or trial_steps is None):
        raise click.UsageError("give ENV_ID, --trials and --trial-steps (e.g. champion tune Pendulum-v1 --trials 20 "
                               "--trial-steps 50000), or --resume STUDY_DIR")
    import champion

    if resume_dir is not None:
        champion.tune(resume=resume_dir, trials=trials, workers=workers, engine=engine, ray_address=ray_address,
                      progress=not quiet)
        return
    settings: dict[str, Any] = {}  # --set goes with the file's settings: a trial's own engine is --set engine=...
    if config_file is not None:  # a preset-shaped file, a run's config.yaml or a study's winner.yaml
        from champion.runners.configure import read_config_file
        from champion.runners.tune.settings import without_study_keys

        read = read_config_file(config_file)
        kept, note = without_study_keys(read.settings, config_file)  # its run_name is read_config_file's to drop
        if note:
            click.echo(f"note: {note}", err=True)
        settings = {**kept, **{key: value for key, value in (("env_id", read.env_id), ("algo", read.algo))
                               if value is not None}}
    settings.update(parse_set_pairs(set_pairs))  # a study's key here is refused: it has an option of its own
    champion.tune(env_id, algo, trials=trials, trial_steps=trial_steps, workers=workers, engine=engine,
                  storage=storage, space=space_file, study_name=study_name, results_dir=results_dir,
                  config=settings, use_preset=not no_preset, seed=seed, top=top, final_episodes=final_episodes,
                  final_seed=final_seed, prune=not no_prune, startup_trials=startup_trials, ray_address=ray_address,
                  progress=not quiet)


@cli.command(short_help="Play a run's champion on the episodes its recorded mean is over.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--episodes", type=int, help="Episodes to play (default: as many as the recorded evaluation).")
@click.option("--seed", type=int, help="First episode seed (default: the recorded evaluation seeds).")
@click.option("--render", is_flag=True, help="Show the first episode in a window (needs a display).")
@click.option("--video", type=click.Path(path_type=Path), help="Write the first episode to PATH (.gif or .mp4).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--best", "best_run", is_flag=True,
              help="Given a folder of runs, take the run with the highest best return (default: the newest).")
@click.option("--entry", metavar="NAME", help=ENTRY_HELP)
@ENV_MODULE_OPTION
def replay(run_dir: Path, episodes: int | None, seed: int | None, render: bool, video: Path | None, as_json: bool,
           best_run: bool, entry: str | None, env_modules: Sequence[str]) -> None:
    """Play the champion of RUN_DIR (or of the newest run below it) deterministically: the crowned one, else the
    training-time best. By default on the episodes its recorded mean is over, which it reproduces exactly."""
    import champion

    _import_env_modules(env_modules)
    outcome = champion.replay(run_dir, episodes=episodes, seed=seed, render=render, video=video, best=best_run,
                              entry=entry)
    if as_json:
        click.echo(json.dumps(outcome.to_dict()))
        return
    result = outcome.result
    if outcome.picked:
        click.echo(f"picked {outcome.run_dir}: {outcome.picked}")
    kind = "crowned champion" if outcome.crowned else "training-time best"
    click.echo(f"replayed {outcome.entry} ({kind}, step {outcome.step:,}) on seeds {result.seeds[0]}..{result.seeds[-1]}")
    if len(set(result.returns)) == 1 and len(result.returns) > 1:
        click.echo(f"returns: {result.returns[0]:g} in each of the {len(result.returns)} episodes")
    else:
        click.echo(f"returns: {', '.join(f'{value:g}' for value in result.returns)}")
    click.echo(_replayed_mean_line(outcome))
    if video is not None:
        click.echo(f"video of the first episode: {video}")


def _replayed_mean_line(outcome: Any) -> str:
    """The replay's mean beside the recorded one, compared only over the episodes both played."""
    result, recorded = outcome.result, len(outcome.recorded_seeds)
    kind = "held-out" if outcome.crowned else "evaluation"
    mean = f"mean return {result.mean_return:.2f} ± {result.std_return:.2f}"
    common = outcome.common_means()
    if outcome.same_episodes:
        same = "same as recorded" if result.mean_return == outcome.recorded_mean_return else "recorded"
        return f"{mean} ({same}: {outcome.recorded_mean_return:.2f})"
    if common is not None:
        count, replayed_mean, recorded_mean = common
        same = "same as recorded" if replayed_mean == recorded_mean else "recorded"
        return (f"{mean} over {len(result.seeds)} episodes; on the {count} that are among its {recorded} recorded "
                f"{kind} episodes: {replayed_mean:.2f} ({same}: {recorded_mean:.2f})")
    if outcome.common_episodes:
        return (f"{mean} over {len(result.seeds)} episodes, {outcome.common_episodes} of them among its {recorded} "
                f"recorded {kind} episodes, whose record keeps only their mean ({outcome.recorded_mean_return:.2f}): "
                f"replay all {recorded} of them to compare")
    return (f"{mean} over {len(result.seeds)} other episodes than the {recorded} {kind} episodes of its recorded "
            f"mean ({outcome.recorded_mean_return:.2f}), so the two are not comparable")


@cli.command(short_help="Write a run's best policy as a SavedModel, TFLite or Keras file.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "export_format", type=click.Choice(FORMATS), default="saved_model",
              show_default=True, help=FORMAT_HELP)
@click.option("--out", type=click.Path(path_type=Path),
              help="Where to write (default: RUN_DIR/export/<the format's name>); "
                   "an earlier export there is replaced, anything else is refused.")
@click.option("--best", "best_run", is_flag=True,
              help="Given a folder of runs, take the run with the highest best return (default: the newest).")
@click.option("--entry", metavar="NAME", help=ENTRY_HELP)
@ENV_MODULE_OPTION
def export(run_dir: Path, export_format: str, out: Path | None, best_run: bool, entry: str | None,
           env_modules: Sequence[str]) -> None:
    """Write the champion of RUN_DIR (the crowned one, else the training-time best) as a standalone SavedModel,
    TFLite file or Keras model (raw observations in, the deterministic action out), with a README and
    metadata.json next to it."""
    import champion

    _import_env_modules(env_modules)
    result = champion.export(run_dir, export_format, out=out, best=best_run, entry=entry)
    if result.picked:
        click.echo(f"picked {result.run_dir}: {result.picked}")
    click.echo(f"exported {result.entry} ({'crowned champion' if result.crowned else 'training-time best'}, step "
               f"{result.step:,}, mean return {result.mean_return:.2f}) "
               f"as {result.export_format} to {result.path}")
    click.echo(f"how to load it: {result.readme}")


@cli.command(short_help="Judge a run's best policies on held-out episodes; crown one.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--candidates", type=int, help="Newest best entries to judge, with the final policy (default: "
              "the run's crown.candidates, 3).")
@click.option("--episodes", type=int, help="Most held-out episodes per candidate; the race stops sooner once the "
              "champion is clear (default: the run's crown.episodes, 100).")
@click.option("--seconds", type=float, help="Time limit in seconds (default: the run's crown.time_share of its "
              "training time, at least crown.min_seconds).")
@click.option("--race/--no-race", default=None, help="Stop a candidate's episodes once it is clearly worse "
              "(default: the run's crown.race, on); --no-race plays --episodes for each.")
@click.option("--workers", type=int, help="Processes playing them (default 0: one per CPU; 1: this process).")
@click.option("--json", "as_json", is_flag=True, help="Print the crown record (best/champion.json) instead of text.")
@click.option("--best", "best_run", is_flag=True,
              help="With a folder of runs: the run with the highest best return (default: the newest).")
@ENV_MODULE_OPTION
def crown(run_dir: Path, candidates: int | None, episodes: int | None, seconds: float | None, race: bool | None,
          workers: int | None, as_json: bool, best_run: bool, env_modules: Sequence[str]) -> None:
    """Play the newest best entries of RUN_DIR and its final policy on held-out episode seeds (disjoint from the
    evaluation seeds) and crown the highest held-out mean in RUN_DIR/best/champion.json, which replay and export
    then use. Training runs this at its end; use it on runs from before, or to judge on more episodes. A folder
    of runs stands for its newest run with a best policy (--best: the highest best return)."""
    from rich.console import Console

    from champion.runners.crown import RaceDisplay, crown_lines, crown_saved_run

    _import_env_modules(env_modules)
    run_dir, picked = choose_run(run_dir, best_run)
    if picked and not as_json:
        click.echo(f"picked {run_dir}: {picked}")
    named = {"crown.candidates": candidates, "crown.episodes": episodes, "crown.seconds": seconds,
             "crown.race": race, "crown.workers": workers}
    display = RaceDisplay(Console(stderr=True, soft_wrap=True, highlight=False))
    try:
        outcome = crown_saved_run(run_dir, {key: value for key, value in named.items() if value is not None},
                                  display=display)
    except RunFolderError as error:  # a run still training, picked from a folder
        raise RunFolderError(f"{error}; or give another run's folder" if picked else str(error)) from None
    if as_json:
        click.echo(json.dumps({"run_dir": str(run_dir), **outcome.record()}))
        return
    for line in crown_lines(outcome)[1:]:
        click.echo(line)
    click.echo(f"champion: {run_dir / 'best' / outcome.champion.candidate.name}")
    if outcome.replaced is not None:
        click.echo(_replaced_crown_line(outcome.replaced))


def _replaced_crown_line(earlier: dict[str, Any]) -> str:
    """Which crown a re-crown replaced (its date, entry, held-out mean and episodes, as far as its record says)."""
    when, mean, seeds = earlier.get("crowned_at"), earlier.get("held_out_mean"), earlier.get("held_out_seeds")
    date = " of " + when[:16].replace("T", " ") + " UTC" if isinstance(when, str) else ""
    held_out = f", held-out mean {mean:.2f}" if isinstance(mean, (int, float)) else ""
    episodes = f" over {len(seeds)} episodes" if isinstance(seeds, list) else ""
    return f"it replaces the crown{date}: {earlier['entry']}{held_out}{episodes}"


@cli.command(short_help="List the runs under a results folder (or the best per env).")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--leaderboard", "best_per_env", is_flag=True,
              help="Only the best run of each env (highest best return; a tie goes to the earlier step).")
def runs(results_dir: Path, as_json: bool, best_per_env: bool) -> None:
    """List runs: env, algo, best return and its step, steps done, status (running, finished, stopped, failed or
    crashed, with the step a resume starts from), date (or the best run per env)."""
    from champion.runners.store.atomic_files import warn
    from champion.runners.store.runs import leaderboard, printable, summarize_all

    summaries, unreadable = summarize_all(find_run_dirs(results_dir)) if results_dir.exists() else ([], [])
    for run_dir, reason in unreadable:
        warn(printable(f"cannot list {run_dir}: {reason}"))
    if best_per_env:
        summaries = leaderboard(summaries)
    if as_json:
        click.echo(json.dumps([summary.to_dict() for summary in summaries]))
        return
    if not summaries:
        click.echo(f"no runs {'with a best policy ' if best_per_env else ''}under {results_dir}")
        return
    _print_runs_table(summaries, best_per_env)
    if not best_per_env:
        _print_studies_table(results_dir)


def _print_studies_table(results_dir: Path) -> None:
    """The champion tune studies under ``results_dir`` (their trials are among the runs above)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from champion.runners.store.atomic_files import warn
    from champion.runners.store.runs import printable
    from champion.runners.tune.report import find_studies, summarize_study

    table = Table("env", "algo", "study", "trials (complete/pruned of wanted; running)", "best trial crown",
                  "winner on fresh seeds", "path", title="studies (champion tune)")
    for folder in find_studies(results_dir):
        try:
            study = summarize_study(folder)
        except (OSError, ValueError) as error:
            warn(printable(f"cannot list the study {folder}: {error}"))
            continue
        counts = study.counts
        trials = (f"{counts.get('COMPLETE', 0)}/{counts.get('PRUNED', 0)} of {study.trials_wanted}; "
                  f"{counts.get('RUNNING', 0)}")
        best = "-" if study.best_trial is None else f"{study.best_crown:.2f} (trial {study.best_trial})"
        winner = "-" if study.winner is None else f"{study.winner_mean:.2f} (trial {study.winner})"
        table.add_row(*map(escape, (study.env_id, study.algo, printable(study.study_name), trials, best, winner,
                                    printable(study.path))))
    if table.row_count:
        Console(width=200).print(table)


def _print_runs_table(summaries: Sequence[Any], best_per_env: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from champion.runners.store.runs import printable

    progress_columns = [] if best_per_env else ["steps", "status", "date"]
    table = Table("env", "algo", "run", "best return", "at step", "crowned (held-out)", *progress_columns, "path",
                  title="best run per env" if best_per_env else None)
    for summary in summaries:
        best = "-" if summary.best_mean_return is None else f"{summary.best_mean_return:.2f}"
        crowned = ("-" if summary.crowned_mean_return is None
                   else f"{summary.crowned_mean_return:.2f} at {summary.crowned_step or 0:,}")
        progress = [] if best_per_env else [f"{summary.env_steps:,}/{summary.total_steps:,}", status_text(summary),
                                            summary.date]
        table.add_row(*map(escape, (summary.env_id, summary.algo, printable(summary.run_name))), best,
                      f"{summary.best_step:,}" if summary.best_step is not None else "-", crowned, *progress,
                      escape(printable(summary.path)))
    Console(width=200).print(table)


@cli.command(short_help="Draw runs' evaluation curves on one figure.")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Image to write: .png, .svg or .pdf (default: RUN_DIR/evaluations.png for one run, "
                   "./champion-plot.png for several).")
def plot(run_dirs: Sequence[Path], out: Path | None) -> None:
    """Draw the evaluation curves of RUN_DIR... on one figure: mean return, min-max band, a star at each
    new best. Runs of one env share a panel; each env gets a panel of its own (their returns are not
    comparable). A folder of runs (e.g. results/CartPole-v1/ppo) stands for every run inside it."""
    from champion.runners.cli.plotting import PlotError, plot_runs

    if not run_dirs:
        raise click.UsageError("give one or more run folders, e.g. champion plot results/CartPole-v1 (a folder "
                               "stands for every run inside it)")
    try:
        written = plot_runs(run_dirs, out)
    except PlotError as error:
        raise click.UsageError(str(error)) from error
    env_ids = written.env_ids
    panels = "" if len(env_ids) == 1 else f" ({len(env_ids)} envs, one panel each: {', '.join(env_ids)})"
    click.echo(f"wrote {written.path}{panels}")


@cli.command(short_help="List gymnasium envs and whether champion can train them.")
@click.argument("pattern", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def envs(pattern: str, as_json: bool) -> None:
    """List every registered gymnasium environment whose id contains PATTERN (any case): its spaces, whether
    champion can train it (and if not, why), its presets and whether the graph engine runs it. With a PATTERN
    and the atari extra, Atari games are listed too (ALE/<Game>-v5 and ale-py's older ids, e.g. RL Zoo's
    <Game>NoFrameskip-v4)."""
    import gymnasium as gym

    from champion.envs import atari
    from champion.envs import presets as preset_files
    from champion.envs.factory import summarize_env
    from champion.envs.graph import has_graph_env

    if pattern:  # making each of ale-py's hundreds of ids takes a while: only when asked for some
        try:
            atari.register()
        except gym.error.DependencyNotInstalled:
            pass
    presets: dict[str, list[str]] = {}
    for env_id, algo, _ in preset_files.available():
        presets.setdefault(env_id, []).append(algo)
    ids = sorted(env_id for env_id in gym.registry if pattern.lower() in env_id.lower())
    def presets_of(env_id: str) -> list[str]:
        return presets.get(env_id) or (presets.get(preset_files.ATARI_NAME, []) if atari.is_atari(env_id) else [])

    rows = [dict(vars(summarize_env(env_id)), presets=presets_of(env_id), graph_engine=has_graph_env(env_id))
            for env_id in ids]
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        raise click.UsageError(f"no registered environment id contains {pattern!r}; champion envs lists them all")
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("env", "observations", "actions", "champion trains it", "presets", "graph engine")
    for row in rows:  # escaped: rich would read "[box2d]" in an install hint as a style
        table.add_row(*(escape(text) for text in (
            row["env_id"], row["observation_space"], row["action_space"], row["problem"] or "yes",
            ", ".join(row["presets"]) or "-", "yes" if row["graph_engine"] else "-")))
    Console(width=200).print(table)


@cli.command(short_help="List the tuned presets, or every config key.")
@click.option("--fields", is_flag=True, help="List every config key with its default and meaning.")
def presets(fields: bool) -> None:
    """List the tuned (env, algo) presets, or every config key with --fields."""
    from champion.envs import presets as preset_files

    if fields:
        for key, default, doc in _field_docs():
            click.echo(f"{key:32} {default!s:14} {doc}")
        return
    from champion.envs.factory import required_extra

    for env_id, algo, path in preset_files.available():
        extra = required_extra(env_id)
        needs = f"  (needs pip install -e '.[{extra}]')" if extra else ""
        click.echo(f"{env_id:28} {algo:5} {path}{needs}")


def _field_docs() -> list[tuple[str, Any, str]]:
    """(dotted key, default, one-line doc) for every config field, read from the dataclass source."""
    import ast
    import inspect

    from champion.agents import config as config_module
    from champion.runners.configure import SECTIONS, valid_keys

    docs: dict[tuple[str, str], str] = {}
    tree = ast.parse(inspect.getsource(config_module))
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for field_node, doc_node in zip(node.body, node.body[1:]):
                if isinstance(field_node, ast.AnnAssign) and isinstance(doc_node, ast.Expr):
                    docs[(node.name, field_node.target.id)] = str(doc_node.value.value)
    defaults = config_module.TrainConfig()
    section_class = {section: type(getattr(defaults, section)).__name__ for section in SECTIONS}
    rows = []
    for key in valid_keys(defaults):
        section, _, name = key.rpartition(".")
        owner = section_class.get(section, "TrainConfig")
        value = getattr(getattr(defaults, section), name) if section else getattr(defaults, name)
        rows.append((key, _as_yaml(value), docs.get((owner, name or key), "")))
    return rows


def _as_yaml(value: Any) -> str:
    """A default as it is written after --set or in a config file: [[32, 8, 4], [64, 4, 2]], null, true."""
    import yaml

    plain = json.loads(json.dumps(value))  # tuples of tuples become lists of lists
    return yaml.safe_dump(plain, default_flow_style=True, width=float("inf")).removesuffix("\n...\n").strip()


def _import_env_modules(modules: Sequence[str]) -> None:
    """Import the modules named with --env-module: the user trusts them, and the current folder, which goes on the
    path (after the installed packages) for this command and the processes it starts."""
    import importlib

    from champion.envs.factory import allow_current_folder_modules

    if modules:
        allow_current_folder_modules()
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:  # a user's module can fail in any way while importing
            raise click.UsageError(f"--env-module {module}: cannot import it ({type(error).__name__}: {error})") from None


def _reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reading end has been closed."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll on this platform, stdout closed or not a file
        return False


def _discard_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone, so that the interpreter's final flush does not fail
    again (Python's documented recipe for SIGPIPE; nothing written there could reach anyone)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout already closed or not a file
        pass


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI and turn known errors into one line and exit code 2."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # TensorFlow's start-up notes on a CPU machine (CUDA probing, CPU features) and a warm cache's loader notes
    # would otherwise come before every run's output; stderr is filtered only when this process is the champion
    # command (not a caller's, e.g. a test's)
    stderr_filter.quiet_tensorflow(filter_stderr=argv is None)
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in args if not arg.startswith("-")), "")
    prefix = f"champion {command}".strip()
    try:
        cli.main(args=args, prog_name="champion", standalone_mode=False)
    except SystemExit as exit_request:  # click exits 1 when a write to stdout finds no reader
        if exit_request.code == 1 and _reader_gone():  # e.g. `champion presets | head -1`: done, quietly
            _discard_stdout()
            sys.exit(0)
        raise
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"{prefix}: error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except ChampionError as error:  # bad input (exit 2), an env that failed (1), a stopped run (its own code)
        click.echo(f"{prefix}: {error.label}{error}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
