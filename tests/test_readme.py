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
