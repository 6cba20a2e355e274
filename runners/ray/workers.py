"""What runs on a Ray worker: rollout fragments and evaluations with the numpy policy, without TensorFlow.

These are plain classes; ``runners/engines/ray_engine.py`` and ``runners/ray/evaluation.py`` make them Ray
actors. Importing this module loads gymnasium, numpy and champion's env factory, never TensorFlow (a test
asserts it on a worker), so a worker starts in about a second and holds about a tenth of a driver's memory.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from champion.agents.numpy_policy import EnvNoise, NumpyPolicy, single_threaded_numpy
from champion.agents.spec import NetworkSpec
from champion.envs.factory import EnvOptions, make_eval_env, make_vector_env
from champion.runners.evaluate import EvalResult, evaluate
from champion.runners.rollout import Rollout, VectorEnvCollector, env_checkpoint, restore_envs


@dataclass(frozen=True)
class WorkerSetup:
    """What a rollout worker needs to build its envs: everything is picklable and TensorFlow-free."""

    env_id: str
    options: EnvOptions
    spec: NetworkSpec
    num_steps: int
    envs_per_worker: int
    worker_index: int

    @property
    def env_indices(self) -> range:
        """This worker's envs' places in the whole batch: worker w holds envs w*M .. w*M + M - 1."""
        start = self.worker_index * self.envs_per_worker
        return range(start, start + self.envs_per_worker)


@dataclass(frozen=True)
class Fragment:
    """One worker's share of a rollout, tagged with the weights' version it was collected with."""

    worker_index: int
    version: int
    rollout: Rollout
    seconds: float
    """Time the worker spent collecting it."""


class RolloutWorker:
    """A gymnasium vector env of M envs stepped with the numpy policy, one fragment (num_steps x M) per call.

    ``start`` (fresh episodes, or a saved state) comes before the first ``collect``. Ray never restarts one (the
    driver replaces a lost worker with a fresh actor and starts that), so its state is always its last start's.
    """

    def __init__(self, setup: WorkerSetup) -> None:
        single_threaded_numpy()  # acting multiplies small matrices, as in process (agents/numpy_policy.py)
        self.setup = setup
        self.policy = NumpyPolicy(setup.spec)
        self.collector: VectorEnvCollector | None = None

    def start(self, run_seed: int, step: int, saved: dict[str, Any] | None = None) -> list[str | None]:
        """Reset the envs as the in-process engine resets its env ``i`` (seed ``run_seed + step + i``), with one
        noise stream per env, or bring fresh envs to ``saved`` (a ``state()``). Returns, per env, None when it was
        restored exactly, else why its episode restarted (empty when fresh)."""
        setup = self.setup
        if self.collector is not None:
            self.collector.envs.close()
            self.collector = None
        envs = make_vector_env(setup.env_id, setup.envs_per_worker, "sync", setup.options)
        observations, noise, problems = restore_envs(envs, saved, setup.env_id)
        first = run_seed + step + setup.env_indices.start
        self.collector = VectorEnvCollector(envs, setup.num_steps, first, observations=observations,
                                            noise=noise or EnvNoise(run_seed + step, setup.env_indices),
                                            env_id=setup.env_id)
        return problems

    def collect(self, weights: dict[str, np.ndarray], version: int) -> Fragment:
        """One fragment acted with exactly these ``weights`` (version ``version``)."""
        if self.collector is None:
            raise RuntimeError(f"rollout worker {self.setup.worker_index} (pid {os.getpid()}) was asked to collect "
                               "before its start")
        started = time.perf_counter()
        self.policy.set_weights(weights)
        rollout = self.collector.collect(self.policy)
        return Fragment(self.setup.worker_index, version, rollout, time.perf_counter() - started)

    def state(self, inexact: dict[int, str] | None) -> dict[str, Any]:
        """This worker's envs for a resume checkpoint (``champion.runners.rollout.env_checkpoint``: their journals, checked
        by a replay when ``inexact`` is None), its action noise, and the envs found not exact (by place in the
        whole batch)."""
        if self.collector is None:  # never started: no episodes to save
            return {"env_state": None, "envs_problem": "a worker has not started its envs", "inexact": inexact or {}}
        saved, inexact = env_checkpoint(self.collector.envs, inexact, self.setup.env_id, lambda message: None,
                                        self.setup.env_indices.start)
        return {**saved, "noise": self.collector.noise, "inexact": inexact}

    def process(self) -> dict[str, Any]:
        """This worker's process id, peak resident memory (MB) and whether it has imported TensorFlow."""
        return process_report()

    def close(self) -> None:
        """Close the envs (a user env may hold subprocesses or files)."""
        if self.collector is not None:
            self.collector.envs.close()
            self.collector = None


