"""A CNN against a flattening MLP on an image task, same budget, same seeds (issue 18's image benchmark).

    python benchmarks/image_encoder.py                        # 3 seeds x (cnn, mlp), 30k steps each
    python benchmarks/image_encoder.py --steps 5000 --seeds 0 # a quick look

The task (``SpotQuadrant-v0``, defined here): a 32x32 grayscale image of dim noise with one bright 4x4 spot
at a random place; the action names the quadrant the spot is in; 8 steps per episode, 1 per right answer
(best return 8). The answer is only in the pixels, and the spot can be anywhere, so an encoder that
shares what it learns across positions should need fewer samples. Both arms run PPO with the same
settings; the MLP arm reads the image as a flat vector (``network.image_layout=none``, normalised like
any vector observation). The report gives each run's best evaluation return, the step where it first
reached 8, and the wall time, with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class SpotQuadrant(gym.Env):
    """Which quadrant holds the bright spot? (See the module's docstring.)"""

    observation_space = gym.spaces.Box(0, 255, (32, 32, 1), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return self._draw(), {}

    def step(self, action):
        reward = float(action == self.answer)
        self.steps += 1
        return self._draw(), reward, self.steps >= 8, False, {}

    def _draw(self) -> np.ndarray:
        image = self.np_random.integers(0, 60, (32, 32, 1), dtype=np.uint8)
        row, column = self.np_random.integers(0, 29, 2)
        image[row:row + 4, column:column + 4] = 255
        self.answer = int(row + 2 >= 16) * 2 + int(column + 2 >= 16)  # by the spot's centre
        return image


if "SpotQuadrant-v0" not in gym.registry:
    gym.register("SpotQuadrant-v0", entry_point=SpotQuadrant)

ARMS = {"cnn": {"network.cnn_layers": [[16, 4, 2], [32, 3, 2]], "network.cnn_features": 64},
        "mlp": {"network.image_layout": "none", "network.normalize_observations": True}}


def run(arm: str, seed: int, steps: int, results: Path) -> dict:
    import champion

    settings = {
        "seed": seed, "total_steps": steps, "num_envs": 8, "eval_every": max(steps // 15, 512), "eval_episodes": 10,
        "media": False, "ppo.num_steps": 64, "ppo.minibatch_size": 128, "ppo.epochs": 4, "ppo.learning_rate": 1e-3,
        "ppo.gamma": 0.5, "network.hidden_sizes": [64], "results_dir": str(results), "run_name": f"{arm}-{steps}-seed{seed}-{int(time.time())}",
        **ARMS[arm]}
    started = time.perf_counter()
    result = champion.train("image_encoder:SpotQuadrant-v0", "ppo", config=settings, progress=False)
    reached = next((step for step, mean in result.details.evaluations if mean >= 8.0), None)
    return {"arm": arm, "seed": seed, "steps": steps, "best": result.best_mean_return, "first_step_at_8": reached,
            "curve": result.details.evaluations, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["cnn", "mlp"])
    parser.add_argument("--results-dir", type=Path, default=ROOT / "results" / "image_encoder")
    parser.add_argument("--out", type=Path, help="write the JSON records here")
    args = parser.parse_args()
    import champion

    champion.quiet_tensorflow()
    load_before = os.getloadavg()[0]
    records = [run(arm, seed, args.steps, args.results_dir) for seed in args.seeds for arm in args.arms]
    print(f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"{'arm':4} {'seed':>4} {'best':>6} {'first step at 8':>16} {'seconds':>8}")
    for record in records:
        print(f"{record['arm']:4} {record['seed']:>4} {record['best']:6.2f} {str(record['first_step_at_8']):>16} "
              f"{record['seconds']:8.1f}")
    for arm in args.arms:
        mine = [record for record in records if record["arm"] == arm]
        reached = [record["first_step_at_8"] for record in mine if record["first_step_at_8"] is not None]
        print(f"{arm}: mean best {statistics.mean(record['best'] for record in mine):.2f}; reached 8 in "
              f"{len(reached)}/{len(mine)} runs" + (f", median step {statistics.median(reached):,.0f}" if reached else ""))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"load_before": load_before, "records": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
