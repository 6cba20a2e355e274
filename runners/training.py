"""The training loop: collect, update, log, evaluate, keep the best, checkpoint. Top to bottom."""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import tensorflow as tf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agents.config import TrainConfig, validate
from agents.learners import make_learner
from agents.networks import ActorCritic, NetworkSpec, checkpointable_weights, weight_arrays, weight_name
from agents.numpy_policy import NumpyPolicy
from envs.factory import EnvInfo, describe_env, make_eval_env
from runners import faults
from runners.checkpoint import BestPolicyStore, atomic_write_text, remove_temporaries, warn
from runners.evaluate import BackgroundEvaluation, EvalResult, FinishedEvaluation, episode_seeds
from runners.resume import ResumeCheckpoints
from runners.engines import Advance, EarlyAdvance, Engine, choose_engine, make_engine
from runners.run_folder import RunLock, config_yaml, create_run_dir, preflight
from runners.media import BestPolicyMedia
from runners.run_logger import BEST_POLICY_GIF, RunLogger
from runners.run_state import (LoopState, StopRequests, TrainingDiverged, TrainingInterrupted, TrainingStopped,
                               check_checkpoint_fits, checkpoint_state, resumed_config, restore_state)
from runners.timing import Timings


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
    startup_seconds: float = 0.0
    """From the train/resume call to the loop's first advance (checks, run folder, model, engine; on resume,
    the rest of the run and the restore too): evaluations.csv's wall_seconds count from the loop's start."""

    @property
    def steps_per_second(self) -> float:
        """Env steps per wall-clock second of this session, evaluation included."""
        return self.session_steps / max(self.wall_seconds, 1e-9)


