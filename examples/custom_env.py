"""Train on your own gymnasium environment.

An environment given as ``module:EnvName-v0`` is found by importing ``module`` first, so the
module only has to register it. Here that module is this file. ``champion train`` looks for the
module you type where Python would (the installed packages), then in the current folder, as
``python -m`` does. A run folder's recorded env module is imported only from installed packages
(opening a folder from someone else never runs code from it), so replay, export, crown and
``--resume`` name a module of your own with ``--env-module``:

    cd examples
    python custom_env.py                                  # trains; the run goes to ./results
    champion replay results/custom_env_LineWalk-v0/ppo --env-module custom_env
    champion train custom_env:LineWalk-v0 --total-steps 20000
"""

import sys

import gymnasium as gym
import numpy as np


class LineWalk(gym.Env):
    """Walk from 0 to +5 on a line: -0.1 per step, +1.0 on reaching the goal (best return 0.6)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)  # 0: left, 1: right
    goal = 5

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return self._observation(), {}

    def step(self, action):
        self.position = max(-self.goal, self.position + (1 if action == 1 else -1))
        reached = self.position == self.goal
        return self._observation(), 1.0 if reached else -0.1, reached, False, {}

    def _observation(self):
        return np.array([self.position / self.goal], np.float32)


# "custom_env:LineWalk-v0" tells gymnasium to import this module (which runs this line) and then
# make "LineWalk-v0", so every process that needs the env, replay included, finds it.
if "LineWalk-v0" not in gym.registry:
    gym.register(id="LineWalk-v0", entry_point=LineWalk, max_episode_steps=50)

if __name__ == "__main__":
    import champion

    champion.quiet_tensorflow()  # before TensorFlow is imported: its start-up notes stay off stderr
    total_steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    result = champion.train("custom_env:LineWalk-v0", "ppo", total_steps=total_steps, num_envs=4, eval_every=2_000,
                            eval_episodes=5, ppo={"num_steps": 64, "minibatch_size": 64, "epochs": 4})
    print(f"best mean return {result.best_mean_return:.2f} (the best possible is 0.60)")
