"""Evaluation: deterministic actions on fixed episode seeds, so any two evaluations compare; played beside
training on a worker thread (``BackgroundEvaluation``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import gymnasium as gym
import numpy as np

from champion.agents.acting import acting_policy
from champion.agents.numpy_policy import NumpyPolicy, single_threaded_numpy
from champion.agents.spec import NetworkSpec
from champion.envs.factory import EnvOptions, as_float_batch, env_call, make_env_without_info


@dataclass(frozen=True)
class EvalResult:
    """Per-episode returns and lengths of one evaluation, with the seeds that produced them."""

    returns: tuple[float, ...]
    lengths: tuple[int, ...]
    seeds: tuple[int, ...]

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))

    @property
    def min_return(self) -> float:
        return float(np.min(self.returns))

    @property
    def max_return(self) -> float:
        return float(np.max(self.returns))

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths))

    @property
    def env_steps(self) -> int:
        """Environment steps the evaluation took (not counted as training steps)."""
        return int(np.sum(self.lengths))


def episode_seeds(eval_seed: int, episodes: int) -> list[int]:
    """The fixed seed list: episode i of every evaluation starts from seed eval_seed + i."""
    return [eval_seed + index for index in range(episodes)]


MAX_EPISODE_STEPS = 100_000


class OutOfTime(Exception):
    """The deadline passed before every episode had ended (the crown's budget); what was played is dropped."""


def evaluate(
    policy: NumpyPolicy, eval_envs: gym.vector.SyncVectorEnv | Sequence[gym.Env], seeds: Sequence[int],
    frames: list | None = None,
    max_steps: int = MAX_EPISODE_STEPS, frame_every: int = 1, env_id: str = "the environment",
    deadline: float | None = None,
) -> EvalResult:
    """Play one episode per seed (env i of the vector env, or of the list, gets seeds[i]) with the policy's
    deterministic action.

    Only the episodes still running are stepped and acted for: a finished one costs nothing while a long one
    goes on (acting is row by row, so the batch it is in changes no action). An episode still running after
    ``max_steps`` steps (an env without a time limit) is cut there. With ``deadline`` (a ``time.time()``)
    OutOfTime is raised once it has passed with an episode still running.

    If ``frames`` is a list, the first env's rgb_array frames are appended to it (every ``frame_every``-th one:
    rendering costs more than stepping). What the envs raise comes back as an EnvStepError naming ``env_id``.
    """
    envs = getattr(eval_envs, "envs", eval_envs)
    if len(seeds) != len(envs):
        raise ValueError(f"{len(seeds)} seeds for {len(envs)} evaluation envs; give one seed per env")
    observations = [env_call(env_id, "reset()", env.reset, seed=int(seed))[0] for env, seed in zip(envs, seeds)]
    returns = np.zeros(len(seeds), np.float64)
    lengths = np.zeros(len(seeds), np.int64)
    running = list(range(len(seeds)))
    _record(envs, frames)
    for step in range(1, max_steps + 1):
        if not running:
            break
        if deadline is not None and time.time() > deadline:
            raise OutOfTime(f"{len(running)} of {len(seeds)} episodes still running at the deadline")
        batch = as_float_batch(np.stack([observations[index] for index in running]))
        actions = policy.env_actions(policy.mode(batch))
        still_running = []
        for index, action in zip(running, actions):
            observations[index], reward, terminated, truncated, _ = env_call(env_id, "step()", envs[index].step, action)
            returns[index] += float(reward)
            lengths[index] += 1
            if not (terminated or truncated):
                still_running.append(index)
        if running[0] == 0 and step % frame_every == 0:
            _record(envs, frames)
        running = still_running
    return EvalResult(tuple(returns.tolist()), tuple(lengths.tolist()), tuple(int(seed) for seed in seeds))


MAX_VECTOR_ENVS = 32
"""Episodes ``play_episodes`` plays at once in one vector env (more would only cost memory)."""


_KEPT_ENVS: dict[tuple[str, EnvOptions], list[gym.Env]] = {}
"""Evaluation envs that ``play_episodes(..., keep_envs=True)`` made, kept for the next call in this process (the
crown's rounds: 8 Atari envs took about as long to make as to play their 8 episodes)."""


def play_episodes(env_id: str, options: EnvOptions, spec: NetworkSpec, weights: dict[str, np.ndarray],
                  seeds: Sequence[int], deadline: float | None = None, keep_envs: bool = False) -> EvalResult:
    """One deterministic episode per seed, ``MAX_VECTOR_ENVS`` at a time: the same returns as all at once, since
    acting is row by row, and a seeded reset starts the same episode whatever the env played before (as the
    run's evaluations rely on). Acts on one BLAS thread, as training does: this runs in the crown's spawned
    processes, in ``champion crown`` and from the API, where nothing else has set it. OutOfTime once ``deadline``
    (a ``time.time()``) has passed, before any env is made if it already has. ``keep_envs``: the envs stay for
    the next call (``close_kept_envs`` closes them)."""
    single_threaded_numpy()
    policy = acting_policy(spec, weights)
    envs = _KEPT_ENVS.setdefault((env_id, options), []) if keep_envs else []
    parts = []
    try:
        for start in range(0, len(seeds), MAX_VECTOR_ENVS):
            chunk = list(seeds[start:start + MAX_VECTOR_ENVS])
            if deadline is not None and time.time() > deadline:
                raise OutOfTime(f"the deadline passed with {len(seeds) - start} of {len(seeds)} episodes to play")
            while len(envs) < len(chunk):
                envs.append(make_env_without_info(env_id, options))
            parts.append(evaluate(policy, envs[:len(chunk)], chunk, env_id=env_id, deadline=deadline))
    finally:
        if not keep_envs:
            for env in envs:
                env.close()
    return joined(parts, seeds)


def close_kept_envs() -> None:
    """Close the envs ``play_episodes`` kept in this process."""
    for envs in _KEPT_ENVS.values():
        for env in envs:
            env.close()
    _KEPT_ENVS.clear()


def joined(parts: list[EvalResult], seeds: Sequence[int]) -> EvalResult:
    """Results of consecutive slices of ``seeds``, as one."""
    return EvalResult(tuple(value for part in parts for value in part.returns),
                      tuple(value for part in parts for value in part.lengths), tuple(int(seed) for seed in seeds))


def _record(envs: Sequence[gym.Env], frames: list | None) -> None:
    if frames is not None:
        frames.append(envs[0].render())


@dataclass(frozen=True)
class FinishedEvaluation:
    """An evaluation of the policy as it was at ``step``: the snapshot played, its result, its duration."""

    step: int
    policy: NumpyPolicy
    result: EvalResult
    seconds: float


class Evaluation(Protocol):
    """What the train loop calls to evaluate beside training: ``BackgroundEvaluation`` (a thread of this process)
    or ``champion.runners.ray.evaluation.RayEvaluation`` (Ray actors); both play the same fixed-seed episodes."""

    step_in_flight: int
    restarts: int
    """Evaluation actors restarted after a failure (always 0 in process)."""

    def start(self, step: int, policy: NumpyPolicy) -> list[FinishedEvaluation]: ...
    def finished(self) -> list[FinishedEvaluation]: ...
    def wait(self) -> list[FinishedEvaluation]: ...
    def close(self) -> None: ...


class BackgroundEvaluation:
    """Evaluations on a worker thread, so training goes on while the fixed-seed episodes are played.

    The worker only steps ``eval_envs`` with a weight snapshot (numpy, no TensorFlow), while the
    loop's compiled calls release the GIL; the loop takes each finished evaluation in order and
    saves, logs and prints it itself, so every write stays on the loop's thread. At most one
    evaluation is in flight: ``start`` waits for the previous one. With ``background=False`` the
    evaluation runs inside ``start`` (same results, nothing overlapped).
    """

    def __init__(self, eval_envs: gym.vector.VectorEnv, seeds: Sequence[int], background: bool = True,
                 env_id: str = "the environment") -> None:
        self.eval_envs, self.seeds, self.background, self.env_id = eval_envs, list(seeds), background, env_id
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.step_in_flight = -1
        """The step of the evaluation running now (-1: none)."""
        self._outcome: FinishedEvaluation | BaseException | None = None

    def start(self, step: int, policy: NumpyPolicy) -> list[FinishedEvaluation]:
        """Evaluate ``policy`` (a snapshot) as of ``step``; returns the previous evaluation if it was still running."""
        previous = self.wait()
        self.step_in_flight = step
        self._thread = threading.Thread(target=self._evaluate, args=(step, policy), name="champion-evaluation",
                                        daemon=True)
        self._thread.start()
        if not self.background:
            previous += self.wait()
        return previous

    def finished(self) -> list[FinishedEvaluation]:
        """The evaluation in flight, if it has finished; never blocks."""
        return self.wait() if self._thread is not None and not self._thread.is_alive() else []

    def wait(self) -> list[FinishedEvaluation]:
        """The evaluation in flight, once it has finished (an error in it is raised here)."""
        if self._thread is None:
            return []
        self._thread.join()
        self._thread, self.step_in_flight, outcome, self._outcome = None, -1, self._outcome, None
        if isinstance(outcome, BaseException):
            raise outcome
        return [outcome] if outcome is not None else []

    def close(self) -> None:
        """Let an evaluation in flight finish, dropping its result, then close the evaluation envs."""
        if self._thread is not None:
            self._thread.join()
            self._thread, self.step_in_flight = None, -1
        self.eval_envs.close()

    def _evaluate(self, step: int, policy: NumpyPolicy) -> None:
        started = time.perf_counter()
        try:
            result = evaluate(policy, self.eval_envs, self.seeds, env_id=self.env_id)
            self._outcome = FinishedEvaluation(step, policy, result, time.perf_counter() - started)
        except BaseException as error:  # re-raised on the loop's thread by wait()
            self._outcome = error
