"""Engines: what advances training by some env steps (collect rollouts, update the learner).

The train loop asks an engine to ``advance`` up to the next step where it has something to do
(evaluate, log, checkpoint, stop) and gets back the steps taken, the update metrics and the
finished episodes. ``GymnasiumEngine`` steps a gymnasium vector env from Python, one rollout
and one compiled update per call. ``GraphEngine`` (``runners/graph_engine.py``) runs the env as
TF ops and fuses many rollouts and updates into one compiled call. Remote rollout workers
would be a third engine; the loop, evaluator, best-policy store and logger do not change.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Callable, Protocol

import numpy as np

from agents.config import ConfigError, TrainConfig
from agents.numpy_policy import NumpyPolicy
from envs.graph import GRAPH_ENV_IDS, has_graph_env
from envs.factory import make_vector_env
from runners.rollout import RewardScaler, VectorEnvCollector
from runners.timing import Timings


@dataclass(frozen=True)
class EpisodeStats:
    """Training episodes that finished during an advance, summed (what the logger averages)."""

    count: int = 0
    return_sum: float = 0.0
    length_sum: float = 0.0

    @classmethod
    def from_arrays(cls, returns: np.ndarray, lengths: np.ndarray) -> "EpisodeStats":
        """Sums of per-episode returns and lengths."""
        return cls(int(np.size(returns)), float(np.sum(returns)), float(np.sum(lengths)))

    def __add__(self, other: "EpisodeStats") -> "EpisodeStats":
        return EpisodeStats(self.count + other.count, self.return_sum + other.return_sum,
                            self.length_sum + other.length_sum)


@dataclass(frozen=True)
class Advance:
    """What one ``Engine.advance`` did."""

    env_steps: int
    updates: int
    metrics: dict[str, float]
    """Update metrics averaged over the updates."""
    episodes: EpisodeStats
    skipped_steps: int = 0
    """Gradient steps skipped for a non-finite loss or gradient, over all the updates."""
    nonfinite_runs: tuple[int, int, int] = (0, 0, 0)
    """Runs of consecutive updates with a skipped step: (at the start, at the end, longest)."""


class Engine(Protocol):
    """Collects rollouts and updates the learner on them."""

    kind: str

    def start(self, saved: dict[str, Any] | None, step: int, warn: Callable[[str], None]) -> None:
        """Begin collecting: fresh, or from a checkpoint's ``checkpoint_state`` (TF state is restored already)."""
        ...

    def prepare(self) -> None:
        """Trace the compiled function, or load its trace from the cache (``advance`` does it if not done)."""
        ...

    def advance(self, step: int, max_env_steps: int, total_steps: int) -> Advance:
        """At least one rollout and update, at most ``max_env_steps`` env steps when that allows one."""
        ...

    def tracing_count(self) -> int:
        """Times the compiled function was traced (1 once it has run)."""
        ...

    def checkpoint_objects(self) -> dict[str, Any]:
        """TensorFlow state for a resume checkpoint."""
        ...

    def checkpoint_state(self) -> dict[str, Any]:
        """Picklable state for a resume checkpoint."""
        ...

    def close(self) -> None:
        """Release environments."""
        ...


def choose_engine(config: TrainConfig) -> str:
    """graph or gymnasium for this config; ConfigError (one line) if graph is asked for and impossible."""
    reasons = []
    if not has_graph_env(config.env_id):
        reasons.append(f"{config.env_id} has no TF-op implementation (graph envs: {', '.join(GRAPH_ENV_IDS)})")
    if config.reward_scaling:
        reasons.append("reward_scaling is not implemented in the graph engine")
    if config.engine == "graph" and reasons:
        raise ConfigError(f"engine=graph is not possible: {'; '.join(reasons)}; use engine=gymnasium or auto")
    if config.engine == "gymnasium" or reasons:
        return "gymnasium"
    return "graph"


