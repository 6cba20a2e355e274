"""The best-policy store: strict improvement, finite only, verified loads with loud fallback."""

import json
import math

import numpy as np
import pytest

from champion.agents.spec import NetworkSpec, box_leaf, weight_shapes
from champion.runners.store.atomic_files import atomic_write_text
from champion.runners.store.best_store import POINTER_FILE, BestPolicyError, BestPolicyStore, load_best


TINY = NetworkSpec((box_leaf((2,)),), "discrete", 3, hidden_sizes=())
"""Two inputs, three actions, no hidden layer: the smallest network an entry can hold."""


def weights(value: float) -> dict:
    return {name: np.full(shape, value, np.float32) for name, shape in weight_shapes(TINY).items()}


def manifest(step: int) -> dict:
    return {"step": step, "env_id": "Toy-v0", "network": TINY.to_dict()}


@pytest.fixture
def warnings():
    return []


@pytest.fixture
def store(tmp_path, warnings):
    return BestPolicyStore(tmp_path / "best", keep=3, on_warning=warnings.append)


def test_only_strictly_better_finite_returns_are_saved(store):
    assert store.offer(weights(1), 10.0, manifest(100)) == (True, "new best")
    assert store.offer(weights(2), 10.0, manifest(200)) == (False, "10.00 is not above the best 10.00")
    assert store.offer(weights(3), 9.0, manifest(300))[0] is False
    assert store.offer(weights(4), 12.5, manifest(400)) == (True, "new best")
    loaded = store.load()
    assert loaded.manifest["step"] == 400 and loaded.manifest["mean_return"] == 12.5
    np.testing.assert_array_equal(loaded.weights["policy_head/kernel"], weights(4)["policy_head/kernel"])


@pytest.mark.parametrize("mean_return, arrays, reason", [
    (math.nan, weights(1), "mean return nan is not finite"),
    (math.inf, weights(1), "mean return inf is not finite"),
    (50.0, weights(math.nan), "the weights contain NaN or infinity"),
    (50.0, {"policy_head/kernel": np.array([1.0, np.inf])}, "the weights contain NaN or infinity"),
])
def test_non_finite_returns_or_weights_are_never_saved(store, mean_return, arrays, reason):
    store.offer(weights(1), 1.0, manifest(1))
    assert store.offer(arrays, mean_return, manifest(2)) == (False, reason)
    assert store.best_mean_return == 1.0
    assert store.load().manifest["step"] == 1


def test_keeps_the_last_entries_and_a_pointer(store):
    for step in range(1, 6):
        store.offer(weights(step), float(step), manifest(step))
    assert [entry.name for entry in store.entries()] == ["0003-step-3", "0004-step-4", "0005-step-5"]
    assert json.loads((store.directory / POINTER_FILE).read_text()) == {"entry": "0005-step-5"}
    assert not list(store.directory.glob(".tmp-*"))


def test_a_reopened_store_remembers_the_best_score(tmp_path, store):
    store.offer(weights(1), 7.0, manifest(1))
    reopened = BestPolicyStore(store.directory)
    assert reopened.best_mean_return == 7.0
    assert reopened.offer(weights(2), 6.0, manifest(2))[0] is False


def test_flipped_byte_falls_back_to_the_previous_entry_loudly(store, warnings):
    store.offer(weights(1), 1.0, manifest(1))
    store.offer(weights(2), 2.0, manifest(2))
    newest = store.entries()[-1] / "policy.npz"
    data = bytearray(newest.read_bytes())
    data[-20] ^= 0xFF
    newest.write_bytes(bytes(data))
    loaded = store.load()
    assert loaded.manifest["step"] == 1
    assert len(warnings) == 1 and "0002-step-2" in warnings[0] and "sha256" in warnings[0]


def test_garbled_pointer_uses_the_newest_good_entry(store, warnings):
    store.offer(weights(1), 1.0, manifest(1))
    store.offer(weights(2), 2.0, manifest(2))
    (store.directory / POINTER_FILE).write_text("{not json")
    assert store.load().manifest["step"] == 2
    assert "pointer" in warnings[0] and "unusable" in warnings[0]


def test_nothing_usable_is_an_error_not_a_fresh_start(store, warnings):
    with pytest.raises(BestPolicyError, match="no evaluation has saved one yet"):
        load_best(store.directory)
    store.offer(weights(1), 1.0, manifest(1))
    (store.entries()[0] / "policy.npz").write_bytes(b"truncated")
    with pytest.raises(BestPolicyError, match="no usable best policy .*0001-step-1: sha256"):
        load_best(store.directory, warnings.append)


def test_stale_temporaries_are_removed_on_start(tmp_path):
    best = tmp_path / "best"
    (best / ".tmp-0009-step-9-123").mkdir(parents=True)
    (best / ".tmp-current.json-123").write_text("half")
    BestPolicyStore(best)
    assert sorted(path.name for path in best.iterdir()) == []


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [path.name for path in tmp_path.iterdir()] == ["file.txt"]


def test_an_entry_newer_than_the_pointer_wins_and_the_pointer_is_repaired(store, warnings):
    store.offer(weights(1), 1.0, manifest(1))
    store.offer(weights(2), 2.0, manifest(2))
    # as if the process died after committing step 2's entry but before moving the pointer
    atomic_write_text(store.directory / POINTER_FILE, json.dumps({"entry": "0001-step-1"}))
    reopened = BestPolicyStore(store.directory, on_warning=warnings.append)
    assert reopened.best_mean_return == 2.0
    assert "newer than the pointer" in warnings[0]
    assert json.loads((store.directory / POINTER_FILE).read_text()) == {"entry": "0002-step-2"}


def test_save_order_not_step_decides_which_entry_is_newest(store):
    # a run died after saving a best at step 2560; its resume went back to step 2048 and then
    # found a better policy at step 2304: that one is the best, although its step is lower
    store.offer(weights(1), 200.0, manifest(2560))
    resumed = BestPolicyStore(store.directory)
    assert resumed.offer(weights(2), 250.0, manifest(2304))[0] is True
    reopened = BestPolicyStore(store.directory)
    assert (reopened.best_mean_return, reopened.best_step) == (250.0, 2304)
    assert [entry.name for entry in reopened.entries()] == ["0001-step-2560", "0002-step-2304"]
    assert load_best(store.directory).manifest["step"] == 2304


def test_pruning_never_leaves_a_half_deleted_entry_at_its_final_name(store, monkeypatch):
    import shutil as shutil_module
    for step in range(1, 4):
        store.offer(weights(step), float(step), manifest(step))
    monkeypatch.setattr(shutil_module, "rmtree", lambda path, ignore_errors=False: None)  # "dies" mid-delete
    store.offer(weights(4), 4.0, manifest(4))
    assert [entry.name for entry in store.entries()] == ["0002-step-2", "0003-step-3", "0004-step-4"]
    assert [path.name for path in store.directory.glob(".tmp-*")] == [".tmp-removing-0001-step-1"]
    monkeypatch.undo()
    BestPolicyStore(store.directory)
    assert not list(store.directory.glob(".tmp-*"))
