"""The example scripts run as a user would run them, on short budgets, and print what they learned."""

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name, steps, cwd, env=None):
    completed = subprocess.run([sys.executable, str(EXAMPLES / name), str(steps)], cwd=cwd,
                               capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_cartpole_example_replays_its_recorded_return(tmp_path):
    output = run_example("train_cartpole.py", 2048, tmp_path)
    best = float(re.search(r"best mean return ([\d.]+)", output).group(1))
    replayed, recorded = map(float, re.search(r"evaluation episodes that made it best: ([\d.]+) \(recorded ([\d.]+)\)", output).groups())
    assert replayed == recorded == best > 0
    champion, held_out = map(float, re.search(r"held-out episodes: ([\d.]+) \(recorded ([\d.]+)\)", output).groups())
    assert champion == held_out > 0


def test_the_custom_env_example_learns_quietly_and_its_own_commands_work_as_written_from_its_folder(tmp_path):
    """`cd examples && python custom_env.py` reaches the known best return with no TensorFlow line on stderr; then
    the docstring's replay and train commands work, as written (the train command on a smaller budget)."""
    import shutil

    champion = [str(Path(sys.executable).parent / "champion")]  # the console script: no current folder on its path
    shutil.copy(EXAMPLES / "custom_env.py", tmp_path / "custom_env.py")
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run([sys.executable, "custom_env.py", "4000"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "best mean return 0.60 (the best possible is 0.60)" in completed.stdout
    # champion.quiet_tensorflow(): not one of TensorFlow's C++ lines ("I0000 00:00:... file.cc:N] ...")
    assert not re.search(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]", completed.stderr, re.MULTILINE), completed.stderr
    commands = [line.split("#")[0].split() for line in (EXAMPLES / "custom_env.py").read_text().splitlines()
                if line.strip().startswith("champion ")]
    assert [command[1] for command in commands] == ["replay", "train"]
    for command in commands:
        shorter = ["--quiet", "--no-media", "--total-steps", "2048"]  # as written, on a tenth of its budget
        done = subprocess.run(champion + command[1:] + (shorter if command[1] == "train" else []),
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "results" / "custom_env_LineWalk-v0" / "ppo").iterdir())) == 2


def test_the_custom_network_example_learns_replays_exports_and_its_replay_command_works_from_its_folder(tmp_path):
    """`cd examples && python custom_network.py` trains PPO with its residual LayerNorm torso on custom_env's LineWalk
    to the known best return, replays it exactly and exports policy.keras (checked against replay's actions), saying
    once that it acts in TensorFlow and showing no TensorFlow line; then the docstring's replay command, which names
    both of the run's modules, replays it from the example's folder."""
    import shutil

    for name in ("custom_network.py", "custom_env.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run([sys.executable, "custom_network.py", "2048"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "best mean return 0.60 (the best possible is 0.60)" in completed.stdout
    assert "replayed on the episodes it was judged on: 0.60 (recorded 0.60)" in completed.stdout
    assert re.search(r"exported: results/custom_env_LineWalk-v0/ppo/[^/]+/export/keras/policy.keras", completed.stdout)
    notes = [line for line in completed.stderr.splitlines() if "acts with it in TensorFlow" in line]
    assert notes == ["note: network.torso custom_network:residual_torso is your own Keras network, so champion acts "
                     "with it in TensorFlow (one call per step), not in numpy"]
    assert not re.search(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]", completed.stderr, re.MULTILINE), completed.stderr
    [command] = [line.split("#")[0].split() for line in (EXAMPLES / "custom_network.py").read_text().splitlines()
                 if line.strip().startswith("champion ")]
    done = subprocess.run([str(Path(sys.executable).parent / "champion"), *command[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mean return 0.60 ± 0.00 (same as recorded: 0.60)" in done.stdout
