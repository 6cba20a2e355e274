"""An env's exact state across a stop: a journal of how each training env got where it is, replayed on a fresh env
by a resume and checked there.

Every training env is wrapped in ``EpisodeJournal``. It gives each episode a seed the run derives (the first
from the vector env's seed, each later one from that and the episode's number), and it records the calls made
since the last reset that restarted everything: that reset's seed, then every action (and any reset that carried
state over, such as a lost life in an Atari game). A checkpoint holds that record (``JournalState``); a resume
makes fresh envs, replays each record and compares the env's observation and the episode's summed reward with the
saved ones, bit for bit. An env that does not arrive where it was (a simulator that is not deterministic given
its seed, an env that draws from an unseeded generator) is named in one line and starts a fresh episode instead.

Why a journal rather than each simulator's own state API (MuJoCo's qpos/qvel/act, ALE's cloneState, Box2D's
bodies): one mechanism covers every env gymnasium can make, users' envs included, the wrappers' own state (time
limits, frame stacks, no-op starts, life counters) comes back with it, and nothing is pickled. The price is the
replay at a resume, at most the current episodes' steps (``docs/benchmarks.md`` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, SupportsFloat

import gymnasium as gym
import numpy as np

MAX_JOURNAL_STEPS = 1_000_000
"""An episode longer than this is not journalled (its memory would grow without bound); a resume restarts it."""


NOT_REPLAYED = "its replay was found to differ when the checkpoint was written"


def episode_seed(base_seed: int, episode: int) -> int:
    """The seed of the ``episode``-th reset after the reset seeded ``base_seed`` (episode 0 is that one)."""
    if episode == 0:
        return int(base_seed)
    return int(np.random.SeedSequence([int(base_seed) % 2**63, episode]).generate_state(1, np.uint32)[0])


@dataclass(frozen=True)
class JournalState:
    """How one env reached its state: replaying ``segments`` on a fresh env must end at ``observation``."""

    base_seed: int
    """The seed of the env's first reset (the vector env's seed plus the env's place)."""
    episodes: int
    """Resets since that first one (the next reset's seed follows from it)."""
    segments: tuple[tuple[int, np.ndarray], ...]
    """(reset seed, actions taken after it) in order; the first reset restarted everything."""
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
    next reset carries state over (``resets_fully`` False, e.g. ``envs.atari.EpisodicLife`` between lives) keeps
    the journal going across that reset.
    """

    pending_state: JournalState | None = None
    """Set (through the vector env's ``set_attr``) just before ``restore_pending``."""

    def __init__(self, make: Callable[[], gym.Env]) -> None:
        super().__init__(make())
        self._make = make
        self._base_seed = 0
        self._episodes = 0
        self._segments: list[tuple[int, list[Any]]] = []
        self._observation: Any = None
        self._reward_sum = 0.0
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self._base_seed, self._episodes = int(seed), 0
        else:
            self._episodes += 1
            seed = episode_seed(self._base_seed, self._episodes)
        full = _resets_fully(self.env)
        observation, info = self.env.reset(seed=seed, options=options)
        if full or not self._segments or self._steps > MAX_JOURNAL_STEPS:
            self._segments, self._reward_sum, self._steps = [], 0.0, 0
        self._segments.append((seed, []))
        self._observation = observation
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._segments[-1][1].append(np.array(action) if isinstance(action, np.ndarray) else action)
        self._reward_sum += float(reward)
        self._steps += 1
        self._observation = observation
        return observation, reward, terminated, truncated, info

    def journal(self) -> JournalState:
        """The record a checkpoint keeps."""
        journalled = self._steps <= MAX_JOURNAL_STEPS
        segments = tuple((seed, np.asarray(actions)) for seed, actions in self._segments) if journalled else ()
        observation = np.array(self._observation) if journalled and self._observation is not None else None
        return JournalState(self._base_seed, self._episodes, segments, observation, self._reward_sum)

    def restore(self, state: JournalState) -> str | None:
        """Replay ``state`` on this (fresh) env; None when it arrived where the record says, else what differed.
        Either way the journal goes on from ``state``'s counters."""
        self._base_seed, self._episodes = state.base_seed, state.episodes
        problem = replay(self.env, state)
        self._segments = [(seed, list(actions)) for seed, actions in state.segments]
        self._reward_sum, self._steps = state.reward_sum, state.steps
        self._observation = state.observation
        return problem

    def check_replay(self) -> str | None:
        """Replay this env's journal on a second, fresh copy of it (``make``): None when the copy arrives at this
        env's state, else what differed. A resume would meet the same."""
        copy = self._make()
        try:
            return replay(copy, self.journal())
        finally:
            copy.close()

    def restore_pending(self) -> tuple[Any, str | None]:
        """``restore(pending_state)``, or a fresh episode when there is none or it did not replay: the env's
        observation now, and None when it was restored, else why not ("" when there was nothing to replay)."""
        state, self.pending_state = self.pending_state, None
        problem = "" if state is None else self.restore(state)
        if problem is None:
            return state.observation, None
        return self.restart(), problem

    def restart(self) -> Any:
        """A fresh env on a fresh episode, seeded as the next one (for an env whose journal did not replay); its
        observation."""
        self.env.close()
        self.env = self._make()
        self._segments = []
        observation, _ = self.reset()
        return observation


def replay(env: gym.Env, state: JournalState) -> str | None:
    """Make ``env``'s calls of ``state`` on it; None when it ends at the saved observation and reward sum."""
    if state.observation is None:
        return "its episode was longer than the journal keeps"
    observation, reward_sum = None, 0.0
    try:
        for seed, actions in state.segments:
            observation, _ = env.reset(seed=seed)
            for action in actions:
                observation, reward, _, _, _ = env.step(action)
                reward_sum += float(reward)
    except Exception as error:  # a user's env may fail in any way; the resume restarts its episode
        return f"replaying its episode raised {type(error).__name__}: {error}"
    if not same_bits(observation, state.observation):
        return f"replaying its episode from seed {state.segments[0][0]} gave another observation"
    if reward_sum != state.reward_sum:
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
    """The state of a vector env from ``envs.factory.make_vector_env`` (sync or async)."""
    return VectorEnvState(tuple(envs.unwrapped.call("journal")), np.array(envs.episode_returns), np.array(envs.episode_lengths))


def check_replays(envs: gym.vector.VectorEnv) -> list[str | None]:
    """Each env's ``EpisodeJournal.check_replay``: what would keep a resume from restoring it (None: nothing)."""
    return list(envs.unwrapped.call("check_replay"))


def restore(envs: gym.vector.VectorEnv, state: VectorEnvState, exact: list[bool]) -> tuple[np.ndarray, list[str | None]]:
    """Replay each journal on fresh ``envs`` (those whose ``exact`` is False start a fresh episode instead).

    Returns the envs' current observations (batched as the vector env batches them) and, per env, None when it
    was restored and verified, else why its episode restarts.
    """
    envs.unwrapped.set_attr("pending_state", [journal if ok else None for journal, ok in zip(state.journals, exact)])
    outcomes = envs.unwrapped.call("restore_pending")
    problems = [NOT_REPLAYED if problem == "" else problem for _, problem in outcomes]
    observations = gym.vector.utils.concatenate(
        envs.single_observation_space, [observation for observation, _ in outcomes],
        gym.vector.utils.create_empty_array(envs.single_observation_space, envs.num_envs))
    envs.episode_returns = np.where([problem is None for problem in problems], state.episode_returns, 0.0)
    envs.episode_lengths = np.where([problem is None for problem in problems], state.episode_lengths, 0)
    return observations, problems
