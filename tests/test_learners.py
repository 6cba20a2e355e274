"""Compiled steps trace once; the learners learn a problem whose answer is known."""

import numpy as np
import pytest
import tensorflow as tf

from champion.agents.batch import RolloutBatch
from champion.agents.config import A2CConfig, PPOConfig
from champion.agents.networks import ActorCritic, NetworkSpec
from champion.agents.ppo import PPOLearner
from champion.agents.a2c import A2CLearner
from champion.agents.compile.update import CompiledLearner
from champion.agents.spec import box_leaf
from champion.runners.configure import resolve_config
from champion.runners.training import train


def random_batch(rng, num_steps, num_envs, observation_size=4):
    shape = (num_steps, num_envs)
    floats = lambda: rng.standard_normal(shape).astype(np.float32)
    return RolloutBatch(
        observations=rng.standard_normal((*shape, observation_size)).astype(np.float32),
        actions=rng.integers(0, 2, shape).astype(np.int32),
        log_probs=np.full(shape, np.log(0.5), np.float32), values=floats(), rewards=floats(),
        terminated=(rng.random(shape) < 0.1).astype(np.float32),
        truncated=(rng.random(shape) < 0.05).astype(np.float32),
        truncation_values=floats(), last_values=rng.standard_normal(num_envs).astype(np.float32),
    )


@pytest.mark.parametrize("make", [
    lambda model: CompiledLearner(PPOLearner(model, PPOConfig(num_steps=16, minibatch_size=32, epochs=3,
                                                              learning_rate_schedule="linear"), num_envs=4)),
    lambda model: CompiledLearner(A2CLearner(model, A2CConfig(num_steps=16), num_envs=4)),
])
def test_compiled_update_traces_once(make):
    rng = np.random.default_rng(0)
    model = ActorCritic(NetworkSpec((box_leaf((4,)),), "discrete", 2, hidden_sizes=(16,)))
    learner = make(model)
    before = [variable.numpy().copy() for variable in model.trainable_variables]
    for index in range(4):
        metrics = learner.update(random_batch(rng, 16, 4), progress_remaining=1.0 - index / 4)
    assert learner.tracing_count() == 1
    assert all(np.isfinite(value) for value in metrics.values())
    assert metrics["learning_rate"] == pytest.approx(learner.config.learning_rate * (0.25 if isinstance(learner.learner, PPOLearner) else 1.0))
    assert any(not np.allclose(old, new.numpy()) for old, new in zip(before, model.trainable_variables))


