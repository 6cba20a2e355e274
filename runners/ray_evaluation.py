"""Evaluation on Ray actors beside training: the same fixed-seed episodes as ``runners.evaluate``, same results.

The episodes are split among ``ray.eval_workers`` actors in seed order; each plays its share with the
snapshot's weights and the driver puts the returns back in seed order. Acting is row by row
(``agents.numpy_policy._matmul``), so an episode's actions do not depend on which actor played it or
beside which other episodes: a Ray evaluation of given weights returns exactly what the in-process one does.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from agents.numpy_policy import NumpyPolicy
from agents.spec import NetworkSpec
from envs.factory import EnvOptions
from runners.engines.base import EngineFailed
from runners.evaluate import EvalResult, FinishedEvaluation
from runners.workers import EvaluationWorker


class EvaluationFailed(EngineFailed):
    """The evaluation actors failed more often than ``ray.max_worker_restarts`` allows."""


class RayEvaluation:
    """``BackgroundEvaluation``'s interface (start, finished, wait, close) with the episodes played on Ray actors."""

    def __init__(self, env_id: str, options: EnvOptions, spec: NetworkSpec, seeds: Sequence[int], actors: int,
                 timeout: float, max_restarts: int, background: bool = True) -> None:
        import ray

        self.seeds, self.timeout, self.max_restarts, self.background = list(seeds), timeout, max_restarts, background
        self.shares = [list(share) for share in np.array_split(self.seeds, min(actors, len(self.seeds))) if len(share)]
        remote = ray.remote(EvaluationWorker).options(num_cpus=0, max_restarts=max_restarts, max_task_retries=0)
        self.actors = [remote.remote(env_id, options, spec, [int(seed) for seed in share]) for share in self.shares]
        self.restarts = 0
        self.step_in_flight = -1
        """The step of the evaluation running now (-1: none)."""
        self._in_flight: tuple[int, NumpyPolicy, list[Any], float] | None = None

    def start(self, step: int, policy: NumpyPolicy) -> list[FinishedEvaluation]:
        """Evaluate ``policy`` (a snapshot) as of ``step``; returns the previous evaluation if it was still running."""
        previous = self.wait()
        self.step_in_flight = step
        self._in_flight = (step, policy, self._submit(policy), time.perf_counter())
        if not self.background:
            previous += self.wait()
        return previous

    def _submit(self, policy: NumpyPolicy) -> list[Any]:
        import ray

        weights = ray.put(policy.weights)
        return [actor.evaluate.remote(weights) for actor in self.actors]

    def finished(self) -> list[FinishedEvaluation]:
        """The evaluation in flight, if it has finished; never blocks."""
        import ray

        if self._in_flight is None:
            return []
        references = self._in_flight[2]
        ready, _ = ray.wait(references, num_returns=len(references), timeout=0)
        return self.wait() if len(ready) == len(references) else []

    def wait(self) -> list[FinishedEvaluation]:
        """The evaluation in flight, once it has finished; an actor that died or took longer than ``timeout`` is
        restarted and the evaluation played again (EvaluationFailed past ``max_restarts``)."""
        import ray

        if self._in_flight is None:
            return []
        step, policy, references, started = self._in_flight
        while True:
            ready, _ = ray.wait(references, num_returns=len(references), timeout=self.timeout)
            try:
                if len(ready) < len(references):
                    raise TimeoutError(f"took longer than ray.eval_timeout_s={self.timeout:g} s")
                results: list[EvalResult] = ray.get(references, timeout=self.timeout)
                break
            except (TimeoutError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
                self._restart(error, kill=isinstance(error, TimeoutError))
                references = self._submit(policy)
        self._in_flight, self.step_in_flight = None, -1
        result = EvalResult(tuple(value for part in results for value in part.returns),
                            tuple(value for part in results for value in part.lengths), tuple(self.seeds))
        return [FinishedEvaluation(step, policy, result, time.perf_counter() - started)]

    def _restart(self, error: BaseException, kill: bool) -> None:
        import ray

        if self.restarts >= self.max_restarts:
            raise EvaluationFailed(f"an evaluation actor failed ({error}) and the run has used its "
                                   f"ray.max_worker_restarts={self.max_restarts} restarts") from error
        self.restarts += 1
        if kill:
            for actor in self.actors:
                ray.kill(actor, no_restart=False)

    def close(self) -> None:
        """Stop the evaluation actors, dropping an evaluation in flight."""
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone with its node
                pass
        self.actors, self._in_flight, self.step_in_flight = [], None, -1
