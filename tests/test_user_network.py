"""A torso of the user's own (network.torso): in the model, trained by PPO, replayed, resumed and exported exactly.

The torso is ``user_torsos:residual_torso`` (tests/user_torsos.py): Dense to 32, then two residual blocks of
LayerNormalization and Dense. The runs are PPO on CartPole-v1 on the gymnasium engine, so that every rollout,
evaluation, crown round and replay acts through ``KerasActingPolicy`` (the Keras model, row by row). The straight
run trains in this process; the killed and resumed one in child processes (the kill at the end of the step-2560
iteration, ``CHAMPION_FAULT_KILL_AT_STEP``), so the comparison is also one across processes.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import gymnasium as gym
import keras
import numpy as np
import pytest

import champion
import user_torsos
from champion.agents import torso as torso_module
from champion.agents.config import ConfigError
from champion.agents.networks import ActorCritic, named_weights, with_torso_layout
from champion.agents.spec import NetworkSpec, box_leaf, parameter_count
from champion.runners.export import probe_observations
from champion.runners.replay import load_policy
from crash_helpers import QUICK, champion as champion_child, checkpoint_weights, evaluation_rows
from hostile_helpers import champion as champion_here

TORSO = "user_torsos:residual_torso"
OPTIONS = [*QUICK, "--set", f"network.torso={TORSO}", "--set", "network.normalize_observations=true",
           "--set", "crown.episodes=10"]
HEADS = (32 * 2 + 2) + (32 + 1)
"""CartPole's policy head (32 features -> 2 logits) and value head (32 -> 1)."""


def cartpole_spec(**fields):
    return with_torso_layout(NetworkSpec((box_leaf((4,)),), "discrete", 2, **fields))


def test_the_torsos_layers_are_the_models_and_are_saved_by_their_place_in_it():
    """Two copies of the residual torso (policy, value) and champion's heads: 2 x 4,416 + 99 weights; shared, one
    copy; a value torso of its own, its own width under the value head."""
    spec = cartpole_spec(torso=TORSO)
    model = ActorCritic(spec)
    assert user_torsos.residual_weights(4) == 4 * 32 + 32 + 2 * (32 * 32 + 32) + 2 * 64 == 2_400
    assert model.count_params() == parameter_count(spec) == 2 * 2_400 + HEADS
    names = dict(named_weights(model))
    assert [name for name in names if name.startswith("policy_torso/")] == [
        "policy_torso/0_kernel", "policy_torso/1_bias", "policy_torso/2_gamma", "policy_torso/3_beta",
        "policy_torso/4_kernel", "policy_torso/5_bias", "policy_torso/6_gamma", "policy_torso/7_beta",
        "policy_torso/8_kernel", "policy_torso/9_bias"]
    assert tuple(names["value_torso/8_kernel"].shape) == (32, 32)
    layers = {type(layer).__name__ for torso in model.user_torsos for layer in torso.layers}
    assert {"Dense", "LayerNormalization", "Add"} <= layers
    shared = cartpole_spec(torso=TORSO, shared_torso=True)
    assert ActorCritic(shared).count_params() == parameter_count(shared) == 2_400 + HEADS
    own_value = cartpole_spec(torso=TORSO, value_torso="user_torsos:narrow_torso")
    assert own_value.torso_widths == (32, 8)
    assert ActorCritic(own_value).count_params() == 2_400 + (4 * 8 + 8) + (32 * 2 + 2) + (8 + 1)


def test_a_run_starts_its_torso_the_same_way_for_the_same_seed():
    """Keras initialisers without a seed of their own take theirs from Python's generator, which champion seeds from
    the run's seed while the torso is built, and puts back after."""
    import random

    spec = cartpole_spec(torso=TORSO)
    state = random.getstate()
    first, again, other = (dict((name, variable.numpy()) for name, variable in named_weights(ActorCritic(spec, seed)))
                           for seed in (5, 5, 6))
    assert random.getstate() == state
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["policy_torso/0_kernel"], other["policy_torso/0_kernel"])


