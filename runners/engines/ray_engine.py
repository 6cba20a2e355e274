"""The Ray engine: rollout fragments collected by Ray actors, stacked in worker order, one compiled update.

Each of W workers (``runners/workers.py``, no TensorFlow) owns a vector env of M envs. Every iteration
the driver sends the current weights once, each worker collects num_steps x M transitions with exactly
those weights and tags its fragment with their version, and the driver stacks the fragments into the
``RolloutBatch`` that one vector env of W*M envs would have produced, scales the rewards and makes the
same update as the gymnasium engine (``GymnasiumEngine.learn``). Worker w's env i is seeded and draws its
actions as env w*M + i of the in-process engine, so the two give the same evaluations.

A worker that dies or does not answer within ``ray.fragment_timeout_s`` is restarted by Ray (the actor's
``max_restarts``; never ``max_task_retries``, which would collect again with stale weights) and its
fragment collected again from fresh episodes; past ``ray.max_worker_restarts`` the run stops with a
checkpoint (``WorkersLost``). Every wait has a timeout.
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
from champion.runners.ray.workers import Fragment, RolloutWorker, WorkerNotStarted, WorkerSetup

BY_VALUE_BYTES = 100_000
"""Weights smaller than this go to the workers inside the call; larger ones through Ray's object store once
(measured: ``ray.put`` costs more than it saves below about 100 KB)."""
CLOSE_TIMEOUT_S = 10.0
"""How long workers may take to close their envs at the end of a run before they are stopped anyway."""
START_TIMEOUT_S = 60.0
"""How long workers may take to start (import, build their envs) before the run says why they did not."""


class WorkersLost(EngineFailed):
    """The rollout workers failed more often than ``ray.max_worker_restarts`` allows."""


class RayEngine(GymnasiumEngine):
    """Rollouts on W Ray actors of M envs each; the update, reward scaling and checkpoints in this process."""

    kind = "ray"

    def __init__(self, config: TrainConfig, policy: NumpyPolicy, learner: Any, timings: Timings) -> None:
        super().__init__(config, policy, learner, timings)
        self.workers: list[Any] = []
        self.version = 0
        self.restarts = 0
        self.incarnations: list[str] = []
        """Each worker's actor incarnation as of its last start: a restart by Ray answers with a new one."""
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
        remote = ray.remote(RolloutWorker).options(
            num_cpus=config.ray.worker_cpus, max_restarts=config.ray.max_worker_restarts, max_task_retries=0,
            scheduling_strategy="SPREAD")
        options = EnvOptions.from_config(config)
        self.workers = [remote.remote(WorkerSetup(config.env_id, options, self.policy.spec, config.algo_config.num_steps,
                                                  self.envs_per_worker, index))
                        for index in range(config.ray.workers)]
        started = [worker.start.remote(config.seed, step, state) for worker, state in zip(self.workers, states)]
        answers = self._get_all(started, START_TIMEOUT_S, "start")  # before the loop's clock
        self.incarnations = [incarnation for incarnation, _ in answers]
        if saved is None:
            return []
        problems = [problem] * config.num_envs if problem else [item for _, each in answers for item in each]
        self.reward_scaler = saved.get("reward_scaler")
        restart_returns(self.reward_scaler, problems)
        return problems

    def _saved_worker_states(self, saved: dict[str, Any] | None) -> tuple[list[Any], str | None]:
        """Each worker's saved envs, or None each and why, when they cannot be used."""
        fresh = [None] * self.config.ray.workers
        if saved is None:
            return fresh, None
        layout = (self.config.ray.workers, self.envs_per_worker)
        if saved.get("engine") != self.kind or tuple(saved.get("layout", ())) != layout:
            return fresh, f"the checkpoint's envs were not on {layout[0]} Ray workers of {layout[1]} envs"
        if saved.get("envs_problem"):
            return fresh, saved["envs_problem"]
        return list(saved["workers"]), None

    def advance(self, step: int, max_env_steps: int, total_steps: int) -> Advance:
        """One fragment from every worker, stacked in worker order, then one update."""
        started = time.perf_counter()
        fragments = self._collect(step)
        waited = time.perf_counter() - started
        with self.timings.phase("stacking fragments"):
            rollout = stack_fragments([fragment.rollout for fragment in fragments])
        updating = time.perf_counter()
        metrics = {"ray/fragment_wait_s": waited, "ray/worker_restarts": float(self.restarts)}
        metrics.update({f"ray/worker_{fragment.worker_index}_steps_per_s":
                        fragment.rollout.env_steps / max(fragment.seconds, 1e-9) for fragment in fragments})
        advanced = self.learn(rollout, step, total_steps, metrics)
        advanced.metrics["ray/update_s"] = time.perf_counter() - updating
        return advanced

    def _collect(self, step: int) -> list[Fragment]:
        """Every worker's fragment acted with the current weights; dead or silent workers are restarted and asked
        again (from fresh episodes) until they answer or the restarts run out."""
        import ray

        self.version += 1
        with self.timings.phase("sending weights"):
            weights = self.policy.weights
            payload = weights if sum(array.nbytes for array in weights.values()) < BY_VALUE_BYTES else ray.put(weights)
        pending = {index: worker.collect.remote(payload, self.version) for index, worker in enumerate(self.workers)}
        fragments: dict[int, Fragment] = {}
        self.consistent = False  # until every fragment is in: the workers' episodes are past the loop's step
        while pending:
            with self.timings.phase("waiting for workers"):  # the fragments' transfer included
                ready, _ = ray.wait(list(pending.values()), num_returns=len(pending),
                                    timeout=self.config.ray.fragment_timeout_s)
            for index, reference in list(pending.items()):
                fragment = self._fragment(index, step, reference if reference in ready else None)
                if fragment is None:
                    pending[index] = self.workers[index].collect.remote(payload, self.version)
                else:
                    fragments[index] = fragment
                    del pending[index]
        self.consistent = True
        return [fragments[index] for index in range(len(self.workers))]

    def _fragment(self, index: int, step: int, reference: Any | None) -> Fragment | None:
        """Worker ``index``'s fragment, or None after restarting it (it did not answer: ``reference`` None, or it
        was lost); an env's own error stops the run as in process."""
        import ray

        if reference is None:
            self._restart(index, step, f"did not answer within ray.fragment_timeout_s="
                                       f"{self.config.ray.fragment_timeout_s:g} s", kill=True)
            return None
        try:
            with self.timings.phase("receiving fragments"):
                fragment = ray.get(reference, timeout=self.config.ray.fragment_timeout_s)
        except ray.exceptions.ActorUnavailableError:  # restarting: asked again, counted if it is a new actor
            self._restart(index, step, "was restarted by Ray", kill=False)
            return None
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
            self._restart(index, step, f"was lost ({_first_line(error)})", kill=False)
            return None
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, WorkerNotStarted):  # Ray restarted it after the call was sent
                self._restart(index, step, "was restarted by Ray (its node or process was lost)", kill=False)
                return None
            raise _task_failure(index, "collect", error) from None
        if fragment.version != self.version:
            raise WorkersLost(f"rollout worker {index} collected with weights version {fragment.version}, "
                              f"not {self.version}")
        return fragment

    def _restart(self, index: int, step: int, why: str, kill: bool) -> None:
        """Bring worker ``index`` back after it failed: kill it first if it hangs (Ray then restarts it), start its
        envs afresh, and count a restart when a new actor answers; WorkersLost past ray.max_worker_restarts, or
        when Ray gave up on it."""
        import ray

        worker, limit = self.workers[index], self.config.ray.max_worker_restarts
        if kill:
            ray.kill(worker, no_restart=False)
        incarnation = self._start_again(index, step, why)
        if incarnation == self.incarnations[index]:  # the same actor, briefly unavailable: its episodes restarted
            return
        if self.restarts >= limit:
            raise WorkersLost(f"rollout worker {index} {why}, and the run has used its "
                              f"ray.max_worker_restarts={limit} restarts")
        self.restarts += 1
        self.incarnations[index] = incarnation
        if self.reward_scaler is not None:  # the restarted envs' returns start again at zero
            self.reward_scaler.returns[self.envs_per_worker * index:self.envs_per_worker * (index + 1)] = 0.0
        self.warn(f"rollout worker {index} {why}; restarted it ({self.restarts} of {limit} restarts), its fragment "
                  "is collected again from fresh episodes")

    def _start_again(self, index: int, step: int, why: str) -> str:
        """Worker ``index``'s incarnation once it has started fresh episodes (seeded apart from every other env's);
        calls made while Ray restarts it are refused as unavailable and made again, for up to
        max(ray.fragment_timeout_s, START_TIMEOUT_S)."""
        import ray

        timeout = max(self.config.ray.fragment_timeout_s, START_TIMEOUT_S)
        deadline, attempt = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            attempt += 1
            seed = int(np.random.SeedSequence([self.config.seed, index, self.restarts + 1, attempt]).generate_state(1)[0])
            try:
                incarnation, _ = ray.get(self.workers[index].start.remote(seed, step),
                                         timeout=max(deadline - time.monotonic(), 0.1))
                return incarnation
            except ray.exceptions.ActorUnavailableError:
                time.sleep(0.2)
            except ray.exceptions.RayTaskError as error:
                raise _task_failure(index, "start again", error) from None
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
                raise WorkersLost(f"rollout worker {index} {why}, and Ray did not bring it back ({_first_line(error)}); "
                                  f"ray.max_worker_restarts={self.config.ray.max_worker_restarts} restarts are allowed "
                                  "per worker") from error
        raise WorkersLost(f"rollout worker {index} {why}, and it did not come back within {timeout:g} s")

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

    def report(self) -> dict[str, Any]:
        """Layout, restarts, where Ray ran, and each worker's peak resident memory and whether it imported TensorFlow
        (summary.json)."""
        import ray

        try:
            processes = self.worker_processes()
        except (ConfigError, ray.exceptions.RayActorError) as error:
            processes = [{"error": _first_line(error)}]
        return {"kind": self.kind, "workers": self.config.ray.workers, "envs_per_worker": self.envs_per_worker,
                "worker_restarts": self.restarts, "ray_address": self.connection.address,
                "ray_started_for_run": self.connection.owned, "worker_processes": processes}

    def checkpoint_state(self) -> dict[str, Any]:
        """Each worker's env journals and noise (all None, and why, if a worker cannot give them), which envs a
        resume restores exactly (checked by a replay at the session's first checkpoint), the layout and the reward
        scaler."""
        import ray

        base = {"engine": self.kind, "layout": (self.config.ray.workers, self.envs_per_worker),
                "reward_scaler": self.reward_scaler, "workers": None, "envs_problem": None,
                "envs_exact": [False] * self.config.num_envs}
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
            try:
                ray.kill(worker, no_restart=True)
            except Exception:  # already gone with its node
                pass
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__

