"""MuJoCo presets (issue 20): RL Zoo's settings as champion config, and, with the mujoco extra installed, a short
HalfCheetah-v5 run whose best-policy GIF, replay, video, export and resume work as for the other envs."""

import importlib.util
import io
import json
import subprocess

import numpy as np
import pytest

from crash_helpers import CHAMPION
from hostile_helpers import champion as champion_here
from champion.runners.configure import resolve_config

MUJOCO = importlib.util.find_spec("mujoco") is not None
PRESETS = {  # env: (num_envs, num_steps, minibatch, epochs, learning rate, hidden sizes, activation, ortho init)
    "HalfCheetah-v5": (1, 512, 64, 20, 2.0633e-05, (256, 256), "relu", False),
    "Hopper-v5": (1, 2048, 64, 10, 3e-4, (64, 64), "tanh", True),  # RL Zoo's MuJoCo defaults
    "Walker2d-v5": (1, 512, 32, 20, 5.05041e-05, (64, 64), "tanh", True),
    "Ant-v5": (1, 2048, 64, 10, 3e-4, (64, 64), "tanh", True),
    "Swimmer-v5": (4, 1024, 256, 10, 6e-4, (64, 64), "tanh", True),
}


@pytest.mark.parametrize("env_id", PRESETS)
def test_mujoco_presets_carry_rl_zoos_settings_with_normalised_observations_and_rewards(env_id):
    config, note = resolve_config(env_id, "ppo")
    assert note is None and config.total_steps == 1_000_000
    network, ppo = config.network, config.ppo
    assert (config.num_envs, ppo.num_steps, ppo.minibatch_size, ppo.epochs, ppo.learning_rate, network.hidden_sizes,
            network.activation, network.ortho_init) == PRESETS[env_id]
    assert network.normalize_observations and config.reward_scaling


def test_value_hidden_sizes_are_refused_with_a_shared_torso():
    from champion.agents.config import ConfigError

    with pytest.raises(ConfigError, match="network.value_hidden_sizes needs two torsos"):
        resolve_config("Pendulum-v1", "ppo", {"network.value_hidden_sizes": [32], "network.shared_torso": True})


@pytest.mark.skipif(not MUJOCO, reason="needs the mujoco extra: pip install -e '.[mujoco]'")
def test_a_short_halfcheetah_run_records_its_gif_replays_and_exports(tmp_path, capsys):
    """The GIF and the video render in a process without TensorFlow (Mesa's EGL crashed beside it). A run this short
    records no GIF itself (one takes about 15 s, more than 4% of it: tests/test_crown_around.py), so its best is
    recorded here as a longer run records it. Its resume is tested, bit for bit, in tests/test_resume_matrix.py."""
    from PIL import Image

    from champion.runners.logs.media import BestPolicyMedia
    from champion.runners.replay import load_policy

    options = ["--results-dir", str(tmp_path), "--run-name", "cheetah", "--eval-every", "1024", "--eval-episodes", "2",
               "--set", "checkpoint_every=1024", "-q", "--no-media",
               # what is tested here is the same with fewer, uncompiled epochs and no crown (test_crown.py)
               "--set", "ppo.epochs=2", "--set", "ppo.jit_compile=false", "--set", "crown.at_end=false"]
    first = subprocess.run(CHAMPION + ["train", "HalfCheetah-v5", "--total-steps", "2048"] + options,
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "settotalmass" not in first.stderr and not (tmp_path / "MUJOCO_LOG.TXT").exists()  # MuJoCo's own log
    run_dir = tmp_path / "HalfCheetah-v5" / "ppo" / "cheetah"
    policy, manifest = load_policy(run_dir)
    written = []
    media = BestPolicyMedia("HalfCheetah-v5", manifest["eval_seeds"][0],
                            lambda step, gif, width, height: written.append(gif), budget=1.0)
    assert media.offer(manifest["step"], wall_seconds=1e6, policy=policy)
    [gif] = written
    assert Image.open(io.BytesIO(gif)).n_frames > 1  # an animated GIF of the best policy
    # replay and export in this process (as commands: a child of their own would only start TensorFlow again)
    capsys.readouterr()
    assert champion_here("replay", run_dir, "--json") == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["mean_return"] == outcome["recorded_mean_return"]
    assert champion_here("export", run_dir) == 0


@pytest.mark.skipif(not MUJOCO, reason="needs the mujoco extra: pip install -e '.[mujoco]'")
def test_replay_writes_a_mujoco_video_of_the_recorded_episode(tmp_path):
    """InvertedPendulum-v5: MuJoCo, and episodes short enough to render whole in a test. Trained in this process
    (nothing rendered there); the replay that writes the video is a command of its own."""
    assert champion_here("train", "InvertedPendulum-v5", "--total-steps", "1024", "--eval-every", "1024",
                         "--results-dir", tmp_path, "--run-name", "pendulum", "--no-media", "-q",
                         "--set", "ppo.num_steps=128") == 0
    run_dir, video = tmp_path / "InvertedPendulum-v5" / "ppo" / "pendulum", tmp_path / "first.mp4"
    replayed = subprocess.run(CHAMPION + ["replay", str(run_dir), "--json", "--video", str(video)],
                              capture_output=True, text=True, timeout=300)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    outcome = json.loads(replayed.stdout)
    assert outcome["mean_return"] == outcome["recorded_mean_return"]
    import imageio.v2 as imageio

    brightest = [int(np.max(frame)) for frame in imageio.get_reader(video)]  # a lit pole on a dark background
    assert len(brightest) == outcome["lengths"][0] + 1  # the reset's frame and one per step of the first episode
    assert min(brightest) > 100  # rendered, not black