def nested_torso():
    def inner(width):
        return user_torsos.residual_torso(width)
    return inner


BAD_TORSOS = [
    (lambda width: None, "torso=<lambda> cannot be recorded: a run builds its torso again on resume, replay and export "
                         "by importing it, and a lambda cannot be imported"),
    (nested_torso(), "torso=nested_torso.<locals>.inner cannot be recorded"),
    ("user_torsos", "network.torso must be module:function naming a function that builds your Keras torso"),
    ("user_torsos:missing", "network.torso user_torsos:missing: module 'user_torsos' has no 'missing'"),
    ("user_torsos:getpid", "network.torso user_torsos:getpid is not a function defined in 'user_torsos' (it is "
                           "builtin_function_or_method 'posix')"),
    ("user_torsos:keras.layers.Dense", "network.torso user_torsos:keras.layers.Dense is not a function defined in "
                                       "'user_torsos'"),
    (user_torsos.WIDTH, "torso must be a function (feature width -> keras.Model) or 'module:function', got int"),
    (user_torsos.not_a_model, "network.torso user_torsos:not_a_model returned list, not a Keras model"),
    (user_torsos.rank_three_torso, "network.torso user_torsos:rank_three_torso: its model maps a [2, 4] batch of "
                                   "features to shape (2, 2, 4) (float32); a torso must give one float tensor of shape "
                                   "[batch, features]"),
    (user_torsos.one_model_for_all, "network.torso user_torsos:one_model_for_all returned the same model for the "
                                    "policy and the value function"),
    (user_torsos.failing_torso, "network.torso user_torsos:failing_torso failed when called with the feature width 4: "
                                "ValueError: no torso for 4 features"),
]


@pytest.mark.parametrize("torso, expected", BAD_TORSOS, ids=[
    "lambda", "nested", "no-function", "missing", "imported", "imported-class", "number", "not-a-model", "rank-3",
    "same-model", "failing"])
def test_a_torso_that_cannot_be_recorded_or_built_is_refused_in_one_line_before_the_run_folder(torso, expected,
                                                                                               tmp_path):
    with pytest.raises(ConfigError) as refused:
        champion.train("CartPole-v1", torso=torso, total_steps=512, results_dir=str(tmp_path), progress=False)
    assert str(refused.value).startswith(expected) and "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_a_keras_model_object_is_refused_with_the_way_to_give_one():
    with pytest.raises(ConfigError, match=r"^torso= takes a function that builds the Keras model, not a model object"):
        champion.train("CartPole-v1", torso=user_torsos.residual_torso(4), total_steps=512, progress=False)
    with pytest.raises(ConfigError, match=r"^network.value_torso needs network.torso"):
        champion.train("CartPole-v1", value_torso=user_torsos.residual_torso, total_steps=512, progress=False)


