"""The traced-graph cache: a function (a learner's update, the graph engine's call) loaded from it computes
what the traced one did, an entry that can't be used is traced afresh, and the keys leave out only settings
the graphs do not read."""

import gc
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from champion.agents.compile import compat, graph_cache, xla_cache
from champion.agents.a2c import A2CLearner
from champion.agents.compile.update import CompiledLearner
from champion.agents.batch import RolloutBatch
from champion.agents.config import A2CConfig, PPOConfig, TrainConfig
from champion.agents.learners import make_learner
from champion.agents.networks import ActorCritic, NetworkSpec
from champion.agents.ppo import PPOLearner
from champion.agents.spec import box_leaf
from champion.envs.factory import describe_env
from champion.runners.configure import resolve_config
from champion.runners.engines.graph import FIELDS_OUTSIDE_THE_GRAPH, GraphEngine, graph_settings
from champion.runners.timing import Timings
from champion.runners.store.run_metadata import network_spec
from test_learners import random_batch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache directory of the test's own (the flag is read from the environment at each use)."""
    monkeypatch.setenv("TF_XLA_FLAGS", f"{xla_cache.FLAG}={tmp_path}")
    return tmp_path


def scaled_sum(variables: dict[str, tf.Variable], name: str, prefix: str = "") -> graph_cache.CachedGraphFunction:
    """x * weight + offset, with offset raised by 1 (in a loop, so the library has nested functions); the
    variables are listed under ``prefix``."""

    def raise_offset(index: tf.Tensor) -> tf.Tensor:
        with tf.control_dependencies([variables["offset"].assign_add(tf.ones_like(variables["offset"]))]):
            return index + 1

    def compute(x: tf.Tensor) -> tf.Tensor:
        result = x * variables["weight"] + variables["offset"]
        tf.while_loop(lambda index: index < 1, raise_offset, [tf.constant(0)])
        return result

    function = tf.function(compute, input_signature=[tf.TensorSpec([3], tf.float32)], autograph=False)
    listed = {prefix + path: variable for path, variable in variables.items()}
    return graph_cache.CachedGraphFunction(function, lambda: listed, graph_cache.cache_key(name, {}))


def two_variables(shape: tuple[int, ...] = (3,)) -> dict[str, tf.Variable]:
    return {"weight": tf.Variable(tf.fill(shape, 2.0)), "offset": tf.Variable(tf.fill(shape, 10.0))}


def saved_library(cache) -> Any:
    """The FunctionDefLibrary of the one graph entry in ``cache`` (magic, checksum line, header line, library)."""
    content = next(cache.glob("champion-graph-*.pb")).read_bytes()
    return compat.parse_library(content[len(graph_cache.MAGIC):].split(b"\n", 2)[2])


def registered(names: list[str]) -> list[bool]:
    return [compat.has_definition(name) for name in names]


def test_a_loaded_function_computes_with_its_own_variables_what_the_traced_one_did(cache):
    first_variables, second_variables = two_variables(), two_variables()
    traced = scaled_sum(first_variables, "sum")
    x = tf.constant([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(traced(x).numpy(), [12.0, 14.0, 16.0])
    assert traced.source == "traced" and len(list(cache.glob("champion-graph-*.pb"))) == 1
    names = [definition.signature.name for definition in saved_library(cache).function]
    assert len(names) >= 3 and all(registered(names))  # the function and its loop's condition and body
    del traced
    gc.collect()
    assert not any(registered(names))  # so what runs next is the saved library alone
    loaded = scaled_sum(second_variables, "sum")
    np.testing.assert_array_equal(loaded(x).numpy(), [12.0, 14.0, 16.0])
    np.testing.assert_array_equal(loaded(x).numpy(), [13.0, 15.0, 17.0])  # its own offset went up twice
    assert loaded.source == "loaded" and loaded.function.experimental_get_tracing_count() == 0
    assert loaded.build_count() == 1
    np.testing.assert_array_equal(first_variables["offset"].numpy(), [11.0, 11.0, 11.0])
    np.testing.assert_array_equal(second_variables["offset"].numpy(), [12.0, 12.0, 12.0])
    loaded.close()
    assert not any(registered(names))


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "bad library, good checksum", "other shapes",
                                    "other paths"])
