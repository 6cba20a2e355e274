"""Evaluation on Ray actors beside training: the same fixed-seed episodes as ``champion.runners.evaluate``, same results.

The episodes are split among ``ray.eval_workers`` actors in seed order; each plays its share with the
snapshot's weights and the driver puts the returns back in seed order. Acting is row by row
(``champion.agents.numpy_policy._matmul``), so an episode's actions do not depend on which actor played it or
beside which other episodes: a Ray evaluation of given weights returns exactly what the in-process one does.

A hung actor is found by its progress, not by its time: while an actor plays, the driver asks it (at most once a
second, whenever it looks: every training iteration) how many env steps it has taken. One that took none for
``ray.eval_stall_s`` is replaced by a fresh actor that plays its share again, so a long evaluation that keeps
stepping (10 long Atari games) is never cut short, and a hang is found within about ``ray.eval_stall_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from champion.agents.numpy_policy import NumpyPolicy
from champion.errors import first_line
from champion.agents.spec import NetworkSpec
from champion.envs.factory import EnvOptions, EnvStepError
from champion.runners.engines.base import EngineFailed
from champion.runners.evaluate import EvalResult, FinishedEvaluation
from champion.runners.ray.workers import EvaluationWorker, RestartBudget
from champion.runners.store.atomic_files import warn

if TYPE_CHECKING:
    from champion.agents.config import TrainConfig

PROGRESS_EVERY_S = 1.0
"""How often, at most, the driver asks a playing actor for its count of env steps."""
ACTOR_START_S = 60.0
"""How long a share's actor may take to answer at all (a fresh actor imports and builds its envs) before its silence
counts as a stall, when that is longer than ``ray.eval_stall_s``."""
DEFAULT_STALL_S = 60.0
"""``ray.eval_stall_s``'s default, for callers that pass no setting."""


class EvaluationFailed(EngineFailed):
    """An evaluation actor used its ``ray.max_worker_restarts`` restarts, or played longer than
    ``ray.eval_timeout_s``."""


@dataclass
class _Share:
    """One actor's share of the evaluation in flight, and what the driver has seen of its progress (times are
    ``time.monotonic()``)."""

    call: Any
    """The actor's evaluate call."""
    sent: float
    """When the call was sent: ``ray.eval_timeout_s`` runs from there."""
    moved: float
    """When its count of env steps was last seen to change (or the call was sent)."""
    steps: int | None = None
    """The count last answered (None: no answer since the call was sent)."""
    answered_at: float = 0.0
    """When the question behind that answer was asked: the count stood still at least until then."""
    asked: Any = None
    """A progress question in flight."""
    asked_at: float = 0.0
    result: EvalResult | None = None


