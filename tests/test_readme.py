"""The README's two commands are the ones users and CI actually run."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())[:2]


def test_readme_starts_with_the_two_commands():
    setup_and_train, setup_and_test = readme_commands()
    assert "pip install -e ." in setup_and_train
    assert "champion train CartPole-v1" in setup_and_train and "champion replay results/CartPole-v1/ppo" in setup_and_train
    assert "pip install -e '.[dev]'" in setup_and_test and "pytest" in setup_and_test


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines


def test_the_run_folder_layouts_name_what_a_run_writes(tmp_path):
    """README's and results/README.md's run-folder layouts list every file and folder a finished run leaves."""
    from champion.runners.configure import resolve_config
    from champion.runners.training import train

    config, _ = resolve_config("CartPole-v1", "ppo", {"total_steps": 512, "eval_every": 256, "checkpoint_every": 256,
                                                      "media": False, "results_dir": str(tmp_path), "run_name": "r"})
    run_dir = train(config, progress=False).run_dir
    written = sorted(path.name for path in run_dir.iterdir())
    assert written == ["best", "checkpoints", "config.yaml", "evaluations.csv", "status.json", "summary.json", "tb"]
    checkpoint_names = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert checkpoint_names == ["ckpt-0000000256", "ckpt-0000000512"]
    for layout in ((ROOT / "README.md").read_text().split("## What a run folder holds")[1].split("```")[1],
                   (ROOT / "results" / "README.md").read_text().split("```")[1]):
        listed = {line.split()[0].rstrip("/") for line in layout.splitlines()[1:] if line.strip()}
        assert set(written) <= listed, set(written) - listed
