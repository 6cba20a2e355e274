"""Exact resume on every kind of env: SIGKILL in the middle of a checkpoint's save (the envs in the middle of their
episodes), resume, and compare with a run that was never stopped: every evaluation after the resume, the final
weights and every saved best policy, bit for bit. Plus an env that cannot be resumed exactly, which says so."""

import importlib.util
import json
import signal

import pytest

from crash_helpers import KILL_POINTS, ROLLOUTS, champion, kill_resume_and_compare, run_options
from champion.envs.env_state import Snapshot
from champion.runners.store.checkpoints import read_checkpoint
from champion.runners.store.run_folder import env_folder_name


def needs(module: str, extra: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs the {extra} extra")


BOX2D, MUJOCO, ATARI = needs("Box2D", "box2d"), needs("mujoco", "mujoco"), needs("ale_py", "atari")

# (env, algo, num_envs, num_steps, extra --set pairs, where the kill lands): tiny rollouts, a checkpoint and an
# evaluation after each. CartPole's cases are in test_resume.py and test_crash.py, LunarLander on Ray in
# test_ray.py.
TF_WRITTEN, STATE_WRITTEN, BEFORE_RENAME = KILL_POINTS
CASES = [
    pytest.param("Acrobot-v1", "ppo", 4, 32, [], TF_WRITTEN, id="acrobot"),
    # slow: test_api.py's LunarLander case resumes this engine's discrete LunarLander with PPO bit for bit (in 3 s),
    # the two cases below kill LunarLander mid-save on this engine, and test_ray.py's LunarLander case is this one
    # (PPO, 4 envs of 32 steps, the same kill point) with its envs on Ray workers
    pytest.param("LunarLander-v3", "ppo", 4, 32, [], STATE_WRITTEN, id="lunarlander", marks=[BOX2D, pytest.mark.slow]),
    # a user's Keras torso (tests/user_torsos.py, acting in TensorFlow) on Box2D and MuJoCo: its runs resume as exactly
    pytest.param("LunarLanderContinuous-v3", "ppo", 2, 32, ["network.torso=user_torsos:residual_torso"], BEFORE_RENAME,
                 id="lunarlander-continuous-torso", marks=BOX2D),
    pytest.param("LunarLander-v3", "a2c", 4, 8, ["vectorization=async"], TF_WRITTEN, id="lunarlander-a2c-async",
                 marks=BOX2D),
    pytest.param("HalfCheetah-v5", "ppo", 1, 64, [], STATE_WRITTEN, id="halfcheetah", marks=MUJOCO),
    pytest.param("Hopper-v5", "ppo", 2, 32, ["network.torso=user_torsos:residual_torso"], BEFORE_RENAME,
                 id="hopper-torso", marks=MUJOCO),
    # 320 steps per env at the checkpoint resumed from: past the first game (both envs), so the journal starts from
    # the emulator's state and spans the lives lost since. test_api.py's small CNN: each run took 40% more CPU time
    # with the preset's, and what is resumed (envs, RNGs, optimizer) is the same whatever the network's size
    pytest.param("ALE/Breakout-v5", "ppo", 2, 160, ["network.cnn_layers=[[8,8,4],[8,4,2]]", "network.cnn_features=16"],
                 STATE_WRITTEN, id="breakout", marks=ATARI),
    pytest.param("toy_envs:champion-test/DictCue-v0", "ppo", 2, 10, [], BEFORE_RENAME, id="dict-observations"),
]
@pytest.mark.parametrize("env_id, algo, num_envs, num_steps, pairs, kill_at", CASES)
def test_a_run_killed_mid_save_resumes_exactly_like_a_straight_run(tmp_path, env_id, algo, num_envs, num_steps, pairs,
                                                                   kill_at):
    options = run_options(tmp_path, algo, num_envs, num_steps, pairs)
    saved = kill_resume_and_compare(tmp_path, env_id, algo, options, kill_at=kill_at)
    if env_id.startswith("ALE/"):
        starts = [journal.segments[0][0] for journal in saved["env_state"].journals]
        assert any(isinstance(start, Snapshot) for start in starts), starts


def test_an_env_that_is_not_deterministic_says_so_at_its_first_checkpoint_and_restarts_on_resume(tmp_path):
    env_id = "toy_envs:champion-test/Unseeded-v0"
    options = run_options(tmp_path, "ppo", 2, 16, [])
    killed = champion(["train", env_id, "--run-name", "unseeded"] + options,
                      env={"CHAMPION_FAULT_KILL_AT": KILL_POINTS[1]})
    assert killed.returncode == -signal.SIGKILL
    warnings = [line for line in killed.stderr.splitlines() if "cannot be resumed exactly" in line]
    assert len(warnings) == 1, killed.stderr[-3000:]  # said once, at the first checkpoint
    assert "champion-test/Unseeded-v0 envs 0, 1 cannot be resumed exactly (replaying its episode" in warnings[0]
    assert warnings[0].endswith("a resume restarts their current episodes, so a resumed run is not bit-exact")
    run_dir = tmp_path / env_folder_name(env_id) / "ppo" / "unseeded"
    [checkpoint] = sorted((run_dir / "checkpoints").glob("ckpt-*"))[-1:]
    assert read_checkpoint(checkpoint).manifest["envs_exact"] == [False, False]
    listed = json.loads(champion(["runs", "--results-dir", str(tmp_path), "--json"]).stdout)
    assert [(run["status"], run["resume_step"], run["envs_exact"]) for run in listed] == [("crashed", 64, [False, False])]
    again = champion(["train", "--resume", str(run_dir)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "at step 64: 0 of 2 envs restored exactly" in again.stderr
    restarted = [line for line in again.stderr.splitlines() if "this resume restarted" in line]
    assert len(restarted) == 1 and "envs 0, 1 cannot be resumed exactly" in restarted[0]
    listed = json.loads(champion(["runs", "--results-dir", str(tmp_path), "--json"]).stdout)
    assert listed[0]["status"] == "finished" and listed[0]["env_steps"] == ROLLOUTS * 32
