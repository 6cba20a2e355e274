"""The question champion grew from: "I train with my own train_step, without model.fit(); how do I keep the best
model, and not lose days of work to a crash?"

A plain Keras regression loop (MSE, its own train_step), and the four lines that champion.BestKeeper adds to it,
marked ``# keeper``: the three best models by validation loss are kept as Keras files, checked by sha256 when read,
and a checkpoint every 50 steps lets a killed loop go on where it stopped. Kill it at any moment (Ctrl-C,
``kill -9``) and run it again: it resumes, and ends with the weights an uninterrupted run ends with.

    python examples/custom_loop_keeper.py                 # 600 steps, into ./custom_loop_keeper/
    python examples/custom_loop_keeper.py 1200 --out /tmp/loop
    tensorboard --logdir custom_loop_keeper/keeper/tb     # val_loss, and each new best

The kept models load without champion: ``keeper/best/current.json`` names the best entry, and in it
``model.load_weights(".../model.weights.h5")`` or ``keras.saving.load_model(".../model.keras")``.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

import champion

SEED = 7
BATCH = 32
VALIDATE_EVERY = 20
CHECKPOINT_EVERY = 50


def make_data(seed: int = SEED):
    """A noisy nonlinear regression: 1,000 training and 200 validation rows of 8 features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1200, 8)).astype("float32")
    w = rng.normal(size=(8, 1)).astype("float32")
    y = (np.sin(x) @ w + 0.3 * rng.normal(size=(1200, 1))).astype("float32")
    return (x[:1000], y[:1000]), (x[1000:], y[1000:])


def make_model():
    import keras

    keras.utils.set_random_seed(SEED)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])


def validation_loss(model, x, y) -> float:
    import keras

    return float(keras.ops.mean(keras.ops.square(model(x, training=False) - y)))


def train(steps: int, out: Path) -> None:
    import keras
    import tensorflow as tf

    (x_train, y_train), (x_val, y_val) = make_data()
    model = make_model()
    optimizer = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    rng = np.random.default_rng(SEED)
    keeper = champion.BestKeeper(out / "keeper", monitor="val_loss", mode="min", keep=3)  # keeper
    start = keeper.restore_state(model, optimizer, rng=rng) or 0  # keeper
    if start:
        print(f"resuming at step {start}", flush=True)
    for step in range(start, steps):
        rows = rng.integers(0, len(x_train), size=BATCH)
        loss = train_step(x_train[rows], y_train[rows])
        if (step + 1) % VALIDATE_EVERY == 0:
            val_loss = validation_loss(model, x_val, y_val)
            kept = keeper.offer(model, val_loss, step + 1)  # keeper
            print(f"step {step + 1} loss {float(loss):.4f} val_loss {val_loss!r}{' kept' if kept else ''}", flush=True)
        if (step + 1) % CHECKPOINT_EVERY == 0:
            keeper.save_state(model, optimizer, step + 1, rng=rng)  # keeper
    model.save_weights(out / "final.weights.h5")
    keeper.close()

    best = keeper.best
    fresh = make_model()
    fresh.load_weights(best.weights_path)  # Keras alone: no champion needed to use a kept model
    print(f"best val_loss {best.value!r} at step {best.step}; recomputed from {best.weights_path.name}: "
          f"{validation_loss(fresh, x_val, y_val)!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", type=int, nargs="?", default=600)
    parser.add_argument("--out", type=Path, default=Path("custom_loop_keeper"))
    arguments = parser.parse_args()
    champion.quiet_tensorflow()
    train(arguments.steps, arguments.out)
