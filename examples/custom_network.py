"""Train PPO with a network of your own: a residual MLP with layer normalisation as the torso.

Your function takes the width of the features (here the observation, normalised by champion) and returns a
keras.Model from [batch, width] to [batch, features]. champion keeps its own parts around it: the observation
normalisation before it; the policy and value heads (orthogonally initialised), the action distributions and the
update after it. The value function gets a copy of its own (or shares it: network={"shared_torso": True}). Acting
runs your network in TensorFlow (numpy, which acts for champion's own MLP, cannot run any Keras layer), and the
run says so once.

A run records the function by name: custom_network:residual_torso, this file's name when run as a script. Resume,
replay, export and the crown build it again from that name, and from a run folder champion imports a module only
from installed packages or one you name, as for an env's module (custom_env.py, whose LineWalk this trains on):

    cd examples
    python custom_network.py        # trains, replays the best policy, exports it as policy.keras
    champion replay results/custom_env_LineWalk-v0/ppo --env-module custom_env --env-module custom_network

policy.keras is made of built-in Keras layers here, so it loads with keras.saving.load_model where champion is not
installed; a custom layer class of yours would need its module there, registered as serializable.
"""

import sys

WIDTH = 64


def residual_torso(width: int):
    """Dense to 64, two residual blocks (LayerNormalization, Dense relu, Dense, added back), a last
    LayerNormalization. Keras is imported here, so that the script can quiet TensorFlow before it loads."""
    import keras

    inputs = keras.Input((width,))
    features = keras.layers.Dense(WIDTH)(inputs)
    for _ in range(2):
        block = keras.layers.LayerNormalization()(features)
        block = keras.layers.Dense(WIDTH, activation="relu")(block)
        block = keras.layers.Dense(WIDTH)(block)
        features = keras.layers.Add()([features, block])
    return keras.Model(inputs, keras.layers.LayerNormalization()(features), name="residual_torso")


if __name__ == "__main__":
    import champion

    champion.quiet_tensorflow()  # before TensorFlow is imported: its start-up notes stay off stderr
    total_steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    result = champion.train("custom_env:LineWalk-v0", "ppo", torso=residual_torso, total_steps=total_steps,
                            num_envs=4, eval_every=2_000, eval_episodes=5, network={"normalize_observations": True},
                            ppo={"num_steps": 64, "minibatch_size": 64, "epochs": 4}, crown={"episodes": 20})
    print(f"best mean return {result.best_mean_return:.2f} (the best possible is 0.60)")
    replayed = champion.replay(result.run_dir)
    print(f"replayed on the episodes it was judged on: {replayed.result.mean_return:.2f} "
          f"(recorded {replayed.recorded_mean_return:.2f})")
    exported = champion.export(result.run_dir, "keras")  # checked against replay's actions before it is written
    print(f"exported: {exported.path / 'policy.keras'}")
