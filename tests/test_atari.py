"""Atari's training and evaluation wrappers, on a scripted stand-in for an ALE game (no ale-py needed), and on
Breakout itself when the atari extra is installed; RL Zoo's ids (BreakoutNoFrameskip-v4) trained like ALE/ ids, and
the older ids with a random frame skip refused in one line by `champion envs` and `champion train` alike."""

import csv
import importlib.util
import json
import re
import subprocess
import sys

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


# RL Zoo's ids (issue 32): ale-py's older ids, trained like ALE/ ids or refused in one line, as `champion envs` says

needs_atari = pytest.mark.skipif(importlib.util.find_spec("ale_py") is None or importlib.util.find_spec("cv2") is None,
                                 reason="needs the atari extra")
BREAKOUT_IDS = {"ALE/Breakout-v5": "", "BreakoutNoFrameskip-v4": "", "BreakoutNoFrameskip-v0": "",
                "Breakout-v4": "random", "Breakout-v0": "random"}
"""Every id ale-py 0.12 registers for Breakout, and whether champion refuses it (for its random frame skip)."""
RANDOM_SKIP = ("{id} skips a random 2 to 4 frames per step inside the game, which champion's Atari preprocessing "
               "(4 frames a step, the max of the last two) would replace; train BreakoutNoFrameskip-v4 (RL Zoo's) or "
               "ALE/Breakout-v5")
CLI = [sys.executable, "-c", "import sys\nfrom champion.runners.cli.main import main\ntry:\n    main()\nfinally:\n"
       "    print('tensorflow imported:', 'tensorflow' in sys.modules)"]


@needs_atari
def test_ale_pys_older_ids_are_atari_games_with_the_atari_presets_and_extra():
    from champion.envs.atari import is_atari
    from champion.envs.factory import required_extra

    games = ["ALE/Breakout-v5", "BreakoutNoFrameskip-v4", "PongNoFrameskip-v0", "SpaceInvaders-v4", "MsPacman-v0"]
    others = ["CartPole-v1", "MountainCar-v0", "Ant-v4", "FrozenLake-v1", "Breakout-v3", "Breakout-v5",
              "FooNoFrameskip-v4", "mymodule:BreakoutNoFrameskip-v4"]
    assert [is_atari(env_id) for env_id in games + others] == [True] * len(games) + [False] * len(others)
    assert [required_extra(env_id) for env_id in games] == ["atari"] * len(games)
    for algo in ("ppo", "a2c"):
        assert load("BreakoutNoFrameskip-v4", algo) == load("ALE/Breakout-v5", algo) != load("CartPole-v1", algo)
    assert load("MountainCar-v0", "ppo") != load("ALE/Breakout-v5", "ppo")


def test_a_no_frameskip_id_without_the_extra_names_it(monkeypatch):
    from champion.envs import atari

    def missing():
        raise gym.error.DependencyNotInstalled("ale-py is not installed")

    monkeypatch.setattr(atari, "register", missing)
    monkeypatch.delitem(gym.registry, "BreakoutNoFrameskip-v4", raising=False)  # as in a process without ale-py
    with pytest.raises(EnvError, match=r"^BreakoutNoFrameskip-v4 needs champion's atari extra, which is not "
                                       r"installed: pip install -e '\.\[atari\]'"):
        describe_env("BreakoutNoFrameskip-v4")


