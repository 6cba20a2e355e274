"""champion export --format keras: policy.keras (built-in layers only) acts like replay in a Python without champion.

What is compared: replay's actions are ``policy.env_actions(policy.mode(observations))`` of ``load_policy(run_dir)``,
the numpy forward pass that ``champion replay`` acts with, on 100 observations (50 sampled from the env's observation
space, 50 from the export's probes around the normaliser's statistics), for Box and Dict observations, discrete,
multidiscrete and continuous actions, observation normalisation on. policy.keras is loaded with
``keras.saving.load_model`` in a venv whose only packages are the champion venv's site-packages added by a .pth line
(which does not run that folder's own .pth files, so champion's editable finder is not installed): ``import champion``
fails there. Discrete actions are identical, continuous ones within 1e-5; logits / mean within 1e-5, log_std exactly,
the value within 1e-5 relative. In process, ``keras_policy(spec, weights)`` matches ``NumpyPolicy.forward`` for every
leaf and action kind, and policy.weights.h5 loads into ``keras_policy(spec)`` and gives policy.keras's outputs.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import gymnasium as gym
import h5py
import keras
import numpy as np
import pytest

from champion.agents.keras_policy import keras_policy, output_names
from champion.agents.networks import ActorCritic, numpy_policy
from champion.agents.spec import NetworkSpec, ObservationLeaf, box_leaf, export_dtype, flat_observations
from champion.runners.export import ExportError, export_policy, probe_observations
from champion.runners.replay import load_policy
from hostile_helpers import champion

TOLERANCE = 1e-5
ENVS = ("CartPole-v1", "Pendulum-v1", "champion-test/DictCue-v0", "champion-test/DictMultiCue-v0")

# Runs in the venv without champion: proves champion cannot be imported, then loads each export's policy.keras, acts
# on the observations of its .npz, and runs the README's two snippets that need no champion.
CHILD = textwrap.dedent('''
    import json, os, re, sys, warnings

    try:
        import champion
    except ModuleNotFoundError as error:
        missing = error.name
    else:
        raise SystemExit("champion is importable: " + champion.__file__)

    import keras, numpy as np

    results = {"champion_missing": missing, "keras": keras.__version__, "exports": {}}
    for name, folder in json.loads(sys.argv[1]).items():
        with np.load(os.path.join(folder, "..", "observations.npz")) as data:
            inputs = {key: data[key] for key in data.files}
        os.chdir(folder)  # the README names its files relative to its folder
        with warnings.catch_warnings():  # the README's way loads without a warning
            warnings.simplefilter("error")
            model = keras.saving.load_model("policy.keras")
            outputs = model(inputs["observations"] if list(inputs) == ["observations"] else inputs)
            with open("README.md") as readme:
                blocks = re.findall(r"```python\\n(.+?)```", readme.read(), re.S)
            act, weights = {}, {}
            exec(blocks[0], act)
            exec(blocks[1], weights)
        results["exports"][name] = {
            "outputs": {key: np.asarray(value).tolist() for key, value in outputs.items()},
            "dtypes": {key: str(np.asarray(value).dtype) for key, value in outputs.items()},
            "snippet_actions": np.asarray(act["actions"]).tolist(),
            "snippet_observations": {key: np.asarray(value).tolist() for key, value in (
                act["observations"].items() if isinstance(act["observations"], dict)
                else {"observations": act["observations"]}.items())},
            "reloaded_weights_actions": np.asarray(weights["model"](inputs["observations"] if list(inputs) ==
                                                                    ["observations"] else inputs)["actions"]).tolist(),
            "custom_layers": sorted({type(layer).__module__ for layer in model.layers
                                     if not type(layer).__module__.startswith("keras.")}),
        }
    assert not [module for module in sys.modules if module.split(".")[0] == "champion"]
    print(json.dumps(results))
''')


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A function: env id -> the folder of a tiny PPO run on it (normalisation on), trained once per module."""
    from champion.runners.configure import resolve_config
    from champion.runners.training import train

    results, runs = tmp_path_factory.mktemp("results"), {}

    def run(env_id):
        if env_id not in runs:
            overrides = {"results_dir": str(results), "total_steps": 512, "eval_every": 512, "eval_episodes": 2,
                         "num_envs": 4, "ppo.num_steps": 64, "ppo.minibatch_size": 128, "ppo.epochs": 2,
                         "network.hidden_sizes": [16], "network.normalize_observations": True, "run_name": "keras",
                         "engine": "gymnasium", "ppo.jit_compile": False, "crown.at_end": False, "media": False}
            config, _ = resolve_config(env_id, "ppo", overrides)
            runs[env_id] = train(config, progress=False).run_dir
        return runs[env_id]

    return run


