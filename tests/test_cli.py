"""The command line: one-line errors with exit code 2 before any folder exists, and a real run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from champion.agents.compile import xla_cache
from champion.runners.store.best_store import load_best
from champion.runners.cli.main import main
from event_files import summaries
from hostile_helpers import champion as champion_in_process, copy_run

CHAMPION = [sys.executable, "-c", "from champion.runners.cli.main import main; main()"]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err.strip().splitlines()


@pytest.mark.parametrize("args, message", [
    (["train", "CartPol-v1"], "champion train: error: unknown environment 'CartPol-v1': "),  # then gymnasium's words
    (["train", "CartPole-v1", "--set", "ppo.learnin_rate=1"], "champion train: error: unknown config key 'ppo.learnin_rate'; did you mean ppo.learning_rate?"),
    (["train", "CartPole-v1", "--total-steps", "0"], "champion train: error: total_steps must be a positive integer, got 0"),
    (["train", "CartPole-v1", "--num-envs", "-1"], "champion train: error: num_envs must be a positive integer, got -1"),
    (["train", "CartPole-v1", "--eval-every", "4"], "champion train: error: eval_every=4 is smaller than one vector step (8 env steps with num_envs=8); use eval_every >= 8"),
    (["train", "champion-test/DictAction-v0"], "champion train: error: champion-test/DictAction-v0: action space Dict('move': Discrete(3), 'speed': Box(0.0, 1.0, (1,), float32)) is not supported; supported: Discrete, MultiDiscrete, MultiBinary, Box (any shape)"),
    (["train", "NoSuchEnv-v0"], "champion train: error: unknown environment 'NoSuchEnv-v0': "),
    (["train", "nosuchmodule:Env-v0"], "champion train: error: cannot make environment 'nosuchmodule:Env-v0': ModuleNotFoundError: No module named 'nosuchmodule'"),
    (["train", "CartPole-v1", "--algo", "dqn"], "champion train: error: "),  # then click's words, naming dqn
])
def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    results = tmp_path / "results"
    code, lines = run_cli(args + ["--results-dir", str(results)], capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(message)  # gymnasium may add a sentence
    if "unknown environment" in message:
        assert lines[0].endswith("`champion envs` lists the installed ones; an env registered by your own module is "
                                 "named module:EnvId-v0.")
    assert not results.exists()


def test_plot_without_a_run_folder_says_what_to_give(capsys):
    code, lines = run_cli(["plot"], capsys)
    assert (code, lines) == (2, ["champion plot: error: give one or more run folders, e.g. champion plot "
                                 "results/CartPole-v1 (a folder stands for every run inside it)"])


def test_replay_without_a_best_policy_says_so(tmp_path, capsys):
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "empty"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("env_id: CartPole-v1\n")
    code, lines = run_cli(["replay", str(run_dir)], capsys)
    assert code == 2
    assert lines == [f"champion replay: error: no best policy in {run_dir / 'best'} (no evaluation has saved one yet)"]
    code, lines = run_cli(["replay", str(tmp_path / "missing")], capsys)
    assert (code, lines[0]) == (2, f"champion replay: error: {tmp_path / 'missing'} does not exist; give a run folder such as results/CartPole-v1/ppo/<run>")


@pytest.mark.parametrize("engine", ["graph", pytest.param("gymnasium", marks=pytest.mark.slow)])
def test_train_replay_runs_end_to_end(tmp_path, engine, capsys):
    results = tmp_path / "results"
    train = subprocess.run(CHAMPION + ["train", "CartPole-v1", "--total-steps", "3000", "--eval-every", "1000",
                                       "--results-dir", str(results), "--run-name", "e2e", "--set", "ppo.epochs=4",
                                       "--set", f"engine={engine}", "--profile"], capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    assert f"({engine} engine)" in train.stdout
    # --profile: 12 rollouts of 32 vector steps, 3 evaluations; "name [(detail)] seconds share calls ..."
    lines = train.stdout.splitlines()
    table, total, beside = (next(index for index, line in enumerate(lines) if line.startswith(start))
                            for start in ("phase ", "total ", "beside the loop"))
    profile = {line.split()[0]: line.split() for line in lines[table + 1:total]}
    if engine == "gymnasium":  # one update per rollout, the first one compiled
        assert profile["env_stepping"][3] == "384" and profile["update"][3] == "11" and profile["first"][4] == "1"
    else:  # 8 rollouts up to each evaluation: 3 + 1 per call, the first call compiled
        assert profile["rollout+update"][4] == "5" and profile["compile+first"][5] == "1"
    built = [profile[name][-3] for name in ("tracing", "trace") if name in profile]  # traced, or loaded from the cache
    assert built == ["1"]
    assert lines[total].split()[3:6] == ["3,072", "env", "steps,"]
    name, _, calls = lines[beside + 1].split()[:3]  # name, seconds, calls: the evaluations ran beside the loop
    assert beside == total + 1 and (name, calls) == ("evaluation", "3")
    startup = json.loads((results / "CartPole-v1" / "ppo" / "e2e" / "summary.json").read_text())["startup_seconds"]
    before_the_loop = lines[-2].split()
    assert before_the_loop[:3] == ["before", "the", "loop:"] and abs(float(before_the_loop[3]) - startup) <= 0.006
    cache = xla_cache.configured_cache_dir() or Path(os.environ[xla_cache.ENVIRONMENT_VARIABLE])
    assert lines[-1].startswith(f"XLA compile cache: {cache} (")
    assert any(path.name.endswith(".pb") for path in cache.iterdir())  # the run left its compiled step there
    run_dir = results / "CartPole-v1" / "ppo" / "e2e"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (config["total_steps"], config["ppo"]["epochs"], config["ppo"]["num_steps"]) == (3000, 4, 32)

    rows = (run_dir / "evaluations.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["step", "wall_seconds", "mean_return"]
    steps = [int(row.split(",")[0]) for row in rows[1:]]
    assert steps == [1024, 2048, 3072]
    means = [float(row.split(",")[2]) for row in rows[1:]]

    stored = load_best(run_dir / "best")
    assert stored.manifest["mean_return"] == max(means)
    assert stored.manifest["eval_seeds"] == list(range(1_000_000, 1_000_010))

    crowned = json.loads((run_dir / "best" / "champion.json").read_text())  # the run crowned itself at its end
    replay = subprocess.run(CHAMPION + ["replay", str(run_dir), "--json"], capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0, replay.stderr
    replayed = json.loads(replay.stdout)
    assert replayed["crowned"] and replayed["seeds"] == crowned["held_out_seeds"]
    assert replayed["mean_return"] == replayed["recorded_mean_return"] == crowned["held_out_mean"]
    # the other replays in this process (each command's own process would only start TensorFlow again)
    capsys.readouterr()
    assert champion_in_process("replay", run_dir, "--json", "--entry", "best") == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["mean_return"] == replayed["recorded_mean_return"] == max(means)
    assert replayed["returns"] == stored.manifest["returns"]
    assert replayed["step"] == stored.manifest["step"]
    assert (replayed["same_episodes_as_recorded"], replayed["recorded_episodes"]) == (True, 10)
    assert champion_in_process("replay", run_dir.parent, "--best") == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"picked {run_dir}: the highest best return ({max(means):.2f}) of the 1 run with a best policy below "
        f"{run_dir.parent}")
    assert champion_in_process("replay", run_dir, "--episodes", "12") == 0  # the first 12 of the held-out ones
    common = min(12, len(crowned["returns"]))
    first = np.mean(crowned["returns"][:common])
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        f"over 12 episodes; on the {common} that are among its {len(crowned['held_out_seeds'])} recorded held-out "
        f"episodes: {first:.2f} (same as recorded: {first:.2f})")

    logged = summaries(run_dir / "tb")
    eval_events = logged["eval/mean_return"]
    assert [event.step for event in eval_events] == steps
    assert [float(event.value) for event in eval_events] == pytest.approx(means)
    best_curve = [float(event.value) for event in logged["eval/best_mean_return"]]
    assert best_curve == pytest.approx(list(np.maximum.accumulate(means)))
    assert logged["train/policy_loss"][0].plugin == "scalars"
    assert logged["config"][0].plugin == "text"

    listing = subprocess.run(CHAMPION + ["runs", "--results-dir", str(results), "--json"], capture_output=True, text=True)
    [summary] = json.loads(listing.stdout)
    assert (summary["env_id"], summary["algo"], summary["run_name"]) == ("CartPole-v1", "ppo", "e2e")
    assert (summary["best_mean_return"], summary["env_steps"], summary["total_steps"]) == (max(means), 3072, 3000)


def test_replay_writes_a_video_of_the_first_episode(finished_run, tmp_path):
    """On the session's small finished run (tests/conftest.py): its best entry, on its 2 evaluation seeds."""
    import imageio.v3 as imageio

    from champion.runners.replay import replay

    run_dir = finished_run
    outcome = replay(run_dir, video=tmp_path / "clip.mp4")
    frames = imageio.imread(tmp_path / "clip.mp4", index=None)
    assert frames.shape == (outcome.result.lengths[0] + 1, 400, 600, 3)  # the reset frame plus one per step
    assert outcome.result.mean_return == outcome.recorded_mean_return
    replay(run_dir, video=tmp_path / "clip.gif")
    gif = imageio.imread(tmp_path / "clip.gif", index=None)
    # pillow merges identical consecutive frames, so a GIF may hold fewer
    assert 1 < gif.shape[0] <= frames.shape[0] and gif.shape[1:3] == (400, 600)


