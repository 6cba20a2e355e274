"""An env's exact state across a stop: a journal of how each training env got where it is, replayed on a fresh env
by a resume and checked there.

Every training env is wrapped in ``EpisodeJournal``. It gives each episode a seed the run derives (the first
from the vector env's seed, each later one from that and the episode's number), and it records the calls made
since the last reset that restarted everything: that reset's seed, then every action (and any reset that carried
state over, such as a lost life in an Atari game). A simulator whose seeded reset is costly may instead keep its
own state at each reset (``ResetSnapshot``: ALE reloads the game's ROM to take a new seed, 92 ms a reset against
5 ms unseeded), and the journal then starts from that state. A checkpoint holds that record (``JournalState``); a resume
makes fresh envs, replays each record and compares the env's observation and the episode's summed reward with the
saved ones, bit for bit. An env that does not arrive where it was (a simulator that is not deterministic given
its seed, an env that draws from an unseeded generator) is named in one line and starts a fresh episode instead.

What it covers is the episode under way, which gymnasium's ``reset(seed=...)`` contract makes a function of its
seed and actions: state an env carries from one episode into the next (a counter over episodes) comes back as
a fresh env's, and is noticed only where the observations or rewards show it.

Why a journal rather than each simulator's own state API (MuJoCo's qpos/qvel/act, ALE's cloneState, Box2D's
bodies): one mechanism covers every env gymnasium can make, users' envs included, the wrappers' own state (time
limits, frame stacks, no-op starts, life counters) comes back with it, and no env object is pickled. The price is
the replay at a resume, at most the current episodes' steps (``docs/benchmarks.md``, "Checkpoints").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np

MAX_JOURNAL_STEPS = 100_000
"""An episode longer than this is not journalled (its memory, its checkpoints and the replay of a resume would
grow without bound); a resume restarts it. Gymnasium's longest time limits (Atari's 27,000 agent steps) fit."""


NOT_REPLAYED = "its replay was found to differ when the checkpoint was written"
TOO_LONG = f"its episode was longer than the {MAX_JOURNAL_STEPS:,} steps a journal keeps"


def episode_seed(base_seed: int, episode: int) -> int:
    """The seed of the ``episode``-th reset after the reset seeded ``base_seed`` (episode 0 is that one)."""
    if episode == 0:
        return int(base_seed)
    return int(np.random.SeedSequence([int(base_seed) % 2**63, episode]).generate_state(1, np.uint32)[0])


class ResetSnapshot(Protocol):
    """What an unseeded reset of one kind of simulator depends on, taken just before it and put back on a fresh env
    of that kind (``champion.envs.atari.AleSnapshot``)."""

    def capture(self, env: gym.Env) -> Any:
        """The state an unseeded reset of ``env`` starts from, as plain data a checkpoint can hold (bytes, arrays,
        numbers, tuples, dicts: ``champion.runners.store.state_codec``)."""
        ...

    def restore(self, env: gym.Env, state: Any) -> None:
        """Put ``state`` back into ``env`` (a fresh one), so that its unseeded reset goes as the captured one did."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """A segment's start that is a simulator's own state (``ResetSnapshot.capture``) rather than a seed."""

    state: Any


@dataclass(frozen=True)
class JournalState:
    """How one env reached its state: replaying ``segments`` on a fresh env must end at ``observation``."""

    base_seed: int
    """The seed of the env's first reset (the vector env's seed plus the env's place)."""
    episodes: int
    """Resets since that first one (the next reset's seed follows from it)."""
    segments: tuple[tuple[int | Snapshot | None, np.ndarray], ...]
    """(how the reset went: its seed, the simulator's state before it, or None for an unseeded reset that carried
    state over; then the actions taken after it) in order; the first reset restarted everything."""
    observation: np.ndarray | None
    """What the env returned last, as it returned it (None if the journal was dropped: an overlong episode)."""
    reward_sum: float
    """The rewards summed since the first segment's reset, in the order they came."""

    @property
    def steps(self) -> int:
        """Env steps the replay takes."""
        return sum(len(actions) for _, actions in self.segments)