def observations_for(env_id, policy, count=100):
    """Raw observations leaf by leaf (export dtypes): half sampled from the env's space, half the export's probes."""
    env = gym.make(env_id)
    env.observation_space.seed(0)
    samples = [env.observation_space.sample() for _ in range(count // 2)]
    env.close()
    probes = probe_observations(policy.model, count - count // 2, seed=1)
    observations = {}
    for leaf in policy.spec.observation_leaves:
        sampled = np.stack([sample[leaf.path[0]] if leaf.path else sample for sample in samples])
        observations[leaf.name] = np.concatenate([sampled.astype(export_dtype(leaf)), probes[leaf.name]])
    return observations


def run_child(python, tmp_path, folders):
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    arguments = json.dumps({key: str(value) for key, value in folders.items()})
    child = subprocess.run([str(python), "-I", str(script), arguments],
                           cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.splitlines()[-1])


def test_keras_export_acts_like_replay_in_a_python_without_champion(trained, python_without_champion, tmp_path):
    folders, expected = {}, {}
    for env_id in ENVS:
        run_dir = trained(env_id)
        assert champion("export", run_dir, "--format", "keras") == 0
        folder = run_dir / "export" / "keras"
        assert sorted(path.name for path in folder.iterdir()) == ["README.md", "metadata.json", "policy.keras",
                                                                 "policy.weights.h5"]
        assert not [path for path in (run_dir / "export").iterdir() if path.name.startswith(".tmp-")]
        policy, manifest = load_policy(run_dir)
        assert policy.spec.normalize_observations
        assert not np.allclose(policy.model.normalizer.variance.numpy(), 1.0, rtol=0.1)  # normalisation matters
        observations = observations_for(env_id, policy)
        np.savez(run_dir / "export" / "observations.npz", **observations)
        folders[env_id] = folder
        flat = flat_observations(policy.spec, observations)
        expected[env_id] = (policy, manifest, flat, *policy.forward(flat))

    child = run_child(python_without_champion, tmp_path, folders)
    assert child["champion_missing"] == "champion" and child["keras"] == keras.__version__

    for env_id, (policy, manifest, flat, head, values) in expected.items():
        spec, result = policy.spec, child["exports"][env_id]
        outputs = {key: np.asarray(value) for key, value in result["outputs"].items()}
        replay = policy.env_actions(policy.mode(flat))
        assert sorted(outputs) == sorted(output_names(spec)) and result["custom_layers"] == [], env_id
        np.testing.assert_allclose(outputs["value"], values, rtol=TOLERANCE, atol=TOLERANCE, err_msg=env_id)
        assert outputs["actions"].shape == replay.shape == (100, *(spec.action_env_shape or spec.action_shape))
        if spec.integer_actions:
            assert result["dtypes"]["actions"] == "int32"
            assert outputs["actions"].tolist() == replay.tolist(), env_id
            np.testing.assert_allclose(outputs["logits"], head, rtol=0, atol=TOLERANCE, err_msg=env_id)
            assert len(np.unique(replay.reshape(100, -1), axis=0)) > 1  # the observations reach several actions
        else:
            np.testing.assert_allclose(outputs["actions"], replay, rtol=0, atol=TOLERANCE, err_msg=env_id)
            np.testing.assert_allclose(outputs["mean"], head, rtol=0, atol=TOLERANCE, err_msg=env_id)
            np.testing.assert_array_equal(outputs["log_std"], np.broadcast_to(policy.model.log_std.numpy(), head.shape))
            np.testing.assert_array_equal(outputs["actions"], np.clip(outputs["mean"], spec.action_low,
                                                                      spec.action_high))
        # the README's snippet acts on its example observation as replay does; the model reloaded with
        # policy.weights.h5 acts as policy.keras
        snippet_flat = flat_observations(spec, {key: np.asarray(value) for key, value in
                                                result["snippet_observations"].items()})
        np.testing.assert_allclose(result["snippet_actions"], policy.env_actions(policy.mode(snippet_flat)),
                                   rtol=0, atol=TOLERANCE, err_msg=env_id)
        assert result["reloaded_weights_actions"] == outputs["actions"].tolist()
        check_metadata_and_readme(folders[env_id], manifest, spec)


def check_metadata_and_readme(folder, manifest, spec):
    metadata = json.loads((folder / "metadata.json").read_text())
    assert {key: metadata[key] for key in ("exported_by", "format", "file", "env_id", "step", "mean_return")} == {
        "exported_by": "champion", "format": "keras", "file": "keras", "env_id": manifest["env_id"],
        "step": manifest["step"], "mean_return": manifest["mean_return"]}
    assert metadata["files"] == {"model": "policy.keras", "weights": "policy.weights.h5"}
    assert metadata["builder"] == "champion.agents.keras_policy.keras_policy(spec, weights)"
    assert NetworkSpec.from_dict(metadata["network"]) == spec
    described = metadata["signatures"]["policy.keras"]
    assert described["inputs"] == {leaf.name: {"shape": [None, *leaf.shape], "dtype": export_dtype(leaf)}
                                   for leaf in spec.observation_leaves}
    assert list(described["outputs"]) == list(output_names(spec))
    assert described["outputs"]["value"] == {"shape": [None], "dtype": "float32"}
    assert described["outputs"]["actions"] == {"shape": [None, *(spec.action_env_shape or spec.action_shape)],
                                               "dtype": "int32" if spec.integer_actions else "float32"}
    readme = (folder / "README.md").read_text()
    assert 'keras.saving.load_model("policy.keras")' in readme and 'model.load_weights("policy.weights.h5")' in readme
    assert "from champion.agents.keras_policy import keras_policy" in readme
    assert f"mean return {manifest['mean_return']:.2f}" in readme and manifest["env_id"] in readme


def test_the_weights_file_loads_into_the_builders_model(trained):
    run_dir = trained("champion-test/DictMultiCue-v0")
    export_policy(run_dir, "keras")
    folder = run_dir / "export" / "keras"
    policy, _ = load_policy(run_dir)
    observations = probe_observations(policy.model, 40, seed=2)
    exported = keras.saving.load_model(folder / "policy.keras")(observations)
    rebuilt = keras_policy(policy.spec)  # placeholder weights: zeros
    assert not np.any(np.asarray(rebuilt(observations)["logits"]))
    rebuilt.load_weights(folder / "policy.weights.h5")
    for name, value in rebuilt(observations).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(exported[name]), err_msg=name)
    # the file holds the learned numbers: the normaliser's statistics and the policy head
    with h5py.File(folder / "policy.weights.h5") as weights:
        arrays = []
        weights.visititems(lambda name, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    mean = policy.weights["observation_normalizer/mean"].astype(np.float32)
    assert any(array.shape == mean.shape and np.array_equal(array, mean) for array in arrays)
    head = policy.weights["policy_head/kernel"]
    assert any(array.shape == head.shape and np.array_equal(array, head) for array in arrays)


def spec_cases():
    small = {"hidden_sizes": (16, 8)}
    dict_leaves = (ObservationLeaf(("cue",), "onehot", (2,), categories=(3, 4), start=(1, 0)),
                   ObservationLeaf(("noise",), "box", (2,)), ObservationLeaf(("bits",), "binary", (3,)))
    images = (ObservationLeaf(("pixels",), "image", (2, 20, 20), channels_first=True),
              ObservationLeaf(("gray",), "image", (20, 20)), ObservationLeaf(("speed",), "box", (2,)))
    return {
        "box, discrete from -1, clip 2": NetworkSpec((box_leaf((4,)),), "discrete", 3, normalize_observations=True,
                                                     observation_clip=2.0, action_start=(-1,), **small),
        "box 2x3, shared relu torso, from 3": NetworkSpec((box_leaf((2, 3)),), "discrete", 5, action_start=(3,),
                                                          normalize_observations=True, shared_torso=True,
                                                          activation="relu", **small),
        "continuous 2x2, infinite bound, silu": NetworkSpec(
            (box_leaf((3,)),), "continuous", 4, action_low=(-1.0, -np.inf, -0.5, -1.0),
            action_high=(1.0, np.inf, 0.5, 1.0),
            action_env_shape=(2, 2), value_hidden_sizes=(5,), activation="silu", log_std_init=-0.5,
            normalize_observations=True, **small),
        "dict onehot+box+binary, multidiscrete": NetworkSpec(
            dict_leaves, "multidiscrete", 7, action_nvec=(3, 4), action_start=(1, -2), action_env_shape=(2,),
            normalize_observations=True, activation="gelu", **small),
        "multibinary 2x2, no hidden layers": NetworkSpec((box_leaf((4,)),), "multibinary", 4, action_env_shape=(2, 2),
                                                         hidden_sizes=()),
        "images channels first and 2-D, box, continuous": NetworkSpec(
            images, "continuous", 1, action_low=(-2.0,), action_high=(2.0,), cnn_layers=((4, 4, 2), (8, 3, 2)),
            cnn_features=8, normalize_observations=True, activation="elu", **small),
    }


@pytest.mark.parametrize("case", list(spec_cases()))
def test_keras_policy_computes_what_numpy_policy_computes(case):
    spec = spec_cases()[case]
    model = ActorCritic(spec, seed=3)
    random = np.random.default_rng(0)
    model.policy_head.kernel.assign(model.policy_head.kernel.numpy() * 300)  # logits and means that reach the bounds
    if model.normalizer is not None:
        size = len(model.vector_columns)
        model.normalizer.mean.assign(random.normal(5.0, 20.0, size))
        model.normalizer.variance.assign(random.uniform(0.01, 900.0, size))
    policy = numpy_policy(model)
    observations = probe_observations(model, 200, seed=4)
    for leaf in spec.observation_leaves:
        if leaf.kind == "box":  # far beyond the normaliser's clip too, and infinite, which it clips
            observations[leaf.name] = observations[leaf.name] * np.float32(5.0)
            if spec.normalize_observations:
                observations[leaf.name].reshape(len(observations[leaf.name]), -1)[:2] = [[np.inf], [-np.inf]]
    flat = flat_observations(spec, observations)
    head, values = policy.forward(flat)
    replay = policy.env_actions(policy.mode(flat))
    assert np.isfinite(head).all() and np.isfinite(values).all()

    built = keras_policy(spec, policy.weights)
    outputs = {key: np.asarray(value) for key, value in
               built(observations["observations"] if len(observations) == 1 else observations).items()}
    assert list(outputs) == list(output_names(spec))
    assert not [layer for layer in built.layers if type(layer).__module__.split(".")[0] != "keras"
                or type(layer).__name__ == "Lambda"]
    np.testing.assert_allclose(outputs["value"], values, rtol=TOLERANCE, atol=TOLERANCE)
    if spec.action_kind == "continuous":
        np.testing.assert_allclose(outputs["mean"], head, rtol=TOLERANCE, atol=TOLERANCE)
        np.testing.assert_array_equal(outputs["log_std"], np.broadcast_to(model.log_std.numpy(), head.shape))
        np.testing.assert_allclose(outputs["actions"], replay, rtol=0, atol=TOLERANCE)
        assert outputs["actions"].shape == replay.shape and outputs["actions"].dtype == np.float32
        bounds = [np.reshape(np.asarray(bound, np.float32), replay.shape[1:])
                  for bound in (spec.action_low, spec.action_high)]
        assert np.any((outputs["actions"] == bounds[0]) | (outputs["actions"] == bounds[1]))  # some means were clipped
    else:
        np.testing.assert_allclose(outputs["logits"], head, rtol=TOLERANCE, atol=TOLERANCE)
        assert outputs["actions"].dtype == np.int32 and outputs["actions"].tolist() == replay.tolist()
        assert len(np.unique(replay.reshape(len(replay), -1), axis=0)) > 1


def test_ties_take_the_first_largest_logit_as_numpy_does():
    spec = NetworkSpec((box_leaf((2,)),), "multidiscrete", 5, action_nvec=(2, 3), action_start=(0, 2), hidden_sizes=())
    model = ActorCritic(spec)
    model.policy_head.kernel.assign(np.zeros((2, 5), np.float32))
    built = keras_policy(spec, numpy_policy(model).weights)
    for bias, expected in (([1.0, 1.0, 0.5, 0.5, 0.5], [0, 2]), ([0.0, 1.0, -1.0, 3.0, 3.0], [1, 3])):
        model.policy_head.bias.assign(bias)
        built.get_layer("policy_head").bias.assign(bias)
        observations = np.zeros((1, 2), np.float32)
        assert np.asarray(built(observations)["actions"]).tolist() == [expected]
        assert numpy_policy(model).env_actions(numpy_policy(model).mode(observations)).tolist() == [expected]


def test_keras_policy_refuses_weights_that_do_not_fit():
    spec = NetworkSpec((box_leaf((3,)),), "discrete", 2, hidden_sizes=(4,))
    weights = numpy_policy(ActorCritic(spec)).weights
    with pytest.raises(ValueError, match=re.escape("missing ['policy_head/bias']")):
        keras_policy(spec, {key: value for key, value in weights.items() if key != "policy_head/bias"})
    message = "policy_torso_0/kernel has shape (3, 5), the network expects (3, 4)"
    with pytest.raises(ValueError, match=re.escape(message)):
        keras_policy(spec, {**weights, "policy_torso_0/kernel": np.zeros((3, 5), np.float32)})


def test_a_keras_export_replaces_only_an_earlier_one_and_a_failed_one_changes_nothing(trained, tmp_path, monkeypatch):
    run_dir = trained("CartPole-v1")
    result = export_policy(run_dir, "keras", tmp_path / "out")
    assert (result.path, result.readme, result.metadata) == (tmp_path / "out", tmp_path / "out" / "README.md",
                                                            tmp_path / "out" / "metadata.json")
    (tmp_path / "out" / "stale.txt").write_text("left by an earlier export")
    export_policy(run_dir, "keras", tmp_path / "out")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["README.md", "metadata.json", "policy.keras",
                                                                        "policy.weights.h5"]
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="foreign exists and is not a champion export"):
        export_policy(run_dir, "keras", foreign)
    with pytest.raises(ExportError, match=r"--out for --format keras is a folder \(it holds policy.keras and "):
        export_policy(run_dir, "keras", tmp_path / "policy.keras")
    (tmp_path / "file").write_text("a file")
    with pytest.raises(ExportError, match="file is a file; a Keras export is a folder"):
        export_policy(run_dir, "keras", tmp_path / "file")

    def refuse(*args):
        raise ExportError("injected failure")

    monkeypatch.setattr("champion.runners.export._check_against_replay", refuse)
    for out in (tmp_path / "out", tmp_path / "new"):  # over an export, and new
        with pytest.raises(ExportError, match="injected failure"):
            export_policy(run_dir, "keras", out)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == {
        **before, foreign / "notes.txt": b"mine", tmp_path / "file": b"a file"}
    assert not (tmp_path / "new").exists()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".tmp-")]