class GymnasiumEngine:
    """A gymnasium vector env stepped from Python with the numpy policy; one compiled update per rollout."""

    kind = "gymnasium"

    def __init__(self, config: TrainConfig, policy: NumpyPolicy, learner: Any, timings: Timings) -> None:
        self.config, self.policy, self.learner, self.timings = config, policy, learner, timings
        self.collector: VectorEnvCollector | None = None
        self.updated = False
        """Whether this engine has made an update yet (its first one compiles)."""

    def start(self, saved: dict[str, Any] | None, step: int, warn: Callable[[str], None]) -> None:
        """Fresh envs, or the envs of a checkpoint's state (fresh ones, with a warning, if they could not be saved)."""
        config, observations = self.config, None
        reward_scaler = RewardScaler(config.num_envs, config.algo_config.gamma) if config.reward_scaling else None
        if saved is not None and saved.get("envs") is not None:
            envs, observations = pickle.loads(saved["envs"]), saved["observations"]
        else:
            if saved is not None:
                warn(f"the environments could not be saved ({saved['envs_problem']}); they restart from fresh "
                     "episodes, so this continuation is not bit-exact")
            envs = make_vector_env(config.env_id, config.num_envs, config.vectorization)
        if saved is not None:
            reward_scaler = saved.get("reward_scaler")
        self.collector = VectorEnvCollector(envs, config.algo_config.num_steps, config.seed + step, self.timings,
                                            observations=observations, reward_scaler=reward_scaler)

    def prepare(self) -> None:
        """Trace the learner's compiled update, or load its trace from the cache."""
        if not self.learner.tracing_count():
            build_graph(self.learner.compiled_update.prepare, self.timings, "update")

    def advance(self, step: int, max_env_steps: int, total_steps: int) -> Advance:
        """One rollout and one update (``max_env_steps`` does not split a rollout)."""
        rollout = self.collector.collect(self.policy)
        step += rollout.env_steps
        first, self.updated = not self.updated, True
        if first:
            self.prepare()  # nothing to do when EarlyAdvance prepared it
        with self.timings.phase("first update" if first else "update"):  # the first one compiles, with XLA
            metrics = self.learner.update(rollout.batch, max(0.0, 1.0 - step / total_steps))
        with self.timings.phase("policy snapshot"):
            self.policy.refresh()  # the next rollout acts with the updated weights
        skipped = int(metrics.get("nonfinite_steps", 0))
        return Advance(rollout.env_steps, 1, metrics,
                       EpisodeStats.from_arrays(rollout.episode_returns, rollout.episode_lengths),
                       skipped, (1, 1, 1) if skipped else (0, 0, 0))

    def tracing_count(self) -> int:
        """Times the learner's update was traced."""
        return self.learner.tracing_count()

    def checkpoint_objects(self) -> dict[str, Any]:
        """None: the envs are pickled (``checkpoint_state``)."""
        return {}

    def checkpoint_state(self) -> dict[str, Any]:
        """The pickled envs (or why they could not be), the current observations and the reward scaler."""
        try:
            envs = pickle.dumps(self.collector.envs, protocol=pickle.HIGHEST_PROTOCOL)
            envs_problem = None
        except Exception as error:  # user envs, async workers: not picklable
            envs, envs_problem = None, f"{type(error).__name__}: {error}"
        return {"engine": self.kind, "envs": envs, "envs_problem": envs_problem,
                "observations": self.collector.observations.copy(), "reward_scaler": self.collector.reward_scaler}

    def close(self) -> None:
        """Close the training envs."""
        if self.collector is not None:
            self.collector.envs.close()


class EarlyAdvance:
    """A fresh run's first ``advance``, made on a worker thread while the run's other parts are built.

    The first call of a compiled step converts its graph for XLA and compiles it, or loads the compiled
    code from the cache: 0.4 s on a warm machine, seconds on a cold one, nearly all of it in TensorFlow's
    C++ with the GIL released. Started as soon as the engine exists, it overlaps what the main thread
    still builds (the evaluation policy and envs, the logger, the best-policy store). The engine is traced,
    or its trace loaded, on the calling thread first: two threads tracing at once would change the
    trace's names, and with them the compile cache's key. Until it has finished, nothing else may act on
    the engine; reading the model's weights meanwhile is allowed but may see an update half done.
    """

    def __init__(self, engine: Engine, step: int, max_env_steps: int, total_steps: int) -> None:
        self.started = perf_counter()
        """When the advance began (its tracing included): the loop's clock starts here."""
        self._arguments = (step, max_env_steps, total_steps)
        self._outcome: Advance | BaseException | None = None
        self._done = threading.Event()
        engine.prepare()
        threading.Thread(target=self._advance, args=(engine,), name="champion-first-advance", daemon=True).start()

    def result(self) -> Advance:
        """The advance, once it has finished; an error in it is raised here."""
        self.wait()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome

    def wait(self) -> None:
        """Block until the advance has finished, through Ctrl-C too (raised once it has): a compiled call
        cannot be stopped, and the engine must not be closed, nor stderr used, while it runs."""
        interrupted: BaseException | None = None
        while not self._done.is_set():
            try:
                self._done.wait()
            except KeyboardInterrupt as error:  # a thread's join() would count itself finished here
                interrupted = error
        if interrupted is not None:
            raise interrupted

    def _advance(self, engine: Engine) -> None:
        try:
            self._outcome = engine.advance(*self._arguments)
        except BaseException as error:  # re-raised on the loop's thread by result()
            self._outcome = error
        finally:
            self._done.set()


def build_graph(prepare: Callable[[], str], timings: Timings, label: str) -> None:
    """Trace a compiled function or load its trace from the cache (``prepare``), timed as "tracing (label)"
    or "trace from cache (label)"."""
    started = perf_counter()
    source = prepare()
    timings.add(f"tracing ({label})" if source == "traced" else f"trace from cache ({label})", perf_counter() - started)


def make_engine(kind: str, config: TrainConfig, model: Any, policy: NumpyPolicy, learner: Any,
                timings: Timings) -> Engine:
    """The engine of this ``kind`` (graph or gymnasium); ``start`` it before the first ``advance``."""
    if kind == "graph":
        from runners.graph_engine import GraphEngine  # TF-op envs, only when asked for

        return GraphEngine(model, learner, config, timings)
    return GymnasiumEngine(config, policy, learner, timings)
