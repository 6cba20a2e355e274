"""The training loop: collect, update, log, evaluate, keep the best, checkpoint. Top to bottom."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import tensorflow as tf
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from champion.agents.compile import xla_cache
from champion.agents.compile.runtime import configure_runtime
from champion.agents.config import TrainConfig, validate
from champion.callbacks import Callback
from champion.errors import CallbackError, first_line
from champion.agents.networks import named_weights, weight_arrays
from champion.envs.factory import EnvInfo, EnvOptions, EnvStepError, describe_env
from champion.runners import faults
from champion.runners.logs import stderr_filter
from champion.runners.store.atomic_files import atomic_write_text, remove_temporaries
from champion.runners.store.best_store import load_champion
from champion.runners.store.checkpoints import CheckpointError, ResumeCheckpoints, newest_good_step
from champion.runners.store.folder_trust import check_links
from champion.runners.engines import Advance, EngineFailed, choose_engine
from champion.runners.evaluate import EvalResult, FinishedEvaluation
from champion.runners.hooks import Hooks, recorded_evaluations, stop_rules
from champion.runners.run import Run, build_run, check_checkpoint_state, warner
from champion.runners.store.run_folder import RunLock, config_yaml, create_run_dir, preflight, write_status
from champion.runners.store.run_metadata import TrainResult, best_manifest, hparams, network_spec, write_summary
from champion.runners.run_state import (MAX_REASON_CHARS, CrownInterrupted, CrownSignals, LoopState, StopRequests,
                                        TrainingDiverged, TrainingInterrupted, TrainingStopped, best_policy_note,
                                        check_checkpoint_fits, check_resumable, crown_later, is_write_failure,
                                        resume_hint, resumed_config, write_failure)

__all__ = ["TrainResult", "resume", "train"]

MEDIA_PHASE = "media (best-policy GIF)"
"""The timings' phase of every best-policy GIF recorded, the one after training included."""
CROWNED_LINE = "champion (crowned on held-out episodes): "
"""How the run's last lines name its champion when a crown record verifies (else ``best policy: ``)."""


