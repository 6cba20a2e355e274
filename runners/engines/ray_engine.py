"""The Ray engine: rollout fragments collected by Ray actors, stacked in worker order, one compiled update.

Each of W workers (``runners/workers.py``, no TensorFlow) owns a vector env of M envs. Every iteration
the driver sends the current weights once, each worker collects num_steps x M transitions with exactly
those weights and tags its fragment with their version, and the driver stacks the fragments into the
``RolloutBatch`` that one vector env of W*M envs would have produced, scales the rewards and makes the
same update as the gymnasium engine (``GymnasiumEngine.learn``). Worker w's env i is seeded and draws its
actions as env w*M + i of the in-process engine, so the two give the same evaluations.

The weights go into Ray's object store once per iteration and every worker's call carries the reference, so
the driver sends them once, not W times (a node fetches them once for all its workers).

Workers that die or do not answer within ``ray.fragment_timeout_s`` are replaced by fresh actors that the driver
makes (Ray restarts none: max_restarts 0, so every new actor is counted and one that dies as it starts cannot loop
unseen; never ``max_task_retries``, which would collect again with stale weights), all of them at once (a lost
node takes several: every start is sent, then all are awaited), and their fragments collected again from fresh
episodes. Each worker has ``ray.max_worker_restarts`` restarts within ``ray.restart_window_s`` (``RestartBudget``),
past which the run stops with a checkpoint (``WorkersLost``). A run with restarted workers is no longer exact;
its report, checkpoints and final line say so. Every wait has a timeout.

A checkpoint asks every worker for its envs' journals and noise at once and takes them in one ``ray.get``:
at 64 workers of 4 CartPole envs, 0.1 s and 1.4 MB per checkpoint (0.4 s for a session's first, which replays
each journal on fresh envs); one worker at a time took twice as long.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from champion.agents.config import ConfigError, TrainConfig
from champion.agents.numpy_policy import NumpyPolicy
from champion.envs.factory import EnvError, EnvOptions, EnvStepError
from champion.runners.ray.cluster import check_capacity, connect
from champion.runners.engines.base import Advance, EngineFailed
from champion.runners.engines.gymnasium import GymnasiumEngine
from champion.runners.rollout import RewardScaler, not_exact_line, restart_returns, stack_fragments
from champion.runners.timing import Timings
from champion.runners.ray.workers import Fragment, RestartBudget, RolloutWorker, WorkerSetup

CLOSE_TIMEOUT_S = 10.0
"""How long workers may take to close their envs at the end of a run before they are stopped anyway."""
START_TIMEOUT_S = 60.0
UNREACHABLE_ROUNDS = 3
"""Collections in a row in which a worker was unreachable (alive to Ray, not answering) before it is replaced and
counted like a lost one: a passing network fault is asked again, a worker that never comes back is not forever."""
"""How long workers may take to start (import, build their envs) before the run says why they did not."""


class WorkersLost(EngineFailed):
    """The rollout workers failed more often than ``ray.max_worker_restarts`` allows."""


class RayEngine(GymnasiumEngine):
    """Rollouts on W Ray actors of M envs each; the update, reward scaling and checkpoints in this process."""

    kind = "ray"

    def __init__(self, config: TrainConfig, policy: NumpyPolicy, learner: Any, timings: Timings) -> None:
        super().__init__(config, policy, learner, timings)
        self.workers: list[Any] = []
        self._remote: Any = None
        """The rollout worker's Ray actor class with the run's options (made at start)."""
        self.version = 0
        self.worker_restarts = [0] * config.ray.workers
        self.unreachable = [0] * config.ray.workers
        """Each rollout worker's collections in a row in which it was unreachable (UNREACHABLE_ROUNDS: replaced)."""
        """Restarts of each rollout worker (a fresh actor in its place) in this session."""
        self.budget = RestartBudget(config.ray.workers, config.ray.max_worker_restarts, config.ray.restart_window_s)
        self.starts = [0] * config.ray.workers
        """Fresh starts of each worker's envs after a failure, which seed them apart."""
        self.fresh_episodes: dict[int, int] = {}
        """Worker -> the last step at which its envs started fresh episodes after a failure, in this session or an
        earlier one (checkpoints carry it): the run is no longer what the same run without faults computes."""
        self.inexact_resumes: list[int] = []
        """Steps at which a resume (this one or an earlier) restarted some envs' episodes."""
        self.earlier_layout_restart: int | None = None
        """The last step at which a rollout worker of an earlier layout (another ray.workers, before a resume) was
        restarted: its index names no worker of this layout, so ``fresh_episodes`` does not hold it."""
        self.consistent = True
        """False while a collection is under way or after one was abandoned (the workers' envs are then not at
        the loop's step, so a checkpoint cannot hold them)."""
        self.envs_per_worker = config.num_envs // config.ray.workers
        self.connection = connect(config.ray.address, config.ray.num_cpus)

    def start(self, saved: dict[str, Any] | None, step: int, warn: Callable[[str], None]) -> list[str | None]:
        """Start the workers on fresh episodes, or on a checkpoint's envs when its layout is this run's. Returns,
        per env, None when it was restored exactly, else why its episode restarted (empty when fresh)."""
        import ray

        config, self.warn = self.config, warn
        self.reward_scaler = RewardScaler(config.num_envs, config.algo_config.gamma) if config.reward_scaling else None
        states, problem = self._saved_worker_states(saved)
        check_capacity(config.ray.workers, config.ray.worker_cpus)
        self._remote = ray.remote(RolloutWorker).options(num_cpus=config.ray.worker_cpus, max_restarts=0,
                                                         max_task_retries=0, scheduling_strategy="SPREAD")
        self.workers = [self._new_worker(index) for index in range(config.ray.workers)]
        started = [worker.start.remote(config.seed, step, state) for worker, state in zip(self.workers, states)]
        try:
            answers = self._get_all(started, START_TIMEOUT_S, "start")  # before the loop's clock
        except ray.exceptions.RayActorError as error:
            raise WorkersLost(f"a Ray rollout worker died as it started ({_first_line(error)})") from None
        if saved is None:
            return []
        problems = [problem] * config.num_envs if problem else [item for each in answers for item in each]
        self._carry_inexact(saved, step, any(item is not None for item in problems))
        self.reward_scaler = saved.get("reward_scaler")
        restart_returns(self.reward_scaler, problems)
        return problems

    def _new_worker(self, index: int) -> Any:
        """A fresh actor for rollout worker ``index`` (not started)."""
        config = self.config
        return self._remote.remote(WorkerSetup(config.env_id, EnvOptions.from_config(config), self.policy.spec,
                                               config.algo_config.num_steps, self.envs_per_worker, index))

    def _carry_inexact(self, saved: dict[str, Any], step: int, restarted: bool) -> None:
        """What made the run inexact before this session (a checkpoint's record; an unreadable one is ignored), and
        this resume when it restarted episodes. Restarted workers of another layout are kept as the last step at
        which one was restarted, not by an index that would name another worker here."""
        workers, resumes = saved.get("restarted_workers"), saved.get("inexact_resumes")
        earlier = saved.get("restarted_earlier_layout")
        if type(earlier) is int:
            self.earlier_layout_restart = earlier
        if isinstance(workers, dict) and all(type(key) is int and type(value) is int for key, value in workers.items()):
            if self._same_layout(saved):
                self.fresh_episodes.update(workers)
            elif workers:
                self.earlier_layout_restart = max(max(workers.values()), self.earlier_layout_restart or 0)
        if isinstance(resumes, list) and all(type(value) is int for value in resumes):
            self.inexact_resumes = list(resumes)
        if restarted:
            self.inexact_resumes.append(step)

    def _saved_worker_states(self, saved: dict[str, Any] | None) -> tuple[list[Any], str | None]:
        """Each worker's saved envs, or None each and why, when they cannot be used."""
        fresh = [None] * self.config.ray.workers
        if saved is None:
            return fresh, None
        if not self._same_layout(saved):
            return fresh, (f"the checkpoint's envs were not on {self.config.ray.workers} Ray workers of "
                           f"{self.envs_per_worker} envs")
        if saved.get("envs_problem"):
            return fresh, saved["envs_problem"]
        return list(saved["workers"]), None

    def _same_layout(self, saved: dict[str, Any]) -> bool:
        """Whether a checkpoint's envs were on this run's Ray workers (as many, with as many envs each)."""
        layout = saved.get("layout")
        return (saved.get("engine") == self.kind and isinstance(layout, (list, tuple))
                and tuple(layout) == (self.config.ray.workers, self.envs_per_worker))

    def advance(self, step: int, max_env_steps: int, total_steps: int) -> Advance:
        """One fragment from every worker, stacked in worker order, then one update."""
        started = time.perf_counter()
        fragments = self._collect(step)
        waited = time.perf_counter() - started
        with self.timings.phase("stacking fragments"):
            rollout = stack_fragments([fragment.rollout for fragment in fragments])
        updating = time.perf_counter()
        metrics = {"ray/fragment_wait_s": waited, "ray/worker_restarts": float(sum(self.worker_restarts))}
        metrics.update({f"ray/worker_{fragment.worker_index}_steps_per_s":
                        fragment.rollout.env_steps / max(fragment.seconds, 1e-9) for fragment in fragments})
        advanced = self.learn(rollout, step, total_steps, metrics)
        advanced.metrics["ray/update_s"] = time.perf_counter() - updating
        return advanced

    def _collect(self, step: int) -> list[Fragment]:
        """Every worker's fragment acted with the current weights; dead or silent workers are restarted together
        and asked again (from fresh episodes) until they answer or one has used its restarts."""
        import ray

        self.version += 1
        with self.timings.phase("sending weights"):  # once into the object store; every call gets the reference
            weights = ray.put(self.policy.weights)
        pending = {index: worker.collect.remote(weights, self.version) for index, worker in enumerate(self.workers)}
        fragments: dict[int, Fragment] = {}
        self.consistent = False  # until every fragment is in: the workers' episodes are past the loop's step
        while pending:
            with self.timings.phase("waiting for workers"):  # the fragments' transfer included
                ready, _ = ray.wait(list(pending.values()), num_returns=len(pending),
                                    timeout=self.config.ray.fragment_timeout_s)
            lost = {index: (f"did not answer within ray.fragment_timeout_s={self.config.ray.fragment_timeout_s:g} s",
                            "", True) for index, reference in pending.items() if reference not in ready}
            with self.timings.phase("receiving fragments"):
                received = self._receive({index: reference for index, reference in pending.items()
                                          if index not in lost}, lost)
            for index, fragment in received.items():
                fragments[index] = fragment
                del pending[index]
            if lost:
                self._restart(lost, step)
                for index in lost:
                    pending[index] = self.workers[index].collect.remote(weights, self.version)
        self.consistent = True
        return [fragments[index] for index in range(len(self.workers))]

    def _receive(self, references: dict[int, Any], lost: dict[int, tuple[str, str, bool]]) -> dict[int, Fragment]:
        """The fragments of these finished calls, in one ray.get when none failed; a worker that was lost goes into
        ``lost`` (why, detail, whether it is gone for good and must be replaced); an env's own error stops the run as
        in process."""
        import ray

        if not references:
            return {}
        try:
            fragments = dict(zip(references, ray.get(list(references.values()),
                                                    timeout=self.config.ray.fragment_timeout_s)))
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):  # one by one, to tell which failed
            fragments = {}
            for index, reference in references.items():
                fragment = self._fragment(index, reference, lost)
                if fragment is not None:
                    fragments[index] = fragment
        for index in fragments:
            self.unreachable[index] = 0
        for fragment in fragments.values():
            if fragment.version != self.version:
                raise WorkersLost(f"rollout worker {fragment.worker_index} collected with weights version "
                                  f"{fragment.version}, not {self.version}")
        return fragments

    def _fragment(self, index: int, reference: Any, lost: dict[int, tuple[str, str, bool]]) -> Fragment | None:
        """Worker ``index``'s fragment, or None with the worker put in ``lost``: to be replaced when it died, started
        again (and replaced only if that finds it dead) when it was unreachable or its fragment did not arrive."""
        import ray

        try:
            return ray.get(reference, timeout=self.config.ray.fragment_timeout_s)
        except ray.exceptions.ActorUnavailableError:  # perhaps a passing network fault: the same actor, asked again
            self.unreachable[index] += 1
            lost[index] = ("was unreachable", "", self.unreachable[index] >= UNREACHABLE_ROUNDS)
        except ray.exceptions.RayActorError as error:
            lost[index] = ("was lost", _first_line(error), True)
        except ray.exceptions.GetTimeoutError as error:
            lost[index] = ("was lost", _first_line(error), False)
        except ray.exceptions.RayTaskError as error:
            raise _task_failure(index, "collect", error) from None
        return None

    def _restart(self, lost: dict[int, tuple[str, str, bool]], step: int) -> None:
        """Bring the ``lost`` workers back together: a fresh actor in place of each that died or hangs (one restart
        counted each; WorkersLost when one has used its ray.max_worker_restarts), every one's envs started afresh at
        once, all awaited together. One warning line for them all."""
        used: dict[int, int] = {}
        for index, (why, detail, gone) in lost.items():
            if gone:
                self._replace(index, f"{why}{f' ({detail})' if detail else ''}", used)
        self._start_again(lost, step, used)
        for index in lost:
            self.fresh_episodes[index] = step
            if self.reward_scaler is not None:  # the restarted envs' returns start again at zero
                self.reward_scaler.returns[self.envs_per_worker * index:self.envs_per_worker * (index + 1)] = 0.0
        self.warn(_restarted_line(lost, used, self.budget))

    def _replace(self, index: int, what: str, used: dict[int, int]) -> None:
        """A fresh actor in place of rollout worker ``index`` (the old one stopped for good), counted in ``used`` and
        against its budget; WorkersLost, naming ``what`` happened, when it has used its ray.max_worker_restarts."""
        if self.budget.exhausted(index):
            raise WorkersLost(f"rollout worker {index} {what}, and it has used its {self.budget.settings()}")
        _kill(self.workers[index])
        self.workers[index] = self._new_worker(index)
        self.unreachable[index] = 0
        self.worker_restarts[index] += 1
        used[index] = self.budget.count(index)

    def _start_again(self, lost: dict[int, tuple[str, str, bool]], step: int, used: dict[int, int]) -> None:
        """Start each lost worker's envs on fresh episodes (seeded apart from every other env's): every start is sent
        at once and all are awaited together. A start refused as unavailable is sent again; one that finds its actor
        dead (a fresh actor that died as it started, too) replaces it (``_replace``), so a worker that dies every
        time stops the run after its budget. For up to max(ray.fragment_timeout_s, START_TIMEOUT_S) in all."""
        import ray

        timeout = max(self.config.ray.fragment_timeout_s, START_TIMEOUT_S)
        deadline = time.monotonic() + timeout
        calls: dict[int, Any] = {}

        def send(index: int) -> None:
            self.starts[index] += 1
            seed = int(np.random.SeedSequence([self.config.seed, index, self.starts[index]]).generate_state(1)[0])
            calls[index] = self.workers[index].start.remote(seed, step)

        for index in lost:
            send(index)
        while calls:
            if time.monotonic() >= deadline:
                waiting = ", ".join(map(str, sorted(calls)))
                raise WorkersLost(f"rollout worker{'s' if len(calls) > 1 else ''} {waiting} did not come back within "
                                  f"{timeout:g} s after {lost[min(calls)][0]}")
            ready, _ = ray.wait(list(calls.values()), num_returns=len(calls),
                                timeout=min(max(deadline - time.monotonic(), 0.0), 1.0))
            again = []
            for index, reference in list(calls.items()):
                if reference not in ready:
                    continue
                del calls[index]
                try:
                    ray.get(reference)
                except ray.exceptions.ActorUnavailableError:
                    again.append(index)
                except ray.exceptions.RayActorError as error:
                    self._replace(index, f"died as it started again ({_first_line(error)})", used)
                    send(index)
                except ray.exceptions.RayTaskError as error:
                    raise _task_failure(index, "start again", error) from None
            if again:
                time.sleep(0.2)
                for index in again:
                    send(index)

    def _get_all(self, references: list[Any], timeout: float, what: str) -> list[Any]:
        """ray.get of every reference within ``timeout``, or a one-line error saying what to check."""
        import ray

        ready, _ = ray.wait(references, num_returns=len(references), timeout=timeout)
        if len(ready) < len(references):
            raise ConfigError(f"{len(references) - len(ready)} of {len(references)} Ray rollout workers did not {what} "
                              f"within {timeout:g} s: a worker may hang, the cluster may lack free CPUs "
                              f"(ray.worker_cpus={self.config.ray.worker_cpus:g} each), or the env may not import on "
                              "its nodes")
        try:
            return ray.get(references)
        except ray.exceptions.RayTaskError as error:
            raise _task_failure(None, what, error) from None

    def worker_processes(self) -> list[dict[str, Any]]:
        """Each worker's pid, peak resident memory (MB) and whether it imported TensorFlow."""
        return self._get_all([worker.process.remote() for worker in self.workers], START_TIMEOUT_S, "report")

    def not_exact(self) -> str | None:
        """Why the run is no longer the run without faults (rollout workers whose envs started fresh episodes after a
        failure, in this layout or an earlier one, or a resume that restarted episodes, in any session), or None while
        it still is. An evaluation actor's restart plays the same episodes again, so it changes nothing."""
        reasons = []
        if self.fresh_episodes:
            indices = sorted(self.fresh_episodes)
            reasons.append(f"{_workers(indices)} {'was' if len(indices) == 1 else 'were'} restarted (last at step "
                           f"{max(self.fresh_episodes.values()):,}) and {'its' if len(indices) == 1 else 'their'} envs "
                           "started fresh episodes")
        if self.earlier_layout_restart is not None:
            reasons.append(f"rollout workers of an earlier layout were restarted (last at step "
                           f"{self.earlier_layout_restart:,})")
        if self.inexact_resumes:
            steps = ", ".join(f"{step:,}" for step in self.inexact_resumes)
            reasons.append(f"the resume{'s' if len(self.inexact_resumes) > 1 else ''} at step {steps} restarted "
                           "episodes")
        if not reasons:
            return None
        return f"not exact: {' and '.join(reasons)}, so the same run without faults would differ"

    def report(self) -> dict[str, Any]:
        """Layout, restarts, where Ray ran, and each worker's peak resident memory and whether it imported TensorFlow
        (summary.json)."""
        import ray

        try:
            processes = self.worker_processes()
        except (ConfigError, ray.exceptions.RayActorError) as error:
            processes = [{"error": _first_line(error)}]
        by_worker = {str(index): count for index, count in enumerate(self.worker_restarts) if count}
        return {"kind": self.kind, "workers": self.config.ray.workers, "envs_per_worker": self.envs_per_worker,
                "worker_restarts": sum(self.worker_restarts), "worker_restarts_by_worker": by_worker,
                "not_exact": self.not_exact(), "ray_address": self.connection.address,
                "ray_started_for_run": self.connection.owned, "worker_processes": processes}

    def checkpoint_state(self) -> dict[str, Any]:
        """Each worker's env journals and noise (all None, and why, if a worker cannot give them), which envs a
        resume restores exactly (checked by a replay at the session's first checkpoint), the layout, the reward
        scaler, and what made the run inexact so far (restarted workers, resumes that restarted episodes)."""
        import ray

        base = {"engine": self.kind, "layout": (self.config.ray.workers, self.envs_per_worker),
                "reward_scaler": self.reward_scaler, "workers": None, "envs_problem": None,
                "envs_exact": [False] * self.config.num_envs, "restarted_workers": dict(self.fresh_episodes),
                "restarted_earlier_layout": self.earlier_layout_restart, "inexact_resumes": list(self.inexact_resumes)}
        if not self.consistent:  # a collection was abandoned: the workers' envs are past the checkpoint's step
            return {**base, "envs_problem": "the rollout workers were lost in the middle of a rollout"}
        try:
            states = self._get_all([worker.state.remote(self.inexact) for worker in self.workers],
                                   self.config.ray.fragment_timeout_s, "save their envs")
        except (ConfigError, EnvError, ray.exceptions.RayActorError) as error:
            return {**base, "envs_problem": f"the workers could not be asked ({_first_line(error)})"}
        problems = [state["envs_problem"] for state in states if state.get("envs_problem")]
        if problems:
            return {**base, "envs_problem": problems[0]}
        found = {index: problem for state in states for index, problem in state["inexact"].items()}
        if self.inexact is None and found:
            self.warn(not_exact_line(self.config.env_id, found, "a resume restarts"))
        self.inexact = found
        return {**base, "workers": states, "envs_exact": [exact for state in states for exact in state["envs_exact"]]}

    def close(self) -> None:
        """Drop the update's graph, stop the workers, and shut down a Ray this run started."""
        import ray

        self.learner.compiled_update.close()
        closing = [worker.close.remote() for worker in self.workers]  # a user env may hold subprocesses or files
        ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)
        for worker in self.workers:
            _kill(worker)
        self.workers = []
        self.connection.close()


