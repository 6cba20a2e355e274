"""A torso of your own against champion's MLP: PPO on CartPole-v1 (its preset) to the first evaluation at 475.

Each seed trains twice, alternately, on the same engine: with the preset's 64x64 tanh MLP (acting in numpy) and
with examples/custom_network.py's residual LayerNorm torso (acting through the Keras model, one TensorFlow call
per vector step). It prints, per run, the env steps of the first evaluation at or above 475 (evaluations every
2,048 steps, stopped there by stop.at_return), the training wall time, the acting time per vector step, and each
pair's wall-time ratio (torso / MLP), since both ran on the same machine under the same load.

    python benchmarks/user_torso.py [ENGINE] [SEEDS]     # e.g. gymnasium 3 (default), or graph 3
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from custom_network import residual_torso  # noqa: E402 - the example's folder goes on the path first


def run(engine: str, seed: int, torso: bool, results: str) -> dict:
    import champion

    started = time.perf_counter()
    result = champion.train("CartPole-v1", "ppo", seed=seed, engine=engine, results_dir=results, progress=False,
                            torso=residual_torso if torso else None, eval_every=2_048, media=False,
                            stop={"at_return": 475}, crown={"at_end": False})
    wall = time.perf_counter() - started
    details = result.details
    reached = next((step for step, mean in details.evaluations if mean >= 475), None)
    acting = details.timings.get("acting", 0.0) / max(details.timing_calls.get("acting", 0), 1)
    return {"reached": reached, "best": result.best_mean_return, "wall": wall, "train": details.wall_seconds,
            "acting_us": acting * 1e6}


def main(engine: str = "gymnasium", seeds: int = 3) -> None:
    print(f"engine {engine}; load average at start {os.getloadavg()[0]:.2f}")
    print("| seed | network | first eval >= 475 at | best | training s | acting us/step | torso/MLP wall |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as results:
        for seed in range(seeds):
            pair = {}
            for torso in (False, True):
                pair[torso] = figures = run(engine, seed, torso, results)
                ratio = f"{pair[True]['train'] / pair[False]['train']:.2f}" if torso else ""
                print(f"| {seed} | {'residual torso' if torso else 'MLP 64x64'} | {figures['reached'] or 'not reached'}"
                      f" | {figures['best']:.1f} | {figures['train']:.1f} | {figures['acting_us']:.0f} | {ratio} |",
                      flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["gymnasium"]), *(int(value) for value in sys.argv[2:3]))
