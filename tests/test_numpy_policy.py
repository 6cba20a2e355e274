"""The numpy acting path computes what the Keras model computes, and samples the right distribution."""

import numpy as np
import pytest
import tensorflow as tf

from champion.agents.networks import ActorCritic, NetworkSpec, weight_arrays, numpy_policy
from champion.agents.distributions import make_distribution
from champion.agents.spec import box_leaf


def spec_for(kind: str, **changes) -> NetworkSpec:
    values = dict(observation_leaves=(box_leaf((3,)),), action_kind=kind, action_size=2, hidden_sizes=(16, 8))
    if kind == "continuous":
        values.update(action_low=(-1.0, -2.0), action_high=(1.0, 2.0), log_std_init=-0.7)
    values.update(changes)
    return NetworkSpec(**values)


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
@pytest.mark.parametrize("activation, shared, normalize", [
    ("tanh", False, False), ("relu", True, True), ("elu", False, True), ("gelu", False, True), ("silu", True, False),
])
def test_forward_pass_equals_the_keras_model(kind, activation, shared, normalize):
    model = ActorCritic(spec_for(kind, activation=activation, shared_torso=shared, normalize_observations=normalize), seed=5)
    rng = np.random.default_rng(0)
    model.update_normalizer(tf.constant(rng.normal(50.0, 20.0, size=(64, 3)), tf.float32))
    observations = rng.normal(50.0, 40.0, size=(200, 3)).astype(np.float32)
    parameters, values = model(observations)
    head, numpy_values = numpy_policy(model).forward(observations)
    # float32 both ways; only the order of summation differs
    np.testing.assert_allclose(head, parameters.numpy()[:, :2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(numpy_values, values.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model.value(observations).numpy(), values.numpy())  # the same ops, bit for bit
    if kind == "discrete":
        assert np.array_equal(numpy_policy(model).mode(observations), make_distribution(model).mode(parameters).numpy())


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_sampled_log_probabilities_equal_the_distributions(kind):
    model = ActorCritic(spec_for(kind), seed=1)
    observations = np.random.default_rng(2).normal(size=(500, 3)).astype(np.float32)
    actions, log_probs, values = numpy_policy(model, seed=3).sample(observations)
    parameters, _ = model(observations)
    expected = make_distribution(model).log_prob(parameters, tf.constant(actions)).numpy()
    np.testing.assert_allclose(log_probs, expected, rtol=1e-5, atol=1e-5)
    assert actions.dtype == (np.int32 if kind == "discrete" else np.float32)


def test_categorical_samples_follow_the_softmax():
    model = ActorCritic(spec_for("discrete", action_size=3, hidden_sizes=(4,)), seed=0)
    head = model.policy_head
    head.kernel.assign(np.zeros_like(head.kernel.numpy()))
    head.bias.assign(np.log(np.array([0.2, 0.3, 0.5], np.float32)))  # logits of probabilities 0.2/0.3/0.5
    actions, log_probs, _ = numpy_policy(model, seed=0).sample(np.zeros((40_000, 3), np.float32))
    frequencies = np.bincount(actions, minlength=3) / len(actions)
    np.testing.assert_allclose(frequencies, [0.2, 0.3, 0.5], atol=0.01)  # 4 standard errors at n = 40k
    np.testing.assert_allclose(log_probs, np.log([0.2, 0.3, 0.5])[actions], rtol=1e-5)


def test_gaussian_samples_have_the_mean_and_the_learned_std():
    model = ActorCritic(spec_for("continuous", log_std_init=np.log(0.5)), seed=0)
    observations = np.zeros((40_000, 3), np.float32)
    actions, _, _ = numpy_policy(model, seed=0).sample(observations)
    mean = numpy_policy(model).mode(observations[:1])[0]
    np.testing.assert_allclose(actions.mean(axis=0), mean, atol=0.01)
    np.testing.assert_allclose(actions.std(axis=0), [0.5, 0.5], rtol=0.02)


def test_refresh_takes_new_weights_and_the_sampler_state_round_trips():
    model = ActorCritic(spec_for("discrete"), seed=0)
    policy = numpy_policy(model, seed=7)
    observations = np.ones((4, 3), np.float32)
    before = policy.value(observations)
    model.value_head.bias.assign([1.5])
    assert np.allclose(policy.value(observations), before)  # a snapshot until refreshed
    policy.refresh()
    np.testing.assert_allclose(policy.value(observations), before + 1.5, rtol=1e-6)
    state = policy.random_state()
    first = policy.sample(np.zeros((64, 3), np.float32))[0]
    policy.set_random_state(state)
    assert np.array_equal(policy.sample(np.zeros((64, 3), np.float32))[0], first)


def test_a_snapshot_keeps_acting_with_the_weights_it_was_taken_with():
    model = ActorCritic(NetworkSpec((box_leaf((4,)),), "discrete", 2, hidden_sizes=(8,)), seed=1)
    policy = numpy_policy(model, seed=0)
    observations = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    snapshot, before, weights = policy.snapshot(), policy.forward(observations), weight_arrays(model)
    for variable in model.trainable_variables:
        variable.assign(variable + 0.5)
    policy.refresh()
    assert not np.allclose(policy.forward(observations)[0], before[0])
    np.testing.assert_array_equal(snapshot.forward(observations)[0], before[0])
    assert snapshot.weights.keys() == weights.keys()
    assert all(np.array_equal(snapshot.weights[name], weights[name]) for name in weights)
    assert snapshot.random is not policy.random


def test_each_row_is_computed_the_same_whatever_batch_it_is_in():
    """A batch of 8 split as 2 x 4 or 8 x 1 gives every row to the last bit, for dense layers and convolutions
    (a BLAS matrix product of the whole batch does not: it picks its kernels by the batch's size)."""
    from champion.agents.numpy_policy import _convolve, _matmul

    rng = np.random.default_rng(3)
    for rows, columns in ((4, 64), (64, 64), (128, 128), (3136, 512)):
        inputs = rng.standard_normal((8, rows)).astype(np.float32)
        kernel = rng.standard_normal((rows, columns)).astype(np.float32)
        whole = _matmul(inputs, kernel)
        for parts in (2, 8):
            assert np.array_equal(np.concatenate([_matmul(part, kernel) for part in np.split(inputs, parts)]), whole)
        np.testing.assert_allclose(whole, inputs @ kernel, rtol=1e-4, atol=1e-3)  # the same product
    images = rng.random((8, 84, 84, 4)).astype(np.float32)
    kernel = rng.standard_normal((8, 8, 4, 32)).astype(np.float32)
    whole = _convolve(images, kernel, 4)
    assert whole.shape == (8, 20, 20, 32)
    assert np.array_equal(np.concatenate([_convolve(part, kernel, 4) for part in np.split(images, 2)]), whole)


def test_env_noise_depends_only_on_the_env_and_survives_a_pickle_and_a_checkpoint():
    """Env i draws the same numbers whether its stream is one of 8 or one of 4; past a block boundary too. Ray
    pickles it between processes; a checkpoint holds it as data (``champion.runners.store.state_codec``)."""
    import pickle

    from champion.agents.numpy_policy import EnvNoise
    from champion.runners.store.state_codec import decode_state, encode_state

    whole, first, second = EnvNoise(7, range(8)), EnvNoise(7, range(4)), EnvNoise(7, range(4, 8))
    steps = EnvNoise.BLOCK + 10
    together = np.stack([whole.draw("gumbel", (8, 3)) for _ in range(steps)])
    apart = np.stack([np.concatenate([first.draw("gumbel", (4, 3)), second.draw("gumbel", (4, 3))])
                      for _ in range(steps)])
    assert np.array_equal(together, apart)
    copy, restored = pickle.loads(pickle.dumps(whole)), decode_state(*encode_state(whole))
    drawn = whole.draw("gumbel", (8, 3))
    assert np.array_equal(copy.draw("gumbel", (8, 3)), drawn) and np.array_equal(restored.draw("gumbel", (8, 3)), drawn)
    assert not np.array_equal(EnvNoise(8, range(8)).draw("gumbel", (8, 3)), together[0])  # another seed
    with pytest.raises(ValueError, match="noise for 8 envs asked for a batch of 4"):
        whole.draw("gumbel", (4, 3))


@pytest.mark.parametrize("kind", ["discrete", "continuous", "multibinary"])
def test_sampling_8_envs_equals_sampling_them_as_two_workers_of_4(kind):
    from champion.agents.numpy_policy import EnvNoise

    policy = numpy_policy(ActorCritic(spec_for(kind), seed=2))
    observations = np.random.default_rng(4).normal(size=(8, 3)).astype(np.float32)
    whole, first, second = EnvNoise(1, range(8)), EnvNoise(1, range(4)), EnvNoise(1, range(4, 8))
    for _ in range(3):
        together = policy.sample(observations, whole)
        apart = [np.concatenate(parts) for parts in zip(policy.sample(observations[:4], first),
                                                        policy.sample(observations[4:], second))]
        assert all(np.array_equal(one, other) for one, other in zip(together, apart))


@pytest.mark.parametrize("value_sizes", [(32, 16), (24,), (16, 16, 8), (256, 256)])  # the last: too wide to fuse
@pytest.mark.parametrize("ortho_init", [True, False])
def test_a_value_torso_of_its_own_shape_computes_what_keras_computes(value_sizes, ortho_init):
    """network.value_hidden_sizes (same depth: fused side by side; another depth: one torso after the other)."""
    model = ActorCritic(spec_for("continuous", value_hidden_sizes=value_sizes, ortho_init=ortho_init), seed=3)
    kernels = {variable.path: variable.shape for variable in model.weights if variable.path.endswith("kernel")}
    assert [shape[1] for path, shape in sorted(kernels.items()) if "value_torso" in path] == list(value_sizes)
    observations = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    parameters, values = model(observations)
    head, numpy_values = numpy_policy(model).forward(observations)
    np.testing.assert_allclose(head, parameters.numpy()[:, :2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(numpy_values, values.numpy(), rtol=1e-5, atol=1e-5)
    hidden = model.get_layer("policy_torso_0").kernel.numpy()  # 3 x 16: its 3 rows are orthogonal
    gram = hidden @ hidden.T  # scaled by the gain sqrt(2): 2 * identity
    assert np.allclose(gram, 2.0 * np.eye(len(gram)), atol=1e-4) == ortho_init
    bias = model.get_layer("policy_torso_0").bias.numpy()
    if not ortho_init:  # PyTorch's default: weights and biases uniform within 1/sqrt(fan_in), fan_in 3
        assert np.abs(hidden).max() <= 1 / np.sqrt(3) and np.abs(hidden).max() > 0.4 and np.abs(bias).max() > 0.1
    else:
        assert not bias.any()



def test_playing_episodes_puts_numpys_blas_on_one_thread_as_training_does():
    """The crown's spawned processes, ``champion crown`` and the API play through ``play_episodes``: it pins numpy's
    BLAS to one thread, as training and replay do (on several, a crown's Breakout episodes took 25 times as long)."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json\n"
        "import numpy as np\n"
        "from threadpoolctl import threadpool_info\n"
        "from champion.agents.spec import NetworkSpec, box_leaf\n"
        "from champion.envs.factory import EnvOptions\n"
        "from champion.runners.evaluate import play_episodes\n"
        "def threads():\n"
        "    return sorted({pool['num_threads'] for pool in threadpool_info() if pool['user_api'] == 'blas'})\n"
        "before = threads()\n"
        "spec = NetworkSpec((box_leaf((4,)),), 'discrete', 2, hidden_sizes=(4,))\n"
        "weights = {'policy_torso_0/kernel': np.ones((4, 4), np.float32), 'policy_torso_0/bias': np.zeros(4, np.float32),"
        " 'value_torso_0/kernel': np.ones((4, 4), np.float32), 'value_torso_0/bias': np.zeros(4, np.float32),"
        " 'policy_head/kernel': np.zeros((4, 2), np.float32), 'policy_head/bias': np.array([0, 1], np.float32),"
        " 'value_head/kernel': np.ones((4, 1), np.float32), 'value_head/bias': np.zeros(1, np.float32)}\n"
        "result = play_episodes('CartPole-v1', EnvOptions(), spec, weights, [0, 1])\n"
        "print(json.dumps([before, threads(), list(result.lengths)]))\n")
    environment = {key: value for key, value in os.environ.items() if not key.endswith("NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=environment)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after, lengths = json.loads(done.stdout.splitlines()[-1])
    assert after == [1]
    assert before == [os.cpu_count()] or os.cpu_count() == 1  # numpy's own default: one thread per CPU
    assert len(lengths) == 2 and all(length < 20 for length in lengths)  # always pushing right: the pole falls