@dataclass
class Run:
    """Everything one training session works with, built once by ``build_run``."""

    config: TrainConfig
    run_dir: Path
    spec: NetworkSpec
    model: ActorCritic
    policy: NumpyPolicy
    learner: Any
    evaluation: BackgroundEvaluation
    store: BestPolicyStore
    checkpoints: ResumeCheckpoints
    logger: RunLogger
    timings: Timings
    console: Console
    engine: Engine
    media: BestPolicyMedia | None = None
    first_advance: EarlyAdvance | None = None
    """A fresh run's first advance, running on a worker thread until the loop takes it."""
    evaluations: list[tuple[int, float]] = field(default_factory=list)

    def close(self) -> None:
        """Flush the logs and close every environment (after the first advance, if it is still running)."""
        if self.first_advance is not None:
            self.first_advance.wait()
        self.logger.close()
        self.evaluation.close()
        self.engine.close()

    def trackables(self) -> dict[str, Any]:
        """The TensorFlow objects a resume checkpoint holds."""
        return {"model": checkpointable_weights(self.model), **self.learner.checkpoint_objects(),
                **self.engine.checkpoint_objects()}

    def advance(self, step: int, max_env_steps: int) -> Advance:
        """The engine's next advance; the first one of a fresh run is the one ``build_run`` started (with the
        same arguments: step 0 and the steps to the loop's first event)."""
        if self.first_advance is not None:
            advanced = self.first_advance.result()  # kept until it returns, so that close() waits for it
            self.first_advance = None
            return advanced
        return self.engine.advance(step, max_env_steps, self.config.total_steps)


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train ``config.algo`` on ``config.env_id`` and keep the best policy in a new run folder.

    Bad input (ConfigError, EnvError, RunFolderError) is raised before the run folder exists.
    """
    called = time.perf_counter()
    validate(config)
    env_info = describe_env(config.env_id)
    choose_engine(config)  # refuses engine=graph where it cannot run, before the folder exists
    preflight(Path(config.results_dir))
    run_dir = create_run_dir(config)
    with RunLock(run_dir):
        return _session(config, run_dir, env_info, progress, resuming=False, called=called)


def resume(run_dir: Path, overrides: dict[str, Any] | None = None, progress: bool = True) -> TrainResult:
    """Continue a run from its newest good checkpoint: same folder, same problem, counters carried on."""
    called, run_dir = time.perf_counter(), Path(run_dir)
    config = resumed_config(run_dir, overrides or {})
    env_info = describe_env(config.env_id)
    preflight(run_dir)
    with RunLock(run_dir):
        return _session(config, run_dir, env_info, progress, resuming=True, called=called)


def _session(config: TrainConfig, run_dir: Path, env_info: EnvInfo, progress: bool, resuming: bool,
             called: float) -> TrainResult:
    # whether stderr is a terminal is read now: during the first compiled call it points at a file for a moment
    console = Console(stderr=True, quiet=not progress, soft_wrap=True, highlight=False,
                      force_terminal=True if sys.stderr.isatty() else None)
    remove_temporaries(run_dir)  # e.g. a config.yaml or summary.json write cut short by a crash
    checkpoints = ResumeCheckpoints(run_dir / "checkpoints", config.checkpoint_keep, on_warning=_warner(console))
    loaded = checkpoints.latest() if resuming else None
    if loaded is not None:  # refuse a foreign checkpoint before anything in the folder changes
        check_checkpoint_fits(loaded, config, network_spec(env_info, config))
    run = None
    try:
        # from here a first Ctrl-C or SIGTERM is a request to stop with a checkpoint, even while the run is built
        with StopRequests(console) as stop:
            if loaded is not None:
                atomic_write_text(run_dir / "config.yaml", config_yaml(config, run_dir.name))  # e.g. a longer total_steps
                if loaded.manifest["step"] >= config.total_steps:
                    console.print(f"the run is already at step {loaded.manifest['step']:,} of {config.total_steps:,}; "
                                  "pass a larger --total-steps to train longer")
            # a checkpoint from before engines existed holds gymnasium envs
            kind = loaded.state.get("engine", "gymnasium") if loaded is not None else choose_engine(config)
            run = build_run(config, run_dir, env_info, console, checkpoints, kind,
                            resume_step=loaded.manifest["step"] if loaded else None)
            if loaded is not None:
                state = restore_state(run, loaded)
                if state.evaluation_in_flight == state.step and not run.logger.has_evaluation(state.step):
                    run.evaluation.start(state.step, run.policy.snapshot())  # it had not finished when the run stopped
            else:
                state = LoopState()
                run.logger.log_config((run_dir / "config.yaml").read_text())
                run.logger.log_hparams(hparams(config, run.engine.kind), run_dir.name)
            return _loop(run, state, called, stop)
    except (OSError, tf.errors.OpError) as error:
        if not _is_write_failure(error):
            raise
        raise _write_failure(error, run_dir) from error
    finally:
        if run is not None:
            run.close()


WRITE_FAILURE_MARKERS = ("[Op:SaveV2]", "[Op:MergeV2Checkpoints]", "No space left", "File too large",
                         "Permission denied", "Read-only file system", "Disk quota")


def _is_write_failure(error: Exception) -> bool:
    """An OS error, or a TensorFlow error from writing a checkpoint; not, say, a failed XLA compile."""
    return isinstance(error, OSError) or any(marker in getattr(error, "message", "") for marker in WRITE_FAILURE_MARKERS)


def _write_failure(error: Exception, run_dir: Path) -> TrainingStopped:
    """A failed write (disk full, file too large, permissions) as one line that says what is safe."""
    if isinstance(error, tf.errors.OpError):  # "{{function_node ...}} /path/...; No space left on device [Op:SaveV2]"
        reason = re.sub(r"\s*\[Op:\w+\]\s*$", "", error.message.split(";")[-1])
    else:
        reason = error.strerror or str(error)
    return TrainingStopped(
        f"error: a write in {run_dir} failed ({reason.strip()}); the best policy saved before it is unchanged "
        f"in {run_dir / 'best'}. Free space or fix the folder, then continue with: champion train --resume {run_dir}")


def build_run(config: TrainConfig, run_dir: Path, env_info: EnvInfo, console: Console,
              checkpoints: ResumeCheckpoints, engine_kind: str, resume_step: int | None) -> Run:
    """Model, learner, engine, policy, evaluation envs, best store and logger for a run folder.

    A fresh run (no ``resume_step``) starts its engine's first advance on a worker thread as soon as the
    engine exists (``EarlyAdvance``), and builds the rest meanwhile. With ``resume_step``, whatever was logged
    after that step is dropped (it will be logged again), and the engine starts from the checkpoint.
    """
    spec = network_spec(env_info, config)
    model = ActorCritic(spec, seed=config.seed)
    learner, timings = make_learner(model, config), Timings()
    # the gymnasium engine acts with the numpy policy; the graph engine's policy is only read for evaluation
    acting = NumpyPolicy(model, seed=config.seed) if engine_kind == "gymnasium" else None
    engine = make_engine(engine_kind, config, model, acting, learner, timings)
    first_advance = None
    try:
        if resume_step is None:
            engine.start(None, 0, _warner(console))
            first_advance = EarlyAdvance(engine, 0, _steps_to_next_event(0, config), config.total_steps)
        # it reads weights the first advance may be updating: the graph engine refreshes it before each evaluation
        policy = acting or NumpyPolicy(model, seed=config.seed)
        logger = RunLogger(run_dir, config.log_every, resume_step)
        media = None
        if config.media and "rgb_array" in env_info.render_modes:
            media = BestPolicyMedia(config.env_id, config.eval_seed, config.vectorization,
                                    lambda step, gif, width, height: logger.log_image(step, BEST_POLICY_GIF, gif, width, height))
        eval_envs = make_eval_env(config.env_id, config.eval_episodes, vectorization=config.vectorization)
        evaluation = BackgroundEvaluation(eval_envs, episode_seeds(config.eval_seed, config.eval_episodes),
                                          config.eval_in_background)
        store = BestPolicyStore(run_dir / "best", on_warning=_warner(console))
    except BaseException:
        if first_advance is not None:
            first_advance.wait()  # never leave a compiled call running while the run unwinds
        engine.close()
        raise
    return Run(config=config, run_dir=run_dir, spec=spec, model=model, policy=policy, learner=learner,
               evaluation=evaluation, store=store, checkpoints=checkpoints, logger=logger, timings=timings,
               console=console, engine=engine, media=media, first_advance=first_advance)


def _loop(run: Run, state: LoopState, called: float, stop: StopRequests) -> TrainResult:
    """The one loop: collect, update, log; evaluate and checkpoint on their schedules; stop on request."""
    config, timings, console = run.config, run.timings, run.console
    # the loop's clock starts with its first advance, which a fresh run began while it was being built
    session_start = run.first_advance.started if run.first_advance is not None else time.perf_counter()
    start_step, wall_before = state.step, state.wall_seconds
    console.print(f"[bold]champion[/] {config.algo} on {config.env_id} ({run.engine.kind} engine): step "
                  f"{state.step:,} of {config.total_steps:,} -> {run.run_dir}")
    with _progress_bar(console) as bar:
        task = bar.add_task("train", total=config.total_steps, completed=state.step, sps=0.0, last="-",
                            best=f"{run.store.best_mean_return:.1f}")
        while state.step < config.total_steps:
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
            if taken:
                _offer_all(run, taken, wall_before, session_start)
                bar.update(task, last=f"{taken[-1].result.mean_return:.1f}", best=f"{run.store.best_mean_return:.1f}")
            if checkpointing:  # one still in flight is played again by a resume from this checkpoint
                state.evaluation_in_flight = run.evaluation.step_in_flight
                _checkpoint(run, state, wall_before + time.perf_counter() - session_start, steps_per_second)
            faults.step_point(state.step)
            if stopping:
                raise TrainingInterrupted(stopping, state.step, run.run_dir)
            bar.update(task, completed=min(state.step, config.total_steps), sps=steps_per_second)
    _offer_all(run, run.evaluation.wait(), wall_before, session_start)  # one a resume started, if the loop never ran
    wall_seconds = time.perf_counter() - session_start
    result = TrainResult(run.run_dir, run.store.best_mean_return, run.store.best_step, state.step, wall_seconds,
                         state.step - start_step, dict(timings.seconds), dict(timings.calls), run.evaluations,
                         beside_timings=dict(timings.beside_seconds), beside_calls=dict(timings.beside_calls),
                         startup_seconds=session_start - called)
    _write_summary(result, state.skipped_steps)
    _record_skipped_best(run, wall_seconds)
    console.print(f"done: {state.step:,} steps ({result.session_steps:,} in this session, {wall_seconds:.1f}s, "
                  f"{result.steps_per_second:,.0f} steps/s); best mean return "
                  f"{run.store.best_mean_return:.2f} at step {run.store.best_step}")
    console.print(f"time went to: {timings.summary(wall_seconds)}")
    console.print(f"replay it with: champion replay {run.run_dir}")
    return result


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
        saved, _ = run.store.offer(weights, result.mean_return, _manifest(run.config, run.spec, step, result))
    with run.timings.phase("logging"):
        run.logger.log_evaluation(step, wall_seconds, result, run.store.best_mean_return, saved)
    if saved and run.media is not None:
        with run.timings.phase("media (best-policy GIF)"):
            _guard_media(run, lambda: run.media.offer(step, session_seconds, evaluation.policy))
    run.evaluations.append((step, result.mean_return))
    run.console.print(_evaluation_line(step, result, run.store.best_mean_return, saved))


def histogram_arrays(run: Run) -> dict[str, Any]:
    """The model's weights (``weights/<name>``) and the last applied gradients (``gradients/<name>``)."""
    arrays = {f"weights/{name}": values for name, values in weight_arrays(run.model).items()}
    kept = run.learner.kept_gradients or []
    for variable, gradient in zip(run.model.trainable_variables, kept):
        arrays[f"gradients/{weight_name(variable)}"] = gradient.numpy()
    return arrays