@pytest.mark.parametrize("learner_class, config", [
    # One minibatch per epoch: XLA draws other shuffles, but the same set of samples gives the same step.
    (PPOLearner, PPOConfig(num_steps=16, minibatch_size=64, epochs=2)),
    (A2CLearner, A2CConfig(num_steps=16, optimizer="adam")),
])
def test_xla_compiled_update_computes_the_same_step(learner_class, config):
    import dataclasses

    rng = np.random.default_rng(3)
    batches = [random_batch(rng, 16, 4) for _ in range(3)]
    results = []
    for jit_compile in (False, True):
        model = ActorCritic(NetworkSpec((box_leaf((4,)),), "discrete", 2, hidden_sizes=(16,), normalize_observations=True), seed=1)
        learner = CompiledLearner(learner_class(model, dataclasses.replace(config, jit_compile=jit_compile), num_envs=4, seed=5))
        metrics = [learner.update(batch, 1.0) for batch in batches]
        assert learner.tracing_count() == 1
        results.append((metrics, [variable.numpy() for variable in model.weights]))
    (plain_metrics, plain_weights), (xla_metrics, xla_weights) = results
    for plain, xla in zip(plain_metrics, xla_metrics):
        assert xla == pytest.approx(plain, rel=1e-3, abs=1e-5)
    for plain, xla in zip(plain_weights, xla_weights):
        np.testing.assert_allclose(xla, plain, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("learner_class, config", [
    (PPOLearner, PPOConfig(num_steps=16, minibatch_size=32, epochs=2, jit_compile=False)),
    (A2CLearner, A2CConfig(num_steps=16, jit_compile=False)),
])
def test_the_compiled_update_takes_the_step_the_learners_own_ops_take(learner_class, config):
    """The compile package adds packing, a fixed signature and the graph cache around the learner's math, and
    nothing to it: the learner's update_ops in a plain tf.function give the same metrics and weights."""
    rng = np.random.default_rng(6)
    batches = [random_batch(rng, 16, 4) for _ in range(2)]
    results = []
    for compiled in (True, False):
        model = ActorCritic(NetworkSpec((box_leaf((4,)),), "discrete", 2, hidden_sizes=(16,),
                                        normalize_observations=True), seed=1)
        learner = learner_class(model, config, num_envs=4, seed=5)
        if compiled:
            update = CompiledLearner(learner).update
        else:
            plain = tf.function(learner.update_ops, autograph=False)
            update = lambda batch, progress: {name: float(value) for name, value in plain(
                RolloutBatch(*[tf.constant(field) for field in batch]), tf.constant(progress)).items()}
        metrics = [update(batch, 1.0) for batch in batches]
        results.append((metrics, [variable.numpy() for variable in model.weights]))
    (compiled_metrics, compiled_weights), (plain_metrics, plain_weights) = results
    assert [list(step) for step in compiled_metrics] == [list(learner.metric_names) for _ in batches]
    for compiled, plain in zip(compiled_metrics, plain_metrics):
        assert compiled == pytest.approx(plain, rel=1e-6, abs=1e-7)
    for compiled, plain in zip(compiled_weights, plain_weights):
        np.testing.assert_allclose(compiled, plain, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(weights, first) for weights, first in zip(
        compiled_weights, [variable.numpy() for variable in ActorCritic(model.spec, seed=1).weights]))


def test_ppo_shuffles_only_when_an_epoch_has_several_minibatches():
    """One minibatch per epoch is the whole batch in any order: no shuffle is drawn, and the step is the
    same for the batch with its envs reordered (the same samples; GAE runs along time, per env)."""
    rng = np.random.default_rng(4)
    batch = random_batch(rng, 16, 4)
    reordered = RolloutBatch(*[field[:, ::-1] if field.ndim >= 2 else field[::-1] for field in batch])
    weights, generator_moved = [], []
    for minibatch_size, rollout in ((64, batch), (64, reordered), (32, batch)):
        model = ActorCritic(NetworkSpec((box_leaf((4,)),), "discrete", 2, hidden_sizes=(16,)), seed=1)
        learner = PPOLearner(model, PPOConfig(num_steps=16, minibatch_size=minibatch_size, epochs=3), num_envs=4, seed=5)
        state = learner.generator.state.numpy().copy()
        CompiledLearner(learner).update(rollout, 1.0)
        weights.append([variable.numpy() for variable in model.trainable_variables])
        generator_moved.append(not np.array_equal(state, learner.generator.state.numpy()))
    assert generator_moved == [False, False, True]
    for whole, whole_reordered in zip(weights[0], weights[1]):
        np.testing.assert_allclose(whole_reordered, whole, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(whole, halves) for whole, halves in zip(weights[0], weights[2]))


@pytest.mark.parametrize("algo, overrides", [
    ("ppo", {"ppo.num_steps": 16, "ppo.minibatch_size": 32, "ppo.learning_rate": 3e-3}),
    ("a2c", {"a2c.learning_rate": 3e-3, "a2c.optimizer": "adam"}),
])
def test_learns_the_bandit_whose_best_return_is_one(tmp_path, algo, overrides):
    config, _ = resolve_config("champion-test/Bandit-v0", algo, dict(
        overrides, total_steps=4000, num_envs=4, eval_every=500, eval_episodes=4,
        results_dir=str(tmp_path), run_name="bandit"))
    result = train(config, progress=False)
    assert result.best_mean_return == 1.0
    assert result.evaluations[-1][1] == 1.0
    assert result.env_steps >= 4000


@pytest.mark.parametrize("make, steps_per_update", [
    (lambda model: CompiledLearner(PPOLearner(model, PPOConfig(num_steps=16, minibatch_size=32, epochs=3), num_envs=4)), 6),
    (lambda model: CompiledLearner(A2CLearner(model, A2CConfig(num_steps=16), num_envs=4)), 1),
])
def test_a_non_finite_update_is_skipped_and_counted(make, steps_per_update):
    rng = np.random.default_rng(1)
    model = ActorCritic(NetworkSpec((box_leaf((4,)),), "discrete", 2, hidden_sizes=(16,)))
    learner = make(model)
    assert learner.update(random_batch(rng, 16, 4), 1.0)["nonfinite_steps"] == 0.0
    weights = [variable.numpy().copy() for variable in model.trainable_variables]
    optimizer_state = [variable.numpy().copy() for variable in learner.optimizer.variables]
    poisoned = random_batch(rng, 16, 4)._replace(rewards=np.full((16, 4), np.nan, np.float32))
    metrics = learner.update(poisoned, 1.0)
    assert metrics["nonfinite_steps"] == steps_per_update
    assert all(np.array_equal(old, new.numpy()) for old, new in zip(weights, model.trainable_variables))
    assert all(np.array_equal(old, new.numpy()) for old, new in zip(optimizer_state, learner.optimizer.variables))
    assert learner.tracing_count() == 1


def test_rmsprop_epsilon_is_added_to_the_root_as_in_pytorch():
    import tensorflow as tf

    from champion.agents.a2c import make_optimizer

    optimizer = make_optimizer(A2CConfig(learning_rate=0.1, rmsprop_decay=0.5, optimizer_epsilon=1e-5))
    variable = tf.Variable([1.0])
    optimizer.build([variable])
    optimizer.apply_gradients([(tf.constant([1e-4]), variable)])  # a small gradient, where epsilon matters
    step = 1.0 - variable.numpy()[0]
    second_moment = 0.5 * 1e-4**2
    torch_step = 0.1 * 1e-4 / (np.sqrt(second_moment) + 1e-5)  # PyTorch / SB3: about 0.124
    keras_as_is = 0.1 * 1e-4 / np.sqrt(second_moment + 1e-5)  # epsilon under the root: about 0.0032
    assert step == pytest.approx(torch_step, rel=0.15)
    assert step > 30 * keras_as_is


@pytest.mark.parametrize("action_shape", [(), (2,)])
def test_batch_packing_round_trips_every_field(action_shape):
    from champion.agents.compile.packing import BatchPacking

    rng = np.random.default_rng(0)
    batch = random_batch(rng, 5, 3, observation_size=6)._replace(observations=rng.standard_normal((5, 3, 2, 3)).astype(np.float32))
    if action_shape:
        batch = batch._replace(actions=rng.standard_normal((5, 3, 2)).astype(np.float32))
    packing = BatchPacking((2, 3), action_shape, num_steps=5, num_envs=3)
    steps, last_values = packing.pack(batch)
    assert steps.shape == (5, 3, 6 + (2 if action_shape else 1) + 6) and steps.dtype == np.float32
    unpacked = packing.unpack(tf.constant(steps), tf.constant(last_values))
    for name, original in batch._asdict().items():
        restored = getattr(unpacked, name).numpy()
        assert restored.dtype == np.asarray(original).dtype, name
        np.testing.assert_array_equal(restored, original, err_msg=name)
