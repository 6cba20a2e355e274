"""The traced-graph cache: a function loaded from it computes what the traced one did, an entry that can't
be used is traced afresh, and the graph engine's key leaves out only settings its graph does not read."""

import re

import numpy as np
import pytest
import tensorflow as tf

from agents import graph_cache, xla_cache
from agents.config import TrainConfig
from agents.networks import ActorCritic
from agents.learners import make_learner
from envs.factory import describe_env
from runners.configure import resolve_config
from runners.graph_engine import FIELDS_OUTSIDE_THE_GRAPH, GraphEngine
from runners.timing import Timings
from runners.training import network_spec


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache directory of the test's own (the flag is read from the environment at each use)."""
    monkeypatch.setenv("TF_XLA_FLAGS", f"{xla_cache.FLAG}={tmp_path}")
    return tmp_path


def scaled_sum(variables: list[tf.Variable], name: str) -> graph_cache.CachedGraphFunction:
    """A function of its input and the two variables (it also bumps the second): x * a + b, then b += 1."""
    weight, offset = variables

    def compute(x: tf.Tensor) -> tf.Tensor:
        result = x * weight + offset
        offset.assign_add(tf.ones_like(offset))
        return result

    function = tf.function(compute, input_signature=[tf.TensorSpec([3], tf.float32)], autograph=False)
    return graph_cache.CachedGraphFunction(function, lambda: variables, graph_cache.cache_key(name, {}))


def two_variables(shape: tuple[int, ...] = (3,)) -> list[tf.Variable]:
    return [tf.Variable(tf.fill(shape, 2.0)), tf.Variable(tf.fill(shape, 10.0))]


def test_a_loaded_function_computes_with_its_own_variables_what_the_traced_one_did(cache):
    first_variables, second_variables = two_variables(), two_variables()
    traced, loaded = scaled_sum(first_variables, "sum"), scaled_sum(second_variables, "sum")
    x = tf.constant([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(traced(x).numpy(), [12.0, 14.0, 16.0])
    assert traced.source == "traced" and len(list(cache.glob("champion-graph-*.pb"))) == 1
    np.testing.assert_array_equal(loaded(x).numpy(), [12.0, 14.0, 16.0])
    np.testing.assert_array_equal(loaded(x).numpy(), [13.0, 15.0, 17.0])  # its own offset went up twice
    assert loaded.source == "loaded" and loaded.function.experimental_get_tracing_count() == 0
    assert (traced.build_count(), loaded.build_count()) == (1, 1)
    np.testing.assert_array_equal(first_variables[1].numpy(), [11.0, 11.0, 11.0])
    np.testing.assert_array_equal(second_variables[1].numpy(), [12.0, 12.0, 12.0])


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "other shapes"])
def test_an_entry_that_cannot_be_used_is_ignored_and_the_function_traced(cache, damage):
    scaled_sum(two_variables(), "damaged").prepare()
    entry = next(cache.glob("champion-graph-*.pb"))
    content = entry.read_bytes()
    variables = two_variables()
    if damage == "truncated":
        entry.write_bytes(content[: len(content) // 2])
    elif damage == "flipped byte":
        entry.write_bytes(content[:-10] + bytes([content[-10] ^ 1]) + content[-9:])
    else:  # a valid entry, but these variables are not the ones it was traced with
        variables = two_variables((2, 3))
    again = scaled_sum(variables, "damaged")
    assert again.prepare() == "traced"
    result = again(tf.constant([1.0, 2.0, 3.0])).numpy()
    np.testing.assert_array_equal(result, [12.0, 14.0, 16.0] if damage != "other shapes" else [[12.0, 14.0, 16.0]] * 2)
    assert scaled_sum(variables, "damaged").prepare() == "loaded"  # the new trace's entry replaced it


def test_a_function_capturing_a_variable_outside_the_list_runs_but_is_not_saved(cache):
    outside = tf.Variable(5.0)
    function = tf.function(lambda x: x + outside, input_signature=[tf.TensorSpec([], tf.float32)], autograph=False)
    call = graph_cache.CachedGraphFunction(function, lambda: [], graph_cache.cache_key("outside", {}))
    assert float(call(tf.constant(1.0))) == 6.0 and call.source == "traced"
    assert list(cache.glob("champion-graph-*.pb")) == []


def _library_text(engine: GraphEngine) -> str:
    """The fused call's traced definitions as text, with TensorFlow's unique ids in names taken out."""
    concrete = engine.call.function.get_concrete_function()
    definitions = [*concrete.graph.as_graph_def().library.function, concrete.function_def]
    text = "\n".join(sorted(str(definition) for definition in definitions))
    return re.sub(r"_\d{4,}", "_N", text)


def _engine(config: TrainConfig) -> GraphEngine:
    model = ActorCritic(network_spec(describe_env(config.env_id), config), seed=config.seed)
    return GraphEngine(model, make_learner(model, config), config, Timings())


def test_the_graph_engine_key_leaves_out_only_settings_its_graph_does_not_read(tmp_path):
    base, _ = resolve_config("CartPole-v1", "ppo", {})
    changed = {"seed": 7, "total_steps": 12_345, "eval_every": 999, "eval_episodes": 3, "eval_seed": 5,
               "eval_in_background": False, "results_dir": str(tmp_path), "run_name": "other",
               "checkpoint_every": 777, "checkpoint_keep": 1, "max_nonfinite_updates": 9, "log_every": 111,
               "media": False}
    assert sorted(changed) == sorted(FIELDS_OUTSIDE_THE_GRAPH)
    other, _ = resolve_config("CartPole-v1", "ppo", changed)
    base_engine, other_engine = _engine(base), _engine(other)
    assert base_engine.cache_key == other_engine.cache_key
    assert _library_text(base_engine) == _library_text(other_engine)
    # A setting the graph does read changes both the key and the graph (so the comparison above can tell).
    gamma, _ = resolve_config("CartPole-v1", "ppo", {"ppo.gamma": 0.9})
    gamma_engine = _engine(gamma)
    assert gamma_engine.cache_key != base_engine.cache_key
    assert _library_text(gamma_engine) != _library_text(base_engine)