def _record_skipped_best(run: Run, session_seconds: float) -> None:
    """After the summary: a GIF of the final best if the media budget skipped it."""
    if run.media is not None and run.media.pending is not None:
        _guard_media(run, lambda: run.media.finish(session_seconds))


def _guard_media(run: Run, record: Callable[[], object]) -> None:
    """Media are a view of the run, never a reason to stop it: a failure warns once and turns them off."""
    try:
        record()
    except (OSError, tf.errors.OpError):  # writing the event file failed: the loop reports that
        raise
    except Exception as error:  # rendering needs pygame/a renderer; a user env's render can fail in any way
        _warner(run.console)(f"best-policy GIFs turned off: rendering {run.config.env_id} failed "
                             f"({type(error).__name__}: {error}); --no-media silences this")
        run.media = None


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


def _hparam_value(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _checkpoint(run: Run, state: LoopState, wall_seconds: float, steps_per_second: float) -> None:
    """Flush the logs, then write a resume checkpoint of the whole run state."""
    with run.timings.phase("saving"):
        run.logger.flush(state.step, steps_per_second)
        state.wall_seconds = wall_seconds
        manifest = {"env_id": run.config.env_id, "algo": run.config.algo, "network": run.spec.to_dict()}
        run.checkpoints.save(state.step, run.trackables(), checkpoint_state(run, state), manifest)


def network_spec(env_info: EnvInfo, config: TrainConfig) -> NetworkSpec:
    """The network for this env and config."""
    return NetworkSpec(
        observation_shape=env_info.observation_shape,
        action_kind=env_info.action_kind,
        action_size=env_info.action_size,
        hidden_sizes=config.network.hidden_sizes,
        activation=config.network.activation,
        shared_torso=config.network.shared_torso,
        action_low=env_info.action_low,
        action_high=env_info.action_high,
        log_std_init=config.network.log_std_init,
        normalize_observations=config.network.normalize_observations,
        observation_clip=config.network.observation_clip,
    )


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide how a saved policy behaves."""
    versions = {"python": platform.python_version()}
    for package in ("champion", "tensorflow", "keras", "gymnasium", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _manifest(config: TrainConfig, spec: NetworkSpec, step: int, result: EvalResult) -> dict[str, Any]:
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
        "seed": config.seed,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }


def _write_summary(result: TrainResult, nonfinite_steps_skipped: int) -> None:
    summary = {
        "env_steps": result.env_steps,
        "session_steps": result.session_steps,
        "wall_seconds": round(result.wall_seconds, 3),
        "startup_seconds": round(result.startup_seconds, 3),
        "steps_per_second": round(result.steps_per_second, 1),
        "best_mean_return": result.best_mean_return,
        "best_step": result.best_step,
        "nonfinite_steps_skipped": nonfinite_steps_skipped,
        "timings": {name: round(seconds, 3) for name, seconds in result.timings.items()},
        "timing_calls": dict(result.timing_calls),
        "beside_timings": {name: round(seconds, 3) for name, seconds in result.beside_timings.items()},
        "beside_calls": dict(result.beside_calls),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(result.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def _warner(console: Console) -> Any:
    """Warnings go through the console (above the progress bar), or to stderr when it is quiet."""
    if console.quiet:
        return warn
    return lambda message: console.print(f"[bold yellow]warning:[/] {message}")


def _evaluation_line(step: int, result: EvalResult, best: float, saved: bool) -> str:
    marker = "  [green]new best, saved[/]" if saved else ""
    return (f"step {step:>9,}  eval {result.mean_return:8.2f} ± {result.std_return:6.2f}  "
            f"(min {result.min_return:.1f}, max {result.max_return:.1f}, len {result.mean_length:.0f})  "
            f"best {best:8.2f}{marker}")


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold blue]training"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[sps]:,.0f} steps/s"), TextColumn("last eval {task.fields[last]}"),
        TextColumn("best {task.fields[best]}"),
        TimeElapsedColumn(), console=console, transient=False, disable=console.quiet,
    )
