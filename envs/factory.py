"""Build training and evaluation environments with gymnasium's vector API.

Any id ``gymnasium.make`` accepts works, including ``module:EnvName-v0`` (the module is
imported first, so it can register the environment).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics

Result = TypeVar("Result")

SUPPORTED_OBSERVATION_SPACES = "Box"
SUPPORTED_ACTION_SPACES = "Discrete (starting at 0), Box (one-dimensional)"


class EnvError(ValueError):
    """The environment cannot be made or is not one the agents support; the message says why."""


class EnvStepError(RuntimeError):
    """An environment raised while it was reset or stepped; the message names the env and what it raised."""


def env_call(env_id: str, what: str, call: Callable[..., Result], *arguments: Any, **keywords: Any) -> Result:
    """``call(*arguments, **keywords)``, with anything it raises turned into an EnvStepError naming the env."""
    try:
        return call(*arguments, **keywords)
    except Exception as error:
        raise EnvStepError(f"environment {env_id} raised {type(error).__name__} in {what}: {error}") from error


@dataclass(frozen=True)
class EnvInfo:
    """What the agent needs to know about an environment, read once before training."""

    env_id: str
    observation_shape: tuple[int, ...]
    action_kind: str
    action_size: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    reward_threshold: float | None
    max_episode_steps: int | None
    render_modes: tuple[str, ...]


EXTRAS = {"box2d": "box2d", "mujoco": "mujoco"}
"""champion's optional extra that installs what the envs of a gymnasium entry-point package need."""


def required_extra(env_id: str) -> str | None:
    """The extra (``pip install -e '.[NAME]'``) that ``env_id`` needs, if it is one of gymnasium's that needs one."""
    try:
        entry_point = str(gym.spec(env_id).entry_point)
    except gym.error.Error:
        return None
    return next((extra for package, extra in EXTRAS.items() if f".{package}" in entry_point), None)


def describe_env(env_id: str) -> EnvInfo:
    """Make the env once and read its spaces; EnvError (one line) if it is unknown or unsupported."""
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as error:
        extra = required_extra(env_id)
        if extra is not None:
            raise EnvError(f"{env_id} needs champion's {extra} extra, which is not installed: "
                           f"pip install -e '.[{extra}]' (in champion's folder)") from None
        raise EnvError(f"{env_id} needs a package that is not installed: {error}") from None
    except gym.error.Error as error:
        raise EnvError(f"unknown environment {env_id!r}: {error}") from None
    except Exception as error:  # a user's module can fail in any way while importing or building
        raise EnvError(f"cannot make environment {env_id!r}: {type(error).__name__}: {error}") from None
    try:
        return _read_spaces(env_id, env)
    finally:
        env.close()


@dataclass(frozen=True)
class EnvSummary:
    """One registered environment as ``champion envs`` lists it."""

    env_id: str
    observation_space: str
    action_space: str
    problem: str
    """Why champion cannot train it ("" when it can): a missing extra, an unsupported space, a failure."""


def summarize_env(env_id: str) -> EnvSummary:
    """Make ``env_id`` once (its warnings held back) and say what it is and whether champion can train it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            env = gym.make(env_id)
        except Exception:  # noqa: BLE001 - describe_env words every way of failing
            try:
                describe_env(env_id)
            except EnvError as error:
                return EnvSummary(env_id, "?", "?", str(error))
            return EnvSummary(env_id, "?", "?", "could not be made")
        try:
            _read_spaces(env_id, env)
            problem = ""
        except EnvError as error:
            problem = str(error)
        finally:
            env.close()
    return EnvSummary(env_id, space_text(env.observation_space), space_text(env.action_space), problem)


def space_text(space: gym.Space) -> str:
    """A space in a few words: a Box by its shape and dtype (its bounds would fill a line), others as gymnasium
    writes them."""
    if isinstance(space, gym.spaces.Box):
        return f"Box{tuple(int(size) for size in space.shape)} {space.dtype}"
    return str(space)


def _read_spaces(env_id: str, env: gym.Env) -> EnvInfo:
    observation_space, action_space = env.observation_space, env.action_space
    if not isinstance(observation_space, gym.spaces.Box):
        raise EnvError(
            f"{env_id} has observation space {observation_space}, which is not supported yet; "
            f"supported: {SUPPORTED_OBSERVATION_SPACES}"
        )
    if isinstance(action_space, gym.spaces.Discrete) and int(action_space.start) == 0:
        kind, size, low, high = "discrete", int(action_space.n), (), ()
    elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        kind, size = "continuous", int(action_space.shape[0])
        low, high = tuple(float(value) for value in action_space.low), tuple(float(value) for value in action_space.high)
    else:
        raise EnvError(f"{env_id} has action space {action_space}, which is not supported yet; "
                       f"supported: {SUPPORTED_ACTION_SPACES}")
    spec = env.spec
    return EnvInfo(
        env_id=env_id,
        observation_shape=tuple(int(size) for size in observation_space.shape),
        action_kind=kind,
        action_size=size,
        action_low=low,
        action_high=high,
        reward_threshold=spec.reward_threshold if spec else None,
        max_episode_steps=spec.max_episode_steps if spec else None,
        render_modes=tuple(env.metadata.get("render_modes", ())),
    )


def make_vector_env(env_id: str, num_envs: int, vectorization: str = "auto", **env_kwargs: Any) -> gym.vector.VectorEnv:
    """Training envs, seeded by the caller's first ``reset(seed=...)``.

    ``sync`` (and ``auto``) step gym.make envs in this process, ``async`` one process per env.
    Autoreset happens in the same step (the returned observation starts the next episode and
    ``info["final_obs"]`` holds the last one), so every step is a real transition and a
    truncated episode can be bootstrapped from its final observation. Episode returns and
    lengths are reported by gymnasium's RecordEpisodeStatistics. The sync vector env is built
    from picklable parts, so its whole state (every sub-env and its RNG) can be checkpointed.
    """
    make_one = [functools.partial(gym.make, env_id, **env_kwargs)] * num_envs
    vector_class = gym.vector.AsyncVectorEnv if vectorization == "async" else gym.vector.SyncVectorEnv
    return RecordEpisodeStatistics(vector_class(make_one, autoreset_mode=AutoresetMode.SAME_STEP))


def make_eval_env(env_id: str, num_episodes: int, render_mode: str | None = None) -> gym.vector.VectorEnv:
    """Evaluation envs, one per episode, stepped together in this process; separate from the training envs.

    With ``render_mode`` only the first env renders (one window, or one video), so the episodes and
    their returns are exactly those of an evaluation without rendering.
    """
    if render_mode == "rgb_array":  # off-screen: without a display, SDL's probing only prints an error line
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

    def make(index: int) -> Callable[[], gym.Env]:
        kwargs = {"render_mode": render_mode} if render_mode and index == 0 else {}
        return lambda: gym.make(env_id, **kwargs)

    return gym.vector.SyncVectorEnv([make(index) for index in range(num_episodes)])


def as_float_batch(observations: Any) -> np.ndarray:
    """Observations as a float32 array (no copy when they already are)."""
    return np.asarray(observations, dtype=np.float32)
