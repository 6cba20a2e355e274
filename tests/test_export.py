"""champion export: a SavedModel and a TFLite file that act like replay in a process without champion.

What is compared, on 100 observations sampled from the env's observation space (seed 0), with
observation normalisation on (its statistics moved away from mean 0 / variance 1 in training):
replay's actions are ``policy.env_actions(policy.mode(observations))`` of ``load_policy(run_dir)``,
the numpy forward pass that ``champion replay`` acts with. Discrete: the SavedModel's and the
TFLite model's actions are identical to replay's. Continuous: within 1e-5 (float32 rounding of
other kernels), and exactly the distribution signature's mean clipped to the action bounds. The
distribution signature's logits / mean and log_std match the numpy forward pass within 1e-5, the
value within 1e-5 relative. The README snippets run as written and give replay's action.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from champion.runners.cli.main import main
from champion.agents.networks import ActorCritic, NetworkSpec, numpy_policy
from champion.agents.spec import box_leaf
from champion.runners.export import ExportError, _check_destination, export_policy, policy_module
from champion.runners.replay import load_policy

TOLERANCE = 1e-5

# Runs in a fresh interpreter from the venv. champion is pip-installed in editable mode, which puts
# an import finder on sys.meta_path; the script removes it and then proves that agents, envs and
# runners cannot be imported before it touches the export.
CHILD = textwrap.dedent('''
    import importlib.util, json, os, re, sys, warnings

    editable = [finder for finder in sys.meta_path if getattr(finder, "__module__", "").startswith("__editable__")]
    sys.meta_path[:] = [finder for finder in sys.meta_path if finder not in editable]
    CHAMPION = ("agents", "envs", "runners")
    for name in CHAMPION:
        assert importlib.util.find_spec(name) is None, f"{name} is importable"

    import numpy as np
    import tensorflow as tf

    export_dir, observations_path = sys.argv[1:]
    observations = tf.constant(np.load(observations_path))
    saved_model = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
    actions = saved_model.signatures["serving_default"](observations=observations)["actions"]
    distribution = saved_model.signatures["distribution"](observations=observations)
    interpreter = tf.lite.Interpreter(model_path=os.path.join(export_dir, "policy.tflite"))
    tflite = interpreter.get_signature_runner("serving_default")(observations=observations.numpy())["actions"]
    snippets = {}
    os.chdir(export_dir)  # the README snippets name the export relative to this folder
    for name, readme in (("saved_model", "saved_model/README.md"), ("tflite", "policy.README.md")):
        namespace = {}
        with warnings.catch_warnings():  # the README recommends what loads without a deprecation warning
            warnings.simplefilter("error")
            exec(re.search(r"```python\\n(.+?)```", open(readme).read(), re.S).group(1), namespace)
        snippets[name] = np.asarray(namespace["actions"]).tolist()
    assert not [name for name in sys.modules if name.split(".")[0] in CHAMPION]
    print(json.dumps({"saved_model": actions.numpy().tolist(), "tflite": tflite.tolist(),
                      "distribution": {key: value.numpy().tolist() for key, value in distribution.items()},
                      "snippets": snippets}))
''')


@pytest.fixture(scope="module", params=["CartPole-v1", "Pendulum-v1"])
def trained_run(request, tmp_path_factory):
    """A tiny PPO run with observation normalisation on; shared by the tests of this module."""
    from champion.runners.configure import resolve_config
    from champion.runners.training import train

    overrides = {"results_dir": str(tmp_path_factory.mktemp("results")), "total_steps": 2048, "eval_every": 1024,
                 "network.normalize_observations": True, "ppo.epochs": 2, "run_name": "export",
                 # how the weights were learned does not matter here; no XLA compile keeps the setup at seconds
                 "engine": "gymnasium", "ppo.jit_compile": False}
    config, _ = resolve_config(request.param, "ppo", overrides)
    return train(config, progress=False).run_dir


def sample_observations(env_id, count=100):
    env = gym.make(env_id)
    env.observation_space.seed(0)
    observations = np.stack([env.observation_space.sample() for _ in range(count)]).astype(np.float32)
    env.close()
    return observations


def run_without_champion(tmp_path, export_dir, observations):
    """Load the exports in a clean interpreter (isolated mode, minimal environment, no champion)."""
    script, observations_path = tmp_path / "child.py", tmp_path / "observations.npy"
    script.write_text(CHILD)
    np.save(observations_path, observations)
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    child = subprocess.run([sys.executable, "-I", str(script), str(export_dir), str(observations_path)],
                           cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout.splitlines()[-1])


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_export_acts_like_replay_in_a_process_without_champion(trained_run, tmp_path, capsys, monkeypatch):
    policy, manifest = load_policy(trained_run)
    spec = policy.spec
    assert spec.normalize_observations
    assert not np.allclose(policy.model.normalizer.variance.numpy(), 1.0, rtol=0.1)  # normalisation matters
    observations = sample_observations(manifest["env_id"])
    expected = policy.env_actions(policy.mode(observations))
    head, values = policy.forward(observations)
    main(["export", str(trained_run)])
    main(["export", str(trained_run), "--format", "tflite"])
    assert f"to {trained_run / 'export' / 'policy.tflite'}" in capsys.readouterr().out

    child = run_without_champion(tmp_path, trained_run / "export", observations)
    saved_model, tflite = np.array(child["saved_model"]), np.array(child["tflite"])
    distribution = {key: np.array(value) for key, value in child["distribution"].items()}
    np.testing.assert_allclose(distribution["value"], values, rtol=TOLERANCE, atol=TOLERANCE)  # values can be large
    if spec.action_kind == "discrete":
        assert len(set(expected.tolist())) == spec.action_size  # the 100 observations reach every action
        assert saved_model.tolist() == expected.tolist() and tflite.tolist() == expected.tolist()
        np.testing.assert_allclose(distribution["logits"], head, rtol=0, atol=TOLERANCE)
    else:
        assert saved_model.shape == tflite.shape == expected.shape == (100, spec.action_size)
        np.testing.assert_allclose(saved_model, expected, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(tflite, expected, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(distribution["mean"], head, rtol=0, atol=TOLERANCE)
        np.testing.assert_array_equal(saved_model, np.clip(distribution["mean"], spec.action_low, spec.action_high))
        np.testing.assert_allclose(distribution["log_std"], np.broadcast_to(policy.model.log_std.numpy(), head.shape))
    zeros = np.zeros((1, *spec.observation_shape), np.float32)  # what the README snippets act on
    for actions in child["snippets"].values():
        np.testing.assert_allclose(actions, policy.env_actions(policy.mode(zeros)), rtol=0, atol=TOLERANCE)
    check_metadata(trained_run, manifest)
    check_replacing(trained_run, tmp_path, monkeypatch)


def check_metadata(run_dir, manifest):
    """metadata.json and README.md: env, spaces, score, signatures, versions."""
    export_dir, network = run_dir / "export", manifest["network"]
    saved_model = json.loads((export_dir / "saved_model" / "metadata.json").read_text())
    tflite = json.loads((export_dir / "policy.metadata.json").read_text())
    [leaf] = network["observation_leaves"]
    observations = {"shape": [None, *leaf["shape"]], "dtype": "float32"}
    for metadata in (saved_model, tflite):
        assert {key: metadata[key] for key in ("env_id", "algo", "step", "mean_return", "eval_seeds")} == {
            key: manifest[key] for key in ("env_id", "algo", "step", "mean_return", "eval_seeds")}
        assert metadata["normalize_observations"] is True and metadata["exported_by"] == "champion"
        described = metadata["observation_space"]["inputs"]["observations"]
        assert (described["kind"], described["shape"], described["dtype"]) == ("box", leaf["shape"], "float32")
        assert metadata["signatures"]["serving_default"]["inputs"] == {"observations": observations}
        assert metadata["versions"]["exported_with"]["tensorflow"] == tf.__version__
    assert list(saved_model["signatures"]) == ["serving_default", "distribution"]
    assert list(tflite["signatures"]) == ["serving_default"]
    assert tflite["sha256"] == hashlib.sha256((export_dir / "policy.tflite").read_bytes()).hexdigest()
    if network["action_kind"] == "discrete":
        assert saved_model["action_space"] == {"kind": "discrete", "n": 2, "start": 0, "shape": [], "dtype": "int32"}
        assert saved_model["signatures"]["distribution"]["outputs"] == {
            "logits": {"shape": [None, 2], "dtype": "float32"}, "value": {"shape": [None], "dtype": "float32"}}
    else:
        assert (saved_model["action_space"]["low"], saved_model["action_space"]["high"]) == ([-2.0], [2.0])
        assert sorted(saved_model["signatures"]["distribution"]["outputs"]) == ["log_std", "mean", "value"]
    readme = (export_dir / "saved_model" / "README.md").read_text()
    assert manifest["env_id"] in readme and f"mean return {manifest['mean_return']:.2f}" in readme


def check_replacing(run_dir, tmp_path, monkeypatch):
    """A new export replaces an earlier one as a whole; a failed one leaves no trace and no change."""
    saved_model = run_dir / "export" / "saved_model"
    (saved_model / "stale.txt").write_text("left by an earlier export")
    export_policy(run_dir)
    assert not (saved_model / "stale.txt").exists() and (saved_model / "saved_model.pb").is_file()
    before = {path: path.read_bytes() for path in (run_dir / "export").rglob("*") if path.is_file()}

    def refuse(*args):
        raise ExportError("injected failure")

    monkeypatch.setattr("champion.runners.export._check_against_replay", refuse)
    for export_format, out in (("saved_model", None), ("tflite", tmp_path / "new.tflite")):  # over an export, new
        with pytest.raises(ExportError, match="injected failure"):
            export_policy(run_dir, export_format, out)
    assert not (tmp_path / "new.tflite").exists() and not (tmp_path / "new.metadata.json").exists()
    assert {path: path.read_bytes() for path in (run_dir / "export").rglob("*") if path.is_file()} == before
    folders = [*tmp_path.iterdir(), *(run_dir / "export").iterdir()]
    assert not [path for path in folders if path.name.startswith(".tmp-")]


@pytest.mark.parametrize("args, message", [
    ([], "no best policy in {run}/best (no evaluation has saved one yet)"),
    (["--format", "onnx"], "Invalid value for '--format': 'onnx' is not one of 'saved_model', 'tflite', 'keras'."),
    (["--out", "{run}"], "{run} exists and is not a champion export (no metadata.json from champion); "
                         "choose another --out, nothing else is ever overwritten"),
    (["--format", "tflite", "--out", "{run}/policy.onnx"],
     "--out for --format tflite must end in .tflite, got {run}/policy.onnx"),
    (["--out", "{run}/config.yaml"], "{run}/config.yaml is a file; a SavedModel is a folder, give a folder path"),
])
def test_bad_export_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "empty"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("env_id: CartPole-v1\n")
    before = sorted(tmp_path.rglob("*"))
    code, lines = run_cli(["export", str(run_dir), *[arg.format(run=run_dir) for arg in args]], capsys)
    assert (code, lines) == (2, [f"champion export: error: {message.format(run=run_dir)}"])
    assert sorted(tmp_path.rglob("*")) == before


def test_export_refuses_a_missing_folder_and_an_unknown_format(tmp_path, capsys):
    code, lines = run_cli(["export", str(tmp_path / "missing")], capsys)
    assert (code, lines[0]) == (2, f"champion export: error: {tmp_path / 'missing'} does not exist; "
                                   "give a run folder such as results/CartPole-v1/ppo/<run>")
    with pytest.raises(ExportError, match="unknown export format 'onnx'; choose one of: saved_model, tflite"):
        export_policy(tmp_path, "onnx")


def test_exported_continuous_action_is_the_mean_clipped_like_replay():
    spec = NetworkSpec(observation_leaves=(box_leaf((3,)),), action_kind="continuous", action_size=2, hidden_sizes=(8,),
                       action_low=(-2.0, -0.5), action_high=(2.0, 0.5), normalize_observations=True)
    model = ActorCritic(spec)
    model.policy_head.bias.assign([3.0, -0.2])  # the first mean is beyond its bound, the second inside
    model.normalizer.mean.assign([1.0, -1.0, 5.0])
    replay = numpy_policy(model)
    observations = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    module = policy_module(model)
    actions = module.act(tf.constant(observations))["actions"].numpy()
    parameters = module.distribution(tf.constant(observations))
    np.testing.assert_allclose(actions, replay.env_actions(replay.mode(observations)), rtol=0, atol=TOLERANCE)
    assert np.all(actions[:, 0] == 2.0) and np.all(np.abs(actions[:, 1]) < 0.5)
    assert np.all(parameters["mean"].numpy()[:, 0] > 2.0)  # the distribution signature keeps the unclipped mean


def test_a_tflite_export_never_overwrites_a_file_it_did_not_write(tmp_path):
    foreign = tmp_path / "model.tflite"
    foreign.write_bytes(b"someone else's model")
    with pytest.raises(ExportError, match=r"model.tflite exists and is not a champion export \(no model.metadata.json"):
        _check_destination(foreign, "tflite")
    assert foreign.read_bytes() == b"someone else's model"
