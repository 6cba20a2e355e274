"""One training session's collaborators (``Run``), how they are built, and how their state is saved to and
restored from a resume checkpoint."""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.console import Console

from champion.agents.config import TrainConfig
from champion.agents.learners import make_learner
from champion.agents.acting import model_policy
from champion.agents.networks import ActorCritic, NetworkSpec, checkpointable_weights
from champion.agents.spec import weight_shapes
from champion.agents.numpy_policy import EnvNoise, NumpyPolicy
from champion.envs.env_state import VectorEnvState
from champion.envs.factory import EnvInfo, EnvOptions, make_eval_env, renders_apart
from champion.runners.store.atomic_files import warn
from champion.runners.store.best_store import BestPolicyStore
from champion.runners.store.checkpoints import LoadedCheckpoint, ResumeCheckpoints
from champion.runners.engines import Advance, Engine, make_engine
from champion.runners.evaluate import BackgroundEvaluation, Evaluation, FinishedEvaluation, episode_seeds
from champion.runners.store.folder_trust import is_number
from champion.runners.logs.media import BestPolicyMedia, PendingBest
from champion.runners.logs.run_logger import BEST_POLICY_GIF, RunLogger
from champion.runners.store.run_metadata import network_spec
from champion.runners.rollout import RewardScaler, not_exact_line
from champion.runners.hooks import Hooks
from champion.runners.run_state import MAX_REASON_CHARS, TEXT_FIELDS, LoopState
from champion.runners.timing import Timings


