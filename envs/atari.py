"""Atari through ale-py (``pip install -e '.[atari]'``): the standard preprocessing for training, full games
with raw scores for evaluation and replay.

Training (``training=True``) follows the usual recipe (Mnih et al. 2015; SB3's AtariWrapper): gymnasium's
AtariPreprocessing (up to 30 no-op starts, 4 frames per step with the max of the last two, 84x84
grayscale), FIRE pressed when a life starts in games that need it, the loss of a life ending the episode
for the learner (the game goes on at the next reset), and rewards clipped to their sign. Evaluation and
replay play whole games with the same observations and FIRE, but raw rewards and every life, up to ALE's cap of
108,000 frames (27,000 steps; Machado et al. 2018), and a stalled game ends sooner (``EndStalledGame``). Frame
stacking (4 in the Atari presets) is ``frame_stack``, applied by ``champion.envs.factory.make_env``.

Which ids: ``ALE/<Game>-v5`` and ale-py's older ids, ``<Game>NoFrameskip-v4`` (RL Zoo's; no sticky actions) and
``<Game>NoFrameskip-v0``, are trained alike, each with its own ale-py settings (sticky actions, action set) except
frame skipping, which the preprocessing does once: the game itself runs with ``frameskip=1``. ``<Game>-v4`` and
``<Game>-v0`` skip a random 2 to 4 frames per step inside the game, which the preprocessing's fixed 4 frames would
silently replace, so they are refused (``refusal``), by ``champion envs`` and ``champion train`` alike.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np

FIRE = 1


ALE_ENTRY_POINT = "ale_py.env:AtariEnv"
"""What ale-py registers every game under, whatever the id."""
OLDER_ID = re.compile(r"(?P<game>[A-Z][A-Za-z]*?)(?P<no_frameskip>NoFrameskip)?-v[04]")
"""The shape of ale-py's ids outside the ALE namespace: ``Breakout-v4``, ``BreakoutNoFrameskip-v4`` (and -v0)."""


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` names an ALE game: ``ALE/Breakout-v5``, or one of ale-py's older ids such as RL Zoo's
    ``BreakoutNoFrameskip-v4``, which gymnasium knows only once ale-py is registered (done here when needed; without
    ale-py, a NoFrameskip id is taken for a game, so that the missing extra is named)."""
    if env_id.startswith("ALE/"):
        return True
    match = OLDER_ID.fullmatch(env_id)
    if match is None:
        return False
    spec = gym.registry.get(env_id)
    if spec is None:
        try:
            register()
        except gym.error.DependencyNotInstalled:
            return match["no_frameskip"] is not None
        spec = gym.registry.get(env_id)
    return spec is not None and spec.entry_point == ALE_ENTRY_POINT


def refusal(env_id: str) -> str | None:
    """Why champion does not train the ALE game ``env_id`` (one line, naming ids it does train), or None when it
    does. Read from the id's ale-py registration: a game that skips a random number of frames itself
    (``frameskip=(2, 5)``: ``Breakout-v4``, ``Breakout-v0``) would get the preprocessing's 4 frames instead, a
    different game under the same name."""
    register()
    frameskip = gym.spec(env_id).kwargs.get("frameskip", 1)
    if isinstance(frameskip, int):
        return None
    low, high = frameskip
    game = OLDER_ID.fullmatch(env_id)
    name = game["game"] if game else env_id.removeprefix("ALE/").rsplit("-", 1)[0]
    return (f"{env_id} skips a random {low} to {high - 1} frames per step inside the game, which champion's Atari "
            f"preprocessing (4 frames a step, the max of the last two) would replace; train {name}NoFrameskip-v4 "
            f"(RL Zoo's) or ALE/{name}-v5")


def kwargs_refusal(env_id: str, env_kwargs: dict[str, Any]) -> str | None:
    """Why ``env_kwargs`` cannot go to the ALE game ``env_id`` (one line), or None: the preprocessing skips the
    frames and reads the screen itself, so a ``frameskip`` would skip twice and an ``obs_type`` would be ignored."""
    if "frameskip" in env_kwargs:
        return (f"env_kwargs frameskip={env_kwargs['frameskip']!r}: champion's Atari preprocessing skips 4 frames a "
                f"step itself, so {env_id} takes no frameskip; leave it out")
    obs_type = env_kwargs.get("obs_type", "rgb")
    if obs_type != "rgb":
        return (f"env_kwargs obs_type={obs_type!r}: champion trains ALE games on the screen (84x84 grayscale, read "
                f"by the preprocessing), so {env_id} would ignore it; leave it out")
    return None


def register() -> None:
    """Register ale-py's envs with gymnasium (importing ale-py does it); DependencyNotInstalled without ale-py."""
    try:
        import ale_py
    except ImportError as error:
        raise gym.error.DependencyNotInstalled(f"ale-py is not installed ({error})") from error
    gym.register_envs(ale_py)


def make_atari(env_id: str, training: bool, **env_kwargs: Any) -> gym.Env:
    """The game ``env_id`` with the training or evaluation preprocessing (frames are skipped by the wrapper, so
    the ALE env itself gets ``frameskip=1``); ValueError for an id ``refusal`` refuses."""
    register()
    problem = refusal(env_id)
    if problem is not None:
        raise ValueError(problem)
    env = gym.make(env_id, frameskip=1, **env_kwargs)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True,
                                          terminal_on_life_loss=False)
    if FIRE < env.action_space.n and env.unwrapped.get_action_meanings()[FIRE] == "FIRE":
        env = FireOnNewLife(env)
    if training:
        env = gym.wrappers.TransformReward(EpisodicLife(env), np.sign)
    else:
        env = EndStalledGame(env)
    return env


class FireOnNewLife(gym.Wrapper):
    """Press FIRE when a game starts and after each lost life (games such as Breakout wait for it otherwise),
    so that neither training nor a whole-game evaluation stalls on a ball that never comes."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        observation, info = self.env.reset(**kwargs)
        observation, _, terminated, truncated, info = self.env.step(FIRE)
        if terminated or truncated:
            observation, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        if lives < self.lives and not (terminated or truncated):
            observation, more, terminated, truncated, info = self.env.step(FIRE)
            reward += more
        self.lives = lives
        return observation, reward, terminated, truncated, info


STALLED_STEPS = 1_000
"""Steps (4,000 frames, about 67 s of play) of an unchanged screen after which an evaluation game is over."""


class EndStalledGame(gym.Wrapper):
    """Evaluation and replay only: a game whose screen has not changed for ``STALLED_STEPS`` steps is over
    (truncated, with the score it has). A deterministic policy acts the same on the same screen, so such a game
    would sit there until ALE's 108,000-frame cap: in Breakout, when the one FIRE after a lost life is swallowed
    by a sticky action (about 1 game in 40 for a weak policy) and the policy never serves itself, 27,000 steps
    of nothing that cost more than a short training run. The score is the one the cap would give, unless a game
    scores by itself after a minute of a still screen."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        observation, info = self.env.reset(**kwargs)
        self.last, self.unchanged = np.array(observation), 0
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.unchanged = self.unchanged + 1 if np.array_equal(observation, self.last) else 0
        if self.unchanged:
            truncated = truncated or self.unchanged >= STALLED_STEPS
        else:
            self.last = np.array(observation)
        return observation, reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """Training only: a lost life ends the learner's episode, while the game goes on at the next reset (a real
    reset only once the game is over). Episode statistics therefore count lives, not games."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives, self.game_over = 0, True

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return observation, reward, terminated, truncated, info

    @property
    def resets_fully(self) -> bool:
        """Whether the next reset starts a new game (else it goes on with this one): ``champion.envs.env_state``'s journal
        keeps recording across a reset that does not."""
        return self.game_over

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        if self.game_over:
            observation, info = self.env.reset(**kwargs)
        else:  # go on with the game: one no-op step past the lost life
            observation, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                observation, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return observation, info


class AleSnapshot:
    """What an unseeded reset of an ALE game depends on: the emulator with its random generator (sticky actions)
    and the env's numpy generator (the no-op starts). ``champion.envs.env_state.EpisodeJournal`` keeps it at each new game
    instead of reseeding the game, which reloads its ROM (92 ms a reset against 5 ms unseeded, on Breakout)."""

    def capture(self, env: gym.Env) -> tuple[bytes, dict[str, Any]]:
        """The emulator as ALE serialises it (bytes, so that a checkpoint holds data, not an object) and the numpy
        generator's state."""
        game = env.unwrapped
        return game.ale.cloneState(include_rng=True).serialize(), game.np_random.bit_generator.state

    def restore(self, env: gym.Env, state: tuple[bytes, dict[str, Any]]) -> None:
        emulator, generator = state
        game = env.unwrapped
        import ale_py  # installed: this env is an ALE game

        game.ale.restoreState(ale_py.ALEState(emulator))
        game.np_random.bit_generator.state = generator
