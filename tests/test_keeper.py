"""champion.BestKeeper: the best models of any Keras loop, by a metric, in Keras' own files; resume checkpoints."""

import json
import random
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import champion
from event_files import scalar_values
from champion.runners.store.kept_models import MODEL_FILE, WEIGHTS_FILE

X_VALIDATION = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(-1, 1)
Y_VALIDATION = 2.0 * X_VALIDATION
SLOPES = [0.0, 1.0, 3.2, 2.5, 1.9, 2.2, 4.0]
"""The slope the linear model has at steps 0, 1, ...: its validation loss is (slope - 2)^2 * mean(x^2), lowest at
step 4 (1.9), then 5 (2.2), then 3 (2.5), then 1 (1.0)."""


def linear_model():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    return model


def set_slope(model, slope: float) -> None:
    model.set_weights([np.array([[slope]], np.float32), np.zeros(1, np.float32)])


def mse(model) -> float:
    return float(np.mean((np.asarray(model(X_VALIDATION)) - Y_VALIDATION) ** 2))


def offer_every_slope(keeper, monitor_sign: float = 1.0) -> list[bool]:
    """Offer the linear model at each slope of SLOPES, its metric being ``monitor_sign`` times the MSE."""
    model, kept = linear_model(), []
    for step, slope in enumerate(SLOPES):
        set_slope(model, slope)
        kept.append(keeper.offer(model, monitor_sign * mse(model), step))
    return kept


def test_the_lowest_validation_loss_is_kept_and_loads_into_plain_keras_with_the_recorded_loss(tmp_path):
    keeper = champion.BestKeeper(tmp_path / "keeper", monitor="val_loss", mode="min", keep=1)
    # kept: a first model, then each strictly lower loss (steps 1, 3 and 4)
    assert offer_every_slope(keeper) == [True, True, False, True, True, False, False]
    best = keeper.best
    assert (best.step, best.entry.name) == (4, "0004-step-4")
    assert best.value == pytest.approx(0.01 * np.mean(X_VALIDATION ** 2))
    fresh = linear_model()
    fresh.load_weights(best.weights_path)  # Keras alone
    assert mse(fresh) == best.value and fresh.get_weights()[0][0, 0] == np.float32(1.9)
    whole = keras.saving.load_model(best.model_path)
    assert mse(whole) == best.value
    assert [path.name for path in sorted((tmp_path / "keeper" / "best").iterdir())] == ["0004-step-4", "current.json"]
    assert json.loads((tmp_path / "keeper" / "best" / "current.json").read_text()) == {"entry": "0004-step-4"}
    assert sorted(path.name for path in best.entry.iterdir()) == ["manifest.json", MODEL_FILE, WEIGHTS_FILE]


def test_max_mode_keeps_the_highest_and_the_top_three_are_the_three_best_values(tmp_path):
    keeper = champion.BestKeeper(tmp_path / "keeper", monitor="val_score", mode="max", keep=3)
    # the score is -MSE: the same order as the losses, reversed; a value enters once it beats the third best
    assert offer_every_slope(keeper, monitor_sign=-1.0) == [True, True, True, True, True, True, False]
    assert [(kept.step, kept.entry.name) for kept in keeper.kept] == [(4, "0005-step-4"), (5, "0006-step-5"),
                                                                        (3, "0004-step-3")]
    assert sorted(path.name for path in (tmp_path / "keeper" / "best").iterdir()) == [
        "0004-step-3", "0005-step-4", "0006-step-5", "current.json"]
    reopened = champion.BestKeeper(tmp_path / "keeper", monitor="val_score", mode="max", keep=3)
    assert reopened.kept == keeper.kept
    model = linear_model()
    assert reopened.load_best(model) == keeper.best and -mse(model) == keeper.best.value