def test_an_entry_that_cannot_be_used_is_ignored_and_the_function_traced(cache, damage):
    scaled_sum(two_variables(), "damaged").prepare()
    entry = next(cache.glob("champion-graph-*.pb"))
    content = entry.read_bytes()
    variables = two_variables()
    if damage == "truncated":
        entry.write_bytes(content[: len(content) // 2])
    elif damage == "flipped byte":
        entry.write_bytes(content[:-10] + bytes([content[-10] ^ 1]) + content[-9:])
    elif damage == "bad library, good checksum":
        header = content[len(graph_cache.MAGIC):].split(b"\n")[1]
        graph_cache._write(entry, header + b"\n" + b"not a FunctionDefLibrary")
    elif damage == "other shapes":  # a valid entry, but not the variables it was traced with
        variables = two_variables((2, 3))
    prefix = "model/" if damage == "other paths" else ""  # the same variables, listed otherwise
    again = scaled_sum(variables, "damaged", prefix)
    assert again.prepare() == "traced"
    expected = x_times(variables)
    np.testing.assert_array_equal(again(tf.constant([1.0, 2.0, 3.0])).numpy(), expected)
    assert scaled_sum(variables, "damaged", prefix).prepare() == "loaded"  # the new trace's entry replaced it


def x_times(variables: dict[str, tf.Variable]) -> np.ndarray:
    return np.array([1.0, 2.0, 3.0]) * variables["weight"].numpy() + variables["offset"].numpy()


def test_a_name_defined_otherwise_in_this_process_means_tracing_and_the_entry_is_kept(cache):
    scaled_sum(two_variables(), "clash").prepare()
    entry = next(cache.glob("champion-graph-*.pb"))
    content = entry.read_bytes()
    taken = saved_library(cache).function[-1].signature.name
    other = tf.function(lambda: tf.constant(1.0), autograph=False).get_concrete_function().function_def
    other.signature.name = taken
    clash = compat.new_library()
    clash.function.append(other)
    assert compat.add_definitions(clash) == [taken]  # e.g. what a trace of another function got named
    clashing = scaled_sum(two_variables(), "clash")
    assert clashing.prepare() == "traced" and entry.read_bytes() == content
    np.testing.assert_array_equal(clashing(tf.constant([1.0, 2.0, 3.0])).numpy(), [12.0, 14.0, 16.0])
    compat.remove_definitions([taken])
    assert scaled_sum(two_variables(), "clash").prepare() == "loaded"


def test_a_function_capturing_a_variable_outside_the_list_runs_but_is_not_saved(cache):
    outside = tf.Variable(5.0)
    function = tf.function(lambda x: x + outside, input_signature=[tf.TensorSpec([], tf.float32)], autograph=False)
    call = graph_cache.CachedGraphFunction(function, lambda: {}, graph_cache.cache_key("outside", {}))
    assert float(call(tf.constant(1.0))) == 6.0 and call.source == "traced"
    assert list(cache.glob("champion-graph-*.pb")) == []


def _library_text(call: graph_cache.CachedGraphFunction) -> str:
    """A function's traced definitions as text, with TensorFlow's unique ids in names taken out."""
    concrete = call.function.get_concrete_function()
    definitions = [*concrete.graph.as_graph_def().library.function, concrete.function_def]
    return "\n".join(sorted(re.sub(r"([_-])\d{3,}", r"\1N", str(definition)) for definition in definitions))


def _engine(config: TrainConfig) -> GraphEngine:
    model = ActorCritic(network_spec(describe_env(config.env_id), config), seed=config.seed)
    return GraphEngine(model, make_learner(model, config), config, Timings())


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_the_graph_engine_key_leaves_out_only_settings_its_graph_does_not_read(tmp_path, algo):
    """Runs that differ only in where and how long they run, how they log, stop and crown (issue 31: crown.*),
    or in the other algorithm's settings, share one traced graph; one setting the graph reads is enough to
    change it."""
    other_algo = "a2c" if algo == "ppo" else "ppo"
    base, _ = resolve_config("CartPole-v1", algo, {"histogram_every": 10_000})
    changed = {"seed": 7, "total_steps": 12_345, "schedule_steps": 20_000, "eval_every": 999, "eval_episodes": 3, "eval_seed": 5,
               "eval_in_background": False, "results_dir": str(tmp_path), "run_name": "other",
               "checkpoint_every": 777, "checkpoint_keep": 1, "max_nonfinite_updates": 9, "log_every": 111,
               "media": False, "crown.episodes": 7, "crown.seed": 5_000, "crown.at_end": False,
               "stop.at_return": 100.0, "stop.after_evaluations_without_best": 3,
               "ray.workers": 3, "ray.eval_workers": 0, "engine": "graph", "vectorization": "sync",
               "histogram_every": 50_000, f"{other_algo}.gamma": 0.5, f"{other_algo}.learning_rate": 0.1}
    assert sorted({key.split(".")[0] for key in changed} - {other_algo}) == sorted(FIELDS_OUTSIDE_THE_GRAPH)
    other, _ = resolve_config("CartPole-v1", algo, changed)
    base_engine, other_engine = _engine(base), _engine(other)
    assert base_engine.cache_key == other_engine.cache_key
    assert _library_text(base_engine.call) == _library_text(other_engine.call)
    # A setting the graph does read changes both the key and the graph (so the comparison above can tell).
    gamma, _ = resolve_config("CartPole-v1", algo, {f"{algo}.gamma": 0.9, "histogram_every": 10_000})
    gamma_engine = _engine(gamma)
    assert gamma_engine.cache_key != base_engine.cache_key
    assert _library_text(gamma_engine.call) != _library_text(base_engine.call)
    # Of histogram_every the graph reads whether it is 0: above, the learner keeps its gradients for histograms.
    without_histograms, _ = resolve_config("CartPole-v1", algo, {"histogram_every": 0})
    assert graph_settings(without_histograms) != graph_settings(base)
    assert graph_cache.cache_key("GraphEngine._advance", graph_settings(base)) == base_engine.cache_key


def _learner_step(learner_class: type, config: Any, seed: int, batch: RolloutBatch) -> tuple[str, list, list]:
    model = ActorCritic(NetworkSpec((box_leaf((4,)),), "discrete", 2, hidden_sizes=(16,)), seed=1)
    learner = CompiledLearner(learner_class(model, config, num_envs=4, seed=seed))
    source = learner.compiled_update.prepare()
    metrics = learner.update(batch, 1.0)
    return source, list(metrics.values()), [variable.numpy() for variable in model.weights]


@pytest.mark.parametrize("learner_class, config", [
    (PPOLearner, PPOConfig(num_steps=16, minibatch_size=32, epochs=2)),  # XLA-compiled
    (A2CLearner, A2CConfig(num_steps=16)),  # not
])
def test_a_learner_update_loaded_from_the_cache_takes_the_traced_ones_step(cache, learner_class, config):
    batch = random_batch(np.random.default_rng(0), 16, 4)
    traced = _learner_step(learner_class, config, 5, batch)
    gc.collect()  # the traced definitions go with the first learner
    loaded = _learner_step(learner_class, config, 5, batch)
    assert (traced[0], loaded[0]) == ("traced", "loaded") and loaded[1] == traced[1]
    for traced_weights, loaded_weights in zip(traced[2], loaded[2]):
        np.testing.assert_array_equal(loaded_weights, traced_weights)
    # The seed is not in the key: it only fills the learner's generator, a variable.
    seeded = [CompiledLearner(learner_class(ActorCritic(NetworkSpec((box_leaf((4,)),), "discrete", 2, hidden_sizes=(16,))),
                                            config, num_envs=4, seed=seed)).compiled_update for seed in (0, 7)]
    assert seeded[0].key == seeded[1].key and _library_text(seeded[0].call) == _library_text(seeded[1].call)


def test_the_source_digest_covers_every_module_of_the_installed_packages():
    """Traced graphs are keyed by champion's source: every .py file of champion.agents, .envs and .runners,
    found where the install put them (the repository's folders map under champion)."""
    root = Path(__file__).parent.parent
    names = [name for name, _ in graph_cache.source_files()]
    expected = sorted(f"champion.{folder}/{path.relative_to(root / folder)}"
                      for folder in ("agents", "envs", "runners") for path in (root / folder).rglob("*.py"))
    assert names == expected
    assert {"champion.agents/ppo.py", "champion.envs/factory.py", "champion.runners/training.py"} <= set(names)