class RayEvaluation:
    """``BackgroundEvaluation``'s interface (start, finished, wait, close) with the episodes played on Ray actors.

    ``finished`` (called every iteration) and ``wait`` both look after the actors: an actor that was lost, or took no
    env step for ``stall_s`` seconds (``max(stall_s, ACTOR_START_S)`` until it first answers), is warned about in one
    line, counted once against its own ``max_restarts`` within ``restart_window_s``, replaced by a fresh actor and its
    share played again (same seeds, same results); past its budget, EvaluationFailed. The actors are the driver's own
    (Ray never restarts them), so every new actor is counted. ``timeout`` (None: none) caps one share's playing time.
    """

    def __init__(self, env_id: str, options: EnvOptions, spec: NetworkSpec, seeds: Sequence[int], actors: int,
                 timeout: float | None, max_restarts: int, background: bool = True,
                 warn: Callable[[str], None] = warn, restart_window_s: float = 0.0,
                 stall_s: float = DEFAULT_STALL_S, budget: RestartBudget | None = None) -> None:
        import ray

        self.seeds, self.timeout, self.max_restarts, self.background = list(seeds), timeout, max_restarts, background
        self.warn, self.stall_s = warn, stall_s
        self.shares = [list(share) for share in np.array_split(self.seeds, min(actors, len(self.seeds))) if len(share)]
        self.budget = budget if budget is not None else RestartBudget(len(self.shares), max_restarts, restart_window_s)
        """Restarts per actor; a caller evaluating several seed lists (the crown's rounds) passes one for them all."""
        self._remote = ray.remote(EvaluationWorker).options(num_cpus=0, max_restarts=0, max_task_retries=0,
                                                            max_concurrency=2)  # progress answers while it plays
        self._arguments = (env_id, options, spec)
        self.actors = [self._new_actor(index) for index in range(len(self.shares))]
        self.actor_restarts = [0] * len(self.actors)
        """Restarts of each evaluation actor in this session; each has ``max_restarts`` within ``restart_window_s``."""
        self.step_in_flight = -1
        """The step of the evaluation running now (-1: none)."""
        self._in_flight: tuple[int, NumpyPolicy, Any, float] | None = None
        self._playing: list[_Share] = []

    @classmethod
    def from_config(cls, config: TrainConfig, spec: NetworkSpec, seeds: Sequence[int], actors: int | None = None,
                    background: bool = True, warn: Callable[[str], None] = warn,
                    budget: RestartBudget | None = None) -> RayEvaluation:
        """An evaluation with the run's ``ray.*`` settings (``actors``: ray.eval_workers unless given)."""
        ray = config.ray
        return cls(config.env_id, EnvOptions.from_config(config), spec, seeds,
                   ray.eval_workers if actors is None else actors, ray.eval_timeout_s, ray.max_worker_restarts,
                   background, warn=warn, restart_window_s=ray.restart_window_s, stall_s=ray.eval_stall_s,
                   budget=budget)

    @property
    def restarts(self) -> int:
        """Restarts of all evaluation actors (summary.json)."""
        return sum(self.actor_restarts)

    def start(self, step: int, policy: NumpyPolicy) -> list[FinishedEvaluation]:
        """Evaluate ``policy`` (a snapshot) as of ``step``; returns the previous evaluation if it was still running."""
        import ray

        previous = self.wait()
        self.step_in_flight = step
        self._in_flight = (step, policy, ray.put(policy.weights), time.perf_counter())
        self._playing = [self._send(index) for index in range(len(self.actors))]
        if not self.background:
            previous += self.wait()
        return previous

    def finished(self) -> list[FinishedEvaluation]:
        """The evaluation in flight, if it has finished; never blocks. Looks after its actors (see the class)."""
        return self._result() if self._in_flight is not None and self._look(0.0) else []

    def wait(self) -> list[FinishedEvaluation]:
        """The evaluation in flight, once it has finished (see the class for lost and stalled actors)."""
        if self._in_flight is None:
            return []
        while not self._look(PROGRESS_EVERY_S / 2):
            pass
        return self._result()

    def _result(self) -> list[FinishedEvaluation]:
        """The finished evaluation in seed order; none is in flight after it."""
        assert self._in_flight is not None
        step, policy, _, started = self._in_flight
        parts = [share.result for share in self._playing]
        self._in_flight, self.step_in_flight, self._playing = None, -1, []
        result = EvalResult(tuple(value for part in parts for value in part.returns),
                            tuple(value for part in parts for value in part.lengths), tuple(self.seeds))
        return [FinishedEvaluation(step, policy, result, time.perf_counter() - started)]

    def _look(self, block_s: float) -> bool:
        """Wait up to ``block_s`` for a share to finish, take the finished ones, ask the others how far they are, and
        replace the actors that were lost or stalled; True once every share is in."""
        import ray

        calls = [share.call for share in self._playing if share.result is None]
        if calls and block_s:
            ray.wait(calls, num_returns=1, timeout=block_s)
        ready = set(ray.wait(calls, num_returns=len(calls), timeout=0)[0]) if calls else set()
        now = time.monotonic()
        for index, share in enumerate(self._playing):
            if share.result is None and share.call in ready:
                self._take(index)
        self._ask(now)
        for index, share in enumerate(self._playing):
            if share.result is not None:
                continue
            if self.timeout is not None and now - share.sent >= self.timeout:
                raise EvaluationFailed(
                    f"evaluation actor {index} was still playing its {len(self.shares[index])} episodes of the "
                    f"evaluation at step {self._in_flight[0]:,} after ray.eval_timeout_s={self.timeout:g} s; raise it "
                    "or set it to null (hangs are found by ray.eval_stall_s), or split the episodes over more "
                    "ray.eval_workers")
            if self._stalled(share, now):
                self._replace(index, f"took no env step for ray.eval_stall_s={self.stall_s:g} s")
        return all(share.result is not None for share in self._playing)

    def _send(self, index: int) -> _Share:
        """Actor ``index``'s share of the evaluation in flight, sent now."""
        now = time.monotonic()
        return _Share(call=self.actors[index].evaluate.remote(self._in_flight[2]), sent=now, moved=now)

    def _take(self, index: int) -> None:
        """Actor ``index``'s finished call: its share's result; a lost actor replaced and its share sent again (one
        that was only unreachable too: sent to it again, the share might be played twice at once on its envs); an
        env's error raised as in process."""
        import ray

        share = self._playing[index]
        try:
            share.result = ray.get(share.call)
        except ray.exceptions.RayActorError as error:
            self._replace(index, f"was lost ({type(error).__name__}: {first_line(error)})")
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, EnvStepError) else EvaluationFailed(
                f"evaluation actor {index} failed: {type(cause).__name__}: {cause}")) from None

    def _ask(self, now: float) -> None:
        """Read the answers to progress questions, and ask each playing actor again once ``PROGRESS_EVERY_S`` has
        passed since it was last asked. A count that changed moves the share's ``moved`` to now."""
        import ray

        asked = [share.asked for share in self._playing if share.asked is not None]
        answered = set(ray.wait(asked, num_returns=len(asked), timeout=0)[0]) if asked else set()
        for index, share in enumerate(self._playing):
            if share.asked is not None and share.asked in answered:
                try:
                    steps = ray.get(share.asked)
                except ray.exceptions.RayError:  # no answer: its silence goes on (its evaluate call says if it died)
                    continue
                if steps != share.steps:
                    share.moved = now
                share.steps, share.answered_at, share.asked = steps, share.asked_at, None
            if share.result is None and share.asked is None and now - share.asked_at >= PROGRESS_EVERY_S:
                share.asked, share.asked_at = self.actors[index].progress.remote(), now

    def _stalled(self, share: _Share, now: float) -> bool:
        """Whether a share's actor has taken no env step for ``stall_s``: by two answers that far apart, or by leaving
        a question unanswered that long (``max(stall_s, ACTOR_START_S)`` before its first answer: a fresh actor may
        be starting). Only what the actor answered counts, so a driver that looks seldom never finds a false stall."""
        if share.asked is not None:
            silence = self.stall_s if share.steps is not None else max(self.stall_s, ACTOR_START_S)
            if now - share.asked_at >= silence and now - share.moved >= silence:
                return True
        return share.steps is not None and share.answered_at - share.moved >= self.stall_s

    def _replace(self, index: int, why: str) -> None:
        """A fresh actor for ``index``, its share sent again: one warning line and one restart counted, or
        EvaluationFailed past its budget."""
        step, episodes = self._in_flight[0], len(self.shares[index])
        what = f"evaluation actor {index} {why} during its {episodes} episodes of the evaluation at step {step:,}"
        if self.budget.exhausted(index):
            raise EvaluationFailed(f"{what}, and it has used its {self.budget.settings()}")
        _kill(self.actors[index])
        self.actors[index] = self._new_actor(index)
        self.actor_restarts[index] += 1
        self.warn(f"{what}; restarted it ({self.budget.text(self.budget.count(index))}), its episodes are played "
                  "again (same seeds, same results)")
        self._playing[index] = self._send(index)

    def _new_actor(self, index: int) -> Any:
        """A fresh actor for share ``index``."""
        return self._remote.remote(*self._arguments, [int(seed) for seed in self.shares[index]])

    def close(self) -> None:
        """Stop the evaluation actors, dropping an evaluation in flight."""
        for actor in self.actors:
            _kill(actor)
        self.actors, self._in_flight, self.step_in_flight, self._playing = [], None, -1, []


def _kill(actor: Any) -> None:
    """Stop an actor for good; one already gone (with its node) is left as it is."""
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:
        pass
