"""What a new user meets in the first hour (issue 32): training from a config file, settings that would do
nothing, errors that come before TensorFlow, replay comparing like with like, progress and small print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import champion
from champion.agents.config import ConfigError, TrainConfig
from champion.runners.configure import read_config_file, resolve_config
from champion.runners.store.run_folder import config_yaml

SMALL = dict(num_envs=2, eval_episodes=3, media=False, progress=False, engine="gymnasium",
             network={"hidden_sizes": [8]}, total_steps=256, eval_every=128,
             ppo={"num_steps": 32, "minibatch_size": 32, "epochs": 2, "jit_compile": False})

FAST_ERRORS = r'''
import contextlib, io, json, sys
from champion.runners.cli.main import main
lines = []
for args in json.loads(sys.argv[1]):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            main(args)
            code = 0
        except SystemExit as done:
            code = done.code
    lines.append([code, stderr.getvalue().strip()])
print(json.dumps({"results": lines, "tensorflow": "tensorflow" in sys.modules}))
'''


def cli(*args: str) -> int:
    """``champion ARGS`` in this process; its exit code."""
    from champion.runners.cli.main import main

    try:
        main([str(arg) for arg in args])
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def write_config(path: Path, **changes) -> None:
    """A run's config.yaml as champion writes it, with ``changes`` (a fake run needs no training)."""
    config = TrainConfig(env_id="CartPole-v1", algo="ppo", **changes)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(config_yaml(config, path.name))


def test_wrong_paths_entries_and_names_are_refused_before_tensorflow(tmp_path):
    """replay, export and train --run-name check what they can before importing TensorFlow: a wrong path, a
    folder that holds no run, an entry that is not there, a name already taken."""
    run = tmp_path / "results" / "CartPole-v1" / "ppo" / "taken"
    write_config(run)
    (run / "best" / "0001-step-512").mkdir(parents=True)
    (run / "best" / "0001-step-512" / "manifest.json").write_text("{}")
    (tmp_path / "not-runs" / "best").parent.mkdir()
    (tmp_path / "not-runs" / "best").write_text("a file named best, not a best folder")
    commands = [["replay", str(tmp_path / "does" / "not" / "exist")],
                ["export", str(tmp_path / "not-runs")],
                ["replay", str(run), "--entry", "nope"],
                ["export", str(run), "--entry", "nope"],
                ["replay", str(run), "--episodes", "0"],
                ["train", "CartPole-v1", "--run-name", "taken", "--results-dir", str(tmp_path / "results")]]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", FAST_ERRORS, json.dumps(commands)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, CHAMPION_TF_LOGS="1"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tensorflow"] is False  # so each line came in a moment, not after TensorFlow's start-up
    codes, lines = zip(*report["results"])
    assert codes == (2,) * len(commands)
    assert all(len(line.splitlines()) == 1 for line in lines), lines
    assert lines[0].endswith("does/not/exist does not exist; give a run folder such as results/CartPole-v1/ppo/<run>")
    assert lines[1].endswith(f"{tmp_path / 'not-runs'} is not a run folder (no config.yaml) and holds no run with a "
                             "best policy")
    for line in lines[2:4]:
        assert line.split(": error: ")[1] == (f"no entry 'nope' in {run / 'best'}; choose one of: 0001-step-512, or "
                                              "'best' for the training-time best")
    assert lines[4].endswith("--episodes must be a positive integer, got 0")
    assert lines[5].endswith(f"run folder {run} already exists; choose another --run-name, or continue it with: "
                             f"champion train --resume {run}")
    assert sorted(path.name for path in run.parent.iterdir()) == ["taken"]  # nothing written
    print(f"six refusals in {time.monotonic() - started:.2f} s, one Python start-up")