@dataclass
class Run:
    """Everything one training session works with, built once by ``build_run``."""

    config: TrainConfig
    run_dir: Path
    spec: NetworkSpec
    model: ActorCritic
    policy: NumpyPolicy
    learner: Any
    evaluation: Evaluation
    store: BestPolicyStore
    checkpoints: ResumeCheckpoints
    logger: RunLogger
    timings: Timings
    console: Console  # stderr: progress, notes and warnings
    out: Console  # stdout: the run's header, evaluation lines and results
    engine: Engine
    media: BestPolicyMedia | None = None
    evaluations: list[tuple[int, float]] = field(default_factory=list)
    last_evaluation: FinishedEvaluation | None = None
    """The newest evaluation offered (at the end of a run: the final policy's)."""
    hooks: Hooks = field(default_factory=lambda: Hooks([]))
    """The run's stop rules and the user's callbacks."""

    def close(self, unwinding: bool = False) -> None:
        """Flush the logs and close every environment, each even if another fails. While ``unwinding`` from an
        error, a failure here is only warned about, so that the error that stopped the run is the one reported."""
        with contextlib.ExitStack() as parts:  # closed last to first: logger, evaluation, engine
            if unwinding:
                parts.push(self._warn_instead)  # first in, so it sees what any of the others raised
            parts.callback(self.engine.close)
            parts.callback(self.evaluation.close)
            parts.callback(self.logger.close)

    def _warn_instead(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> bool:
        if isinstance(error, Exception):
            warner(self.console)(f"closing the run also failed ({type(error).__name__}: {error})")
            return True
        return False

    def advance(self, step: int, max_env_steps: int) -> Advance:
        """The engine's next advance: at most ``max_env_steps`` env steps from ``step``; schedules are measured
        against the run's own schedule_steps, whatever budget this session has."""
        return self.engine.advance(step, max_env_steps, self.config.schedule_steps or self.config.total_steps)

    def trackables(self) -> dict[str, Any]:
        """The TensorFlow objects a resume checkpoint holds."""
        return {"model": checkpointable_weights(self.model), **self.learner.checkpoint_objects(),
                **self.engine.checkpoint_objects()}

    def checkpoint_state(self, state: LoopState) -> dict[str, Any]:
        """Everything besides TensorFlow objects that an exact continuation needs."""
        return {
            "loop": asdict(state),
            **self.engine.checkpoint_state(),
            "numpy_random": np.random.get_state(),
            "policy_random": self.policy.random_state(),
            "python_random": random.getstate(),
            "best_mean_return": self.store.best_mean_return,
            "media_pending_step": self.media.pending.step if self.media is not None and self.media.pending else None,
        }

    def restore(self, loaded: LoadedCheckpoint) -> LoopState:
        """Load a checkpoint (already checked to fit) into this run; return the loop counters."""
        loaded.restore(self.trackables())
        saved = loaded.state
        self.policy.refresh()
        if "policy_random" in saved:  # checkpoints from before numpy acting kept a TF generator instead
            self.policy.set_random_state(saved["policy_random"])
        np.random.set_state(saved["numpy_random"])
        random.setstate(saved["python_random"])
        state = LoopState(**{key: value for key, value in saved["loop"].items() if key in LoopState.__dataclass_fields__})
        problems = self.engine.start(saved, state.step, warner(self.console))
        self.console.print(f"resuming from {loaded.path.name} at step {state.step:,}: {restored_text(problems)}")
        restarted = {index: problem for index, problem in enumerate(problems) if problem is not None}
        if restarted:
            warner(self.console)(not_exact_line(self.config.env_id, restarted, "this resume restarted"))
        self._resume_pending_media(saved.get("media_pending_step"))
        if saved["best_mean_return"] > self.store.best_mean_return:
            warner(self.console)(f"the checkpoint records a best return of {saved['best_mean_return']:.2f} but the "
                                 f"best loadable policy on disk has {self.store.best_mean_return:.2f}")
        return state


    def _resume_pending_media(self, step: int | None) -> None:
        """A best whose GIF the stopped session still owed (``BestPolicyMedia.pending``) is recorded by this one,
        from the best store, unless a better one comes first."""
        if step is None or self.media is None or step != self.store.best_step:
            return
        from champion.runners.replay import load_policy

        policy, _ = load_policy(self.run_dir, "best")  # the training-time best, even in a run crowned since
        self.media.pending = PendingBest(step, policy)


def build_run(config: TrainConfig, run_dir: Path, env_info: EnvInfo, console: Console, out: Console,
              checkpoints: ResumeCheckpoints, engine_kind: str, resume_step: int | None) -> Run:
    """Model, learner, engine, policy, evaluation envs, best store and logger for a run folder.

    A fresh run (no ``resume_step``) starts its engine on fresh envs. With ``resume_step``, whatever was
    logged after that step is dropped (it will be logged again), and ``Run.restore`` starts the engine.
    """
    spec = network_spec(env_info, config)
    model = ActorCritic(spec, seed=config.seed)
    learner, timings = make_learner(model, config), Timings()
    policy = model_policy(model, seed=config.seed)  # the gymnasium engine acts with it; evaluation plays its snapshots
    with contextlib.ExitStack() as built:  # if a later part fails, the parts built so far are closed
        engine = make_engine(engine_kind, config, model, policy, learner, timings, run_dir)
        built.callback(engine.close)
        if resume_step is None:
            engine.start(None, 0, warner(console))
        logger = RunLogger(run_dir, config.log_every, resume_step)
        built.callback(logger.close)
        media = None
        # a user's torso acts in TensorFlow, and an env that renders apart from it (MuJoCo) cannot then render
        renders = "rgb_array" in env_info.render_modes and not (spec.user_torso and renders_apart(config.env_id))
        if config.media and renders:
            media = BestPolicyMedia(config.env_id, config.eval_seed,
                                    lambda step, gif, width, height: logger.log_image(step, BEST_POLICY_GIF, gif, width, height),
                                    options=EnvOptions.from_config(config))
        evaluation = _evaluation(config, spec, engine_kind, warner(console))
        built.callback(evaluation.close)
        store = BestPolicyStore(run_dir / "best", keep=max(3, config.crown.candidates), on_warning=warner(console))
        built.pop_all()
    return Run(config=config, run_dir=run_dir, spec=spec, model=model, policy=policy, learner=learner,
               evaluation=evaluation, store=store, checkpoints=checkpoints, logger=logger, timings=timings,
               console=console, out=out, engine=engine, media=media)


def _evaluation(config: TrainConfig, spec: NetworkSpec, engine_kind: str, warn: Callable[[str], None]) -> Evaluation:
    """Evaluation beside training: on Ray actors with the Ray engine (unless ray.eval_workers is 0), else on a
    thread of this process; both play the same fixed-seed episodes and return the same results."""
    seeds, options = episode_seeds(config.eval_seed, config.eval_episodes), EnvOptions.from_config(config)
    if engine_kind == "ray" and config.ray.eval_workers:
        from champion.runners.ray.evaluation import RayEvaluation

        return RayEvaluation.from_config(config, spec, seeds, background=config.eval_in_background, warn=warn)
    eval_envs = make_eval_env(config.env_id, config.eval_episodes, options=options)
    return BackgroundEvaluation(eval_envs, seeds, config.eval_in_background, env_id=config.env_id)


def check_checkpoint_state(loaded: LoadedCheckpoint, spec: NetworkSpec, config: TrainConfig) -> None:
    """ValueError or TypeError unless a checkpoint has what ``Run.restore`` applies, of the right kinds and shapes:
    its model's variables those of ``spec``, its counters at the manifest's step, its engine the run's, its env parts
    sized for ``config.num_envs``, each random state tried on a throwaway generator. A checkpoint that would fail
    mid-restore is so found while an older one can still be used."""
    from champion.runners.engines import choose_engine

    saved = loaded.state
    engine = saved.get("engine", "gymnasium")
    if engine not in ("graph", "gymnasium", "ray") or (engine == "ray") != (choose_engine(config) == "ray"):
        raise ValueError(f"its engine {str(engine)[:20]!r} is not this run's")
    loop = saved.get("loop")
    numbers = [name for name in LoopState.__dataclass_fields__ if name not in TEXT_FIELDS]
    if (not isinstance(loop, dict) or not all(is_number(loop.get(name, 0)) for name in numbers)
            or not all(isinstance(loop.get(name, ""), str) and len(loop.get(name, "")) <= MAX_REASON_CHARS
                       for name in TEXT_FIELDS)
            or loop.get("step") != loaded.manifest.get("step")):
        raise ValueError("its loop counters are missing, not numbers, or not at the manifest's step")
    np.random.RandomState().set_state(saved["numpy_random"])
    random.Random().setstate(saved["python_random"])
    if "policy_random" in saved:
        np.random.default_rng().bit_generator.state = saved["policy_random"]
    best = saved.get("best_mean_return")
    if not (is_number(best) or best == -math.inf):  # -inf: no best saved yet
        raise ValueError("its best return is not a number")
    for part in [saved, *(saved.get("workers") or [])]:
        _check_engine_part(part, config.num_envs)
    if loaded.manifest.get("network") != spec.to_dict():
        return  # a checkpoint of another network: check_checkpoint_fits refuses it in one line
    for name, shape in weight_shapes(spec).items():
        key = f"model/{name.replace('/', '__')}/.ATTRIBUTES/VARIABLE_VALUE"
        if loaded.tensor_shapes.get(key) != list(shape):
            raise ValueError(f"its model's {name} is {loaded.tensor_shapes.get(key)}, the network's is {list(shape)}")


def _check_engine_part(part: Any, num_envs: int) -> None:
    """The env part of a checkpoint's state (the whole state, or one Ray worker's) holds the kinds it should, sized
    for at most ``num_envs`` envs."""
    if not isinstance(part, dict):
        raise ValueError("a worker's state is not a mapping")
    expected = {"env_state": VectorEnvState, "noise": EnvNoise, "reward_scaler": RewardScaler}
    for key, kind in expected.items():
        if part.get(key) is not None and not isinstance(part[key], kind):
            raise ValueError(f"its {key} is a {type(part[key]).__name__}, not a {kind.__name__}")
    noise, scaler = part.get("noise"), part.get("reward_scaler")
    if noise is not None and not (len(noise.generators) == len(noise.env_indices) <= num_envs
                                  and 0 <= noise._position <= len(noise._block)):
        raise ValueError("its action noise does not fit the run's envs")
    if scaler is not None and (scaler.returns.shape != (num_envs,) or not scaler.variance > 0):
        raise ValueError("its reward scaler does not fit the run's envs")
    exact = part.get("envs_exact", [])
    if not isinstance(exact, list) or not all(isinstance(value, bool) for value in exact):
        raise ValueError("its envs_exact is not a list of true/false")


def restored_text(problems: list[str | None]) -> str:
    """How many envs a resume restored exactly (the resume's first line)."""
    exact = sum(problem is None for problem in problems)
    return f"{exact} of {len(problems)} envs restored exactly"


def warner(console: Console) -> Callable[[str], None]:
    """Warnings go through the console (above the progress bar), or to stderr when it is quiet."""
    if console.quiet:
        return warn
    return lambda message: console.print(f"[bold yellow]warning:[/] {message}")
