"""The same seed gives the same run, to the bit; another seed gives another run."""

import numpy as np

from champion.runners.store.best_store import load_best
from champion.runners.configure import resolve_config
from champion.runners.training import train


def run(tmp_path, name, seed):
    config, _ = resolve_config("CartPole-v1", "ppo", {"total_steps": 3072, "eval_every": 1024, "seed": seed,
                                                      "results_dir": str(tmp_path), "run_name": name,
                                                      "ppo.epochs": 4, "media": False})
    result = train(config, progress=False)
    return result.evaluations, load_best(result.run_dir / "best").weights


def test_same_seed_same_evaluations_and_weights(tmp_path):
    first_evaluations, first_weights = run(tmp_path, "a", seed=5)
    second_evaluations, second_weights = run(tmp_path, "b", seed=5)
    other_evaluations, _ = run(tmp_path, "c", seed=6)
    assert first_evaluations == second_evaluations
    assert first_weights.keys() == second_weights.keys()
    assert all(np.array_equal(first_weights[name], second_weights[name]) for name in first_weights)
    assert other_evaluations != first_evaluations