def test_a_config_file_is_a_layer_between_the_preset_and_the_command_line(tmp_path):
    """A preset-shaped file sets what it names over the preset; --set goes on top; its env_id and algo stand
    unless given; a run's config.yaml reproduces that run's settings, under a new name."""
    file = tmp_path / "mine.yaml"
    file.write_text("env_id: CartPole-v1\nalgo: a2c\ntotal_steps: 12345\na2c:\n  learning_rate: 0.002\n"
                    "  gamma: 0.9\n")
    settings = read_config_file(file)
    assert (settings.env_id, settings.algo) == ("CartPole-v1", "a2c")
    config, _ = resolve_config(settings.env_id, settings.algo, {"a2c.gamma": "0.95"}, config_file=settings)
    preset = yaml.safe_load((Path(champion.__file__).parent.parent / "envs" / "presets" /
                             "CartPole-v1.a2c.yaml").read_text())
    assert (config.total_steps, config.a2c.learning_rate, config.a2c.gamma) == (12345, 0.002, 0.95)
    assert config.num_envs == preset["num_envs"]  # what the file leaves out comes from the preset

    recorded = TrainConfig(env_id="Pendulum-v1", algo="ppo", seed=7, total_steps=3000, schedule_steps=3000,
                           run_name="old", ppo=TrainConfig().ppo.__class__(learning_rate=1e-4, num_steps=64))
    run_config = tmp_path / "config.yaml"
    run_config.write_text(config_yaml(recorded, "old"))
    settings = read_config_file(run_config)
    assert settings.notes == (f"{run_config}'s run_name old is not reused: a new run gets a folder of its own "
                              "(--run-name names it)",)
    again, note = resolve_config(settings.env_id, settings.algo, {}, config_file=settings)
    assert again.to_dict() == dict(recorded.to_dict(), run_name=None, schedule_steps=None)


def test_config_errors_name_their_file(tmp_path, monkeypatch):
    """A typo in a config file or a preset says which file holds it."""
    file = tmp_path / "typo.yaml"
    file.write_text("ppo:\n  gae_lamda: 0.9\n")
    with pytest.raises(ConfigError) as error:
        resolve_config("CartPole-v1", "ppo", {}, config_file=read_config_file(file))
    assert str(error.value) == f"{file}: unknown config key 'ppo.gae_lamda'; did you mean ppo.gae_lambda?"

    from champion.envs import presets

    (tmp_path / "CartPole-v1.ppo.yaml").write_text("num_env: 4\n")
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    with pytest.raises(ConfigError) as error:
        resolve_config("CartPole-v1", "ppo", {})
    assert str(error.value) == (f"preset {tmp_path / 'CartPole-v1.ppo.yaml'}: unknown config key 'num_env'; did you "
                                "mean num_envs?")
    (tmp_path / "list.yaml").write_text("- total_steps\n")
    with pytest.raises(ConfigError, match=r"list\.yaml must be a mapping of config keys"):
        read_config_file(tmp_path / "list.yaml")


def test_settings_that_would_do_nothing_are_refused():
    """The other algorithm's section, env_id or algo as an override, and a number where a list of layers goes:
    said, not silently taken, for a user's command or call (``strict``)."""
    def refusal(algo: str, overrides: dict) -> str:
        with pytest.raises(ConfigError) as error:
            resolve_config("CartPole-v1", algo, overrides, strict=True)
        return str(error.value)

    assert refusal("ppo", {"a2c.learning_rate": "1e-3"}) == (
        "a2c.learning_rate is a setting of A2C, and this run trains PPO: set ppo.learning_rate instead, or train A2C "
        "with --algo a2c")
    assert refusal("a2c", {"ppo.clip_range": "0.1"}) == (
        "ppo.clip_range is a setting of PPO, and this run trains A2C: train PPO with --algo ppo")
    assert refusal("ppo", {"algo": "a2c", "a2c.gamma": "0.9"}) == (
        "algo is not a key to set: it chooses the preset, so give it as --algo (env_id and algo in a --config file "
        "work too)")
    assert refusal("ppo", {"network.hidden_sizes": "64"}) == (
        "network.hidden_sizes must be a list of integers, one per layer (e.g. [64] for one layer of 64, [64, 64] for "
        "two), got 64")
    assert refusal("ppo", {"network.cnn_layers": "64"}) == (
        "network.cnn_layers must be a list of lists of integers, e.g. [[32, 8, 4], [64, 4, 2]], got 64")
    config, _ = resolve_config("CartPole-v1", "ppo", {"learning_rate": "1e-3", "hidden_sizes": "[32]"}, strict=True)
    assert (config.ppo.learning_rate, config.network.hidden_sizes) == (1e-3, (32,))  # bare keys: this run's own
    both, _ = resolve_config("CartPole-v1", "ppo", {"a2c.gamma": 0.5, "ppo.gamma": 0.9})  # champion's own calls
    assert (both.ppo.gamma, both.a2c.gamma) == (0.9, 0.5)


