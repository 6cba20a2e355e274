"""Train PPO on CartPole-v1 from Python with champion's public API, then replay its champion: the best policy
judged on held-out episodes at the end of the run (``entry="best"`` replays the training-time best).

    python examples/train_cartpole.py            # the preset's 100k steps
    python examples/train_cartpole.py 20000      # a shorter run
"""

import sys

import champion


def main(total_steps: int | None) -> None:
    result = champion.train("CartPole-v1", "ppo", total_steps=total_steps)
    print(f"best mean return {result.best_mean_return:.1f} at step {result.best_step} in {result.run_dir}")

    replayed = champion.replay(result.run_dir)
    print(f"champion {replayed.entry.name}, replayed on its {len(replayed.result.seeds)} held-out episodes: "
          f"{replayed.result.mean_return:.1f} (recorded {replayed.recorded_mean_return:.1f})")
    training_best = champion.replay(result.run_dir, entry="best")
    print(f"training-time best {training_best.entry.name}, replayed on the {len(training_best.result.seeds)} "
          f"evaluation episodes that made it best: "
          f"{training_best.result.mean_return:.1f} (recorded {training_best.recorded_mean_return:.1f})")


if __name__ == "__main__":  # the crown's worker processes import this file again: the run stays out of them
    champion.quiet_tensorflow()  # before TensorFlow is imported: its start-up notes stay off stderr
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
