"""Build training and evaluation environments with gymnasium's vector API.

Any id ``gymnasium.make`` accepts works, including ``module:EnvName-v0`` (the module is
imported first, so it can register the environment).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, SupportsFloat, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from champion.errors import ChampionError
from champion.agents.spec import ObservationLeaf
from champion.envs.atari import AleSnapshot, is_atari, kwargs_refusal, make_atari, refusal
from champion.envs.env_state import EpisodeJournal
from champion.envs.spaces import ActionLayout, SpaceError, action_layout, needs_flattening, observation_leaves

Result = TypeVar("Result")



class EnvError(ChampionError, ValueError):
    """The environment cannot be made or is not one the agents support; the message says why."""


class EnvStepError(ChampionError, RuntimeError):
    """An environment raised while it was reset or stepped; the message names the env and what it raised."""

    exit_code = 1


def env_call(env_id: str, what: str, call: Callable[..., Result], *arguments: Any, **keywords: Any) -> Result:
    """``call(*arguments, **keywords)``, with anything it raises turned into an EnvStepError naming the env."""
    try:
        return call(*arguments, **keywords)
    except Exception as error:
        detail = str(error).strip() or "(it gave no message)"  # e.g. a bare assert in the env's code
        raise EnvStepError(f"environment {env_id} raised {type(error).__name__} in {what}: {detail}") from error


@dataclass(frozen=True)
class EnvOptions:
    """How an env id becomes the env champion trains on, beyond ``gymnasium.make``; recorded in every
    best-policy manifest so that replay and export build the same env."""

    frame_stack: int = 1
    """Observations of the last this many steps, stacked (gymnasium's FrameStackObservation); 1: none."""
    image_layout: str = "auto"
    """How a uint8 Box is read: auto (an image when HxW, HxWxC or CxHxW), channels_last, channels_first, none."""
    make_kwargs: tuple[tuple[str, Any], ...] = ()
    """Keyword arguments of ``gymnasium.make`` (the config's ``env_kwargs``), as sorted pairs so options hash."""

    def to_dict(self) -> dict[str, Any]:
        return {"frame_stack": self.frame_stack, "image_layout": self.image_layout, "env_kwargs": dict(self.make_kwargs)}

    @classmethod
    def from_config(cls, config: Any) -> "EnvOptions":
        """The options a TrainConfig asks for."""
        return cls(frame_stack=config.frame_stack, image_layout=config.network.image_layout,
                   make_kwargs=tuple(sorted((config.env_kwargs or {}).items())))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "EnvOptions":
        """From a manifest (an older one has none: the defaults)."""
        data = dict(data or {})
        make_kwargs = tuple(sorted((data.pop("env_kwargs", None) or {}).items()))
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__},
                   make_kwargs=make_kwargs)


@dataclass(frozen=True)
class EnvInfo:
    """What the agent needs to know about an environment, read once before training."""

    env_id: str
    observation_leaves: tuple[ObservationLeaf, ...]
    action: ActionLayout
    reward_threshold: float | None
    max_episode_steps: int | None
    render_modes: tuple[str, ...]


EXTRAS = {"box2d": "box2d", "mujoco": "mujoco"}
"""champion's optional extra that installs what the envs of a gymnasium entry-point package need."""


def required_extra(env_id: str) -> str | None:
    """The extra (``pip install -e '.[NAME]'``) that ``env_id`` needs, if it is one of gymnasium's that needs one."""
    if is_atari(env_id):
        return "atari"
    try:
        entry_point = str(gym.spec(env_id).entry_point)
    except gym.error.Error:
        return None
    return next((extra for package, extra in EXTRAS.items() if f".{package}" in entry_point), None)


MUJOCO_DEPRECATION = "compiler attribute 'settotalmass' is deprecated"
"""MuJoCo 3.x's note on every gymnasium v5 model; harmless, and left out."""


def _mujoco_warnings_to_stderr() -> None:
    """MuJoCo's own warning handler also appends every warning to MUJOCO_LOG.TXT in the current folder; this one
    prints them to stderr only (MuJoCo's note on gymnasium's v5 models left out). A handler set by the user stays.
    Without MuJoCo it does nothing: gymnasium then says which package is missing, and describe_env names the extra."""
    try:
        import mujoco
    except ImportError:
        return
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_print_mujoco_warning)


