"""An Atari evaluation game whose screen stops changing ends after STALLED_STEPS steps (envs/atari.py), in place of
ALE's 27,000-step cap; a game that goes on is not cut."""

import gymnasium as gym
import numpy as np
import pytest

from champion.envs.atari import STALLED_STEPS, EndStalledGame


class StillAfter(gym.Env):
    """The screen changes (and pays 1) for ``moving`` steps, then stays as it is, paying nothing; never ends."""

    observation_space = gym.spaces.Box(0, 255, (4,), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, moving: int) -> None:
        self.moving, self.steps = moving, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(4, np.uint8), {}

    def step(self, action):
        self.steps += 1
        moved = self.steps <= self.moving
        screen = np.full(4, min(self.steps, self.moving) % 256, np.uint8)
        return screen, float(moved), False, False, {}


def play(env: gym.Env, most: int) -> tuple[int, float, bool]:
    env.reset(seed=0)
    total = 0.0
    for step in range(1, most + 1):
        _, reward, terminated, truncated, _ = env.step(0)
        total += reward
        if terminated or truncated:
            return step, total, truncated
    return most, total, False


def test_a_still_screen_ends_the_game_with_its_score_after_the_stalled_steps():
    assert play(EndStalledGame(StillAfter(moving=30)), 5 * STALLED_STEPS) == (30 + STALLED_STEPS, 30.0, True)


def test_a_screen_that_keeps_changing_is_not_cut():
    assert play(EndStalledGame(StillAfter(moving=3 * STALLED_STEPS)), 3 * STALLED_STEPS) == (
        3 * STALLED_STEPS, 3.0 * STALLED_STEPS, False)


def test_a_breakout_game_that_is_never_served_ends_after_the_stalled_steps():
    """With every action sticky the FIRE that serves the ball never reaches the game: the screen stays still, and
    the evaluation env ends the game after STALLED_STEPS steps instead of ALE's 27,000."""
    pytest.importorskip("ale_py", reason="needs the atari extra")
    pytest.importorskip("cv2", reason="needs the atari extra")
    from champion.envs.atari import make_atari

    env = make_atari("ALE/Breakout-v5", training=False, repeat_action_probability=1.0)
    try:
        steps, score, truncated = play(env, 27_000)
    finally:
        env.close()
    assert truncated and score == 0.0
    assert STALLED_STEPS <= steps <= STALLED_STEPS + 2
