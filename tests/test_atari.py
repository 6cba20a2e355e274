"""Atari's training and evaluation wrappers, on a scripted stand-in for an ALE game (no ale-py needed), and on
Breakout itself when the atari extra is installed."""

import gymnasium as gym
import numpy as np
import pytest

from champion.envs.atari import EpisodicLife, FireOnNewLife
from champion.envs.factory import EnvError, EnvOptions, describe_env
from champion.envs.presets import load


class Lives:
    def __init__(self, game: "ScriptedGame") -> None:
        self.game = game

    def lives(self) -> int:
        return self.game.lives


class ScriptedGame(gym.Env):
    """Three lives; a life is lost every ``life_length`` steps; reward 2 per step; logs the actions it gets."""

    observation_space = gym.spaces.Box(0, 255, (4,), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def __init__(self, life_length: int = 3) -> None:
        self.life_length, self.ale, self.actions, self.resets = life_length, Lives(self), [], 0

    def get_action_meanings(self) -> list[str]:
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]

    def reset(self, *, seed=None, options=None):
        self.lives, self.frame, self.resets = 3, 0, self.resets + 1
        return self._observe(), {}

    def step(self, action):
        self.actions.append(int(action))
        self.frame += 1
        if self.frame % self.life_length == 0:
            self.lives -= 1
        return self._observe(), 2.0, self.lives == 0, False, {}

    def _observe(self):
        return np.full(4, self.frame, np.uint8)


def test_fire_starts_each_life_and_a_whole_game_counts_every_life():
    game = ScriptedGame()
    env = FireOnNewLife(game)
    env.reset(seed=0)
    assert game.actions == [1]  # FIRE at the start of the game
    total, steps, terminated = 0.0, 0, False
    while not terminated:
        _, reward, terminated, _, _ = env.step(3)
        total, steps = total + reward, steps + 1
    # lives end at frames 3, 6, 9: FIRE follows the first two losses (the third ends the game)
    assert game.actions == [1, 3, 3, 1, 3, 3, 1, 3, 3]
    assert (steps, total, game.resets) == (6, 16.0, 1)  # every frame's reward, FIRE's included


def test_a_lost_life_ends_the_learners_episode_but_not_the_game():
    game = ScriptedGame(life_length=4)
    env = EpisodicLife(game)
    observation, _ = env.reset(seed=0)
    episodes = []
    for _ in range(3):
        length, terminated = 0, False
        while not terminated:
            observation, _, terminated, _, _ = env.step(0)
            length += 1
        episodes.append((length, game.lives, game.resets))
        observation, _ = env.reset()
    # three lives of four frames; the game was reset only at the start and once it was over
    assert episodes == [(4, 2, 1), (3, 1, 1), (3, 0, 1)]  # after a soft reset, one no-op frame went by
    assert game.resets == 2 and int(observation[0]) == 0


def test_every_atari_game_has_the_rl_zoo_presets():
    ppo, a2c = load("ALE/Breakout-v5", "ppo"), load("ALE/Pong-v5", "a2c")
    assert (ppo["num_envs"], ppo["frame_stack"], ppo["ppo"]["num_steps"], ppo["ppo"]["minibatch_size"],
            ppo["ppo"]["clip_range"], ppo["ppo"]["learning_rate"]) == (8, 4, 128, 256, 0.1, 2.5e-4)
    assert (a2c["num_envs"], a2c["a2c"]["value_coef"], a2c["a2c"]["entropy_coef"]) == (16, 0.25, 0.01)


def test_breakout_trains_on_84x84x4_and_evaluates_whole_games():
    pytest.importorskip("ale_py", reason="needs the atari extra")
    pytest.importorskip("cv2", reason="needs the atari extra")
    from champion.envs.factory import make_eval_env, make_vector_env

    info = describe_env("ALE/Breakout-v5", EnvOptions(frame_stack=4))
    [leaf] = info.observation_leaves
    assert (leaf.kind, leaf.image_shape, info.action.size) == ("image", (84, 84, 4), 4)
    training = make_vector_env("ALE/Breakout-v5", 1, options=EnvOptions(frame_stack=4))
    evaluation = make_eval_env("ALE/Breakout-v5", 1, options=EnvOptions(frame_stack=4))
    training.reset(seed=0)
    evaluation.reset(seed=0)
    episode_ends = {"training": 0, "evaluation": 0}
    for _ in range(400):
        for name, envs in (("training", training), ("evaluation", evaluation)):
            _, reward, terminated, truncated, _ = envs.step(np.array([3]))  # always LEFT: lives are lost
            assert reward[0] in ((0.0, 1.0) if name == "training" else (0.0, 1.0, 4.0, 7.0))  # clipped, or raw
            episode_ends[name] += int(terminated[0] or truncated[0])
    assert episode_ends["training"] >= 4 * episode_ends["evaluation"] and episode_ends["evaluation"] >= 1
    training.close(), evaluation.close()


def test_an_atari_game_without_the_extra_names_it(monkeypatch):
    from champion.envs import atari

    def missing():
        raise gym.error.DependencyNotInstalled("ale-py is not installed")

    monkeypatch.setattr(atari, "register", missing)
    with pytest.raises(EnvError, match=r"^ALE/Breakout-v5 needs champion's atari extra, which is not installed: "
                                       r"pip install -e '\.\[atari\]'"):
        describe_env("ALE/Breakout-v5")
