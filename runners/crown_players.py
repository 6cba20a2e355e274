"""Where the crown's episodes are played: in this process, on spawned processes beside it, or on the Ray engine's
actors; the same returns in each (acting is row by row, see ``champion.agents.numpy_policy``). Nothing here imports
TensorFlow.

A player lives for the whole race (``close`` ends it): the spawned processes start once and play every round,
and every process keeps its envs from one round to the next.
Each ``play`` gets a ``deadline`` (a ``time.time()``, so that spawned processes read the same clock) and raises
``OutOfTime`` once it has passed; ``on_episodes`` is called with the number of episodes just finished, for the
progress display.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from champion.agents.config import TrainConfig
from champion.agents.numpy_policy import NumpyPolicy
from champion.agents.spec import NetworkSpec
from champion.envs.factory import EnvOptions
from champion.runners.evaluate import EvalResult, OutOfTime, close_kept_envs, joined, play_episodes
from champion.runners.store.atomic_files import warn

if TYPE_CHECKING:
    from champion.runners.ray.evaluation import RayEvaluation

SPAWN_PAYS_AFTER_S = 5.0
"""crown.workers 0: the rest of the race goes to spawned processes when, played here, it would take longer (starting
the processes costs a few seconds)."""
SHARE_EPISODES = 8
"""Episodes per task on the spawned processes: small enough for the progress display and to spread a round
evenly, large enough that a task's overhead stays small."""
SPAWNED_NICENESS = 5
"""The spawned players run at a lower priority, so that a ``champion crown`` beside a training run slows it less."""
EpisodesDone = Callable[[int], None]


class Player(Protocol):
    """Plays every policy on every seed (one episode per seed), and says where it did."""

    where: str

    def play(self, policies: Sequence[NumpyPolicy], seeds: Sequence[int], deadline: float | None = None,
             on_episodes: EpisodesDone | None = None) -> list[EvalResult]: ...

    def close(self) -> None: ...


def _ignore(_: int) -> None:
    pass


