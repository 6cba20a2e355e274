"""Evaluation on Ray actors beside training: the same fixed-seed episodes as ``champion.runners.evaluate``, same results.

The episodes are split among ``ray.eval_workers`` actors in seed order; each plays its share with the
snapshot's weights and the driver puts the returns back in seed order. Acting is row by row
(``champion.agents.numpy_policy._matmul``), so an episode's actions do not depend on which actor played it or
beside which other episodes: a Ray evaluation of given weights returns exactly what the in-process one does.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from champion.agents.numpy_policy import NumpyPolicy
from champion.agents.spec import NetworkSpec
from champion.envs.factory import EnvOptions, EnvStepError
from champion.runners.engines.base import EngineFailed
from champion.runners.evaluate import EvalResult, FinishedEvaluation
from champion.runners.ray.workers import EvaluationWorker


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
        self._in_flight: tuple[int, NumpyPolicy, Any, list[Any], float] | None = None

    def start(self, step: int, policy: NumpyPolicy) -> list[FinishedEvaluation]:
        """Evaluate ``policy`` (a snapshot) as of ``step``; returns the previous evaluation if it was still running."""
        import ray

        previous = self.wait()
        self.step_in_flight = step
        weights = ray.put(policy.weights)
        self._in_flight = (step, policy, weights, [actor.evaluate.remote(weights) for actor in self.actors],
                           time.perf_counter())
        if not self.background:
            previous += self.wait()
        return previous

    def finished(self) -> list[FinishedEvaluation]:
        """The evaluation in flight, if it has finished; never blocks."""
        import ray

        if self._in_flight is None:
            return []
        references = self._in_flight[3]
        ready, _ = ray.wait(references, num_returns=len(references), timeout=0)
        return self.wait() if len(ready) == len(references) else []

    def wait(self) -> list[FinishedEvaluation]:
        """The evaluation in flight, once it has finished. An actor that died or took longer than ``timeout`` is
        restarted and its share played again (EvaluationFailed past ``max_restarts``, or when none of it has come
        back within three timeouts)."""
        import ray

        if self._in_flight is None:
            return []
        step, policy, weights, references, started = self._in_flight
        results: dict[int, EvalResult] = {}
        deadline = time.monotonic() + 3 * self.timeout
        while len(results) < len(references):
            if time.monotonic() > deadline:
                raise EvaluationFailed(f"the evaluation at step {step:,} did not finish within "
                                       f"3 x ray.eval_timeout_s={self.timeout:g} s")
            waiting = [reference for index, reference in enumerate(references) if index not in results]
            ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=self.timeout)
            for index, reference in enumerate(references):
                if index in results:
                    continue
                outcome = self._share(index, reference if reference in ready else None)
                if outcome is None:
                    references[index] = self.actors[index].evaluate.remote(weights)
                else:
                    results[index] = outcome
        self._in_flight, self.step_in_flight = None, -1
        parts = [results[index] for index in range(len(references))]
        result = EvalResult(tuple(value for part in parts for value in part.returns),
                            tuple(value for part in parts for value in part.lengths), tuple(self.seeds))
        return [FinishedEvaluation(step, policy, result, time.perf_counter() - started)]

    def _share(self, index: int, reference: Any | None) -> EvalResult | None:
        """Actor ``index``'s share of the episodes, or None once it has been restarted (it did not answer in time:
        ``reference`` None, or it died) or is being restarted."""
        import ray

        if reference is None:
            self._count_restart(index, f"took longer than ray.eval_timeout_s={self.timeout:g} s")
            ray.kill(self.actors[index], no_restart=False)
            return None
        try:
            return ray.get(reference, timeout=self.timeout)
        except ray.exceptions.ActorUnavailableError:  # restarting: asked again when it is back
            time.sleep(0.2)
            return None
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
            self._count_restart(index, f"was lost ({type(error).__name__})")
            return None
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, EnvStepError) else EvaluationFailed(
                f"evaluation actor {index} failed: {type(cause).__name__}: {cause}")) from None

    def _count_restart(self, index: int, why: str) -> None:
        """One restart of evaluation actor ``index``; EvaluationFailed past the limit."""
        if self.restarts >= self.max_restarts:
            raise EvaluationFailed(f"evaluation actor {index} {why}, and the run has used its "
                                   f"ray.max_worker_restarts={self.max_restarts} restarts")
        self.restarts += 1

    def close(self) -> None:
        """Stop the evaluation actors, dropping an evaluation in flight."""
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone with its node
                pass
        self.actors, self._in_flight, self.step_in_flight = [], None, -1