def test_a_config_file_of_another_algorithms_run_or_with_a_new_budget(tmp_path):
    """An A2C run's config.yaml for a PPO run is refused (its ppo section was never used); a new --total-steps
    takes the schedule with it; a Ray run's workers may change; a bad value in the other section names the file."""
    recorded = TrainConfig(env_id="CartPole-v1", algo="a2c", total_steps=5000, schedule_steps=20000, num_envs=8,
                           ray=TrainConfig().ray.__class__(workers=2, envs_per_worker=4))
    file = tmp_path / "config.yaml"
    file.write_text(config_yaml(recorded, "a2c-run"))
    settings = read_config_file(file)
    with pytest.raises(ConfigError) as error:
        resolve_config("CartPole-v1", "ppo", {}, config_file=settings, strict=True)
    assert str(error.value) == (f"{file}: it is the config of an A2C run, and this run trains PPO, whose settings it "
                                "does not hold (its ppo section was never used); train A2C, or leave out --algo")
    kept, _ = resolve_config("CartPole-v1", "a2c", {}, config_file=settings, strict=True)
    assert (kept.total_steps, kept.schedule_steps, kept.num_envs) == (5000, 20000, 8)
    longer, _ = resolve_config("CartPole-v1", "a2c", {"total_steps": 40000, "ray.workers": 3}, config_file=settings,
                               strict=True)
    assert (longer.total_steps, longer.schedule_steps, longer.num_envs) == (40000, None, 12)
    file.write_text("ppo:\n  learning_rate: fast\n")
    with pytest.raises(ConfigError) as error:
        resolve_config("CartPole-v1", "a2c", {}, config_file=read_config_file(file), strict=True)
    assert str(error.value) == f"{file}: ppo.learning_rate must be a number, got 'fast'"
    for text, said in (("algo: PPO\n", "algo must be ppo or a2c, got 'PPO'"),
                       ("ppo: 3\n", "has ppo: 3 instead of a mapping of ppo.* fields (e.g. ppo: {...})")):
        file.write_text(text)
        with pytest.raises(ConfigError) as error:
            read_config_file(file)
        assert said in str(error.value) and str(file) in str(error.value)


def test_a_config_files_env_module_is_imported_only_from_installed_packages(tmp_path, monkeypatch):
    """A config file may come from anyone, as a run folder may: the module its env id names is not imported from
    the current folder (an env id typed by the user may be)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "decoy_envs.py").write_text("import pathlib\npathlib.Path('ran').write_text('yes')\n")
    (tmp_path / "shared.yaml").write_text("env_id: decoy_envs:Decoy-v0\n")
    with pytest.raises(champion.ChampionError) as error:
        champion.train(config="shared.yaml", progress=False)
    assert "shared.yaml" in str(error.value) and "decoy_envs" in str(error.value)
    assert not (tmp_path / "ran").exists() and "decoy_envs" not in sys.modules


def test_a_file_may_hold_the_other_section_at_its_defaults_only(tmp_path):
    """A run's config.yaml holds both sections; a file that changes the other one is refused, naming it."""
    file = tmp_path / "both.yaml"
    data = TrainConfig(env_id="CartPole-v1").to_dict()
    file.write_text(yaml.safe_dump(data))
    config, _ = resolve_config("CartPole-v1", "ppo", {}, config_file=read_config_file(file))
    assert config.a2c == TrainConfig().a2c
    data["a2c"]["learning_rate"] = 0.01
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:
        resolve_config("CartPole-v1", "ppo", {}, config_file=read_config_file(file))
    assert str(error.value).startswith(f"{file}: a2c.learning_rate is a setting of A2C, and this run trains PPO")


