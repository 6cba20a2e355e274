"""Every standard gymnasium space: how observations are laid out and encoded, how actions are drawn and sent,
and a known-answer task per space that only a correct handling can solve, replayed and exported."""

import json
import os
import signal
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import toy_envs
from crash_helpers import CHAMPION, QUICK, champion_here, evaluation_rows
from ai_edge_litert.interpreter import Interpreter
from champion.agents.distributions import make_distribution
from champion.agents.networks import ActorCritic, numpy_policy
from champion.agents.spec import NetworkSpec, ObservationLeaf, flat_observations
from champion.envs.factory import EnvError, EnvOptions, describe_env, make_env
from champion.envs.spaces import observation_leaves
from champion.runners.configure import resolve_config
from champion.runners.store.best_store import load_best
from champion.runners.export import export_policy, probe_observations
from champion.runners.replay import load_policy, replay
from champion.runners.training import train


def test_leaves_sit_where_gymnasiums_flatten_puts_them():
    space = gym.spaces.Dict({
        "pair": gym.spaces.Tuple((gym.spaces.Discrete(3, start=1), gym.spaces.Box(-1.0, 1.0, (2,), np.float32))),
        "grid": gym.spaces.MultiDiscrete([2, 3], start=[0, 5]),
        "bits": gym.spaces.MultiBinary(3),
        "camera": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
    })
    space.seed(0)
    leaves = observation_leaves(space)
    assert [(leaf.name, leaf.kind, leaf.size) for leaf in leaves] == [
        ("bits", "binary", 3), ("camera", "image", 192), ("grid", "onehot", 5), ("pair_0", "onehot", 3),
        ("pair_1", "box", 2)]  # gymnasium's Dict orders its keys
    for _ in range(5):
        sample = space.sample()
        flat = gym.spaces.flatten(space, sample)
        offset = 0
        expected = {"bits": sample["bits"], "camera": sample["camera"].ravel(),
                    "grid": np.concatenate([np.eye(2)[sample["grid"][0]], np.eye(3)[sample["grid"][1] - 5]]),
                    "pair_0": np.eye(3)[sample["pair"][0] - 1], "pair_1": sample["pair"][1]}
        for leaf in leaves:
            np.testing.assert_array_equal(flat[offset:offset + leaf.size], expected[leaf.name])
            offset += leaf.size
        assert offset == len(flat)
        # and the exporter's encoding of the same leaves, from the raw values
        inputs = {"bits": sample["bits"][None], "camera": sample["camera"][None], "grid": sample["grid"][None],
                  "pair_0": np.array([sample["pair"][0]]), "pair_1": sample["pair"][1][None]}
        spec = NetworkSpec(leaves, "discrete", 2)
        np.testing.assert_array_equal(flat_observations(spec, inputs)[0], flat.astype(np.float32))


@pytest.mark.parametrize("shape, dtype, layout, kind, image_shape", [
    ((84, 84), np.uint8, "auto", "image", (84, 84, 1)),
    ((64, 48, 3), np.uint8, "auto", "image", (64, 48, 3)),
    ((4, 84, 84), np.uint8, "auto", "image", (84, 84, 4)),  # channels first
    ((64, 64, 3), np.float32, "auto", "box", None),  # floats are not taken for pixels
    ((64, 64, 3), np.uint8, "none", "box", None),
    ((10, 12, 7), np.float32, "channels_last", "image", (10, 12, 7)),
    ((2, 5), np.uint8, "auto", "image", (2, 5, 1)),
])
def test_image_observations_are_detected_or_chosen(shape, dtype, layout, kind, image_shape):
    [leaf] = observation_leaves(gym.spaces.Box(0, 255, shape, dtype), layout)
    assert leaf.kind == kind
    if image_shape:
        assert leaf.image_shape == image_shape


def test_stacked_image_frames_become_channels_and_a_dict_action_space_is_refused():
    env = make_env("champion-test/QuadrantCue-v0", EnvOptions(frame_stack=3))
    observation, _ = env.reset(seed=4)
    assert observation.shape == (32, 32, 3)
    for _ in range(2):
        previous = observation
        observation, *_ = env.step(0)
        np.testing.assert_array_equal(observation[..., :2], previous[..., 1:])  # the oldest frame first
    leaf = describe_env("champion-test/QuadrantCue-v0", EnvOptions(frame_stack=3)).observation_leaves[0]
    assert (leaf.kind, leaf.image_shape) == ("image", (32, 32, 3))
    with pytest.raises(EnvError, match=r"^champion-test/DictAction-v0: action space Dict\(.*is not supported; "
                                       r"supported: Discrete, MultiDiscrete, MultiBinary, Box \(any shape\)$"):
        describe_env("champion-test/DictAction-v0")