def test_replay_refuses_weights_that_do_not_fit_the_recorded_network(finished_run, tmp_path, capsys):
    """An entry whose manifest (digest and all) describes another network than its weights is unusable, before any
    network is built; with no other entry, replay says so in one line (on a copy of the session's small finished
    run, whose one best entry is followed by its final policy's)."""
    from champion.runners.store.best_store import list_entries
    from champion.runners.store.folder_trust import seal

    run_dir = copy_run(finished_run, tmp_path / "mismatch")
    [entry] = list_entries(run_dir / "best")
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["network"]["hidden_sizes"] = [128, 128]  # a larger network: the file fits its size
    (entry / "manifest.json").write_text(json.dumps(seal(manifest)))
    code, lines = run_cli(["replay", str(run_dir)], capsys)
    assert code == 2
    assert lines[-1].startswith(f"champion replay: error: no usable best policy in {run_dir / 'best'}: {entry.name}: "
                                "its weights do not fit the network its manifest describes (policy_head/kernel, policy_torso_0/bias")


def test_a_reader_that_goes_away_ends_the_listing_quietly_with_exit_0():
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # like `champion presets --fields | head -1` once head has its line
    done = subprocess.run(CHAMPION + ["presets", "--fields"], stdout=write_end, stderr=subprocess.PIPE, text=True,
                          timeout=120)
    os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")


