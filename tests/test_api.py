"""champion's public API: train with callbacks and stop rules, load a policy and act, evaluate, the errors."""

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import champion
from champion.envs.factory import EnvOptions, make_env
from champion.runners.evaluate import EvalResult
from champion.runners.replay import load_policy

ROOT = Path(__file__).parent.parent
CHAMPION = [sys.executable, "-c", "from champion.runners.cli.main import main; main()"]
SMALL = dict(num_envs=2, eval_episodes=2, media=False, progress=False, network={"hidden_sizes": [8]})


def tiny_run(tmp_path, env_id, name, **settings):
    """A few hundred steps of PPO: enough for a run folder with best entries."""
    options = dict(SMALL, total_steps=128, eval_every=64, results_dir=str(tmp_path), run_name=name,
                   ppo={"num_steps": 32, "minibatch_size": 32, "epochs": 1}, crown={"at_end": False})
    options.update(settings)
    return champion.train(env_id, "ppo", engine="gymnasium", **options)


def evaluation_rows(run_dir):
    with open(run_dir / "evaluations.csv", newline="") as handle:
        return [(int(row["step"]), float(row["mean_return"])) for row in csv.DictReader(handle)]


@pytest.mark.parametrize("env_id, settings", [
    ("CartPole-v1", {}),                                               # Box
    ("FrozenLake-v1", {}),                                             # Discrete observations
    ("champion-test/DictCue-v0", {}),                                  # Dict of Box and Discrete
    ("champion-test/QuadrantCue-v0", {"network": {"hidden_sizes": [8], "cnn_layers": [[4, 4, 2], [8, 3, 2]],
                                                  "cnn_features": 16}}),  # uint8 image
])
def test_load_acts_as_replay_does_on_100_probe_observations(tmp_path, env_id, settings):
    """``champion.load(run).act`` on the env's own observations (one at a time and as a batch) gives the actions
    that replay's path gives: gymnasium's flattening, the numpy policy's mode, the env's action format."""
    result = tiny_run(tmp_path, env_id, "probe", **settings)
    policy = champion.load(result.run_dir)
    replayed, manifest = load_policy(result.run_dir)
    assert policy.entry == Path(manifest["entry"]) and policy.env_id == env_id
    space = make_env(env_id, EnvOptions.from_dict(manifest.get("env_options")), flatten=False).observation_space
    space.seed(7)
    probes = [space.sample() for _ in range(100)]
    expected = replayed.env_actions(replayed.mode(np.stack([gym.spaces.flatten(space, probe) for probe in probes])))
    one_by_one = np.stack([policy.act(probe) for probe in probes])
    batch = gym.vector.utils.concatenate(space, probes, gym.vector.utils.create_empty_array(space, 100))
    assert np.array_equal(one_by_one, expected)
    assert np.array_equal(policy.act(batch), expected)
    # the same policy as a Keras model (what export --format keras writes), fed leaf by leaf
    leaves = policy.spec.observation_leaves
    inputs = {leaf.name: leaf_values(batch, leaf.path) for leaf in leaves}
    outputs = policy.keras_model()(inputs if len(leaves) > 1 else inputs[leaves[0].name])
    assert np.array_equal(np.asarray(outputs["actions"]).reshape(np.shape(expected)), expected)


def leaf_values(batch, path):
    for key in path:
        batch = batch[key] if isinstance(batch, dict) else batch[int(key)]
    return np.asarray(batch)


