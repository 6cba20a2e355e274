"""The issue's promise on CartPole (slow: run with ``pytest -m slow``; CI skips these)."""

import pytest

from champion.runners.configure import resolve_config
from champion.runners.replay import replay
from champion.runners.training import train


@pytest.mark.slow
@pytest.mark.parametrize("algo, budget", [("ppo", 100_000), ("a2c", 500_000)])
def test_cartpole_preset_solves_within_budget_at_seed_0(tmp_path, algo, budget):
    config, _ = resolve_config("CartPole-v1", algo, {"seed": 0, "results_dir": str(tmp_path)})
    assert config.total_steps == budget
    result = train(config, progress=False)
    assert result.best_mean_return >= 475
    replayed = replay(result.run_dir)
    assert replayed.result.mean_return == replayed.recorded_mean_return >= 475