def _print_mujoco_warning(message: str) -> None:
    if MUJOCO_DEPRECATION not in message:
        print(f"MuJoCo warning: {message}", file=sys.stderr)


def renders_apart(env_id: str) -> bool:
    """Whether ``env_id`` must render off-screen in a process without TensorFlow: MuJoCo's EGL context (Mesa)
    crashed (SIGSEGV) when created in a process that had imported TensorFlow, whose own LLVM clashes with
    Mesa's; the same process without TensorFlow renders fine."""
    return required_extra(env_id) == "mujoco"


ADDED_FOLDERS: set[str] = set()
"""Folders ``allow_current_folder_modules`` put on sys.path (never trusted for a recorded env's module)."""


def allow_current_folder_modules() -> None:
    """Let an env id the user types (``module:Env-v0``) name a module in the current folder, as ``python -m`` users
    expect: the folder goes on sys.path after the installed packages, so a file there never shadows one of them,
    and processes started later (async envs, evaluation) find it too. A module recorded in a run folder is still
    never imported from there (``import_recorded_env_module``)."""
    folder = os.getcwd()
    if "" not in sys.path and folder not in sys.path:
        sys.path.append(folder)
        ADDED_FOLDERS.add(os.path.realpath(folder))


def import_recorded_env_module(env_id: str, source: str) -> None:
    """Import the module of an env id read from a file (``source``: a run folder's config or manifest) from
    installed packages only (``import_recorded_module``); EnvError (one line) otherwise."""
    module = env_id.split(":", 1)[0] if ":" in env_id else ""
    if module:
        import_recorded_module(module, f"the env {env_id!r}", source)


def import_recorded_module(module: str, subject: str, source: str, error: type[Exception] = EnvError,
                           kind: str = "an env") -> None:
    """Import ``module``, which ``source`` (a run folder's config or manifest) names for ``subject`` (an env, a
    network torso), from installed packages only: never from the current folder (where a downloaded run folder may
    be opened), a folder champion put on the path, or an empty path entry; never a standard-library module or a
    ``__main__`` (a program, not a library). Modules already imported (e.g. named with ``--env-module``) are taken
    as they are; ``error`` (one line, saying how to name a module of one's own) otherwise. ``kind``: what lives
    in such a module, for that line."""
    parts = module.split(".")
    if not all(part.isidentifier() for part in parts) or "__main__" in parts or parts[0] in sys.stdlib_module_names:
        raise error(f"{source} names {subject}, whose module {module!r} is not one {kind} lives in; a recorded "
                    f"module of {kind} must be an installed package")
    if module in sys.modules:
        return
    untrusted = {os.path.realpath(os.getcwd()), *ADDED_FOLDERS}
    trusted = [entry for entry in sys.path if entry and os.path.realpath(entry) not in untrusted]
    path = sys.path[:]
    sys.path[:] = trusted  # the meta path's finders (editable installs among them) look only here
    try:
        if importlib.util.find_spec(parts[0]) is None:
            raise error(f"{source} names {subject}, whose module {module!r} is not an installed package; champion "
                        "imports a module recorded in a run folder only from installed packages, so that opening a "
                        f"run folder never runs code from it. If you trust {module!r}, name it: --env-module {module} "
                        f"(from Python: import {module} first)")
        importlib.import_module(module)
    except error:
        raise
    except (Exception, SystemExit) as failure:  # a user's module can fail in any way while importing
        raise error(f"cannot import {module!r} for {subject}: {type(failure).__name__}: {failure}") from None
    finally:
        sys.path[:] = path