def test_load_takes_an_entry_folder_or_a_folder_of_runs_and_says_what_is_wrong_in_the_clis_words(tmp_path):
    first = tiny_run(tmp_path, "CartPole-v1", "first")
    [entry] = [path for path in sorted((first.run_dir / "best").iterdir()) if path.name.startswith("0001")]
    assert champion.load(entry).entry == entry
    assert champion.load(tmp_path).run_dir == first.run_dir  # the newest run below a folder of runs
    assert champion.load(first.run_dir, entry="best").entry == first.best_entry
    with pytest.raises(champion.RunNotFoundError) as raised:
        champion.load(tmp_path / "missing")
    done = subprocess.run(CHAMPION + ["replay", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"champion replay: error: {raised.value}"
    with pytest.raises(champion.UsageError, match=r"observation has shape \(2,\), but the policy takes \(4,\)"):
        champion.load(first.run_dir).act([0.0, 1.0])


def test_a_stop_rule_ends_cartpole_at_its_first_evaluation_at_200_and_a_resume_goes_on_as_an_unstopped_run(tmp_path):
    """stop.at_return=200 (config key, through the command): the run ends at the first evaluation at or above 200
    with its folder complete (200, not CartPole's 475: the same rule, in half the steps); resumed with a larger budget (and the rule lifted) it learns what a run that never
    stopped learns, bit for bit (same code, same machine)."""
    common = ["--results-dir", str(tmp_path), "--eval-every", "2048", "--eval-episodes", "5", "--no-media",
              "--set", "eval_in_background=false", "--set", "schedule_steps=100000", "--set", "crown.episodes=5"]
    done = subprocess.run(CHAMPION + ["train", "CartPole-v1", "--run-name", "stopped", "--total-steps", "100000",
                                      "--set", "stop.at_return=200", *common], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "stopped"
    rows = evaluation_rows(run_dir)
    stop_step = rows[-1][0]
    assert rows[-1][1] >= 200 and all(mean < 200 for _, mean in rows[:-1])
    assert stop_step < 100000
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == stop_step and summary["crown"]["champion"]  # crowned, summarised
    assert re.fullmatch(r"StopAtReturn: mean return [\d.]+ at step [\d,]+ reached 200", summary["stopped_early"])
    assert f"stopped early at step {stop_step:,} of 100,000: StopAtReturn" in done.stdout
    assert (run_dir / "checkpoints" / f"ckpt-{stop_step:010d}").is_dir()
    assert (run_dir / "best" / f"final-step-{stop_step}").is_dir()
    assert json.loads((run_dir / "status.json").read_text())["reason"].startswith("stopped early: StopAtReturn")

    longer = stop_step + 2048
    settings = dict(results_dir=str(tmp_path), eval_every=2048, eval_episodes=5, media=False, progress=False,
                    eval_in_background=False, schedule_steps=100000, crown={"episodes": 5})
    resumed = champion.resume(run_dir, total_steps=longer, stop={"at_return": None}, progress=False)
    assert resumed.env_steps == longer and resumed.stopped_early is None
    straight = champion.train("CartPole-v1", total_steps=longer, run_name="straight", **settings)
    assert evaluation_rows(run_dir) == evaluation_rows(straight.run_dir)
    ours = np.load(run_dir / "best" / f"final-step-{longer}" / "policy.npz")
    theirs = np.load(straight.run_dir / "best" / f"final-step-{longer}" / "policy.npz")
    assert sorted(ours) == sorted(theirs) and all(np.array_equal(ours[name], theirs[name]) for name in ours)


def test_a_resumed_run_that_stopped_early_says_why(tmp_path, capsys):
    """The resume of a run a callback stopped names the reason, and its stop rules apply again."""
    class StopAt(champion.Callback):
        def on_evaluation(self, step, result):
            return champion.Stop("enough for this test") if step == 64 else None

    first = tiny_run(tmp_path, "CartPole-v1", "stopped", total_steps=256, eval_in_background=False,
                     callbacks=[StopAt()])
    assert first.env_steps == 64 and first.stopped_early == "StopAt: enough for this test"
    from champion.runners.store.runs import run_status

    assert run_status(first.run_dir) == "stopped early"  # what champion runs shows
    capsys.readouterr()
    again = champion.resume(first.run_dir, progress=True)
    assert "note: this run stopped early at step 64 (StopAt: enough for this test); it goes on to 256 steps" in (
        capsys.readouterr().err)
    assert again.env_steps == 256 and again.stopped_early is None


class Spy(champion.Callback):
    def __init__(self, fail_on=None):
        self.events, self.fail_on = [], fail_on

    def on_start(self, step, evaluations):
        self.events.append(("start", step, len(evaluations)))

    def on_evaluation(self, step, result):
        self.events.append(("evaluation", step))
        if self.fail_on == step:
            raise ValueError("the spy was told to fail here")

    def on_new_best(self, entry):
        self.events.append(("new best", entry.step, entry.path.name))

    def on_checkpoint(self, step, path):
        self.events.append(("checkpoint", step, path.name))

    def on_end(self, result):
        self.events.append(("end", result.env_steps))


def test_callbacks_hear_the_runs_events_in_order_and_a_failing_one_stops_it_with_its_name(tmp_path):
    spy = Spy()
    result = tiny_run(tmp_path, "CartPole-v1", "spy", callbacks=[spy], checkpoint_every=128)
    rows = evaluation_rows(result.run_dir)
    bests = [step for step, mean in rows if mean == max(m for s, m in rows if s <= step)
             and all(mean > m for s, m in rows if s < step)]
    expected = [("start", 0, 0)]
    for step, _ in rows:
        if step in bests:
            expected.append(("new best", step, f"{bests.index(step) + 1:04d}-step-{step}"))
        expected.append(("evaluation", step))
    expected += [("checkpoint", 128, "ckpt-0000000128"), ("end", 128)]
    assert spy.events == expected
    assert result.stopped_early is None and result.env_steps == 128

    failing = Spy(fail_on=64)
    with pytest.raises(champion.CallbackError) as raised:
        tiny_run(tmp_path, "CartPole-v1", "failing", callbacks=[failing], total_steps=256, eval_in_background=False)
    message = str(raised.value)
    assert message.startswith("callback Spy.on_evaluation raised ValueError: the spy was told to fail here; training "
                              "stopped at step 64 with a checkpoint")
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "failing"
    assert f"continue with: champion train --resume {run_dir}" in message
    assert (run_dir / "checkpoints" / "ckpt-0000000064").is_dir()
    assert champion.load(run_dir).step == 64  # the best saved before the failing hook is intact and loads
    runs = sorted((tmp_path / "CartPole-v1" / "ppo").iterdir())
    with pytest.raises(champion.UsageError, match="callbacks must be champion.Callback objects, got builtin_function"):
        champion.train("CartPole-v1", callbacks=[print], results_dir=str(tmp_path), progress=False)
    assert sorted((tmp_path / "CartPole-v1" / "ppo").iterdir()) == runs  # refused before a run folder was made


def returns(mean):
    return EvalResult(returns=(mean,), lengths=(1,), seeds=(0,))


def test_stop_after_evaluations_without_best_counts_as_the_best_store_does_and_goes_on_after_a_resume():
    rule = champion.StopAfterEvaluationsWithoutBest(2)
    rule.on_start(0, [])
    outcomes = [rule.on_evaluation(step, returns(mean)) for step, mean in
                [(1, 5.0), (2, 5.0), (3, math.nan), (4, 6.0), (5, 1.0)]]
    # 5 is a best; 5 again is not (strictly better only), nor NaN: two in a row without one -> stop at step 3
    assert [outcome is not None for outcome in outcomes] == [False, False, True, False, False]
    assert outcomes[2].reason == "2 evaluations in a row without a new best (best 5.00; the last at step 3)"
    resumed = champion.StopAfterEvaluationsWithoutBest(2)
    resumed.on_start(4, [(1, 5.0), (2, 5.0), (3, 4.0), (4, 4.5)])  # three without a best since step 1
    assert resumed.on_evaluation(5, returns(4.9)) is not None  # the count went on across the resume
    assert resumed.on_evaluation(6, returns(7.0)) is None


def test_stop_rules_and_callbacks_refuse_bad_settings_in_one_line(tmp_path):
    with pytest.raises(champion.UsageError, match="StopAtReturn needs a finite mean return as its threshold, got nan"):
        champion.StopAtReturn(math.nan)
    with pytest.raises(champion.UsageError, match="needs a positive whole number of evaluations, got 0"):
        champion.StopAfterEvaluationsWithoutBest(0)
    with pytest.raises(champion.ConfigError, match=r"stop.after_evaluations_without_best must be a positive integer"):
        champion.train("CartPole-v1", stop={"after_evaluations_without_best": 0}, results_dir=str(tmp_path))
    done = subprocess.run(CHAMPION + ["train", "CartPole-v1", "--results-dir", str(tmp_path), "--set",
                                      "stop.at_return=inf"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("champion train: error: stop.at_return must be a finite number (a mean return) "
                                   "or null, got inf")
    assert list(tmp_path.iterdir()) == []


def test_the_readmes_python_script_runs_as_written(tmp_path):
    """The README's "From Python" script: train with a callback, load the policy, act."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## From Python"):]
    script = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    stopped = re.search(r"stopped early: (.+)", done.stdout)
    assert stopped and "StopAtReturn" in stopped.group(1)
    episode = re.search(r"one episode with the champion: return ([\d.]+)", done.stdout)
    assert episode and float(episode.group(1)) > 0, lines


def test_a_stop_from_on_start_or_on_checkpoint_ends_the_run_at_that_step(tmp_path):
    class StopOnStart(champion.Callback):
        def on_start(self, step, evaluations):
            return champion.Stop("not today")

    class StopOnCheckpoint(champion.Callback):
        def on_checkpoint(self, step, path):
            return champion.Stop(f"checkpoint {path.name} is enough")

    at_start = tiny_run(tmp_path, "CartPole-v1", "start", total_steps=256, callbacks=[StopOnStart()])
    assert at_start.env_steps == 0 and at_start.stopped_early == "StopOnStart: not today"
    assert [step for step, _ in evaluation_rows(at_start.run_dir)] == [0]  # the untrained policy, evaluated
    assert (at_start.run_dir / "best" / "final-step-0").is_dir()
    at_checkpoint = tiny_run(tmp_path, "CartPole-v1", "checkpoint", total_steps=256, checkpoint_every=64,
                             eval_in_background=False, callbacks=[StopOnCheckpoint()])
    assert at_checkpoint.env_steps == 64
    assert at_checkpoint.stopped_early == "StopOnCheckpoint: checkpoint ckpt-0000000064 is enough"
    # the checkpoint the callback heard of, then the one that records why the run ended, at the same step
    names = sorted(path.name for path in (at_checkpoint.run_dir / "checkpoints").iterdir())
    assert names == ["ckpt-0000000064", "ckpt-0000000064-2"]
    state = json.loads((at_checkpoint.run_dir / "checkpoints" / names[-1] / "state.json").read_text())
    assert dict(state["items"])["loop"]["items"][-1] == ["stopped_early", at_checkpoint.stopped_early]


def test_a_callback_that_fails_before_any_best_says_so(tmp_path):
    class Broken(champion.Callback):
        def on_start(self, step, evaluations):
            raise KeyError("setup")

    with pytest.raises(champion.CallbackError) as raised:
        tiny_run(tmp_path, "CartPole-v1", "broken", callbacks=[Broken()])
    assert str(raised.value).startswith("callback Broken.on_start raised KeyError: 'setup'; training stopped at step 0 "
                                        "with a checkpoint, no best policy had been saved yet; continue with:")


def test_a_script_that_trains_at_its_top_level_is_refused_in_champions_worker_processes(tmp_path):
    """A spawned worker imports the caller's script again; a top-level champion.train there must not train."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import multiprocessing, sys\n"
        "import champion\n"
        "def child():\n"
        "    pass\n"
        "if __name__ == '__mp_main__':  # the spawned child imports this script under that name\n"
        "    try:\n"
        "        champion.train('CartPole-v1')\n"
        "    except champion.UsageError as error:\n"
        "        open(sys.argv[1], 'w').write(str(error))\n"
        "else:\n"
        "    worker = multiprocessing.get_context('spawn').Process(target=child)\n"
        "    worker.start()\n"
        "    worker.join()\n")
    message = tmp_path / "message.txt"
    done = subprocess.run([sys.executable, str(script), str(message)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert message.read_text() == ("champion.train was called while a worker process imported your script; put the "
                                   "script's calls under `if __name__ == \"__main__\":`")
    assert not (tmp_path / "results").exists()


def test_act_refuses_what_is_not_the_envs_observation_in_one_line():
    from champion.agents.spec import NetworkSpec, ObservationLeaf, box_leaf
    from champion.envs.observations import flat_observations

    tuple_spec = NetworkSpec((ObservationLeaf(("0",), "onehot", (), "int64", (5,), (1,)),
                              ObservationLeaf(("1",), "box", (2,))), "discrete", 2, hidden_sizes=(4,))
    flat, batched = flat_observations(tuple_spec, (np.array([1, 5]), np.zeros((2, 2))))
    assert batched and flat.tolist() == [[1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0]]
    problems = {
        "a list where the space has a Tuple": [np.int64(1), np.zeros(2)],
        "a value outside Discrete(5, start=1)": (0, np.zeros(2)),
        "a fraction for a Discrete leaf": (2.5, np.zeros(2)),
        "batches of two sizes": (np.array([1, 2, 3]), np.zeros((2, 2))),
        "text in a Box leaf": (1, np.array(["a", "b"])),
    }
    messages = {}
    for what, observation in problems.items():
        with pytest.raises(champion.UsageError) as raised:
            flat_observations(tuple_spec, observation)
        messages[what] = str(raised.value)
    assert messages["a list where the space has a Tuple"].startswith("observation has no '0': got a list where")
    assert messages["a value outside Discrete(5, start=1)"] == "observation 0 holds [0], outside the env's 1..5"
    assert messages["a fraction for a Discrete leaf"].startswith("observation 0 must be whole numbers")
    assert messages["batches of two sizes"] == ("observation 1 has shape (2, 2), but the policy takes (3, 2) (a batch) "
                                                "as its env gives them")
    assert messages["text in a Box leaf"] == "observation 1 must be numbers, got an array of <U1"
    binary = NetworkSpec((ObservationLeaf((), "binary", (3,)),), "discrete", 2, hidden_sizes=(4,))
    with pytest.raises(champion.UsageError, match=r"must hold only 0 and 1 \(a MultiBinary space\), got \[0, 5\]"):
        flat_observations(binary, np.array([0, 5, 0]))
    assert flat_observations(NetworkSpec((box_leaf((3,)),), "discrete", 2), [[1, 2, 3]])[1]  # a batch of one


def test_a_config_file_that_is_not_yaml_or_not_a_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo:\n  learning_rate: [1e-3\n")
    with pytest.raises(champion.ConfigError) as raised:
        champion.train("CartPole-v1", config=bad, results_dir=str(tmp_path))
    assert str(raised.value).startswith(f"config file {bad} is not valid YAML: ") and "\n" not in str(raised.value)
    assert "line 3" in str(raised.value)
    with pytest.raises(champion.ConfigError, match=r"config file \. cannot be read \(Is a directory\)"):
        champion.train("CartPole-v1", config=".", results_dir=str(tmp_path))
    with pytest.raises(champion.UsageError, match="config must be a mapping of config keys or the path of a YAML"):
        champion.train("CartPole-v1", config=5, results_dir=str(tmp_path))
    good = tmp_path / "good.yaml"
    good.write_text("eval_every: 64\nppo:\n  learning_rate: 0.001\n")
    result = tiny_run(tmp_path, "CartPole-v1", "from-file", total_steps=64, config=good)
    recorded = (result.run_dir / "config.yaml").read_text()
    assert "eval_every: 64\n" in recorded and "  learning_rate: 0.001\n" in recorded


@pytest.mark.parametrize("env_id, extra, network", [
    ("LunarLander-v3", "Box2D", {}),
    ("HalfCheetah-v5", "mujoco", {}),
    ("ALE/Breakout-v5", "ale_py", {"cnn_layers": [[8, 8, 4], [8, 4, 2]], "cnn_features": 16}),
])
def test_a_run_stopped_by_a_callback_and_resumed_learns_what_a_straight_run_learns_on_box2d_mujoco_and_atari(
        tmp_path, env_id, extra, network):
    """The checkpoint a Stop writes is an ordinary one: resumed, the run goes on bit for bit as one that never
    stopped (the env states replayed from their journals, the emulator's, the RNGs, the optimizer)."""
    pytest.importorskip(extra, reason="needs the box2d, mujoco and atari extras")

    class StopAt256(champion.Callback):
        def on_evaluation(self, step, result):
            return champion.Stop("halfway") if step == 256 else None

    settings = dict(SMALL, total_steps=512, eval_every=256, eval_in_background=False, results_dir=str(tmp_path),
                    engine="gymnasium", schedule_steps=512, crown={"at_end": False},
                    ppo={"num_steps": 64, "minibatch_size": 64, "epochs": 2, "jit_compile": False},
                    network={"hidden_sizes": [8], **network})
    stopped = champion.train(env_id, run_name="stopped", callbacks=[StopAt256()], **settings)
    assert stopped.env_steps == 256 and stopped.stopped_early == "StopAt256: halfway"
    resumed = champion.resume(stopped.run_dir, progress=False)
    straight = champion.train(env_id, run_name="straight", **settings)
    assert resumed.env_steps == straight.env_steps == 512
    assert evaluation_rows(stopped.run_dir) == evaluation_rows(straight.run_dir)
    ours = np.load(stopped.run_dir / "best" / "final-step-512" / "policy.npz")
    theirs = np.load(straight.run_dir / "best" / "final-step-512" / "policy.npz")
    assert sorted(ours) == sorted(theirs) and all(np.array_equal(ours[name], theirs[name]) for name in ours)