class ProcessPlayer:
    """Plays in this process (``crown.workers`` 1), or splits the episodes over that many spawned processes; all give
    the same returns. With 0 (auto) the first candidate's first round is played here, and the rest on one process
    per CPU when at its pace it would take more than ``SPAWN_PAYS_AFTER_S``."""

    def __init__(self, config: TrainConfig) -> None:
        self.env_id, self.options, self.workers = config.env_id, EnvOptions.from_config(config), config.crown.workers
        if config.network.torso:  # it acts in TensorFlow: a spawned process would import it and build it again
            self.workers = 1
        self.max_episodes, self.where = config.crown.episodes, "this process"
        self._pool: ProcessPoolExecutor | None = None
        self._pool_size = 0
        self._processes: list[multiprocessing.process.BaseProcess] = []

    def play(self, policies: Sequence[NumpyPolicy], seeds: Sequence[int], deadline: float | None = None,
             on_episodes: EpisodesDone | None = None) -> list[EvalResult]:
        """Every policy on every seed, results in the order of the policies."""
        on_episodes = on_episodes or _ignore
        if self.workers == 1:
            return self._here(policies, seeds, deadline, on_episodes)
        if self.workers > 1 or self._pool_size:  # asked for, or the first round showed that they pay
            return self._apart(policies, seeds, deadline, on_episodes)
        started = time.perf_counter()
        first = self._here(policies[:1], seeds, deadline, on_episodes)
        per_episode = (time.perf_counter() - started) / max(len(seeds), 1)
        still_to_play = (len(policies) - 1) * len(seeds) + len(policies) * max(self.max_episodes - len(seeds), 0)
        cpus = usable_cpus()
        if cpus > 1 and per_episode * still_to_play > SPAWN_PAYS_AFTER_S:
            # the rest of this round and the next go to the processes: no more than a round has tasks for
            self._pool_size = min(cpus, len(policies) * -(-self.max_episodes // SHARE_EPISODES))
            return first + self._apart(policies[1:], seeds, deadline, on_episodes) if policies[1:] else first
        return first + self._here(policies[1:], seeds, deadline, on_episodes)

    def close(self) -> None:
        """Close the envs kept here and stop the spawned processes at once: a task still running there (the race
        ran out of time, or a signal stopped it) has nothing left to give, and a SIGTERM should not wait for it."""
        close_kept_envs()
        if self._pool is not None:
            for process in self._processes:
                process.terminate()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._processes = None, []

    def _here(self, policies: Sequence[NumpyPolicy], seeds: Sequence[int], deadline: float | None,
              on_episodes: EpisodesDone) -> list[EvalResult]:
        results = []
        for policy in policies:
            results.append(play_episodes(self.env_id, self.options, policy.spec, policy.weights, seeds, deadline,
                                         keep_envs=True))
            on_episodes(len(seeds))
        return results

    def _apart(self, policies: Sequence[NumpyPolicy], seeds: Sequence[int], deadline: float | None,
               on_episodes: EpisodesDone) -> list[EvalResult]:
        if self._pool is None:
            self._pool_size = self._pool_size or self.workers
            others = set(multiprocessing.active_children())
            self._pool = ProcessPoolExecutor(self._pool_size, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_spawned_player,
                                             initargs=(_registering_module(self.env_id),))
            # one task each starts them all now (one more per task while none is idle), to know the pool's children
            for started in [self._pool.submit(os.getpid) for _ in range(self._pool_size)]:
                started.result()
            self._processes = [child for child in multiprocessing.active_children() if child not in others]
        self.where = f"{self._pool_size} processes"
        shares = [list(map(int, share)) for share in np.array_split(np.asarray(seeds, np.int64),
                                                                    max(1, -(-len(seeds) // SHARE_EPISODES)))]
        futures = [[self._pool.submit(play_episodes, self.env_id, self.options, policy.spec, policy.weights, share,
                                      deadline, True) for share in shares] for policy in policies]
        _report_as_done([future for parts in futures for future in parts], [len(share) for share in shares] * len(policies),
                        on_episodes)
        return [joined([future.result() for future in parts], seeds) for parts in futures]


def _registering_module(env_id: str) -> str | None:
    """The module of a bare env id's entry point, whose import registers it (a user's package that calls
    ``gymnasium.register``), for the spawned players: a fresh process knows only gymnasium's own ids. None for a
    ``module:id`` (imported by the id) or an entry point defined in the script being run (spawn imports that)."""
    if ":" in env_id:
        return None
    import gymnasium as gym

    try:
        entry = gym.spec(env_id).entry_point
    except gym.error.Error:
        return None
    module = entry.split(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", None)
    return module if module and module != "__main__" else None


def _start_spawned_player(module: str | None) -> None:
    """A spawned player's start: a lower priority, and the env's registering module imported."""
    os.nice(SPAWNED_NICENESS)
    if module is not None:
        importlib.import_module(module)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as a container or taskset sets it), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _report_as_done(futures: list[Future], sizes: list[int], on_episodes: EpisodesDone) -> None:
    """Wait for every future, calling ``on_episodes`` with each one's size as it finishes; the first failure (an
    OutOfTime, an env's error) is raised at once, the tasks not yet started cancelled."""
    size_of = dict(zip(futures, sizes))
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # raises what the task raised
                on_episodes(size_of[future])
    finally:
        for future in pending:
            future.cancel()


class RayPlayer:
    """Plays on Ray actors (the Ray engine's cluster, which must be up), a round's seeds split among as many actors
    as the run had rollout workers; the same returns as in process. Lost and stalled actors are handled as in the
    run's evaluations (``RayEvaluation``, with the run's ray.* settings), with one restart budget for the whole race
    and every warning through ``warn`` (stderr, never stdout)."""

    def __init__(self, config: TrainConfig, spec: NetworkSpec, warn: Callable[[str], None] = warn) -> None:
        from champion.runners.ray.workers import RestartBudget

        self.config, self.spec, self.warn = config, spec, warn
        self.actors = max(config.ray.workers, config.ray.eval_workers, 1)
        self.where = f"{self.actors} Ray actors"
        self.budget = RestartBudget(self.actors, config.ray.max_worker_restarts, config.ray.restart_window_s)

    def play(self, policies: Sequence[NumpyPolicy], seeds: Sequence[int], deadline: float | None = None,
             on_episodes: EpisodesDone | None = None) -> list[EvalResult]:
        """Every policy on every seed, results in the order of the policies."""
        from champion.runners.ray.evaluation import RayEvaluation

        evaluation = RayEvaluation.from_config(self.config, self.spec, seeds, actors=self.actors, warn=self.warn,
                                               budget=self.budget)
        results = []
        try:
            for index, policy in enumerate(policies):
                evaluation.start(index, policy)
                finished = evaluation.wait() if deadline is None else _finished_by(evaluation, deadline)
                results.append(finished[0].result)
                (on_episodes or _ignore)(len(seeds))
        finally:
            evaluation.close()
        return results

    def close(self) -> None:
        """Nothing outlives a round here (its actors are closed with it)."""


def _finished_by(evaluation: RayEvaluation, deadline: float) -> list:
    """The evaluation in flight once it has finished; OutOfTime if it has not by ``deadline``. An actor lost or
    stalled meanwhile is replaced by the evaluation's ``finished`` (which never blocks); past ray.max_worker_restarts
    it fails, and the race keeps its whole rounds."""
    while time.time() < deadline:
        finished = evaluation.finished()
        if finished:
            return finished
        time.sleep(0.02)
    raise OutOfTime("the Ray actors were still playing at the deadline")