def test_a_tie_keeps_the_earlier_model_and_a_replayed_step_is_not_written_again(tmp_path):
    keeper = champion.BestKeeper(tmp_path / "keeper", keep=2)
    model = linear_model()
    set_slope(model, 1.0)
    assert keeper.offer(model, 0.5, 10) and keeper.offer(model, 0.25, 20)
    assert not keeper.offer(model, 0.5, 30)  # equal to the second best: not better
    assert keeper.offer(model, 0.25, 20)  # what a resumed loop offers again
    assert [kept.entry.name for kept in keeper.kept] == ["0002-step-20", "0001-step-10"]


def test_a_tie_with_room_to_keep_both_ranks_the_earlier_model_first_and_points_to_it(tmp_path):
    keeper = champion.BestKeeper(tmp_path / "keeper", keep=3)
    model = linear_model()
    assert keeper.offer(model, 0.5, 1) and keeper.offer(model, 0.5, 2)  # both kept: there is room
    assert [kept.entry.name for kept in keeper.kept] == ["0001-step-1", "0002-step-2"]
    assert json.loads((tmp_path / "keeper" / "best" / "current.json").read_text()) == {"entry": "0001-step-1"}
    keeper.close()
    assert scalar_values(tmp_path / "keeper" / "tb", "best/val_loss") == {1: 0.5}
    reopened = champion.BestKeeper(tmp_path / "keeper", keep=3)
    assert [kept.step for kept in reopened.kept] == [1, 2] and reopened.best.step == 1


def test_a_damaged_best_entry_falls_back_to_the_next_best_with_a_warning(tmp_path, capsys):
    keeper = champion.BestKeeper(tmp_path / "keeper", keep=3)
    offer_every_slope(keeper)
    best, second = keeper.kept[:2]
    data = bytearray(best.weights_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    best.weights_path.write_bytes(bytes(data))
    model = linear_model()
    assert keeper.load_best(model) == second and mse(model) == second.value
    assert f"kept model {best.entry} is unusable (sha256 of {WEIGHTS_FILE} is" in capsys.readouterr().err
    pointer = tmp_path / "keeper" / "best" / "current.json"
    assert json.loads(pointer.read_text()) == {"entry": second.entry.name}  # a plain-Keras reader gets an intact one
    reopened = champion.BestKeeper(tmp_path / "keeper", keep=3)
    assert reopened.best == second
    assert f"kept model {best.entry} is unusable" in capsys.readouterr().err
    set_slope(model, 2.0)  # a perfect model: kept, and the damaged entry is pruned first
    assert reopened.offer(model, 0.0, 9)
    assert not best.entry.exists() and [kept.step for kept in reopened.kept] == [9, 5, 3]


def test_a_damaged_entry_is_removed_at_the_next_save_even_with_room_to_keep_it(tmp_path, capsys):
    keeper = champion.BestKeeper(tmp_path / "keeper", keep=5, tensorboard=False)
    model = linear_model()
    assert keeper.offer(model, 1.0, 1) and keeper.offer(model, 0.5, 2)
    damaged = keeper.kept[1].entry
    (damaged / WEIGHTS_FILE).write_bytes(b"not the weights")
    reopened = champion.BestKeeper(tmp_path / "keeper", keep=5, tensorboard=False)
    assert capsys.readouterr().err.count(f"kept model {damaged} is unusable") == 1
    assert reopened.offer(model, 0.25, 3)  # three models fit in keep=5: the damaged one goes all the same
    assert not damaged.exists() and [kept.step for kept in reopened.kept] == [3, 2]
    assert sorted(path.name for path in (tmp_path / "keeper" / "best").iterdir()) == [
        "0002-step-2", "0003-step-3", "current.json"]


def test_nan_metrics_and_weights_are_never_kept_and_warned_about_once(tmp_path, capsys):
    keeper = champion.BestKeeper(tmp_path / "keeper", tensorboard=False)
    model = linear_model()
    set_slope(model, 1.0)
    assert keeper.offer(model, 1.0, 1)
    assert not keeper.offer(model, float("nan"), 2) and not keeper.offer(model, float("inf"), 3)
    set_slope(model, float("nan"))
    assert not keeper.offer(model, 0.5, 4)
    assert capsys.readouterr().err == ("champion: warning: val_loss is nan at step 2: not kept (a model whose metric "
                                       "or weights are not finite never is; the best so far stands)\n")
    assert [kept.step for kept in keeper.kept] == [1]


def test_tensorboard_has_the_metric_at_every_offer_and_the_best_at_each_new_best(tmp_path):
    with champion.BestKeeper(tmp_path / "keeper", keep=1) as keeper:
        offer_every_slope(keeper)
    losses = [(slope - 2.0) ** 2 * float(np.mean(X_VALIDATION ** 2)) for slope in SLOPES]
    logged = scalar_values(tmp_path / "keeper" / "tb", "val_loss")
    assert list(logged) == list(range(len(SLOPES))) and np.allclose(list(logged.values()), losses)
    best = scalar_values(tmp_path / "keeper" / "tb", "best/val_loss")
    assert list(best) == [0, 1, 3, 4] and np.allclose(list(best.values()), [losses[step] for step in (0, 1, 3, 4)])


def test_a_model_keras_cannot_save_whole_is_kept_as_weights_with_a_warning(tmp_path, capsys):
    class Scaled(keras.Model):
        def __init__(self, scale):
            super().__init__()
            self.scale, self.dense = scale, keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x) * self.scale

    model = Scaled(np.float32(1.0))
    model(X_VALIDATION)
    keeper = champion.BestKeeper(tmp_path / "keeper", tensorboard=False)
    assert keeper.offer(model, 3.0, 1) and keeper.offer(model, 2.0, 2)
    assert keeper.best.model_path is None and keeper.whole_model is False
    assert capsys.readouterr().err.count("Keras cannot save this model whole as .keras") == 1
    assert sorted(path.name for path in keeper.best.entry.iterdir()) == ["manifest.json", WEIGHTS_FILE]
    other = Scaled(np.float32(1.0))
    other(X_VALIDATION)
    keeper.load_best(other)
    assert all(np.array_equal(a, b) for a, b in zip(other.get_weights(), model.get_weights()))


