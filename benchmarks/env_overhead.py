"""What a training env step costs beyond the env's own: the bare env against champion's training vector env.

    python benchmarks/env_overhead.py                           # HalfCheetah-v5 and Hopper-v5 (mujoco extra)
    python benchmarks/env_overhead.py --envs CartPole-v1 --steps 50000 --out /tmp/env-overhead-cartpole.json

Each layer steps the same env with the same random actions (resetting when an episode ends) for
``--steps`` steps; the layers take turns for ``--rounds`` rounds so that a change in the machine's load
hits all of them, and the median per round is reported. Layers:

- ``bare``: the env class itself (``gymnasium.make(...).unwrapped``), the cost no trainer can avoid;
- ``made``: ``champion.envs.factory.make_env`` (gymnasium.make's wrappers: TimeLimit, OrderEnforcing, the checker);
- ``vector_with_info``: the same vector env over ``make_env``, which keeps the env's per-step info (what
  champion stepped before the training envs dropped it);
- ``vector_without_journal``: the training vector env without ``champion.envs.env_state.EpisodeJournal`` (what champion
  stepped before resume checkpoints kept a journal of each env's episode);
- ``vector``: ``champion.envs.factory.make_vector_env`` with one env, what champion's rollout steps (gymnasium's
  SyncVectorEnv with same-step autoreset and RecordEpisodeStatistics, the env's own info left out, each env's
  episode journalled).

The bare env has no time limit, so it resets only when an episode terminates; ``vector_with_info`` is built
here as ``make_vector_env`` builds its envs, minus ``WithoutInfo``, and must follow it if that changes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gymnasium as gym  # noqa: E402
from gymnasium.vector import AutoresetMode  # noqa: E402
from gymnasium.wrappers.vector import RecordEpisodeStatistics  # noqa: E402

from champion.envs.factory import EnvOptions, make_env, make_env_without_info, make_vector_env  # noqa: E402


def _single_stepper(env: Any, actions: np.ndarray) -> Callable[[int], None]:
    env.reset(seed=0)

    def step(index: int) -> None:
        _, _, terminated, truncated, _ = env.step(actions[index % len(actions)])
        if terminated or truncated:
            env.reset()
    return step


def _vector_stepper(envs: Any, actions: np.ndarray) -> Callable[[int], None]:
    envs.reset(seed=0)
    batched = actions[:, None]
    return lambda index: envs.step(batched[index % len(batched)])


def layers(env_id: str) -> dict[str, Callable[[int], None]]:
    """One stepping function per layer, all driven by the same random actions."""
    probe = make_env(env_id)
    probe.action_space.seed(0)
    actions = np.stack([probe.action_space.sample() for _ in range(256)])
    bare = make_env(env_id).unwrapped
    with_info = RecordEpisodeStatistics(gym.vector.SyncVectorEnv(
        [functools.partial(make_env, env_id, training=True)], autoreset_mode=AutoresetMode.SAME_STEP))
    without_journal = RecordEpisodeStatistics(gym.vector.SyncVectorEnv(
        [functools.partial(make_env_without_info, env_id, training=True)], autoreset_mode=AutoresetMode.SAME_STEP))
    return {"bare": _single_stepper(bare, actions), "made": _single_stepper(make_env(env_id, EnvOptions()), actions),
            "vector_with_info": _vector_stepper(with_info, actions),
            "vector_without_journal": _vector_stepper(without_journal, actions),
            "vector": _vector_stepper(make_vector_env(env_id, 1), actions)}


def measure(env_id: str, steps: int, rounds: int) -> dict[str, Any]:
    """Median microseconds per step of each layer, and each layer's cost beyond the bare env."""
    steppers = layers(env_id)
    per_round: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, step in steppers.items():
            started = time.perf_counter()
            for index in range(steps):
                step(index)
            per_round[name].append((time.perf_counter() - started) / steps * 1e6)
    medians = {name: statistics.median(values) for name, values in per_round.items()}
    return {"env": env_id, "steps": steps, "rounds": rounds, "us_per_step": medians,
            "overhead_us": {name: medians[name] - medians["bare"] for name in medians if name != "bare"},
            "vector_over_bare": medians["vector"] / medians["bare"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--steps", type=int, default=20_000, help="steps per layer and round (default 20,000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = [measure(env_id, args.steps, args.rounds) for env_id in args.envs]
    for result in results:
        cost = result["us_per_step"]
        print(f"{result['env']}: bare {cost['bare']:.1f} us/step, make_env {cost['made']:.1f}, vector env with the "
              f"env's info {cost['vector_with_info']:.1f}, without the journal {cost['vector_without_journal']:.1f}, "
              f"training vector env {cost['vector']:.1f} "
              f"({result['vector_over_bare']:.2f}x the bare env; +{result['overhead_us']['vector']:.1f} us)")
    report = {"load_before": load_before, "load_after": os.getloadavg()[0], "results": results}
    print(f"load average {load_before:.2f} before, {report['load_after']:.2f} after")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
