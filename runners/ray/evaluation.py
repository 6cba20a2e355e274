"""Evaluation on Ray actors beside training: the same fixed-seed episodes as ``champion.runners.evaluate``, same results.

The episodes are split among ``ray.eval_workers`` actors in seed order; each plays its share with the
snapshot's weights and the driver puts the returns back in seed order. Acting is row by row
(``champion.agents.numpy_policy._matmul``), so an episode's actions do not depend on which actor played it or
beside which other episodes: a Ray evaluation of given weights returns exactly what the in-process one does.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from champion.agents.numpy_policy import NumpyPolicy
from champion.agents.spec import NetworkSpec
from champion.envs.factory import EnvOptions, EnvStepError
from champion.runners.engines.base import EngineFailed
from champion.runners.evaluate import EvalResult, FinishedEvaluation
from champion.runners.ray.workers import EvaluationWorker, RestartBudget
from champion.runners.store.atomic_files import warn


class EvaluationFailed(EngineFailed):
    """An evaluation actor used its ``ray.max_worker_restarts`` restarts, or its episodes took longer than
    ``ray.eval_timeout_s`` twice in one evaluation."""


class RayEvaluation:
    """``BackgroundEvaluation``'s interface (start, finished, wait, close) with the episodes played on Ray actors.

    Each actor's share of an evaluation has ``timeout`` seconds from when it was sent: an actor past it, or lost,
    is warned about in one line, counted once against its own ``max_restarts``, restarted and its share played
    again with a fresh ``timeout``; a share late twice ends the run (EvaluationFailed). So training, which waits
    for an evaluation only when the next one is due or the run ends, waits for a hung actor at most about two
    timeouts from the evaluation's start.
    """

    def __init__(self, env_id: str, options: EnvOptions, spec: NetworkSpec, seeds: Sequence[int], actors: int,
                 timeout: float, max_restarts: int, background: bool = True,
                 warn: Callable[[str], None] = warn, restart_window_s: float = 0.0) -> None:
        import ray

        self.seeds, self.timeout, self.max_restarts, self.background = list(seeds), timeout, max_restarts, background
        self.warn = warn
        self.shares = [list(share) for share in np.array_split(self.seeds, min(actors, len(self.seeds))) if len(share)]
        self.budget = RestartBudget(len(self.shares), max_restarts, restart_window_s)
        remote = ray.remote(EvaluationWorker).options(num_cpus=0, max_restarts=self.budget.ray_max_restarts,
                                                      max_task_retries=0)
        self.actors = [remote.remote(env_id, options, spec, [int(seed) for seed in share]) for share in self.shares]
        self.actor_restarts = [0] * len(self.actors)
        """Restarts of each evaluation actor in this session; each has ``max_restarts`` within ``restart_window_s``."""
        self.step_in_flight = -1
        """The step of the evaluation running now (-1: none)."""
        self._in_flight: tuple[int, NumpyPolicy, Any, list[Any], float] | None = None
        self._sent: list[float] = []
        """When each share of the evaluation in flight was (last) sent: its timeout runs from there."""
        self._late: set[int] = set()
        """The shares of the evaluation in flight that have already missed their timeout once."""

    @property
    def restarts(self) -> int:
        """Restarts of all evaluation actors (summary.json)."""
        return sum(self.actor_restarts)

    def start(self, step: int, policy: NumpyPolicy) -> list[FinishedEvaluation]:
        """Evaluate ``policy`` (a snapshot) as of ``step``; returns the previous evaluation if it was still running."""
        import ray

        previous = self.wait()
        self.step_in_flight = step
        weights = ray.put(policy.weights)
        now = time.monotonic()
        self._sent, self._late = [now] * len(self.actors), set()
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
        """The evaluation in flight, once it has finished. A share whose actor died or passed its timeout is played
        again on the restarted actor (see the class)."""
        import ray

        if self._in_flight is None:
            return []
        step, policy, weights, references, started = self._in_flight
        results: dict[int, EvalResult] = {}
        while len(results) < len(references):
            waiting = {index: reference for index, reference in enumerate(references) if index not in results}
            first_deadline = min(self._sent[index] for index in waiting) + self.timeout
            ready, _ = ray.wait(list(waiting.values()), num_returns=len(waiting),
                                timeout=max(first_deadline - time.monotonic(), 0.0))
            for index, reference in waiting.items():
                if reference in ready:
                    outcome = self._share(step, index, reference)
                elif time.monotonic() >= self._sent[index] + self.timeout:
                    outcome = self._late_share(step, index)
                else:
                    continue
                if outcome is None:
                    references[index] = self.actors[index].evaluate.remote(weights)
                    self._sent[index] = time.monotonic()
                else:
                    results[index] = outcome
        self._in_flight, self.step_in_flight = None, -1
        parts = [results[index] for index in range(len(references))]
        result = EvalResult(tuple(value for part in parts for value in part.returns),
                            tuple(value for part in parts for value in part.lengths), tuple(self.seeds))
        return [FinishedEvaluation(step, policy, result, time.perf_counter() - started)]

    def _late_share(self, step: int, index: int) -> None:
        """Actor ``index`` has not played its share within the timeout: restart it (one restart, one warning line),
        or EvaluationFailed when the share was late before in this evaluation."""
        import ray

        episodes = len(self.shares[index])
        if index in self._late:
            raise EvaluationFailed(f"evaluation actor {index} took longer than ray.eval_timeout_s={self.timeout:g} s "
                                   f"twice for its {episodes} episodes of the evaluation at step {step:,}; raise "
                                   "ray.eval_timeout_s, or split the episodes over more ray.eval_workers")
        self._late.add(index)
        self._count_restart(index, f"did not finish its {episodes} episodes of the evaluation at step {step:,} within "
                                   f"ray.eval_timeout_s={self.timeout:g} s")
        ray.kill(self.actors[index], no_restart=False)
        return None

    def _share(self, step: int, index: int, reference: Any) -> EvalResult | None:
        """Actor ``index``'s finished share, or None once it has been restarted (it died) or while Ray restarts it
        (refused as unavailable: played again when it is back, not counted)."""
        import ray

        try:
            return ray.get(reference, timeout=self.timeout)
        except ray.exceptions.ActorUnavailableError:  # restarting (after a kill of ours, or a lost node)
            time.sleep(0.2)
            return None
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
            self._count_restart(index, f"was lost during the evaluation at step {step:,} ({type(error).__name__})")
            return None
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, EnvStepError) else EvaluationFailed(
                f"evaluation actor {index} failed: {type(cause).__name__}: {cause}")) from None

    def _count_restart(self, index: int, why: str) -> None:
        """One restart of evaluation actor ``index``, warned in one line; EvaluationFailed past its budget."""
        if self.budget.exhausted(index):
            raise EvaluationFailed(f"evaluation actor {index} {why}, and it has used its {self.budget.settings()}")
        self.actor_restarts[index] += 1
        self.warn(f"evaluation actor {index} {why}; restarted it ({self.budget.text(self.budget.count(index))}), its "
                  "episodes are played again (same seeds, same results)")

    def close(self) -> None:
        """Stop the evaluation actors, dropping an evaluation in flight."""
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone with its node
                pass
        self.actors, self._in_flight, self.step_in_flight = [], None, -1
