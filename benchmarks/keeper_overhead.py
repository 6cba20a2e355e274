"""What champion.BestKeeper costs a training loop, against what the usual answer costs in the same run.

    python benchmarks/keeper_overhead.py --out docs/benchmark-runs/keeper-issue34/keeper_overhead.json

- an ``offer`` that keeps nothing (the value does not rank), with and without TensorBoard, against a no-op call
  with the same arguments, and against one train step of the model, for scale;
- a save of a 1M-parameter model (an ``offer`` that keeps it, pruning one older entry): weights alone
  (``whole_model=False``) and weights plus ``.keras``, against a bare ``model.save_weights`` over one file (the
  usual answer) and against that with an fsync (a save that is at least on disk);
- a resume checkpoint (``save_state``: model and Adam state, verified entry) against a bare
  ``tf.train.Checkpoint(...).write`` of the same variables.

Each kind is timed in every round, in turn, so that a change of the machine's load falls on all of them; the medians
over the rounds are reported, with the load before and after (``os.getloadavg``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import champion  # noqa: E402


def million_parameter_model() -> keras.Model:
    """784 -> 1024 -> 256 -> 10: 1,068,810 parameters, an MNIST-sized MLP."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(1024, activation="relu"),
                             keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])


def per_call(function: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``function`` over ``calls`` calls."""
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def once(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def fsynced_save_weights(model: keras.Model, path: Path) -> None:
    model.save_weights(path)
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def measure(folder: Path, rounds: int, calls: int) -> dict[str, Any]:
    model, optimizer = million_parameter_model(), keras.optimizers.Adam(1e-3)
    x, y = np.random.default_rng(0).normal(size=(32, 784)).astype(np.float32), np.zeros(32, np.int64)
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_function(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    train_step()
    quiet = champion.BestKeeper(folder / "quiet", tensorboard=False)
    logged = champion.BestKeeper(folder / "logged")
    for keeper in (quiet, logged):
        for step in range(3):
            keeper.offer(model, 0.0, step)  # three kept at 0.0: an offer of 1.0 ranks nowhere
    weights_only = champion.BestKeeper(folder / "weights-only", whole_model=False)
    whole = champion.BestKeeper(folder / "whole")
    step = iter(range(10, 10**9))
    value = iter(np.linspace(1e6, 0.0, 100_000))

    def no_op(model: Any, value: float, step: int) -> bool:
        return False

    kinds: dict[str, Callable[[], float]] = {
        "no-op call": lambda: per_call(lambda: no_op(model, 1.0, 7), calls),
        "offer, not kept, no TensorBoard": lambda: per_call(lambda: quiet.offer(model, 1.0, next(step)), calls),
        "offer, not kept, TensorBoard": lambda: per_call(lambda: logged.offer(model, 1.0, next(step)), calls),
        "train step (batch 32, Adam)": lambda: per_call(lambda: train_step().numpy(), max(calls // 20, 10)),
        "model.save_weights": lambda: once(lambda: model.save_weights(folder / "bare.weights.h5")),
        "model.save_weights + fsync": lambda: once(lambda: fsynced_save_weights(model, folder / "synced.weights.h5")),
        "offer, kept: weights": lambda: once(lambda: weights_only.offer(model, float(next(value)), next(step))),
        "offer, kept: weights + .keras": lambda: once(lambda: whole.offer(model, float(next(value)), next(step))),
        "tf.train.Checkpoint.write": lambda: once(lambda: tf.train.Checkpoint(
            model=list(model.weights), optimizer=list(optimizer.variables)).write(str(folder / "bare-ckpt" / "tf"))),
        "save_state": lambda: once(lambda: whole.save_state(model, optimizer, next(step))),
    }
    for measure_once in kinds.values():  # warm-up: Keras' saving code, the keepers' first entries
        for _ in range(4):
            measure_once()
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, measure_once in kinds.items():
            times[name].append(measure_once())
    for keeper in (quiet, logged, weights_only, whole):
        keeper.close()
    sizes = {name: (whole.best.entry / name).stat().st_size for name in ("model.weights.h5", "model.keras")}
    return {"median_seconds": {name: statistics.median(values) for name, values in times.items()},
            "seconds": times, "parameters": model.count_params(), "file_bytes": sizes}


def table(result: dict[str, Any]) -> str:
    median = result["median_seconds"]
    step, bare = median["train step (batch 32, Adam)"], median["model.save_weights"]
    lines = ["| what | median | against |", "|---|---|---|"]
    for name in ("no-op call", "offer, not kept, no TensorBoard", "offer, not kept, TensorBoard"):
        lines.append(f"| {name} | {median[name] * 1e6:.2f} us | {median[name] / step:.2%} of a train step |")
    lines.append(f"| train step (batch 32, Adam) | {step * 1e3:.2f} ms | |")
    for name in ("model.save_weights", "model.save_weights + fsync", "offer, kept: weights",
                 "offer, kept: weights + .keras"):
        lines.append(f"| {name} | {median[name] * 1e3:.1f} ms | {median[name] / bare:.2f}x model.save_weights |")
    checkpoint = median["tf.train.Checkpoint.write"]
    lines.append(f"| tf.train.Checkpoint.write (model + Adam) | {checkpoint * 1e3:.1f} ms | |")
    lines.append(f"| save_state (model + Adam) | {median['save_state'] * 1e3:.1f} ms | "
                 f"{median['save_state'] / checkpoint:.2f}x tf.train.Checkpoint.write |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round of the per-call kinds")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="a JSON record of the run")
    arguments = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="keeper-overhead-", dir=arguments.dir))
    load_before = os.getloadavg()
    try:
        result = measure(folder, arguments.rounds, arguments.calls)
        disk = subprocess.run(["df", "-T", str(folder)], capture_output=True, text=True).stdout.splitlines()[-1]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result.update(load_before=load_before, load_after=os.getloadavg(), rounds=arguments.rounds,
                  calls=arguments.calls, disk=disk, cpus=os.cpu_count(), keras=keras.__version__,
                  tensorflow=tf.__version__, when=time.strftime("%Y-%m-%d %H:%M"))
    print(table(result))
    print(f"{result['parameters']:,} parameters; files {result['file_bytes']}; load {load_before} -> "
          f"{result['load_after']}; {disk}")
    if arguments.out:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        arguments.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