def test_the_ray_engine_refuses_a_users_torso_in_one_line_before_anything_starts(tmp_path):
    done = champion_child(["train", "CartPole-v1", "--workers", "2", "--results-dir", str(tmp_path),
                           "--set", f"network.torso={TORSO}"])
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"champion train: error: engine=ray acts in numpy on TensorFlow-free workers, which cannot run network.torso "
        f"{TORSO} (your own Keras network); use engine=gymnasium or auto"]
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(straight run, killed-and-resumed run, the killed session's stderr): the same 3,072-step PPO run, checkpoints
    every 1,024 steps, killed after step 2,560 (so resumed from 2,048)."""
    results = tmp_path_factory.mktemp("results")
    common = ["train", "CartPole-v1", "--total-steps", "3072", "--results-dir", str(results), *OPTIONS]
    assert champion_here(*common, "--run-name", "straight") == 0
    killed = champion_child(common + ["--run-name", "resumed"], env={"CHAMPION_FAULT_KILL_AT_STEP": "2560"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed_dir = results / "CartPole-v1" / "ppo" / "resumed"
    again = champion_child(["train", "--resume", str(resumed_dir), "-q"])
    assert again.returncode == 0, again.stderr[-2000:]
    return results / "CartPole-v1" / "ppo" / "straight", resumed_dir, killed.stderr


def test_a_run_killed_and_resumed_continues_exactly_like_the_straight_one(runs):
    straight, resumed, killed_stderr = runs
    columns = ("step", "mean_return", "std_return", "min_return", "max_return", "best_mean_return")
    rows = [[[row[column] for column in columns] for row in evaluation_rows(run)] for run in (straight, resumed)]
    assert rows[0] == rows[1] and len(rows[0]) == 6
    first, second = checkpoint_weights(straight, 3072), checkpoint_weights(resumed, 3072)
    torso = sorted(name for name in first if name.startswith("model/policy_torso__"))
    assert len(torso) == 10 and torso[0].startswith("model/policy_torso__0_kernel")
    assert first.keys() == second.keys() and all(np.array_equal(first[name], second[name]) for name in first)
    # the one line saying it acts in TensorFlow, once
    assert [line for line in killed_stderr.splitlines() if "acts with it in TensorFlow" in line] == [
        f"note: network.torso {TORSO} is your own Keras network, so champion acts with it in TensorFlow (one call per "
        "step), not in numpy"]


def test_replay_plays_the_recorded_episodes_exactly_in_any_batch(runs):
    straight = runs[0]
    best = champion.replay(straight, entry="best")
    assert best.same_episodes and list(best.result.returns) == list(best.recorded_returns)
    assert best.result.mean_return == best.recorded_mean_return
    first_three = champion.replay(straight, entry="best", episodes=3)  # 3 rows a step, not 10: the same actions
    assert list(first_three.result.returns) == list(best.recorded_returns[:3])
    crowned = champion.replay(straight)
    assert crowned.crowned and crowned.result.mean_return == crowned.recorded_mean_return


# Runs in a Python without champion: proves it cannot be imported, loads policy.keras and acts on the observations.
CHILD = textwrap.dedent('''
    import json, sys
    try:
        import champion
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("champion is importable: " + champion.__file__)
    import keras, numpy as np

    model = keras.saving.load_model(sys.argv[1])
    actions = np.asarray(model(np.load(sys.argv[2]))["actions"])
    torso_layers = sorted(type(layer).__name__ for wrapper in model.layers if wrapper.name.endswith("_torso")
                          for torso in wrapper.layers for layer in getattr(torso, "layers", []))
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("champion", "user_torsos"))
    print(json.dumps({"actions": actions.tolist(), "torso_layers": torso_layers, "loaded": loaded}))
''')


def test_the_keras_export_acts_like_replay_in_a_python_without_champion(runs, python_without_champion, tmp_path):
    """100 observations (50 from the env's space, 50 around the normaliser's statistics): every action whose
    logits are not a near-tie (within 1e-5) is replay's."""
    exported = champion.export(runs[0], "keras", out=tmp_path / "keras")
    policy, _ = load_policy(runs[0])
    space = gym.make("CartPole-v1").observation_space
    space.seed(0)
    observations = np.concatenate([np.stack([space.sample() for _ in range(50)]),
                                   probe_observations(policy.model, 50, seed=1)["observations"]]).astype(np.float32)
    np.save(tmp_path / "observations.npy", observations)
    (tmp_path / "child.py").write_text(CHILD)
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.run([str(python_without_champion), "-I", str(tmp_path / "child.py"),
                            str(exported.path / "policy.keras"), str(tmp_path / "observations.npy")],
                           cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.splitlines()[-1])
    assert result["loaded"] == []  # neither champion nor the torso's module: built-in layers only
    assert result["torso_layers"].count("LayerNormalization") == 4  # two blocks in each of the two copies
    expected = policy.env_actions(policy.mode(observations))
    logits, _ = policy.forward(observations)
    clear = np.abs(logits[:, 0] - logits[:, 1]) > 1e-5
    assert clear.sum() >= 95
    assert np.array_equal(np.asarray(result["actions"])[clear], expected[clear])
    assert np.array_equal(champion.load(runs[0]).act(observations), expected)  # the public Policy: replay's path


def test_without_its_module_a_run_folders_torso_is_refused_in_one_line(runs, monkeypatch):
    """The torso's module, recorded in the run folder, is imported only from installed packages, as an env's."""
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if not entry.endswith("tests")])
    monkeypatch.delitem(sys.modules, "user_torsos")
    monkeypatch.delitem(torso_module.GIVEN_TORSOS, TORSO, raising=False)
    with pytest.raises(ConfigError, match=r"names the network torso 'user_torsos:residual_torso', whose module "
                                          r"'user_torsos' is not an installed package; .* --env-module user_torsos"):
        champion.replay(runs[0])