def describe_env(env_id: str, options: EnvOptions = EnvOptions()) -> EnvInfo:
    """Make the env once (as ``options`` shape it) and read its spaces; EnvError (one line) if it is unknown or
    unsupported."""
    try:
        env = make_env(env_id, options, flatten=False)
    except EnvError:
        raise
    except gym.error.DependencyNotInstalled as error:
        extra = required_extra(env_id)
        if extra is not None:
            raise EnvError(f"{env_id} needs champion's {extra} extra, which is not installed: "
                           f"pip install -e '.[{extra}]' (in champion's folder)") from None
        raise EnvError(f"{env_id} needs a package that is not installed: {error}") from None
    except gym.error.Error as error:
        sentence = str(error).strip()
        sentence += "" if sentence.endswith((".", "?", "!")) else "."
        own = "" if ":" in env_id else "; an env registered by your own module is named module:EnvId-v0"
        raise EnvError(f"unknown environment {env_id!r}: {sentence} `champion envs` lists the installed "
                       f"ones{own}.") from None
    except Exception as error:  # a user's module can fail in any way while importing or building
        raise EnvError(f"cannot make environment {env_id!r}: {type(error).__name__}: {error}") from None
    try:
        return _read_spaces(env_id, env, options)
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
            _read_spaces(env_id, env, EnvOptions())
            problem = (refusal(env_id) or "") if is_atari(env_id) else ""  # the line make_env refuses it with
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


def _read_spaces(env_id: str, env: gym.Env, options: EnvOptions) -> EnvInfo:
    try:
        leaves = observation_leaves(env.observation_space, options.image_layout)
        action = action_layout(env.action_space)
    except SpaceError as error:
        raise EnvError(f"{env_id}: {error}") from None
    spec = env.spec
    return EnvInfo(
        env_id=env_id,
        observation_leaves=leaves,
        action=action,
        reward_threshold=spec.reward_threshold if spec else None,
        max_episode_steps=spec.max_episode_steps if spec else None,
        render_modes=tuple(env.metadata.get("render_modes", ())),
    )


def make_env(env_id: str, options: EnvOptions = EnvOptions(), flatten: bool = True, training: bool = False,
             **env_kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id)`` (an Atari game with its preprocessing, for ``training`` or for whole-game
    evaluation: ``champion.envs.atari``, whose ``refusal`` is an EnvError here), then frame stacking, then (with
    ``flatten``, unless the observations are a Box) gymnasium's flattening: the model takes one flat vector
    (``champion.agents.spec``). Module-level, so that a partial of it can be sent to an async vector env's worker
    processes and to Ray's workers."""
    if required_extra(env_id) == "mujoco":
        _mujoco_warnings_to_stderr()
    env_kwargs = {**dict(options.make_kwargs), **env_kwargs}
    atari = is_atari(env_id)
    problem = (refusal(env_id) or kwargs_refusal(env_id, env_kwargs)) if atari else None
    if problem is not None:
        raise EnvError(problem)
    env = make_atari(env_id, training, **env_kwargs) if atari else gym.make(env_id, **env_kwargs)
    if options.frame_stack > 1:
        env = _stack_frames(env, options.frame_stack, options.image_layout)
    if flatten and needs_flattening(env.observation_space):
        env = FlattenObservations(env)
    return env