@needs_atari
def test_champion_envs_rows_agree_with_what_champion_train_accepts_and_refuses(tmp_path):
    listed = subprocess.run(CLI[:2] + [CLI[2].replace("main()", "main(['envs', 'Breakout', '--json'])")],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = {row["env_id"]: row for row in json.loads(listed.stdout.splitlines()[0])}
    assert {env_id: row["problem"] for env_id, row in rows.items()} == {
        env_id: RANDOM_SKIP.format(id=env_id) if why else "" for env_id, why in BREAKOUT_IDS.items()}
    assert rows["BreakoutNoFrameskip-v4"]["presets"] == rows["ALE/Breakout-v5"]["presets"] == ["a2c", "ppo"]
    for env_id, row in rows.items():
        if row["problem"]:  # refused with the same line, before TensorFlow is imported
            refused = subprocess.run(CLI + ["train", env_id, "--total-steps", "256", "--results-dir", str(tmp_path)],
                                     capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            assert (refused.returncode, refused.stderr.splitlines()[-1:]) == (2, [f"champion train: error: {row['problem']}"])
            assert refused.stdout == "tensorflow imported: False\n"
        else:  # what `champion train` checks before TensorFlow: the env it trains on (Atari preset: 4 frames)
            [leaf] = describe_env(env_id, EnvOptions(frame_stack=4)).observation_leaves
            assert (leaf.kind, leaf.image_shape) == ("image", (84, 84, 4))
    assert not any(tmp_path.iterdir())


@needs_atari
def test_every_refused_older_id_names_two_ids_champion_trains():
    from champion.envs.atari import ALE_ENTRY_POINT, refusal, register

    register()
    older = [env_id for env_id, spec in gym.registry.items()
             if spec.entry_point == ALE_ENTRY_POINT and not env_id.startswith("ALE/")]
    refused = {env_id: refusal(env_id) for env_id in older if refusal(env_id)}
    assert len(older) == 2 * len(refused) > 200  # every game's -v0 and -v4, not its NoFrameskip ones
    assert all(env_id.endswith(("-v0", "-v4")) and "NoFrameskip" not in env_id for env_id in refused)
    for env_id, line in refused.items():
        suggested = line.rpartition("; train ")[2].replace(" (RL Zoo's)", "").split(" or ")
        assert len(suggested) == 2 and all(name in gym.registry and refusal(name) is None for name in suggested), line
    line = refused["MontezumaRevenge-v0"]
    assert line.endswith("; train MontezumaRevengeNoFrameskip-v4 (RL Zoo's) or ALE/MontezumaRevenge-v5")
    with pytest.raises(EnvError, match=f"^{re.escape(line)}$"):
        describe_env("MontezumaRevenge-v0")


@needs_atari
def test_a_no_frameskip_step_is_four_frames_with_the_ids_own_sticky_actions_and_the_ale_preprocessing():
    from champion.envs.factory import make_env

    def wrappers(env):
        names = []
        while isinstance(env, gym.Wrapper):
            names, env = names + [type(env).__name__], env.env
        return names

    zoo, ale = make_env("BreakoutNoFrameskip-v4"), make_env("ALE/Breakout-v5", repeat_action_probability=0.0)
    game = zoo.unwrapped
    assert (game._frameskip, game.ale.getFloat("repeat_action_probability"), zoo.action_space.n) == (1, 0.0, 4)
    assert make_env("BreakoutNoFrameskip-v0").unwrapped.ale.getFloat("repeat_action_probability") == 0.25
    assert wrappers(zoo) == wrappers(ale) and "EndStalledGame" in wrappers(zoo)
    training = make_env("BreakoutNoFrameskip-v4", training=True)
    assert wrappers(training) == wrappers(make_env("ALE/Breakout-v5", training=True))
    assert {"EpisodicLife", "TransformReward", "FireOnNewLife", "AtariPreprocessing"} <= set(wrappers(training))

    actions = np.random.default_rng(0).integers(0, 4, 300)
    (observation, _), (expected, _) = zoo.reset(seed=7), ale.reset(seed=7)
    frames = []
    for action in actions:
        before, lives = game.ale.getEpisodeFrameNumber(), game.ale.lives()
        observation, reward, terminated, truncated, _ = zoo.step(action)
        expected, expected_reward, *ends = ale.step(action)[:4]
        assert np.array_equal(observation, expected) and (reward, terminated, truncated) == (expected_reward, *ends)
        if game.ale.lives() == lives:  # a lost life adds FIRE's step
            frames.append(game.ale.getEpisodeFrameNumber() - before)
        if terminated or truncated:
            break
    assert set(frames) == {4} and len(frames) > 100


TINY_ATARI = dict(num_envs=2, eval_episodes=2, media=False, progress=False, engine="gymnasium",
                  eval_in_background=False, ppo={"num_steps": 64, "minibatch_size": 64, "epochs": 1, "jit_compile": False},
                  network={"cnn_layers": [[8, 8, 4], [8, 4, 2]], "cnn_features": 16})
"""A few hundred steps of PPO on a small CNN (test_api's): what runs on the env, not what it learns."""


@needs_atari
def test_rl_zoos_breakout_trains_with_the_atari_preset_and_its_crowned_best_replays_its_held_out_episodes(tmp_path):
    import yaml

    import champion

    result = champion.train("BreakoutNoFrameskip-v4", total_steps=256, eval_every=128, results_dir=str(tmp_path),
                            crown={"episodes": 4, "race": False, "workers": 1}, **TINY_ATARI)
    assert result.env_steps == 256 and result.champion_entry is not None
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert (config["env_id"], config["frame_stack"], config["ppo"]["clip_range"]) == ("BreakoutNoFrameskip-v4", 4, 0.1)
    crowned = json.loads((result.run_dir / "best" / "champion.json").read_text())
    replayed = champion.replay(result.run_dir)
    assert replayed.crowned and replayed.result.mean_return == replayed.recorded_mean_return == crowned["held_out_mean"]
    assert (list(replayed.result.seeds), list(replayed.result.returns), list(replayed.result.lengths)) == (
        crowned["held_out_seeds"], crowned["returns"], crowned["lengths"])


@needs_atari
def test_a_no_frameskip_env_is_made_in_a_fresh_process_as_on_a_ray_worker():
    """A Ray worker, an async env's process or a crown process imports champion, not ale-py: the id is found."""
    code = ("import sys\nfrom champion.envs.factory import EnvOptions, make_vector_env\n"
            "assert 'ale_py' not in sys.modules\n"
            "envs = make_vector_env('BreakoutNoFrameskip-v4', 1, options=EnvOptions(frame_stack=4))\n"
            "print(envs.reset(seed=0)[0].shape, type(envs.env.envs[0]._snapshot).__name__)")
    made = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    assert made.stdout.splitlines()[-1] == "(1, 84, 84, 4) AleSnapshot"


@needs_atari
@pytest.mark.slow
def test_rl_zoos_breakout_stopped_and_resumed_learns_what_a_straight_run_learns(tmp_path):
    """The resume replays the env journals, which start from the emulator's state after the first game."""
    import champion
    from champion.envs.env_state import Snapshot
    from champion.runners.store.checkpoints import read_checkpoint

    class StopAt512(champion.Callback):
        def on_evaluation(self, step, result):
            return champion.Stop("halfway") if step == 512 else None

    settings = dict(TINY_ATARI, total_steps=1024, eval_every=256, schedule_steps=1024, results_dir=str(tmp_path),
                    crown={"at_end": False})
    stopped = champion.train("BreakoutNoFrameskip-v4", run_name="stopped", callbacks=[StopAt512()], **settings)
    [checkpoint] = sorted((stopped.run_dir / "checkpoints").glob("ckpt-*"))[-1:]
    journals = read_checkpoint(checkpoint).state["env_state"].journals
    assert any(isinstance(journal.segments[0][0], Snapshot) for journal in journals)
    resumed = champion.resume(stopped.run_dir, progress=False)
    straight = champion.train("BreakoutNoFrameskip-v4", run_name="straight", **settings)
    assert resumed.env_steps == straight.env_steps == 1024
    assert evaluation_rows(stopped.run_dir) == evaluation_rows(straight.run_dir)
    assert same_weights(stopped.run_dir / "best" / "final-step-1024", straight.run_dir / "best" / "final-step-1024")


def evaluation_rows(run_dir):
    with open(run_dir / "evaluations.csv", newline="") as handle:
        return [{key: value for key, value in row.items() if key != "wall_seconds"} for row in csv.DictReader(handle)]


def same_weights(entry, other):
    ours, theirs = np.load(entry / "policy.npz"), np.load(other / "policy.npz")
    return sorted(ours) == sorted(theirs) and all(np.array_equal(ours[name], theirs[name]) for name in ours)


@needs_atari
@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_rl_zoos_breakout_on_ray_workers_evaluates_as_in_process(local_ray, tmp_path):
    pytest.importorskip("ray")
    import champion

    settings = dict(TINY_ATARI, total_steps=512, eval_every=256, results_dir=str(tmp_path), crown={"at_end": False})
    in_process = champion.train("BreakoutNoFrameskip-v4", run_name="in-process", **settings)
    on_ray = champion.train("BreakoutNoFrameskip-v4", run_name="on-ray",
                            **dict(settings, engine="ray", ray={"workers": 2, "envs_per_worker": 1}))
    assert len(on_ray.details.evaluations) == 2 and on_ray.details.evaluations == in_process.details.evaluations
    assert same_weights(on_ray.run_dir / "best" / "final-step-512", in_process.run_dir / "best" / "final-step-512")


@pytest.mark.parametrize("env_kwargs, said", [
    ({"frameskip": 3}, "env_kwargs frameskip=3: champion's Atari preprocessing skips 4 frames a step itself, so "
                       "BreakoutNoFrameskip-v4 takes no frameskip; leave it out"),
    ({"obs_type": "ram"}, "env_kwargs obs_type='ram': champion trains ALE games on the screen (84x84 grayscale, read "
                          "by the preprocessing), so BreakoutNoFrameskip-v4 would ignore it; leave it out")])
def test_env_kwargs_the_preprocessing_would_undo_are_refused(env_kwargs, said):
    """A frame skip would be applied twice and a RAM observation never seen: one line, not a run on the screen."""
    pytest.importorskip("ale_py", reason="needs the atari extra")
    with pytest.raises(EnvError) as error:
        describe_env("BreakoutNoFrameskip-v4", EnvOptions(make_kwargs=tuple(env_kwargs.items())))
    assert str(error.value) == said