def test_a2c_trains_a_shared_torso_on_the_graph_engine_and_replays_it_exactly(tmp_path):
    """A2C with one torso for the policy and the value function, on the graph engine (the torso acts inside the
    fused XLA call there, and through Keras in the evaluations): its weights are saved once (no value copy), and
    replay plays every recorded return again."""
    done = champion.train("CartPole-v1", "a2c", torso=user_torsos.residual_torso, network={"shared_torso": True},
                          total_steps=1_000, eval_every=500, eval_episodes=4, engine="graph",
                          results_dir=str(tmp_path), progress=False, media=False, crown={"at_end": False})
    names = sorted(load_policy(done.run_dir)[0].weights)
    assert [name for name in names if "torso" in name] == sorted(f"policy_torso/{index}_{name}" for index, name in
                                                                  enumerate(["kernel", "bias", "gamma", "beta"] * 2
                                                                            + ["kernel", "bias"]))
    assert done.details.engine["kind"] == "graph"
    replayed = champion.replay(done.run_dir)
    assert replayed.same_episodes and list(replayed.result.returns) == list(replayed.recorded_returns)


def test_a_resume_whose_torso_function_now_builds_other_weights_is_refused_in_one_line(tmp_path, monkeypatch):
    done = champion.train("CartPole-v1", torso=user_torsos.residual_torso, total_steps=256, eval_every=256,
                          eval_episodes=2, engine="gymnasium", results_dir=str(tmp_path), run_name="small",
                          progress=False, media=False, crown={"at_end": False}, num_envs=4,
                          ppo={"jit_compile": False, "num_steps": 64, "minibatch_size": 128, "epochs": 2},
                          use_preset=False)  # constant schedules: the run may go on past its first budget
    monkeypatch.setattr(user_torsos, "WIDTH", 16)  # the function changed since the run started
    with pytest.raises(ConfigError) as refused:
        champion.resume(done.run_dir, total_steps=512, progress=False)
    assert str(refused.value).startswith(f"network.torso {TORSO} now builds other weights than checkpoint ")
    assert str(refused.value).endswith("the function changed since the run started; put it back as it was to resume")


@pytest.mark.slow
def test_ppo_with_a_residual_torso_solves_cartpole_and_replays_its_best_exactly(tmp_path):
    """CartPole-v1's PPO preset with the residual LayerNorm torso in place of its MLP, on the gymnasium engine (every
    step acts through the Keras model), evaluated every 2,048 steps and stopped at the first mean of 475 or more;
    docs/benchmarks.md records the steps and times (benchmarks/user_torso.py)."""
    result = champion.train("CartPole-v1", torso=user_torsos.residual_torso, engine="gymnasium", eval_every=2_048,
                            stop={"at_return": 475}, results_dir=str(tmp_path), progress=False, media=False)
    reached = [step for step, mean in result.details.evaluations if mean >= 475]
    assert reached and result.best_mean_return >= 475
    print(f"first evaluation at 475 or more: step {reached[0]:,}; {result.details.wall_seconds:.1f} s of training")
    best = champion.replay(result.run_dir, entry="best")
    assert best.same_episodes and list(best.result.returns) == list(best.recorded_returns)