def test_train_from_a_runs_config_file_reruns_it(tmp_path, capsys):
    """`champion train --config RUN/config.yaml` trains the run that file describes again: the same settings
    and, on the same machine, the same evaluations and best weights."""
    first = champion.train("CartPole-v1", results_dir=str(tmp_path), run_name="first", crown={"at_end": False},
                           **SMALL)
    assert cli("train", "--config", first.run_dir / "config.yaml", "--run-name", "again", "-q") == 0
    again = first.run_dir.parent / "again"
    assert yaml.safe_load((again / "config.yaml").read_text()) == dict(
        yaml.safe_load((first.run_dir / "config.yaml").read_text()), run_name="again")

    def evaluations(run_dir: Path) -> list[tuple[str, str]]:
        rows = [row.split(",") for row in (run_dir / "evaluations.csv").read_text().splitlines()]
        return [(row[0], row[2]) for row in rows]  # step and mean return (not the wall time)

    assert len(evaluations(again)) == 3 and evaluations(again) == evaluations(first.run_dir)
    best = [json.loads((run / "best" / "current.json").read_text())["entry"] for run in (first.run_dir, again)]
    digests = [json.loads((run / "best" / name / "manifest.json").read_text())["sha256"]
               for run, name in zip((first.run_dir, again), best)]
    assert digests[0] == digests[1]


def test_replay_compares_the_episodes_both_played(tmp_path, capsys):
    """--episodes N plays the first N recorded episodes (or goes past them), and the line compares only the
    means over episodes the record has; other episodes are said to be not comparable."""
    run = champion.train("CartPole-v1", results_dir=str(tmp_path), run_name="r",
                         crown={"episodes": 6, "race": False, "candidates": 1}, **SMALL)
    record = json.loads((run.run_dir / "best" / "champion.json").read_text())

    def replay_line(*args: str) -> dict:
        assert cli("replay", run.run_dir, *args, "--json") == 0
        return json.loads(capsys.readouterr().out)

    fewer = replay_line("--episodes", "4")
    assert fewer["seeds"] == record["held_out_seeds"][:4] and fewer["common_episodes"] == 4
    assert fewer["recorded_mean_on_common"] == pytest.approx(np.mean(record["returns"][:4]))
    assert fewer["matches_recorded"] is True
    more = replay_line("--episodes", "8")
    assert more["seeds"][:6] == record["held_out_seeds"] and more["common_episodes"] == 6
    assert more["mean_return_on_common"] == more["recorded_mean_on_common"] == record["held_out_mean"]
    other = replay_line("--seed", "5", "--episodes", "3")
    assert (other["common_episodes"], other["matches_recorded"]) == (0, None)
    assert cli("replay", run.run_dir, "--seed", "5", "--episodes", "3") == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        f"over 3 other episodes than the 6 held-out episodes of its recorded mean ({record['held_out_mean']:.2f}), "
        "so the two are not comparable")