def test_help_lists_every_command_with_a_whole_sentence_and_the_defaults_of_preset_options(capsys):
    main(["--help"])
    listing = capsys.readouterr().out.split("Commands:")[1].strip().splitlines()
    assert len(listing) == 9 and all(line.rstrip().endswith((".", ")")) and "..." not in line for line in listing)
    main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--num-envs", "--eval-every", "--eval-episodes"):
        assert "(default: preset's, else" in text.split(option, 1)[1].split("--", 1)[0]


def test_presets_say_which_extra_they_need(capsys):
    main(["presets"])
    lines = capsys.readouterr().out.splitlines()
    lunar = [line for line in lines if line.startswith("LunarLander")]
    assert lunar and all(line.endswith("(needs pip install -e '.[box2d]')") for line in lunar)
    assert all("needs" not in line for line in lines if line.startswith(("CartPole", "Pendulum", "Acrobot")))


def test_a_missing_extra_is_named_as_champions_extra(monkeypatch, capsys):
    import gymnasium as gym

    def make(env_id, **kwargs):
        raise gym.error.DependencyNotInstalled('box2d is not installed, run `pip install swig` followed by '
                                               '`pip install "gymnasium[box2d]"`')

    monkeypatch.setattr(gym, "make", make)
    code, lines = run_cli(["train", "LunarLander-v3"], capsys)
    assert (code, lines) == (2, ["champion train: error: LunarLander-v3 needs champion's box2d extra, which is not "
                                 "installed: pip install -e '.[box2d]' (in champion's folder)"])
    main(["envs", "LunarLander-v3"])  # the table, where rich would read "[box2d]" as a style
    assert "pip install -e '.[box2d]'" in capsys.readouterr().out

    monkeypatch.undo()  # the real gym.make, with MuJoCo not importable (as without the mujoco extra)
    monkeypatch.setitem(sys.modules, "mujoco", None)
    for name in [name for name in sys.modules if name.startswith("gymnasium.envs.mujoco")]:
        monkeypatch.delitem(sys.modules, name)
    code, lines = run_cli(["train", "Ant-v5"], capsys)
    assert (code, lines) == (2, ["champion train: error: Ant-v5 needs champion's mujoco extra, which is not "
                                 "installed: pip install -e '.[mujoco]' (in champion's folder)"])