class FlattenObservations(gym.ObservationWrapper):
    """gymnasium's ``spaces.flatten`` on every observation, as its FlattenObservation wrapper does; a class of
    its own because that wrapper holds a lambda, so an env wrapped in it could not be pickled."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.flatten_space(env.observation_space)

    def observation(self, observation: Any) -> np.ndarray:
        return gym.spaces.flatten(self.env.observation_space, observation)


def _stack_frames(env: gym.Env, count: int, image_layout: str) -> gym.Env:
    """gymnasium's FrameStackObservation; the frames of an image are then laid side by side as its channels
    ((count, H, W[, C]) -> (H, W, count * C)), as a CNN takes them."""
    space = env.observation_space
    leaf = observation_leaves(space, image_layout)[0] if isinstance(space, gym.spaces.Box) else None
    env = gym.wrappers.FrameStackObservation(env, count)
    if leaf is None or leaf.kind != "image":
        return env
    merge = _FramesAsChannels(leaf.channels_first, len(leaf.shape), leaf.image_shape, count)
    stacked = env.observation_space
    return gym.wrappers.TransformObservation(env, merge, gym.spaces.Box(merge(stacked.low), merge(stacked.high),
                                                                        dtype=stacked.dtype))


@dataclass(frozen=True)
class _FramesAsChannels:
    """(count, H, W[, C]) stacked frames -> (H, W, count * C); a class, so that the env stays picklable."""

    channels_first: bool
    rank: int
    image_shape: tuple[int, int, int]
    count: int

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        order = (1, 2, 0) if self.rank == 2 else ((2, 3, 0, 1) if self.channels_first else (1, 2, 0, 3))
        height, width, channels = self.image_shape
        return np.ascontiguousarray(np.transpose(frames, order)).reshape(height, width, self.count * channels)


def make_vector_env(env_id: str, num_envs: int, vectorization: str = "auto", options: EnvOptions = EnvOptions(),
                    **env_kwargs: Any) -> gym.vector.VectorEnv:
    """Training envs, seeded by the caller's first ``reset(seed=...)``.

    ``sync`` (and ``auto``) step gym.make envs in this process, ``async`` one process per env.
    Autoreset happens in the same step (the returned observation starts the next episode and
    ``info["final_obs"]`` holds the last one), so every step is a real transition and a
    truncated episode can be bootstrapped from its final observation. Episode returns and
    lengths are reported by gymnasium's RecordEpisodeStatistics. The env's own per-step info is left out
    (``WithoutInfo``): nothing in training reads it. Each env is wrapped in ``champion.envs.env_state.EpisodeJournal``,
    which seeds every episode from the run and records how the env got where it is, so a resume can restore
    it exactly (``champion.envs.env_state.capture`` / ``restore``).
    """
    make = functools.partial(make_env_without_info, env_id, options, training=True, **env_kwargs)
    make_one = [functools.partial(EpisodeJournal, make, AleSnapshot() if is_atari(env_id) else None)] * num_envs
    vector_class = gym.vector.AsyncVectorEnv if vectorization == "async" else gym.vector.SyncVectorEnv
    return RecordEpisodeStatistics(vector_class(make_one, autoreset_mode=AutoresetMode.SAME_STEP))


def make_env_without_info(env_id: str, options: EnvOptions = EnvOptions(), training: bool = False,
                          **env_kwargs: Any) -> gym.Env:
    """``make_env`` without the env's per-step info, for the training and evaluation vector envs: nothing reads
    it there, and a vector env batches every key of it at every step (a MuJoCo env reports 4-9 numbers)."""
    return WithoutInfo(make_env(env_id, options, training=training, **env_kwargs))


class WithoutInfo(gym.Wrapper):
    """Returns an empty info dict from ``step`` and ``reset``; the vector env still adds its own keys
    (``final_obs``, ``final_info``, now always empty, and the episode statistics of RecordEpisodeStatistics)."""

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, _ = self.env.step(action)
        return observation, reward, terminated, truncated, {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        observation, _ = self.env.reset(seed=seed, options=options)
        return observation, {}


def make_eval_env(env_id: str, num_episodes: int, render_mode: str | None = None,
                  options: EnvOptions = EnvOptions()) -> gym.vector.VectorEnv:
    """Evaluation envs, one per episode, stepped together in this process; separate from the training envs.

    With ``render_mode`` only the first env renders (one window, or one video), so the episodes and
    their returns are exactly those of an evaluation without rendering.
    """
    if render_mode == "rgb_array":  # off-screen: without a display, SDL's probing only prints an error line
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        if not os.environ.get("DISPLAY"):  # MuJoCo would try GLFW first, which needs one; EGL renders headless
            os.environ.setdefault("MUJOCO_GL", "egl")

    def make(index: int) -> Callable[[], gym.Env]:
        kwargs = {"render_mode": render_mode} if render_mode and index == 0 else {}
        return functools.partial(make_env_without_info, env_id, options, **kwargs)

    return gym.vector.SyncVectorEnv([make(index) for index in range(num_episodes)])


def as_float_batch(observations: Any) -> np.ndarray:
    """Observations as a float32 array (no copy when they already are)."""
    return np.asarray(observations, dtype=np.float32)