def train(config: TrainConfig, progress: bool = True, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train ``config.algo`` on ``config.env_id`` and keep the best policy in a new run folder; ``callbacks`` hear
    about evaluations, new bests and checkpoints and may stop the run (``champion.Callback``).

    Bad input (ConfigError, EnvError, RunFolderError) is raised before the run folder exists.
    """
    called = time.perf_counter()
    if config.schedule_steps is None:  # recorded in config.yaml, so a resume with another budget keeps it
        config = dataclasses.replace(config, schedule_steps=config.total_steps)
    validate(config)
    hooks = Hooks([*stop_rules(config.stop), *callbacks])
    env_info = describe_env(config.env_id, EnvOptions.from_config(config))
    if config.network.torso:  # checking the user's torso runs TensorFlow, which takes the XLA cache's place first
        xla_cache.configure()
    network_spec(env_info, config)  # refuses a failing torso or an image too small for the CNN, before the folder
    if choose_engine(config) == "ray":  # refuses engine=graph where it cannot run, before the folder exists
        from champion.runners.ray.cluster import preflight as ray_preflight

        ray_preflight(config.ray.address, config.ray.num_cpus, config.ray.workers, config.ray.worker_cpus)
    preflight(Path(config.results_dir))
    run_dir = create_run_dir(config)
    with RunLock(run_dir):
        return _recording_status(run_dir, lambda finished: _session(config, run_dir, env_info, progress, resuming=False,
                                                                    called=called, hooks=hooks, finished=finished))


def resume(run_dir: Path, overrides: dict[str, Any] | None = None, progress: bool = True,
           callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Continue a run from its newest good checkpoint: same folder, same problem, counters carried on."""
    called, run_dir = time.perf_counter(), Path(run_dir)
    if run_dir.is_dir():
        check_links(run_dir)  # a run folder from anyone: nothing outside it is read or written
    config = resumed_config(run_dir, overrides or {})
    check_resumable(run_dir, config)
    hooks = Hooks([*stop_rules(config.stop), *callbacks])
    env_info = describe_env(config.env_id, EnvOptions.from_config(config))
    preflight(run_dir)
    with RunLock(run_dir):
        return _recording_status(run_dir, lambda finished: _session(config, run_dir, env_info, progress, resuming=True,
                                                                    called=called, hooks=hooks, finished=finished))


def _recording_status(run_dir: Path, session: Callable[[Callable[[TrainResult], None]], TrainResult]) -> TrainResult:
    """Run ``session`` with the run folder's status.json saying how it stands: running while it trains (a kill
    leaves that, with the lock free: crashed), then stopped (a signal, after its checkpoint) or failed, or finished
    once training is complete (``session`` calls the function it is given). The crown comes after that and only
    adds to the run: a signal or an error during it leaves the run finished."""
    finished_at: list[TrainResult] = []

    def finished(result: TrainResult) -> None:
        write_status(run_dir, "finished", f"stopped early: {result.stopped_early}" if result.stopped_early else "")
        finished_at.append(result)

    write_status(run_dir, "running")
    try:
        return session(finished)
    except TrainingInterrupted as error:
        write_status(run_dir, "stopped", str(error))
        raise
    except BaseException as error:
        if not finished_at:
            write_status(run_dir, "failed", first_line(error, limit=1000))
        raise


def _session(config: TrainConfig, run_dir: Path, env_info: EnvInfo, progress: bool, resuming: bool,
             called: float, hooks: Hooks, finished: Callable[[TrainResult], None]) -> TrainResult:
    xla_cache.configure()
    configure_runtime()
    console, out = _consoles(quiet=not progress)
    remove_temporaries(run_dir)  # e.g. a config.yaml or summary.json write cut short by a crash
    checkpoints = ResumeCheckpoints(run_dir / "checkpoints", config.checkpoint_keep, on_warning=warner(console))
    spec = network_spec(env_info, config)
    loaded = checkpoints.latest(check=lambda found: check_checkpoint_state(found, spec, config)) if resuming else None
    if loaded is not None:  # refuse a foreign checkpoint before anything in the folder changes
        check_checkpoint_fits(loaded, config, spec)
    run = None
    try:
        # from here a first Ctrl-C or SIGTERM is a request to stop with a checkpoint, even while the run is built
        with StopRequests(console) as stop:
            if loaded is not None:
                atomic_write_text(run_dir / "config.yaml", config_yaml(config, run_dir.name))  # e.g. a longer total_steps
            # a checkpoint from before engines existed holds gymnasium envs
            kind = loaded.state.get("engine", "gymnasium") if loaded is not None else choose_engine(config)
            run = build_run(config, run_dir, env_info, console, out, checkpoints, kind,
                            resume_step=loaded.manifest["step"] if loaded else None)
            run.hooks = hooks
            if loaded is not None:
                state = _restored(run, loaded)
                _note_early_stop(run, state)
                if state.evaluation_in_flight == state.step and not run.logger.has_evaluation(state.step):
                    run.evaluation.start(state.step, run.policy.snapshot())  # it had not finished when the run stopped
            else:
                state = LoopState()
                run.logger.log_config((run_dir / "config.yaml").read_text())
                run.logger.log_hparams(hparams(config, run.engine.kind), run_dir.name)
            result = _loop(run, state, called, stop)
        finished(result)  # the run is complete: the crown only adds to it
        interruption = _crown_at_end(run) if config.crown.at_end else None
        for line in _closing_lines(run):
            run.out.print(line)
        if interruption is not None:  # a signal during the crown: the command exits 130 or 143 all the same
            raise interruption
        return result
    except EnvStepError as error:
        raise TrainingStopped(f"error: {error}; the best policy saved before it is unchanged in "
                              f"{run_dir / 'best'}") from error
    except EngineFailed as error:  # outside the loop (a resume's first evaluation, the last wait): no checkpoint
        raise TrainingStopped(f"error: {error}; the best policy saved before it is unchanged in "
                              f"{run_dir / 'best'}") from error
    except (OSError, tf.errors.OpError) as error:
        if not is_write_failure(error, run_dir):
            raise
        raise write_failure(error, run_dir) from error
    finally:
        if run is not None:
            run.close(unwinding=sys.exception() is not None)


def _restored(run: Run, loaded: Any) -> LoopState:
    """``run.restore(loaded)``; a checkpoint that passed every check and still cannot be restored (its optimizer's
    state another shape, say) is one CheckpointError line, not a traceback."""
    try:
        return run.restore(loaded)
    except (ValueError, TypeError, KeyError, IndexError, AssertionError, tf.errors.OpError) as error:
        raise CheckpointError(f"checkpoint {loaded.path} cannot be restored into this run ({type(error).__name__}: "
                              f"{first_line(error, limit=200)}); move it aside to resume from the one before") from None


def _loop(run: Run, state: LoopState, called: float, stop: StopRequests) -> TrainResult:
    """The one loop: collect, update, log; evaluate and checkpoint on their schedules; stop on request."""
    config, timings, out = run.config, run.timings, run.out
    session_start = time.perf_counter()
    start_step, wall_before = state.step, state.wall_seconds
    out.print(f"[bold]champion[/] {config.algo} on {config.env_id} ({run.engine.kind} engine): step "
                  f"{state.step:,} of {config.total_steps:,} -> {run.run_dir}")
    rounding = _budget_rounding(config)
    if rounding:
        run.console.print(rounding)
    final_saved = False
    with _progress_bar(run.console) as bar, _checkpoint_on_failure(run, state, wall_before, session_start):
        task = bar.add_task("train", total=config.rounded_total_steps, completed=state.step, sps=0.0, last="-",
                            best=_best_text(run.store.best_mean_return))
        run.hooks.start(state.step, recorded_evaluations(run.run_dir, state.step))
        while state.step < config.total_steps:
            if run.hooks.stop_reason:  # a stop rule or callback asked (on_start, an evaluation, a checkpoint)
                final_saved = _end_early(run, state, wall_before, session_start)
                break
            advanced = run.advance(state.step, _steps_to_next_event(state.step, config))
            previous, state.step = state.step, state.step + advanced.env_steps
            streak = _count_nonfinite(run, state, advanced)
            if streak >= config.max_nonfinite_updates:
                _offer_all(run, run.evaluation.wait(), wall_before, session_start)  # e.g. a new best, still in flight
                raise TrainingDiverged(streak, state.step, run.run_dir, run.store.best_mean_return, run.store.best_step)
            steps_per_second = (state.step - start_step) / (time.perf_counter() - session_start)
            with timings.phase("logging"):
                run.logger.log_update(state.step, advanced.metrics, advanced.episodes, steps_per_second,
                                      advanced.updates)
                if config.histogram_every and _crossed(previous, state.step, config.histogram_every):
                    run.logger.log_histograms(state.step, histogram_arrays(run))
            finished = state.step >= config.total_steps
            stopping = stop.signal_number  # read once: a signal arriving later is handled next iteration
            taken = _evaluations(run, state.step, _crossed(previous, state.step, config.eval_every) or finished,
                                 ending=finished or bool(stopping))
            checkpointing = _crossed(previous, state.step, config.checkpoint_every) or finished or stopping
            if taken:  # a Stop asked while offering them ends the run at the loop's top
                _offer_all(run, taken, wall_before, session_start)
                bar.update(task, last=f"{taken[-1].result.mean_return:.1f}", best=_best_text(run.store.best_mean_return))
            if finished:  # before the last checkpoint: a run killed after it is finished and must have its final entry
                final_saved = _save_final_policy(run, state.step)
            if checkpointing:  # one still in flight is played again by a resume from this checkpoint
                state.evaluation_in_flight = run.evaluation.step_in_flight
                _checkpoint(run, state, wall_before + time.perf_counter() - session_start, steps_per_second)
            faults.step_point(state.step)
            if stopping:
                raise TrainingInterrupted(stopping, state.step, run.run_dir)
            bar.update(task, completed=state.step, sps=steps_per_second)
    _offer_all(run, run.evaluation.wait(), wall_before, session_start)  # one a resume started, if the loop never ran
    _record_skipped_best(run, time.perf_counter() - session_start)  # inside the session's time, as media
    wall_seconds = time.perf_counter() - session_start
    result = TrainResult(run.run_dir, run.store.best_mean_return, run.store.best_step, state.step, wall_seconds,
                         state.step - start_step, dict(timings.seconds), dict(timings.calls), run.evaluations,
                         beside_timings=dict(timings.beside_seconds), beside_calls=dict(timings.beside_calls),
                         engine=_engine_report(run), stopped_early=state.stopped_early,
                         startup_seconds=session_start - called, run_wall_seconds=wall_before + wall_seconds)
    out.print(f"done: {state.step:,} steps ({result.session_steps:,} in this session, {wall_seconds:.1f}s, "
                  f"{result.steps_per_second:,.0f} steps/s); best mean return "
                  f"{run.store.best_mean_return:.2f} at step {run.store.best_step}"
                  f"{'; ' + result.engine['not_exact'] if result.engine.get('not_exact') else ''}")
    out.print(f"time went to: {timings.summary(wall_seconds)}")
    if state.stopped_early:
        out.print(f"stopped early at step {state.step:,} of {config.total_steps:,}: {state.stopped_early}")
    if not final_saved:  # e.g. the loop did not run: a resume at the last step, its evaluation there played again
        _save_final_policy(run, state.step)
    write_summary(result, state.skipped_steps)
    return result


def _end_early(run: Run, state: LoopState, wall_before: float, session_start: float) -> bool:
    """End at this step, as at the budget, because a stop rule or callback asked: the policy here is evaluated
    (unless it just was) and kept as the final entry, and a checkpoint records why; whether the entry was saved."""
    last = run.last_evaluation
    evaluated = run.evaluation.step_in_flight == state.step or (last is not None and last.step == state.step)
    _offer_all(run, _evaluations(run, state.step, not evaluated, ending=True), wall_before, session_start)
    state.stopped_early = run.hooks.stop_reason[:MAX_REASON_CHARS]
    saved = _save_final_policy(run, state.step)
    state.evaluation_in_flight = -1
    _checkpoint(run, state, wall_before + time.perf_counter() - session_start, 0.0)
    return saved


def _save_final_policy(run: Run, step: int) -> bool:
    """The policy the run ended with, evaluated at ``step``, kept as a crown candidate beside the bests; whether
    there was one to keep."""
    last = run.last_evaluation
    if last is None or last.step != step:
        return False
    with run.timings.phase("saving"):
        run.store.save_final(last.policy.weights, best_manifest(run.config, run.spec, step, last.result))
    return True


def _crown_at_end(run: Run) -> BaseException | None:
    """Crown the finished run (``champion.runners.crown``), print it and add it to TensorBoard and summary.json. The run
    is complete without it: a failure is a warning, and the store stays as it was (the crown writes champion.json
    atomically, at its end). SIGINT and SIGTERM stop it at once; what to raise once the closing lines are printed
    is returned: KeyboardInterrupt after a warning saying how to crown later, or CrownInterrupted for SIGTERM."""
    if run.store.current_entry is None:
        return None
    signals, crown = CrownSignals(), None
    try:
        with signals:
            from champion.runners.crown import (ProcessPlayer, RaceDisplay, RayPlayer, add_to_summary, crown_lines,
                                                crown_run, log_crown_to_tensorboard, run_time_limit)

            limit = run_time_limit(run.run_dir, run.config)
            run.out.print(f"crowning: the newest {run.config.crown.candidates} best entries and the final policy, "
                          f"up to {run.config.crown.episodes} held-out episodes each"
                          + (f", within {limit:.0f}s" if limit else ""))
            player = (RayPlayer(run.config, run.spec, warn=warner(run.console)) if run.engine.kind == "ray"
                      else ProcessPlayer(run.config))
            crown = crown_run(run.run_dir, run.config, player, on_warning=warner(run.console),
                              display=RaceDisplay(run.console))
            log_crown_to_tensorboard(crown)
            add_to_summary(run.run_dir / "summary.json", crown)
    except KeyboardInterrupt as interrupt:
        if signals.signal_number == signal.SIGTERM:
            return CrownInterrupted(signal.SIGTERM, run.run_dir, crowned=crown is not None)
        warner(run.console)(f"the crown was interrupted; {crown_later(run.run_dir, crowned=crown is not None)}")
        return interrupt
    except Exception as error:  # the crown only adds to a finished run; whatever stops it must not undo that
        warner(run.console)(f"the crown failed ({type(error).__name__}: {error}); {crown_later(run.run_dir)}")
        return None
    for line in crown_lines(crown):
        run.out.print(line)
    return None


def _closing_lines(run: Run) -> list[str]:
    """Where the run's policy is: the crowned champion when its record verifies (``load_champion``: a damaged or
    outdated champion.json is warned about, never followed), with the training-time best beside it when that is
    another entry; else the training-time best. Then how to replay it."""
    best = run.store.current_entry
    found = load_champion(run.run_dir / "best", on_warning=warner(run.console)) if best is not None else None
    if found is not None:
        champion = found[0].entry
        lines = [f"{CROWNED_LINE}{champion}"] + ([f"training-time best: {best}"] if champion.name != best.name else [])
    else:
        lines = [f"best policy: {best}"] if best is not None else []
    return [*lines, f"replay it with: champion replay {run.run_dir}"]


@contextlib.contextmanager
def _checkpoint_on_failure(run: Run, state: LoopState, wall_before: float, session_start: float) -> Iterator[None]:
    """When the engine's workers are lost for good or a user's callback raises, write a checkpoint of the last whole
    iteration (unless one was just written at this step) and stop with one line saying how to go on."""
    try:
        yield
    except (EngineFailed, CallbackError) as error:
        if newest_good_step(run.run_dir / "checkpoints") != state.step:
            state.evaluation_in_flight = run.evaluation.step_in_flight  # played again by the resume
            _checkpoint(run, state, wall_before + time.perf_counter() - session_start, 0.0, call_hooks=False)
        how_to_go_on = resume_hint(run.run_dir, checkpointed=True)
        if isinstance(error, CallbackError):
            raise CallbackError(f"{error}; training stopped at step {state.step:,} with a checkpoint, "
                                f"{best_policy_note(run.run_dir)}; {how_to_go_on}") from error
        raise TrainingStopped(f"error: {error}; a checkpoint at step {state.step:,} was written, "
                              f"{how_to_go_on}") from error


def _note_early_stop(run: Run, state: LoopState) -> None:
    """A resumed run that a stop rule or callback had ended says why, and which of its stop rules still apply."""
    if not state.stopped_early:
        return
    stop = run.config.stop
    rules = [f"stop.{name}={value}" for name, value in (("at_return", stop.at_return),
             ("after_evaluations_without_best", stop.after_evaluations_without_best)) if value is not None]
    still = (f"; {' and '.join(rules)} still apply and may end it at its next evaluation (--set "
             f"{rules[0].split('=')[0]}=null lifts one)" if rules else "")
    run.console.print(f"note: this run stopped early at step {state.step:,} ({state.stopped_early}); it goes on to "
                      f"{run.config.total_steps:,} steps{still}")
    state.stopped_early = ""


def _engine_report(run: Run) -> dict[str, Any]:
    """The engine's report, with the evaluation actors' restarts when evaluation ran on Ray."""
    report = run.engine.report()
    if run.engine.kind == "ray":
        report["evaluation_restarts"] = run.evaluation.restarts
    return report


def _evaluations(run: Run, step: int, due: bool, ending: bool) -> list[FinishedEvaluation]:
    """Start the evaluation ``due`` at ``step`` beside the loop; return those finished meanwhile, in order (when
    ``ending``, every one: the last evaluation is offered before the run ends)."""
    taken = run.evaluation.finished()
    if due:
        with run.timings.phase("policy snapshot"):
            run.policy.refresh()  # the graph engine does not act with it, so it is read only when needed
            snapshot = run.policy.snapshot()
        with run.timings.phase("waiting for evaluation"):  # only while the one before is still running
            taken += run.evaluation.start(step, snapshot)
    if ending:
        with run.timings.phase("waiting for evaluation"):
            taken += run.evaluation.wait()
    return taken


def _budget_rounding(config: TrainConfig) -> str | None:
    """What the run will really take when ``total_steps`` is not whole rollouts."""
    num_steps, num_envs = config.algo_config.num_steps, config.num_envs
    steps = config.rounded_total_steps
    if steps == config.total_steps:
        return None
    asked = f"{config.total_steps:,} step{'s' if config.total_steps != 1 else ''}"
    return (f"note: {asked} rounded up to {steps:,}: whole rollouts of {num_steps:,} step{'s' if num_steps != 1 else ''}"
            f" x {num_envs} env{'s' if num_envs != 1 else ''}")


def _steps_to_next_event(step: int, config: TrainConfig) -> int:
    """Env steps until the loop next has to act: evaluate, log, checkpoint, write histograms or finish."""
    schedules = (config.eval_every, config.log_every, config.checkpoint_every, config.histogram_every)
    until = [every - step % every for every in schedules if every]
    return min(*until, config.total_steps - step)


def _crossed(previous: int, step: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in (previous, step]: schedules count env steps."""
    return previous // every < step // every


def _count_nonfinite(run: Run, state: LoopState, advanced: Advance) -> int:
    """Count updates whose gradient steps were skipped for a NaN/inf; returns the longest run of them in a row
    (the loop stops at ``max_nonfinite_updates``)."""
    if not advanced.skipped_steps:
        state.nonfinite_streak = 0
        return 0
    leading, trailing, longest = advanced.nonfinite_runs
    longest = max(longest, state.nonfinite_streak + leading)  # a run can go on from the last call
    state.nonfinite_streak = state.nonfinite_streak + advanced.updates if leading == advanced.updates else trailing
    state.skipped_steps += advanced.skipped_steps
    run.console.print(f"[yellow]step {state.step:,}: {advanced.skipped_steps} gradient step(s) skipped "
                      f"(non-finite loss or gradient), {state.nonfinite_streak} update(s) in a row[/]")
    return max(longest, state.nonfinite_streak)


def _offer_all(run: Run, evaluations: list[FinishedEvaluation], wall_before: float, session_start: float) -> None:
    """Offer finished evaluations in order; their logged wall time is when they were offered."""
    for evaluation in evaluations:
        _offer(run, evaluation, wall_before + time.perf_counter() - session_start, time.perf_counter() - session_start)


def _offer(run: Run, evaluation: FinishedEvaluation, wall_seconds: float, session_seconds: float) -> None:
    """Offer an evaluated snapshot to the best store, then log and print the outcome (``wall_seconds``: now)."""
    run.timings.add_beside("evaluation", evaluation.seconds)
    step, result, weights = evaluation.step, evaluation.result, evaluation.policy.weights
    with run.timings.phase("saving"):
        saved, _ = run.store.offer(weights, result.mean_return, best_manifest(run.config, run.spec, step, result))
    with run.timings.phase("logging"):
        run.logger.log_evaluation(step, wall_seconds, result, run.store.best_mean_return, saved)
    if saved and run.media is not None:
        with run.timings.phase(MEDIA_PHASE):
            _guard_media(run, lambda: run.media.offer(step, session_seconds, evaluation.policy))
    run.evaluations.append((step, result.mean_return))
    run.last_evaluation = evaluation
    run.out.print(_evaluation_line(step, result, run.store.best_mean_return, saved))
    run.hooks.evaluation(step, result, run.store.current_entry if saved else None)


def histogram_arrays(run: Run) -> dict[str, Any]:
    """The model's weights (``weights/<name>``) and the last applied gradients (``gradients/<name>``)."""
    arrays = {f"weights/{name}": values for name, values in weight_arrays(run.model).items()}
    kept, names = run.learner.kept_gradients or [], {id(variable): name for name, variable in named_weights(run.model)}
    for variable, gradient in zip(run.model.trainable_variables, kept):
        arrays[f"gradients/{names[id(variable)]}"] = gradient.numpy()
    return arrays


def _record_skipped_best(run: Run, session_seconds: float) -> None:
    """At the end of training: a GIF of the last best that the media budget skipped, if the budget allows it
    now (timed as media, like every recording); else one line says it has none."""
    media = run.media
    if media is None or media.pending is None:
        return
    with run.timings.phase(MEDIA_PHASE):
        _guard_media(run, lambda: media.finish(session_seconds))
    if run.media is not None and media.pending is not None:
        run.console.print(f"note: the best policy of step {media.pending.step:,} has no GIF: one takes about "
                          f"{media.expected_seconds():.1f}s, more than the {media.budget:.0%} of this session's "
                          f"{session_seconds:.1f}s that GIFs may take; champion replay {run.run_dir} --video best.gif "
                          "records one")


def _guard_media(run: Run, record: Callable[[], object]) -> None:
    """Media are a view of the run, never a reason to stop it: a failure warns once and turns them off."""
    try:
        record()
    except (OSError, tf.errors.OpError):  # writing the event file failed: the loop reports that
        raise
    except Exception as error:  # rendering needs pygame/a renderer; a user env's render can fail in any way
        warner(run.console)(f"best-policy GIFs turned off: rendering {run.config.env_id} failed "
                             f"({type(error).__name__}: {error}); --no-media silences this")
        run.media = None


def _checkpoint(run: Run, state: LoopState, wall_seconds: float, steps_per_second: float,
                call_hooks: bool = True) -> None:
    """Flush the logs, then write a resume checkpoint of the whole run state (and tell the callbacks)."""
    with run.timings.phase("saving"):
        run.logger.flush(state.step, steps_per_second)
        state.wall_seconds = wall_seconds
        saved = run.checkpoint_state(state)
        manifest = {"env_id": run.config.env_id, "algo": run.config.algo, "network": run.spec.to_dict(),
                    "envs_exact": saved["envs_exact"]}
        path = run.checkpoints.save(state.step, run.trackables(), saved, manifest)
    if call_hooks:
        run.hooks.checkpoint(state.step, path)


def _evaluation_line(step: int, result: EvalResult, best: float, saved: bool) -> str:
    marker = "  [green]new best, saved[/]" if saved else ""
    return (f"step {step:>9,}  eval {result.mean_return:8.2f} ± {result.std_return:6.2f}  "
            f"(min {result.min_return:.1f}, max {result.max_return:.1f}, len {result.mean_length:.0f})  "
            f"best {best:8.2f}{marker}")


def _best_text(best: float) -> str:
    return f"{best:,.1f}" if math.isfinite(best) else "-"


def _consoles(quiet: bool) -> tuple[Console, Console]:
    """stderr's console (progress, notes, warnings) and stdout's (header, evaluation lines, results), as
    command-line tools split them: ``champion train ... > train.log`` keeps the results. When both are the
    terminal, one console prints both, so that its lines go above the progress line instead of through it."""
    terminal = stderr_filter.stderr_is_terminal()
    stderr = Console(stderr=True, quiet=quiet, soft_wrap=True, highlight=False, force_terminal=terminal or None)
    if terminal and sys.stdout.isatty():
        return stderr, stderr
    return stderr, Console(file=sys.stdout, quiet=quiet, soft_wrap=True, highlight=False)


def _progress_bar(console: Console) -> Progress:
    """The live progress line (it fits 80 columns), on a terminal only: in a log file the evaluation lines
    say it all."""
    return Progress(
        TextColumn("[bold blue]training"), BarColumn(bar_width=10), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[sps]:,.0f} steps/s"), TextColumn("eval {task.fields[last]}"),
        TextColumn("best {task.fields[best]}"), TimeRemainingColumn(), TextColumn("left"),
        console=console, transient=False, disable=console.quiet or not console.is_terminal,
        redirect_stdout=sys.stdout.isatty(),  # e.g. a user env's print(); rich would send a file's lines to the terminal
    )