class EpisodeJournal(gym.Wrapper):
    """Seeds every episode from the run and records the calls since the last full reset (``JournalState``).

    It wraps the whole per-env stack (``make``), so a replay also restores the wrappers' state. A wrapper whose
    next reset carries state over (``resets_fully`` False, e.g. ``champion.envs.atari.EpisodicLife`` between lives) keeps
    the journal going across that reset.
    """

    pending_state: tuple[JournalState, bool] | None = None
    """Set (through the vector env's ``set_attr``) just before ``restore_pending``."""

    def __init__(self, make: Callable[[], gym.Env], snapshot: ResetSnapshot | None = None) -> None:
        super().__init__(make())
        self._make, self._snapshot = make, snapshot
        self._base_seed = 0
        self._episodes = 0
        self._segments: list[tuple[int | Snapshot | None, list[Any]]] | None = []
        """None while the episode is longer than MAX_JOURNAL_STEPS (it is no longer recorded)."""
        self._observation: Any = None
        self._reward_sum = 0.0
        self._steps = 0
        self._started = False
        """Whether the env has had its first reset (here or in the run a journal came from)."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        full = _resets_fully(self.env)
        if seed is None and not self._started:  # a first reset without a seed: one from the OS, then derived ones
            seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
        self._started = True
        if seed is not None:
            self._base_seed, self._episodes = int(seed), 0
        else:
            self._episodes += 1
            if self._snapshot is None:
                seed = episode_seed(self._base_seed, self._episodes)
        start: int | Snapshot | None = None if seed is None else int(seed)
        if seed is None and full:
            start = Snapshot(self._snapshot.capture(self.env))
        observation, info = self.env.reset(seed=seed, options=options)
        if full:
            self._segments, self._reward_sum, self._steps = [], 0.0, 0
        if self._segments is not None:
            self._segments.append((start, []))
        self._observation = observation
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        recorded = np.array(action) if isinstance(action, np.ndarray) else action  # before the env could change it
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        if self._segments is not None:
            self._segments[-1][1].append(recorded)
            if self._steps > MAX_JOURNAL_STEPS:
                self._segments = None  # memory stays bounded; a resume restarts this episode
        self._reward_sum += float(reward)
        self._observation = observation
        return observation, reward, terminated, truncated, info

    def journal(self) -> JournalState:
        """The record a checkpoint keeps (no segments and no observation for an overlong episode)."""
        if self._segments is None:
            return JournalState(self._base_seed, self._episodes, (), None, self._reward_sum)
        segments = tuple((start, np.asarray(actions)) for start, actions in self._segments)
        observation = None if self._observation is None else np.array(self._observation)
        return JournalState(self._base_seed, self._episodes, segments, observation, self._reward_sum)

    def restore(self, state: JournalState) -> str | None:
        """Replay ``state`` on this (fresh) env, whose counters ``restore_pending`` has set; None when it arrived where the record says, else what differed
        (the env is then in no state to go on: ``restart`` it)."""
        problem = replay(self.env, state, self._snapshot)
        self._segments = [(start, list(actions)) for start, actions in state.segments]
        self._reward_sum, self._steps = state.reward_sum, state.steps
        self._observation = state.observation
        return problem

    def check_replay(self) -> str | None:
        """Replay this env's journal on a second, fresh copy of it (``make``): None when the copy arrives at this
        env's state, else what differed (``TOO_LONG`` for an episode too long to record). A resume would meet the
        same."""
        journal = self.journal()
        if journal.observation is None:
            return TOO_LONG
        try:
            copy = self._make()
        except Exception as error:  # e.g. a user env that holds a resource only one copy can have
            return f"a second copy of it could not be made to check its replay ({type(error).__name__}: {error})"
        try:
            return replay(copy, journal, self._snapshot)
        finally:
            try:
                copy.close()
            except Exception:  # the check's own copy: its failure to close says nothing about the run's env
                pass

    def restore_pending(self) -> tuple[Any, str | None]:
        """Bring this fresh env to ``pending_state`` (a journal and whether to replay it): the env's observation
        now, and None when it was replayed and checked, else why it starts a fresh episode instead (seeded as the
        journal's next one)."""
        (state, replaying), self.pending_state = self.pending_state, None
        self._base_seed, self._episodes, self._started = state.base_seed, state.episodes, True
        if state.observation is None:
            problem = TOO_LONG
        else:
            problem = self.restore(state) if replaying else NOT_REPLAYED
        if problem is None:
            return state.observation, None
        return self.restart(), problem

    def restart(self) -> Any:
        """A fresh env on the journal's next episode, seeded as that one (whatever the env's kind); its
        observation."""
        try:
            self.env.close()
        except Exception:  # a replay that failed may have left it broken; a fresh one replaces it either way
            pass
        self.env = self._make()
        self._episodes += 1
        seed = episode_seed(self._base_seed, self._episodes)
        observation, _ = self.env.reset(seed=seed)
        self._segments, self._reward_sum, self._steps = [(seed, [])], 0.0, 0
        self._observation = observation
        return observation


def replay(env: gym.Env, state: JournalState, snapshot: ResetSnapshot | None) -> str | None:
    """Make ``env``'s calls of ``state`` on it (``snapshot`` puts back a simulator's state where a segment starts
    from one); None when it ends at the saved observation and reward sum."""
    if state.observation is None:
        return TOO_LONG
    observation, reward_sum = None, 0.0
    try:
        for start, actions in state.segments:
            if isinstance(start, Snapshot):
                snapshot.restore(env, start.state)
            observation, _ = env.reset(seed=start if isinstance(start, int) else None)
            for action in actions:
                observation, reward, _, _, _ = env.step(action)
                reward_sum += float(reward)
    except Exception as error:  # a user's env may fail in any way; the resume restarts its episode
        return f"replaying its episode raised {type(error).__name__}: {error}"
    if not same_bits(observation, state.observation):
        start = state.segments[0][0]
        origin = f"seed {start}" if isinstance(start, int) else "the simulator's saved state"
        return f"replaying its episode from {origin} gave another observation"
    if np.float64(reward_sum).tobytes() != np.float64(state.reward_sum).tobytes():  # a NaN equals a NaN here
        return f"replaying its episode gave a reward sum of {reward_sum!r}, not {state.reward_sum!r}"
    return None


def same_bits(first: Any, second: Any) -> bool:
    """Whether two observations are the same array, bit for bit (dtype and shape included)."""
    first, second = np.asarray(first), np.asarray(second)
    return first.dtype == second.dtype and first.shape == second.shape and first.tobytes() == second.tobytes()


def _resets_fully(env: gym.Env) -> bool:
    """Whether the env's next reset restarts everything (a wrapper that carries state over says so)."""
    return not env.has_wrapper_attr("resets_fully") or bool(env.get_wrapper_attr("resets_fully"))


@dataclass(frozen=True)
class VectorEnvState:
    """A training vector env's state: each env's journal and the episode statistics of the episodes under way."""

    journals: tuple[JournalState, ...]
    episode_returns: np.ndarray
    episode_lengths: np.ndarray


def capture(envs: gym.vector.VectorEnv) -> VectorEnvState:
    """The state of a vector env from ``champion.envs.factory.make_vector_env`` (sync or async)."""
    return VectorEnvState(tuple(envs.unwrapped.call("journal")), np.array(envs.episode_returns), np.array(envs.episode_lengths))


def check_replays(envs: gym.vector.VectorEnv) -> list[str | None]:
    """Each env's ``EpisodeJournal.check_replay``: what would keep a resume from restoring it (None: nothing)."""
    return list(envs.unwrapped.call("check_replay"))


def restore(envs: gym.vector.VectorEnv, state: VectorEnvState, exact: list[bool]) -> tuple[np.ndarray, list[str | None]]:
    """Replay each journal on fresh ``envs`` (those whose ``exact`` is False start a fresh episode instead).

    Returns the envs' current observations (batched as the vector env batches them) and, per env, None when it
    was restored and verified, else why its episode restarts.
    """
    envs.unwrapped.set_attr("pending_state", list(zip(state.journals, exact)))
    outcomes = envs.unwrapped.call("restore_pending")
    problems = [problem for _, problem in outcomes]
    observations = gym.vector.utils.concatenate(
        envs.single_observation_space, [observation for observation, _ in outcomes],
        gym.vector.utils.create_empty_array(envs.single_observation_space, envs.num_envs))
    envs.episode_returns = np.where([problem is None for problem in problems], state.episode_returns, 0.0)
    envs.episode_lengths = np.where([problem is None for problem in problems], state.episode_lengths, 0)
    return observations, problems