def _task_failure(index: int | None, what: str, error: Any) -> Exception:
    """A worker's own exception as one line: the env's error as the in-process engine raises it (EnvStepError,
    EnvError), anything else as WorkersLost (the run stops with a checkpoint)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, (EnvStepError, EnvError)):
        return cause
    who = "a Ray rollout worker" if index is None else f"rollout worker {index}"
    if isinstance(cause, (ImportError, gym.error.Error)):  # e.g. the env's module is not installed on its node
        return EnvError(f"{who} could not {what}: {cause} (the env's module must import on every Ray node: install "
                        "it there, or ship it with Ray's runtime_env)")
    return WorkersLost(f"{who} could not {what}: {_first_line(cause if isinstance(cause, Exception) else error)}")


def _workers(indices: list[int]) -> str:
    """"rollout worker 3" or "rollout workers 3, 5, 9"."""
    return f"rollout worker {indices[0]}" if len(indices) == 1 else f"rollout workers {', '.join(map(str, indices))}"


def _restarted_line(lost: dict[int, tuple[str, str, bool]], counts: dict[int, int], budget: RestartBudget) -> str:
    """One warning line for workers brought back together: what happened to each (grouped), the restarts they have
    used of ray.max_worker_restarts, and that their fragments are collected again."""
    groups: dict[str, list[int]] = {}
    for index in sorted(lost):
        groups.setdefault(lost[index][0], []).append(index)
    parts = []
    for why, indices in groups.items():
        detail = lost[indices[0]][1]
        verb = why.replace("was ", "were ", 1) if len(indices) > 1 and why.startswith("was ") else why
        parts.append(f"{_workers(indices)} {verb}{f' ({detail})' if detail else ''}")
    several = len(lost) > 1
    if not counts:
        used = "the same actor, briefly unavailable: not counted as a restart"
    else:
        used = budget.text(max(counts.values()), several)
    whose = "their fragments are" if several else "its fragment is"
    return f"{'; '.join(parts)}; restarted {'them' if several else 'it'} ({used}), {whose} collected again from fresh episodes"


def _kill(actor: Any) -> None:
    """Stop an actor for good; one already gone (with its node) is left as it is."""
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:
        pass


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__