class EvaluationWorker:
    """Plays the fixed-seed evaluation episodes of a weight snapshot, as ``champion.runners.evaluate`` does in process.

    The driver makes it a threaded actor (two calls at once), so that ``progress`` answers while ``evaluate`` plays:
    an evaluation that stops stepping is told apart from a long one by its count of env steps, not by its time.
    """

    def __init__(self, env_id: str, options: EnvOptions, spec: NetworkSpec, seeds: list[int]) -> None:
        single_threaded_numpy()
        self.env_id, self.seeds = env_id, list(seeds)
        self.envs = make_eval_env(env_id, len(self.seeds), options=options)
        self.steps = [0]
        """Resets and steps of the envs since the actor started (a list: the counting wrappers add to it)."""
        self.counted = [StepCounting(env, self.steps) for env in self.envs.envs]
        self.policy = NumpyPolicy(spec)

    def evaluate(self, weights: dict[str, np.ndarray]) -> EvalResult:
        """One episode per seed with the deterministic action of these ``weights``."""
        self.policy.set_weights(weights)
        return evaluate(self.policy, self.counted, self.seeds, env_id=self.env_id)

    def progress(self) -> int:
        """Resets and steps taken so far: the driver finds a hung evaluation by this number standing still."""
        return self.steps[0]

    def process(self) -> dict[str, Any]:
        """This worker's process id, peak resident memory (MB) and whether it has imported TensorFlow."""
        return process_report()


class StepCounting(gym.Wrapper):
    """Adds one to ``tally[0]`` after each reset and step of its env returns (a step that hangs is not counted)."""

    def __init__(self, env: gym.Env, tally: list[int]) -> None:
        super().__init__(env)
        self.tally = tally

    def reset(self, **kwargs: Any) -> Any:
        answer = self.env.reset(**kwargs)
        self.tally[0] += 1
        return answer

    def step(self, action: Any) -> Any:
        answer = self.env.step(action)
        self.tally[0] += 1
        return answer


class RestartBudget:
    """Restarts per worker: ``limit`` for each worker within any ``window_s`` seconds (0: over the whole session), so
    that losing many workers at once (a node) costs each one restart, and losses hours apart in a long run do not
    add up to end it. Used by the driver for rollout workers and evaluation actors alike; a restart is a fresh actor
    the driver makes in place of a lost one (Ray restarts none: their max_restarts is 0), so every one is counted and
    a worker that dies as it starts is stopped after ``limit`` tries, never restarted by Ray in a loop unseen."""

    def __init__(self, workers: int, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self.times: list[list[float]] = [[] for _ in range(workers)]
        """When each worker was restarted (time.monotonic)."""

    def used(self, index: int) -> int:
        """Worker ``index``'s restarts that still count."""
        if self.window_s:
            since = time.monotonic() - self.window_s
            self.times[index] = [moment for moment in self.times[index] if moment > since]
        return len(self.times[index])

    def exhausted(self, index: int) -> bool:
        """Whether one more restart of worker ``index`` would pass the budget."""
        return self.used(index) >= self.limit

    def count(self, index: int) -> int:
        """One restart of worker ``index``; the restarts that now count."""
        self.times[index].append(time.monotonic())
        return self.used(index)

    def text(self, used: int, several: bool = False) -> str:
        """E.g. "1 of 3 restarts", "up to 2 of 3 restarts each within 3600 s"."""
        within = f" within {self.window_s:g} s" if self.window_s else ""
        return f"{'up to ' if several else ''}{used} of {self.limit} restarts{' each' if several else ''}{within}"

    def settings(self) -> str:
        """The settings that set it, for an error line."""
        within = f" within ray.restart_window_s={self.window_s:g} s" if self.window_s else ""
        return f"ray.max_worker_restarts={self.limit} restarts{within}"


def process_report() -> dict[str, Any]:
    """pid, Ray node, peak resident memory in MB (Linux reports KB), and whether TensorFlow was ever imported here."""
    ray = sys.modules.get("ray")  # present on a Ray worker; this module does not import it
    node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
    return {"pid": os.getpid(), "node": node, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "tensorflow": "tensorflow" in sys.modules}
