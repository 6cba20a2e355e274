"""The training loop: collect, update, log, evaluate, keep the best. Readable top to bottom."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agents.config import TrainConfig, validate
from agents.learners import make_learner
from agents.networks import ActorCritic, NetworkSpec, weight_arrays
from agents.policy import Policy
from envs.factory import EnvInfo, describe_env, make_eval_env, make_vector_env
from runners.checkpoint import BestPolicyStore, atomic_write_text
from runners.evaluate import EvalResult, episode_seeds, evaluate
from runners.rollout import VectorEnvCollector
from runners.run_logger import RunLogger
from runners.timing import Timings


@dataclass(frozen=True)
class TrainResult:
    """What a finished run reports; everything else is in its run folder."""

    run_dir: Path
    best_mean_return: float
    best_step: int | None
    env_steps: int
    wall_seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    evaluations: list[tuple[int, float]] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        """Training env steps per wall-clock second, evaluation included."""
        return self.env_steps / max(self.wall_seconds, 1e-9)


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train ``config.algo`` on ``config.env_id`` and keep the best policy in the run folder.

    Bad input (ConfigError, EnvError) is raised before the run folder is created.
    """
    validate(config)
    env_info = describe_env(config.env_id)
    run_dir = create_run_dir(config)
    spec = network_spec(env_info, config)
    model = ActorCritic(spec, seed=config.seed)
    policy = Policy(model, seed=config.seed)
    learner = make_learner(model, config)
    timings = Timings()
    envs = make_vector_env(config.env_id, config.num_envs, config.vectorization)
    eval_envs = make_eval_env(config.env_id, config.eval_episodes)
    collector = VectorEnvCollector(envs, config.algo_config.num_steps, config.seed, timings)
    store = BestPolicyStore(run_dir / "best")
    logger = RunLogger(run_dir, config.log_every)
    logger.log_config((run_dir / "config.yaml").read_text())
    seeds = episode_seeds(config.eval_seed, config.eval_episodes)
    console = Console(stderr=True, quiet=not progress, soft_wrap=True)
    console.print(f"[bold]champion[/] {config.algo} on {config.env_id}, {config.total_steps:,} steps -> {run_dir}")
    step, best_step, evaluations = 0, None, []
    next_eval = config.eval_every
    start = time.perf_counter()
    try:
        with _progress_bar(console, config.total_steps) as bar:
            task = bar.add_task("train", total=config.total_steps, last="-", best="-", sps=0.0)
            while step < config.total_steps:
                rollout = collector.collect(policy)
                step += rollout.env_steps
                with timings.phase("update" if learner.tracing_count() else "tracing (first update)"):
                    metrics = learner.update(rollout.batch, progress_remaining=max(0.0, 1.0 - step / config.total_steps))
                steps_per_second = step / (time.perf_counter() - start)
                with timings.phase("logging"):
                    logger.log_update(step, metrics, rollout.episode_returns, rollout.episode_lengths, steps_per_second)
                if step >= next_eval or step >= config.total_steps:
                    next_eval = (step // config.eval_every + 1) * config.eval_every
                    with timings.phase("evaluation"):
                        result = evaluate(policy, eval_envs, seeds)
                    with timings.phase("saving"):
                        saved, _ = store.offer(weight_arrays(model), result.mean_return,
                                               _manifest(config, spec, step, result))
                    best_step = step if saved else best_step
                    with timings.phase("logging"):
                        logger.log_evaluation(step, time.perf_counter() - start, result, store.best_mean_return, saved)
                    evaluations.append((step, result.mean_return))
                    console.print(_evaluation_line(step, result, store.best_mean_return, saved))
                    bar.update(task, last=f"{result.mean_return:.1f}", best=f"{store.best_mean_return:.1f}")
                bar.update(task, completed=min(step, config.total_steps), sps=steps_per_second)
    except KeyboardInterrupt:
        console.print(f"interrupted at step {step:,}; the best policy so far is safe in {run_dir / 'best'}")
        raise
    finally:
        wall_seconds = time.perf_counter() - start
        logger.close(step, step / max(wall_seconds, 1e-9))
        envs.close()
        eval_envs.close()
    result = TrainResult(run_dir, store.best_mean_return, best_step, step, wall_seconds, dict(timings.seconds), evaluations)
    _write_summary(result)
    console.print(f"done: {step:,} steps in {wall_seconds:.1f}s ({result.steps_per_second:,.0f} steps/s); "
                  f"best mean return {store.best_mean_return:.2f} at step {best_step}")
    console.print(f"time went to: {timings.summary(wall_seconds)}")
    console.print(f"replay it with: champion replay {run_dir}")
    return result


def network_spec(env_info: EnvInfo, config: TrainConfig) -> NetworkSpec:
    """The network for this env and config."""
    return NetworkSpec(
        observation_shape=env_info.observation_shape,
        action_kind=env_info.action_kind,
        action_size=env_info.action_size,
        hidden_sizes=config.network.hidden_sizes,
        activation=config.network.activation,
        shared_torso=config.network.shared_torso,
    )


def env_folder_name(env_id: str) -> str:
    """A folder name for an env id (``module:Env-v0`` has characters some file systems refuse)."""
    return env_id.replace(":", "_").replace("/", "_")


def create_run_dir(config: TrainConfig) -> Path:
    """Create ``results_dir/env/algo/run_name`` and write config.yaml; refuse an existing named run."""
    parent = Path(config.results_dir) / env_folder_name(config.env_id) / config.algo
    name = config.run_name or datetime.now().strftime(f"%Y%m%d-%H%M%S-seed{config.seed}")
    run_dir = parent / name
    if run_dir.exists():
        if config.run_name:
            raise FileExistsError(f"run folder {run_dir} already exists; choose another --run-name")
        suffix = 2
        while (parent / f"{name}-{suffix}").exists():
            suffix += 1
        run_dir = parent / f"{name}-{suffix}"
    run_dir.mkdir(parents=True)
    resolved = dict(config.to_dict(), run_name=run_dir.name)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    return run_dir


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


def _write_summary(result: TrainResult) -> None:
    summary = {
        "env_steps": result.env_steps,
        "wall_seconds": round(result.wall_seconds, 3),
        "steps_per_second": round(result.steps_per_second, 1),
        "best_mean_return": result.best_mean_return,
        "best_step": result.best_step,
        "timings": {name: round(seconds, 3) for name, seconds in result.timings.items()},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(result.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def _evaluation_line(step: int, result: EvalResult, best: float, saved: bool) -> str:
    marker = "  [green]new best, saved[/]" if saved else ""
    return (f"step {step:>9,}  eval {result.mean_return:8.2f} ± {result.std_return:6.2f}  "
            f"(min {result.min_return:.1f}, max {result.max_return:.1f}, len {result.mean_length:.0f})  "
            f"best {best:8.2f}{marker}")


def _progress_bar(console: Console, total_steps: int) -> Progress:
    return Progress(
        TextColumn("[bold blue]training"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[sps]:,.0f} steps/s"),
        TextColumn("last eval {task.fields[last]}"), TextColumn("best {task.fields[best]}"),
        TimeElapsedColumn(), console=console, transient=False, disable=console.quiet,
    )