def test_replay_lines_for_records_with_and_without_returns():
    """What the line and --json say: the same episodes compare by their mean even without per-episode returns;
    a part of them compares only when the record keeps each return; an edited list of returns is not used."""
    from champion.runners.cli.main import _replayed_mean_line
    from champion.runners.evaluate import EvalResult
    from champion.runners.replay import ReplayResult, _recorded_returns, _seeds

    seeds, returns = (100, 101, 102, 103), (10.0, 20.0, 30.0, 40.0)

    def replayed(played: tuple[int, ...], kept: tuple[float, ...]) -> ReplayResult:
        result = EvalResult(tuple(returns[seeds.index(seed)] if seed in seeds else 7.0 for seed in played),
                            (5,) * len(played), played)
        return ReplayResult(Path("run"), Path("run/best/0001-step-5"), result, 25.0, 5, seeds, crowned=False,
                            recorded_returns=kept)

    whole = replayed(seeds, ())
    assert _replayed_mean_line(whole) == "mean return 25.00 ± 11.18 (same as recorded: 25.00)"
    assert whole.to_dict()["matches_recorded"] is True and whole.to_dict()["common_episodes"] == 4
    part = replayed((100, 101), returns)
    assert _replayed_mean_line(part).endswith("over 2 episodes; on the 2 that are among its 4 recorded evaluation "
                                              "episodes: 15.00 (same as recorded: 15.00)")
    unknown = replayed((100, 101), ())
    assert _replayed_mean_line(unknown).endswith("over 2 episodes, 2 of them among its 4 recorded evaluation "
                                                 "episodes, whose record keeps only their mean (25.00): replay all 4 "
                                                 "of them to compare")
    assert (unknown.to_dict()["common_episodes"], unknown.to_dict()["matches_recorded"]) == (2, None)
    assert _recorded_returns({"eval_seeds": seeds, "returns": ["x", 1, 2, 3]}) == ()
    assert _recorded_returns({"eval_seeds": seeds, "returns": 5}) == ()
    assert _seeds({"eval_seeds": [7, 9, 30]}, 5, None) == [7, 9, 30, 31, 32]  # past the last, never a recorded one
    assert _seeds({"eval_seeds": [7, 9, 30]}, 2, None) == [7, 9]
    assert _seeds({"eval_seeds": [7, 9, 30]}, None, 50) == [50, 51, 52]


def test_the_newest_run_is_the_one_started_or_resumed_last(tmp_path):
    """A resume rewrites config.yaml, so a resumed older run is the newest; the pick says so."""
    from champion.runners.store.runs import choose_run

    older, newer = (tmp_path / "CartPole-v1" / "ppo" / name for name in ("older", "newer"))
    for run, when in ((older, 1_000_000), (newer, 2_000_000)):
        write_config(run)
        (run / "best" / "0001-step-64").mkdir(parents=True)
        os.utime(run / "config.yaml", (when, when))
    assert choose_run(tmp_path)[0] == newer
    os.utime(older / "config.yaml", (3_000_000, 3_000_000))  # as a resume leaves it
    assert choose_run(tmp_path) == (older, f"the newest of the 2 runs with a best policy below {tmp_path} (the one "
                                           "started or resumed last; --best picks the highest best return)")


def test_small_print(tmp_path, capsys, monkeypatch):
    """One step is one step; defaults print as they are written; a long video says how far it is."""
    from champion.runners.logs.media import VideoWriter
    from champion.runners.ray.cluster import INSTALL_HINT
    from champion.runners.training import _budget_rounding

    assert _budget_rounding(TrainConfig(total_steps=1)) == ("note: 1 step rounded up to 16,384: whole rollouts of "
                                                            "2,048 steps x 8 envs")
    assert cli("presets", "--fields") == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["network.cnn_layers"].split()[1:7] == ["[[32,", "8,", "4],", "[64,", "4,", "2],"]
    assert lines["network.value_hidden_sizes"].split()[1] == "null"
    assert INSTALL_HINT == "pip install -e '.[ray]' (in champion's folder)"

    monkeypatch.setattr(VideoWriter, "PROGRESS_EVERY", 0.0)
    with VideoWriter(tmp_path / "clip.gif", fps=10) as frames:
        for shade in (0, 120, 240):
            frames.append(np.full((8, 8, 3), shade, dtype=np.uint8))
    said = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in said[:3]] == [
        f"video clip.gif: {count} frames of the first episode so far" for count in (1, 2, 3)]
    assert said[3].startswith("video clip.gif: 3 frames written in ")
    import imageio.v2 as imageio

    assert len(imageio.mimread(tmp_path / "clip.gif")) == 3