MIXED = (ObservationLeaf(("camera",), "image", (3, 36, 40), "uint8", channels_first=True),
         ObservationLeaf(("speed",), "box", (3,)),
         ObservationLeaf(("cue",), "onehot", (2,), "int64", categories=(3, 2), start=(1, 0)),
         ObservationLeaf(("bits",), "binary", (2,), "int8"), ObservationLeaf(("pose",), "box", (2,)))


@pytest.mark.parametrize("action_kind, action_size, extra", [
    ("discrete", 3, {}),
    ("multidiscrete", 7, {"action_nvec": (3, 4), "action_start": (1, 0), "action_env_shape": (2,)}),
    ("multibinary", 4, {"action_env_shape": (2, 2)}),
    ("continuous", 4, {"action_env_shape": (2, 2), "action_low": (-1.0,) * 4, "action_high": (1.0,) * 4}),
])
def test_numpy_policy_equals_the_keras_model_on_mixed_observations(action_kind, action_size, extra):
    spec = NetworkSpec(MIXED, action_kind, action_size, hidden_sizes=(16,), normalize_observations=True,
                       cnn_layers=((4, 5, 3), (8, 3, 2)), cnn_features=16, **extra)
    model = ActorCritic(spec, seed=2)
    model.update_normalizer(tf.constant(np.random.default_rng(0).normal(5.0, 3.0, (64, spec.observation_size)),
                                        tf.float32))
    policy = numpy_policy(model, seed=1)
    observations = flat_observations(spec, probe_observations(model, count=32))
    parameters, values = model(observations)
    head, numpy_values = policy.forward(observations)
    np.testing.assert_allclose(head, parameters.numpy()[:, :action_size], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(numpy_values, values.numpy(), rtol=2e-4, atol=2e-5)
    actions, log_probs, _ = policy.sample(observations)
    assert actions.shape == (32, *spec.action_shape)
    expected = make_distribution(model).log_prob(parameters, tf.constant(actions)).numpy()
    np.testing.assert_allclose(log_probs, expected, rtol=1e-4, atol=1e-4)
    sent = policy.env_actions(policy.mode(observations))
    assert sent.shape[1:] == (spec.action_env_shape if action_kind != "discrete" else ())
    if action_kind == "multidiscrete":  # category indices moved to each component's start
        assert sent[:, 0].min() >= 1 and sent[:, 0].max() <= 3 and sent[:, 1].max() <= 3


CUE_TASKS = {  # env, steps, overrides, the best return it must reach (all eight steps right)
    "DictCue": (24_000, {}, 8.0),
    "MultiCue": (12_000, {}, 8.0),
    "BinaryCue": (12_000, {}, 8.0),
    "MatrixCue": (16_000, {}, -0.05),
    "QuadrantCue": (6_000, {"network.cnn_layers": [[16, 4, 2], [32, 3, 2]], "network.cnn_features": 64,
                            "ppo.learning_rate": 1e-3}, 8.0),
}


@pytest.mark.parametrize("task", CUE_TASKS)
def test_each_space_learns_its_known_answer_and_replays_and_exports_it(tmp_path, task):
    steps, overrides, target = CUE_TASKS[task]
    # the module's name in the id: a crown that spawns processes (when playing here would take longer) imports it there
    config, _ = resolve_config(f"toy_envs:champion-test/{task}-v0", "ppo", {
        "total_steps": steps, "num_envs": 4, "eval_every": steps // 4, "eval_episodes": 8, "media": False,
        "ppo.num_steps": 64, "ppo.minibatch_size": 64, "ppo.epochs": 4, "ppo.learning_rate": 2e-3,
        "ppo.gamma": 0.5, "results_dir": str(tmp_path), "run_name": "cue", **overrides})
    result = train(config, progress=False)
    assert result.best_mean_return >= target
    replayed = replay(result.run_dir, entry="best")
    assert replayed.result.mean_return == replayed.recorded_mean_return == result.best_mean_return
    crowned = replay(result.run_dir)
    assert crowned.crowned and crowned.result.mean_return == crowned.recorded_mean_return
    export = export_policy(result.run_dir)
    loaded = tf.saved_model.load(str(export.path)).signatures["serving_default"]
    policy, _ = load_policy(result.run_dir)
    probes = probe_observations(policy.model, count=100, seed=5)
    exported = loaded(**{name: tf.constant(value) for name, value in probes.items()})["actions"].numpy()
    expected = policy.env_actions(policy.mode(flat_observations(policy.spec, probes)))
    np.testing.assert_allclose(exported, expected, atol=1e-5)
    tflite = export_policy(result.run_dir, "tflite", tmp_path / "policy.tflite")
    runner = Interpreter(model_path=str(tflite.path)).get_signature_runner("serving_default")
    np.testing.assert_allclose(runner(**probes)["actions"], expected, atol=1e-5)
    inputs = json.loads((export.path / "metadata.json").read_text())["observation_space"]["inputs"]
    assert {name: info["dtype"] for name, info in inputs.items()} == {
        name: str(value.dtype) for name, value in probes.items()}
    if task == "MatrixCue":
        assert toy_envs.MatrixCue.received_shapes == {(2, 2)}  # the env got its own action shape


def test_a_model_with_an_image_is_never_compiled_with_xla():
    from champion.agents.compile.update import uses_xla
    from champion.agents.config import PPOConfig

    image = NetworkSpec((ObservationLeaf((), "image", (84, 84, 4), "uint8"),), "discrete", 4)
    vector = NetworkSpec((ObservationLeaf((), "box", (4,)),), "discrete", 2)
    assert (uses_xla(PPOConfig(), vector), uses_xla(PPOConfig(), image)) == (True, False)
    assert uses_xla(PPOConfig(jit_compile=False), vector) is False


def test_a_dict_observation_and_multidiscrete_run_killed_and_resumed_continues_exactly(tmp_path):
    """The flattened Dict envs, their RNGs and the MultiDiscrete sampler go through a resume checkpoint: the
    resumed run evaluates and ends exactly as the straight one."""
    def champion(*args, kill_at=None):
        environment = dict(os.environ, **({"CHAMPION_FAULT_KILL_AT_STEP": str(kill_at)} if kill_at else {}))
        return subprocess.run(CHAMPION + list(args), capture_output=True, text=True, timeout=300, env=environment,
                              cwd=Path(__file__).parent)  # where toy_envs is found

    def start(name, kill_at=None):
        arguments = ["train", "toy_envs:champion-test/DictMultiCue-v0", "--total-steps", "2048", "--results-dir",
                     str(tmp_path), "--run-name", name, "--num-envs", "4", "--set", "ppo.num_steps=32", *QUICK]
        if kill_at is None:  # the straight run, in this process
            return champion_here(arguments)
        return champion(*arguments, kill_at=kill_at)

    start("straight")
    assert start("resumed", kill_at=1280).returncode == -signal.SIGKILL
    [resumed_dir] = tmp_path.glob("*/ppo/resumed")
    again = champion("train", "--resume", str(resumed_dir), "-q", "--env-module", "toy_envs")  # in the current folder
    assert again.returncode == 0 and "warning" not in again.stderr, again.stderr  # the envs came back whole
    straight_dir = resumed_dir.parent / "straight"
    columns = ("step", "mean_return", "std_return", "best_mean_return")
    rows = [[[row[column] for column in columns] for row in evaluation_rows(folder)]
            for folder in (straight_dir, resumed_dir)]
    assert rows[0] == rows[1] and len(rows[0]) == 4
    straight, resumed = load_best(straight_dir / "best"), load_best(resumed_dir / "best")
    assert straight.manifest["step"] == resumed.manifest["step"]
    assert all(np.array_equal(straight.weights[name], resumed.weights[name]) for name in straight.weights)


def test_a_crown_on_spawned_processes_makes_an_env_given_by_its_bare_registered_id(tmp_path):
    """champion-test/MatrixCue-v0 is registered by importing toy_envs; a spawned crown process imports its entry
    point's module first, so the crown plays there (it failed with NamespaceNotFound and crowned nothing)."""
    config, _ = resolve_config("champion-test/MatrixCue-v0", "ppo", {
        "total_steps": 512, "num_envs": 4, "eval_every": 256, "eval_episodes": 4, "media": False,
        "ppo.num_steps": 64, "ppo.minibatch_size": 64, "results_dir": str(tmp_path), "run_name": "spawned",
        "crown.workers": 2, "crown.episodes": 10})
    result = train(config, progress=False)
    crowned = replay(result.run_dir)
    assert crowned.crowned and crowned.result.mean_return == crowned.recorded_mean_return