def small_loop(keeper, model, optimizer, rng, python_rng, steps, start=0):
    """A few Adam steps of a 2-layer regression on batches drawn from ``rng``; offers and checkpoints every 5."""
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    for step in range(start, steps):
        rows = rng.integers(0, 64, size=8)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x[rows], training=True) - y[rows]) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        if (step + 1) % 5 == 0:
            keeper.offer(model, float(tf.reduce_mean((model(x) - y) ** 2)) + python_rng.random() * 1e-3, step + 1)
            keeper.save_state(model, optimizer, step + 1, rng=[rng, python_rng])


def loop_objects(width: int = 8):
    """A model whose Dropout draws from a seed generator of its own (its state is in model.variables, not in
    model.weights), Adam, and the loop's two generators."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(width, activation="tanh"),
                              keras.layers.Dropout(0.25, seed=3), keras.layers.Dense(1)])
    return model, keras.optimizers.Adam(0.05), np.random.default_rng(5), random.Random(5)


def test_a_loop_resumed_from_its_checkpoint_ends_as_an_uninterrupted_one(tmp_path):
    model, optimizer, rng, python_rng = loop_objects()
    with champion.BestKeeper(tmp_path / "straight") as straight:
        assert straight.restore_state(model, optimizer, rng=[rng, python_rng]) is None
        small_loop(straight, model, optimizer, rng, python_rng, 30)
    first = loop_objects()
    with champion.BestKeeper(tmp_path / "resumed") as keeper:
        small_loop(keeper, *first, 17)  # stopped at 17: its last checkpoint is at 15, its last offer too
        keeper.offer(first[0], 123.0, 17)  # logged after the checkpoint: dropped at the restore
    again = loop_objects()
    keeper = champion.BestKeeper(tmp_path / "resumed")
    start = keeper.restore_state(again[0], again[1], rng=list(again[2:]))
    assert start == 15
    small_loop(keeper, *again, 30, start=start)
    keeper.close()
    assert len(model.variables) == len(model.weights) + 1  # the Dropout's seed state
    for name, mine, theirs in [("model", again[0].variables, model.variables),
                               ("optimizer", again[1].variables, optimizer.variables)]:
        assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(mine, theirs)), name
    assert again[2].bit_generator.state == rng.bit_generator.state and again[3].getstate() == python_rng.getstate()
    assert [(kept.step, kept.value) for kept in keeper.kept] == [(kept.step, kept.value) for kept in straight.kept]
    resumed_log = scalar_values(tmp_path / "resumed" / "tb", "val_loss")
    assert resumed_log == scalar_values(tmp_path / "straight" / "tb", "val_loss") and 17 not in resumed_log
    assert [path.name for path in sorted((tmp_path / "resumed" / "checkpoints").iterdir())] == [
        "ckpt-0000000025", "ckpt-0000000030"]


def test_restoring_into_another_model_or_generator_says_what_differs(tmp_path):
    model, optimizer, rng, python_rng = loop_objects()
    keeper = champion.BestKeeper(tmp_path / "keeper", tensorboard=False)
    small_loop(keeper, model, optimizer, rng, python_rng, 5)
    with pytest.raises(champion.UsageError) as error:
        keeper.restore_state(loop_objects(width=9)[0], keras.optimizers.Adam(), rng=[rng, python_rng])
    assert str(error.value) == ("ckpt-0000000005 holds another model or optimizer than the ones given (model/0: "
                                "saved [3, 8], given [3, 9]); build them as the loop that saved it did")
    with pytest.raises(champion.UsageError, match=r"holds random generators of the kinds \['numpy', 'python'\], "
                                                  r"restore_state was given \['numpy'\]"):
        keeper.restore_state(model, optimizer, rng=rng)
    with pytest.raises(champion.UsageError, match="^rng must be a numpy Generator, .* not a int$"):
        keeper.save_state(model, optimizer, 6, rng=3)


def test_a_checkpoint_without_the_models_random_state_resumes_with_one_warning_line(tmp_path, capsys):
    """What checkpoints written before the model's random state was saved hold: the weights, the optimizer."""
    from champion.runners.store.checkpoints import ResumeCheckpoints
    from champion.runners.store.loop_state import CHECKPOINT_KIND

    model, optimizer, _, _ = loop_objects()
    optimizer.build(model.trainable_variables)
    keeper = champion.BestKeeper(tmp_path / "keeper", tensorboard=False)
    ResumeCheckpoints(tmp_path / "keeper" / "checkpoints", keep=2).save(
        5, {"model": list(model.weights), "optimizer": list(optimizer.variables)}, {"step": 5, "rng_kinds": [],
        "rng": []}, {"monitor": "val_loss", "mode": "min", "kind": CHECKPOINT_KIND})
    again, optimizer_again, _, _ = loop_objects()
    again.layers[0].kernel.assign(np.zeros((3, 8), np.float32))
    capsys.readouterr()
    assert keeper.restore_state(again, optimizer_again) == 5
    assert np.array_equal(again.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())
    assert capsys.readouterr().err == (
        "champion: warning: ckpt-0000000005 was written before champion saved a model's random state (its Dropout "
        "layers' seed generators): resuming without it, so the loop's random masks will differ from an "
        "uninterrupted run's\n")