def test_async_vectorization_is_refused_on_the_graph_engine_and_auto_takes_gymnasium(tmp_path, capsys):
    from champion.agents.config import TrainConfig
    from champion.runners.engines import choose_engine

    assert choose_engine(TrainConfig(env_id="CartPole-v1", vectorization="async")) == "gymnasium"
    code, lines = run_cli(["train", "CartPole-v1", "--set", "engine=graph", "--set", "vectorization=async",
                           "--results-dir", str(tmp_path / "results")], capsys)
    assert code == 2 and len(lines) == 1 and "vectorization=async asks for gymnasium envs" in lines[0]
    assert not (tmp_path / "results").exists()


def test_a_folder_of_runs_stands_for_the_newest_run_or_with_best_for_the_best_one_and_says_which(tmp_path, capsys):
    import shutil

    from champion.runners.store.runs import choose_run

    def fake_run(name: str, mean_return: float, step: int) -> Path:
        run = tmp_path / "runs" / name
        (run / "best" / f"0001-step-{step}").mkdir(parents=True)
        (run / "config.yaml").write_text("env_id: CartPole-v1\nalgo: ppo\ntotal_steps: 1000\n")
        manifest = {"mean_return": mean_return, "step": step, "env_id": "CartPole-v1", "algo": "ppo"}
        (run / "best" / f"0001-step-{step}" / "manifest.json").write_text(json.dumps(manifest))
        (run / "best" / "current.json").write_text(json.dumps({"entry": f"0001-step-{step}"}))
        return run

    good, tie_later, newest = fake_run("a-good", 500.0, 3000), fake_run("b-tie", 500.0, 5000), fake_run("c-new", 9.0, 1000)
    folder = tmp_path / "runs"
    assert choose_run(folder) == (newest, f"the newest of the 3 runs with a best policy below {folder} "
                                          "(the one started or resumed last; --best picks the highest best return)")
    assert choose_run(folder, best=True) == (good, f"the highest best return (500.00) of the 3 runs with a best "
                                                   f"policy below {folder}")
    assert choose_run(good, best=True) == (good, "")  # a run folder is taken as it is
    shutil.rmtree(tie_later)


def test_envs_lists_the_registered_envs_with_what_champion_can_train(capsys):
    main(["envs", "CARTPOLE-v1", "--json"])  # any case
    rows = {row["env_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["CartPole-v1"] == {"env_id": "CartPole-v1", "observation_space": "Box(4,) float32",
                                   "action_space": "Discrete(2)", "problem": "", "presets": ["a2c", "ppo"],
                                   "graph_engine": True}
    main(["envs", "champion-test/", "--json"])  # the suite's own toy envs
    rows = {row["env_id"]: row for row in json.loads(capsys.readouterr().out)}
    refused = rows["champion-test/DictAction-v0"]
    assert refused["action_space"].startswith("Dict(") and refused["problem"].endswith(
        "is not supported; supported: Discrete, MultiDiscrete, MultiBinary, Box (any shape)")
    assert rows["champion-test/DictCue-v0"]["problem"] == ""  # a Dict observation is fine
    assert rows["champion-test/Counter-v0"]["problem"] == "" and rows["champion-test/Counter-v0"]["presets"] == []
    code, lines = run_cli(["envs", "no-such-env-anywhere"], capsys)
    assert (code, lines) == (2, ["champion envs: error: no registered environment id contains 'no-such-env-anywhere'; "
                                 "champion envs lists them all"])


def test_replay_refuses_a_seed_out_of_range_in_one_line(finished_run, capsys):
    """Seeds are from 0 to 2**31 - 1 everywhere (champion.agents.config.SEED_LIMIT); the env's own error would exit 1."""
    assert champion_in_process("replay", finished_run, "--seed", "-1") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "champion replay: error: --seed must be from 0 to 2,147,483,647, got -1"]