def offer_and_checkpoint(keeper, values: dict, start: int, stop: int) -> dict:
    """Offer a model with ``values[step]`` at each of those steps in [start, stop), checkpoint at step 25; what each
    offer returned, by step."""
    model, returned = linear_model(), {}
    for step in range(start, stop):
        if step in values:
            returned[step] = keeper.offer(model, values[step], step)
        if step == 25:
            keeper.save_state(model, None, step)
    return returned


@pytest.mark.parametrize("values, kept", [
    ({10: 5.0, 20: 4.0, 30: 3.0, 40: 2.0, 50: 1.0, 60: 9.0}, [10, 20, 30, 40, 50]),  # killed at 45, it kept 40 alone
    ({10: 5.0, 20: 1.0, 30: 3.0, 40: 0.5, 50: 2.0, 60: 0.25}, [10, 20, 40, 60]),  # ...and had pruned 20, the best at 25
])
def test_the_offers_a_resumed_loop_replays_return_and_log_what_the_uninterrupted_loop_s_did(tmp_path, values, kept):
    with champion.BestKeeper(tmp_path / "straight", keep=1) as straight:
        uninterrupted = offer_and_checkpoint(straight, values, 0, 61)
    assert [step for step, was_kept in uninterrupted.items() if was_kept] == kept
    with champion.BestKeeper(tmp_path / "resumed", keep=1) as killed:
        offer_and_checkpoint(killed, values, 0, 46)  # killed at 45: it kept 40, the checkpoint is at 25
    resumed = champion.BestKeeper(tmp_path / "resumed", keep=1)
    assert resumed.restore_state(linear_model(), None) == 25
    replayed = offer_and_checkpoint(resumed, values, 26, 61)
    resumed.close()
    assert replayed == {step: uninterrupted[step] for step in (30, 40, 50, 60)}
    best_logged = {step: values[step] for step in kept}
    assert scalar_values(tmp_path / "resumed" / "tb", "best/val_loss") == best_logged
    assert scalar_values(tmp_path / "straight" / "tb", "best/val_loss") == best_logged
    assert [(model.step, model.value) for model in resumed.kept] == [(kept[-1], values[kept[-1]])]
    assert sorted(path.name for path in (tmp_path / "resumed" / "best").iterdir()) == [
        resumed.best.entry.name, "current.json"]


@pytest.mark.parametrize("arguments, message", [
    ({"mode": "minimum"}, "mode must be 'min' (lower val_loss is better) or 'max' (higher is better), not 'minimum'"),
    ({"keep": 0}, "keep must be a whole number of models from 1 to 10,000, not 0"),
    ({"monitor": ""}, "monitor must be the metric's name (a short string such as 'val_loss'), not ''"),
])
def test_bad_arguments_are_refused_in_one_line_before_anything_is_written(tmp_path, arguments, message):
    with pytest.raises(champion.UsageError) as error:
        champion.BestKeeper(tmp_path / "keeper", **arguments)
    assert str(error.value) == message and not (tmp_path / "keeper").exists()


def test_a_folder_of_something_else_or_of_another_metric_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("env_id: CartPole-v1\n")
    with pytest.raises(champion.UsageError) as error:
        champion.BestKeeper(run)
    assert str(error.value) == f"{run} is a champion run folder; give the BestKeeper a folder of its own"
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"")
    with pytest.raises(champion.UsageError, match="photos holds cat.jpg, which a BestKeeper did not write; give it "
                                                  "a new or empty folder$"):
        champion.BestKeeper(tmp_path / "photos")
    (tmp_path / "keeper").mkdir()
    (tmp_path / "keeper" / ".tmp-keeper.json-999").write_text("{")  # a first start killed while writing its record
    champion.BestKeeper(tmp_path / "keeper", monitor="val_loss", mode="min")
    assert sorted(path.name for path in (tmp_path / "keeper").iterdir()) == ["best", "keeper.json"]
    with pytest.raises(champion.UsageError) as error:
        champion.BestKeeper(tmp_path / "keeper", monitor="val_accuracy", mode="max")
    assert str(error.value) == (f"{tmp_path / 'keeper'} keeps the best by val_loss (min), not by val_accuracy (max): "
                                "use the same monitor and mode, or another folder")
    keeper = champion.BestKeeper(tmp_path / "keeper", keep=5)  # the same metric: keep may change
    with pytest.raises(champion.UsageError, match=r"^val_loss must be one number, not an array of shape \(2,\)$"):
        keeper.offer(linear_model(), np.zeros(2), 1)
    with pytest.raises(champion.UsageError, match="^step must be a whole number from 0"):
        keeper.offer(linear_model(), 1.0, -1)
    with pytest.raises(champion.BestPolicyError, match="nothing was kept yet"):
        keeper.load_best(linear_model())


def test_importing_champion_and_reaching_the_keeper_loads_no_tensorflow():
    script = ("import sys, champion\n"
              "champion.BestKeeper, champion.KeptModel\n"
              "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]"]
