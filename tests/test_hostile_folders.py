"""Run folders built to do harm, opened with replay, export, crown, runs and --resume.

Each test makes one hostile change to a copy of a small finished CartPole run, then checks three things: nothing
outside the copy changed (the whole temporary area beside it is hashed before and after), no code from the folder
ran (a marker file never appears), and the outcome is a fallback with one warning, or one line with exit 2.
"""

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hostile_helpers import champion, copy_run, errors_in, tree_digest, warnings_in
from champion.runners.store.atomic_files import encode_weights
from champion.runners.store.best_store import BestPolicyStore, list_entries, load_best
from champion.runners.store.folder_trust import seal

EVIL_MODULE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


@pytest.fixture
def area(tmp_path, finished_run):
    """A copy of the finished run at tmp_path/R, a file outside it that nothing may touch, and the marker path."""
    run_dir = copy_run(finished_run, tmp_path / "R")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me\n")
    return {"run": run_dir, "root": tmp_path, "outside": outside, "marker": tmp_path / "MARKER"}


def snapshot(area):
    """What lies outside the run folder, to compare after the command."""
    return tree_digest(area["outside"])


def outcome(capsys):
    """(warning lines, error lines, stdout) of what the command printed."""
    captured = capsys.readouterr()
    return warnings_in(captured.err), errors_in(captured.err), captured.out


def add_better_entry(run_dir: Path, bonus: float = 1.0) -> Path:
    """A second best entry, written through the store as a run would (same weights, a higher return)."""
    stored = load_best(run_dir / "best")
    manifest = dict(stored.manifest)
    store = BestPolicyStore(run_dir / "best", keep=5)
    assert store.offer(stored.weights, float(manifest["mean_return"]) + bonus, manifest)[0]
    return list_entries(run_dir / "best")[-1]


def forge_manifest(entry: Path, **changes) -> None:
    """Change an entry's manifest and give it a matching digest: what a forger, not damage, would leave."""
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest.update(changes)
    manifest.pop("digest", None)
    (entry / "manifest.json").write_text(json.dumps(seal(manifest)))


def forge_weights(entry: Path, data: bytes) -> None:
    """Replace an entry's weights file and give its manifest the matching sha256 (and digest)."""
    import hashlib

    (entry / "policy.npz").write_bytes(data)
    forge_manifest(entry, sha256=hashlib.sha256(data).hexdigest())


def replay_json(capsys, run_dir, *options):
    code = champion("replay", run_dir, "--json", *options)
    warnings, errors, out = outcome(capsys)
    return code, warnings, errors, (json.loads(out) if code == 0 else None)


# --- code execution -------------------------------------------------------------------------------------------

def test_a_crafted_pickle_in_a_checkpoint_never_runs(area, capsys):
    """Every checkpoint's state replaced by a pickle that would write the marker, with a manifest that matches it:
    the resume reads no pickle and says in one line that there is no usable checkpoint."""
    import hashlib
    import pickle

    class Evil:
        def __reduce__(self):
            return (Path(area["marker"]).write_text, ("ran",))

    before = snapshot(area)
    for checkpoint in (area["run"] / "checkpoints").glob("ckpt-*"):
        for name in ("state.json", "state.npz"):
            (checkpoint / name).unlink()
        (checkpoint / "state.pkl").write_bytes(pickle.dumps(Evil()))
        manifest = json.loads((checkpoint / "manifest.json").read_text())
        manifest["files"] = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
                             for path in checkpoint.iterdir() if path.name != "manifest.json"}
        manifest.pop("digest")
        (checkpoint / "manifest.json").write_text(json.dumps(seal(manifest)))
    assert champion("train", "--resume", area["run"], "--total-steps", "8192", "-q") == 2
    warnings, errors, _ = outcome(capsys)
    assert not area["marker"].exists() and snapshot(area) == before
    assert len(errors) == 1 and "written by an older champion" in errors[0] and "pickle" in errors[0]


def forge_checkpoint_state(checkpoint: Path, structure: bytes, arrays: bytes | None = None) -> None:
    """Replace a checkpoint's state files and give its manifest the matching sha256s (and digest)."""
    import hashlib

    (checkpoint / "state.json").write_bytes(structure)
    if arrays is not None:
        (checkpoint / "state.npz").write_bytes(arrays)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    for name in ("state.json", "state.npz"):
        manifest["files"][name] = hashlib.sha256((checkpoint / name).read_bytes()).hexdigest()
    manifest.pop("digest")
    (checkpoint / "manifest.json").write_text(json.dumps(seal(manifest)))


@pytest.mark.parametrize("forgery", ["a class outside the list", "no python random state", "a loop of text"])
def test_a_forged_checkpoint_state_is_passed_over_for_the_one_before(area, capsys, forgery):
    """A state.json asking for a class outside the codec's list, or missing or mistyped state (sha256s forged to
    match): the newest checkpoint is passed over with one warning, and the resume continues from the one before."""
    from champion.runners.store.state_codec import decode_state, encode_state

    older, newest = sorted((area["run"] / "checkpoints").glob("ckpt-*"))[-2:]
    if forgery == "a class outside the list":
        forge_checkpoint_state(newest, json.dumps({"object": "os.system", "fields": {"command": "touch MARKER"}}).encode())
    else:
        state = decode_state((newest / "state.json").read_bytes(), (newest / "state.npz").read_bytes())
        if forgery == "no python random state":
            del state["python_random"]
        else:
            state["loop"]["step"] = "4096"
        forge_checkpoint_state(newest, *encode_state(state))
    before = snapshot(area)
    assert champion("train", "--resume", area["run"], "--total-steps", "5120", "-q") == 0
    warnings, errors, _ = outcome(capsys)
    assert not area["marker"].exists() and snapshot(area) == before and not errors
    assert len([line for line in warnings if str(newest) in line]) == 1
    assert any(f"older checkpoint {older.name}" in line for line in warnings)


def test_a_recorded_env_module_in_the_current_folder_is_not_imported(area, capsys, monkeypatch):
    """A manifest (digest and all) naming evilmod:CartPole-v1, with evilmod.py in the folder replay runs from: one
    line saying how to trust it, and the module never runs."""
    entry = list_entries(area["run"] / "best")[-1]
    forge_manifest(entry, env_id="evilmod_champion_test:CartPole-v1")
    (area["run"] / "evilmod_champion_test.py").write_text(EVIL_MODULE.format(marker=str(area["marker"])))
    monkeypatch.chdir(area["run"])
    before = snapshot(area)
    code, warnings, errors, _ = replay_json(capsys, ".")
    assert code == 2 and not area["marker"].exists() and snapshot(area) == before
    assert len(errors) == 1 and "--env-module evilmod_champion_test" in errors[0]
    assert "evilmod_champion_test" not in __import__("sys").modules


@pytest.mark.parametrize("command", ["crown", "resume"])
def test_a_config_naming_a_module_in_the_current_folder_is_not_imported(area, capsys, monkeypatch, command):
    """config.yaml's env_id naming a module beside it: crown and resume refuse in one line before importing it."""
    config = area["run"] / "config.yaml"
    config.write_text(config.read_text().replace("env_id: CartPole-v1", "env_id: evilmod2_champion_test:CartPole-v1"))
    (area["run"] / "evilmod2_champion_test.py").write_text(EVIL_MODULE.format(marker=str(area["marker"])))
    monkeypatch.chdir(area["run"])
    before = snapshot(area)
    arguments = ["crown", "."] if command == "crown" else ["train", "--resume", ".", "--total-steps", "8192", "-q"]
    assert champion(*arguments) == 2
    warnings, errors, _ = outcome(capsys)
    assert not area["marker"].exists() and snapshot(area) == before
    assert len(errors) == 1 and "--env-module evilmod2_champion_test" in errors[0]


def test_a_module_the_user_names_is_imported_from_the_current_folder(area, capsys, monkeypatch):
    """The same shape of folder with a module the user trusts (--env-module): the replay runs and reproduces the
    recorded mean exactly."""
    entry = list_entries(area["run"] / "best")[-1]
    forge_manifest(entry, env_id="goodmod_champion_test:CartPole-v1")
    (area["run"] / "goodmod_champion_test.py").write_text("LOADED = True\n")
    monkeypatch.chdir(area["run"])
    code, warnings, errors, result = replay_json(capsys, ".", "--env-module", "goodmod_champion_test", "--entry", "best")
    assert code == 0 and not errors
    assert result["mean_return"] == result["recorded_mean_return"]


# --- reads and writes outside the run folder ------------------------------------------------------------------

@pytest.mark.parametrize("command", ["replay", "export", "crown", "resume"])
def test_a_best_folder_linked_elsewhere_is_refused(area, capsys, command):
    """best/ moved outside and linked back: nothing there is read, written or pruned; one line, exit 2."""
    elsewhere = area["outside"] / "best"
    shutil.move(area["run"] / "best", elsewhere)
    (area["run"] / "best").symlink_to(elsewhere)
    before = snapshot(area)
    arguments = {"replay": ["replay", area["run"]], "export": ["export", area["run"]],
                 "crown": ["crown", area["run"]],
                 "resume": ["train", "--resume", area["run"], "--total-steps", "8192", "-q"]}[command]
    assert champion(*arguments) == 2
    warnings, errors, _ = outcome(capsys)
    assert snapshot(area) == before
    assert len(errors) == 1 and "best -> " in errors[0] and "link out of the run folder" in errors[0]


@pytest.mark.parametrize("name", ["../../outside", "/etc", "0001-step-1024/../../../outside"])
def test_a_pointer_naming_a_path_out_of_the_store_falls_back_to_the_newest_entry(area, capsys, name):
    (area["run"] / "best" / "current.json").write_text(json.dumps({"entry": name}))
    before = snapshot(area)
    code, warnings, errors, result = replay_json(capsys, area["run"], "--entry", "best")
    assert code == 0 and snapshot(area) == before and not errors
    assert len(warnings) == 1 and "not an entry of the folder" in warnings[0]
    assert Path(result["entry"]).parent == area["run"] / "best" and result["mean_return"] == result["recorded_mean_return"]


def test_a_crown_naming_an_entry_out_of_the_store_falls_back_to_the_training_time_best(area, capsys):
    entry = list_entries(area["run"] / "best")[-1]
    record = {"entry": "../../outside", "sha256": json.loads((entry / "manifest.json").read_text())["sha256"],
              "held_out_mean": 1e9, "held_out_std": 0.0, "held_out_seeds": [1], "candidates": []}
    (area["run"] / "best" / "champion.json").write_text(json.dumps(record))
    code, warnings, errors, result = replay_json(capsys, area["run"])
    assert code == 0 and not errors and len(warnings) == 1 and "champion.json" in warnings[0]
    assert result["crowned"] is False and result["entry"] == str(entry)


@pytest.mark.parametrize("weights_file", ["/dev/zero", "../../outside/precious.txt", "policy.npz/../../../x"])
def test_a_weights_file_named_out_of_the_entry_falls_back_to_the_older_entry(area, capsys, weights_file):
    older = list_entries(area["run"] / "best")[-1]
    newer = add_better_entry(area["run"])
    forge_manifest(newer, weights_file=weights_file)
    before = snapshot(area)
    code, warnings, errors, result = replay_json(capsys, area["run"], "--entry", "best")
    assert code == 0 and snapshot(area) == before and not errors
    assert len(warnings) == 1 and newer.name in warnings[0] and "weights file" in warnings[0]
    assert result["entry"] == str(older)


# --- trusted numbers ------------------------------------------------------------------------------------------

def test_an_edited_mean_return_is_found_and_the_entry_falls_back(area, capsys):
    """mean_return raised by hand (digest not updated): the entry is unusable, so a resumed run measures improvements
    against the older entry's real return instead of refusing them all."""
    older = list_entries(area["run"] / "best")[-1]
    newer = add_better_entry(area["run"])
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["mean_return"] = 900.4
    (newer / "manifest.json").write_text(json.dumps(manifest))
    warnings = []
    store = BestPolicyStore(area["run"] / "best", on_warning=warnings.append)
    assert store.best_mean_return == json.loads((older / "manifest.json").read_text())["mean_return"]
    assert len(warnings) == 1 and "digest" in warnings[0] and newer.name in warnings[0]


# --- exhaustion -----------------------------------------------------------------------------------------------

def test_a_huge_sparse_weights_file_is_refused_by_its_size_before_reading(area, capsys):
    older = list_entries(area["run"] / "best")[-1]
    newer = add_better_entry(area["run"])
    with open(newer / "policy.npz", "r+b") as handle:
        handle.truncate(64 * 2**30)  # sparse: no disk used, 64 GiB if read
    code, warnings, errors, result = replay_json(capsys, area["run"], "--entry", "best")
    assert code == 0 and not errors and result["entry"] == str(older)
    assert len(warnings) == 1 and "68,719,476,736 bytes" in warnings[0]


def test_a_deflated_weights_file_is_refused_before_it_expands(area, capsys):
    """A small file whose member inflates to far more (sha256 and digest forged to match)."""
    import io

    older = list_entries(area["run"] / "best")[-1]
    newer = add_better_entry(area["run"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("policy_head/kernel.npy", b"\0" * (64 * 2**20))
    assert len(buffer.getvalue()) < 2**20
    forge_weights(newer, buffer.getvalue())
    code, warnings, errors, result = replay_json(capsys, area["run"], "--entry", "best")
    assert code == 0 and not errors and result["entry"] == str(older)
    assert len(warnings) == 1 and "compressed" in warnings[0]


def test_a_network_too_large_for_memory_is_refused_before_it_is_built(area, capsys):
    text = (area["run"] / "config.yaml").read_text().replace("hidden_sizes:\n  - 64\n  - 64",
                                                             "hidden_sizes:\n  - 200000\n  - 200000")
    assert "200000" in text
    (area["run"] / "config.yaml").write_text(text)
    assert champion("train", "--resume", area["run"], "--total-steps", "8192", "-q") == 2
    warnings, errors, _ = outcome(capsys)
    assert len(errors) == 1 and "weights; training it needs about" in errors[0] and "use smaller hidden sizes" in errors[0]


def test_a_billion_laughs_config_is_named_and_the_other_runs_listed(area, capsys, tmp_path):
    copy_run(area["run"], tmp_path / "results" / "CartPole-v1" / "ppo" / "good")
    bad = copy_run(area["run"], tmp_path / "results" / "CartPole-v1" / "ppo" / "laughs")
    layers = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for index, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[index]
        layers.append(f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]")
    (bad / "config.yaml").write_text("\n".join(layers) + "\nenv_id: *i\n")
    assert champion("runs", "--results-dir", tmp_path / "results", "--json") == 0
    warnings, errors, out = outcome(capsys)
    assert [run["run_name"] for run in json.loads(out)] == ["good"]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "aliases" in warnings[0]


# --- one bad file never hides the good ones -------------------------------------------------------------------

@pytest.mark.parametrize("command", ["replay", "export", "crown"])
def test_a_stray_folder_in_best_is_passed_over_with_a_warning(area, capsys, command, tmp_path):
    (area["run"] / "best" / "0001x-step-5").mkdir()
    arguments = {"replay": ["replay", area["run"], "--entry", "best"],
                 "export": ["export", area["run"], "--out", tmp_path / "export"],
                 "crown": ["crown", area["run"], "--episodes", "2", "--workers", "1"]}[command]
    assert champion(*arguments) == 0
    warnings, errors, _ = outcome(capsys)
    assert not errors and any("0001x-step-5" in line and "ignoring" in line for line in warnings)


def test_weights_that_do_not_fit_their_network_fall_back_to_the_older_entry(area, capsys):
    older = list_entries(area["run"] / "best")[-1]
    newer = add_better_entry(area["run"])
    weights = load_best(area["run"] / "best").weights
    weights["policy_head/kernel"] = np.zeros((3, 3), np.float32)
    forge_weights(newer, encode_weights(weights))
    code, warnings, errors, result = replay_json(capsys, area["run"], "--entry", "best")
    assert code == 0 and not errors and result["entry"] == str(older)
    assert len(warnings) == 1 and "policy_head/kernel" in warnings[0]


def test_a_garbage_tensorflow_index_falls_back_to_the_older_checkpoint(area, capsys):
    import hashlib

    older, newest = sorted((area["run"] / "checkpoints").glob("ckpt-*"))[-2:]
    (newest / "tf.index").write_bytes(os.urandom(512))
    manifest = json.loads((newest / "manifest.json").read_text())
    manifest["files"]["tf.index"] = hashlib.sha256((newest / "tf.index").read_bytes()).hexdigest()
    manifest.pop("digest")
    (newest / "manifest.json").write_text(json.dumps(seal(manifest)))
    assert champion("train", "--resume", area["run"], "--total-steps", "5120", "-q") == 0
    warnings, errors, _ = outcome(capsys)
    assert not errors and any(newest.name in line and "TensorFlow state cannot be read" in line for line in warnings)
    assert any(older.name in line for line in warnings)


@pytest.mark.parametrize("command", ["crown", "resume"])
@pytest.mark.parametrize("text, problem", [("- a list\n", "holds a list"), ("network: 5\n", "network")])
def test_a_config_that_is_not_a_config_is_one_line(area, capsys, command, text, problem):
    if problem == "network":
        text = (area["run"] / "config.yaml").read_text() + text
    (area["run"] / "config.yaml").write_text(text)
    arguments = (["crown", area["run"]] if command == "crown"
                 else ["train", "--resume", area["run"], "--total-steps", "8192", "-q"])
    assert champion(*arguments) == 2
    warnings, errors, _ = outcome(capsys)
    assert len(errors) == 1 and "config.yaml" in errors[0] and problem in errors[0]


def test_runs_lists_the_readable_runs_and_names_the_one_with_a_list_for_total_steps(area, capsys, tmp_path):
    copy_run(area["run"], tmp_path / "results" / "CartPole-v1" / "ppo" / "good")
    bad = copy_run(area["run"], tmp_path / "results" / "CartPole-v1" / "ppo" / "bad")
    text = (bad / "config.yaml").read_text()
    (bad / "config.yaml").write_text(text.replace("total_steps: 4096", "total_steps: [1, 2]"))
    assert champion("runs", "--results-dir", tmp_path / "results") == 0
    warnings, errors, out = outcome(capsys)
    assert "good" in out and " bad " not in out
    assert len(warnings) == 1 and str(bad) in warnings[0] and "total_steps" in warnings[0]


def test_a_folder_an_earlier_command_put_on_the_path_is_not_trusted_later(tmp_path, monkeypatch):
    """A command run from folder A puts A on sys.path (for env ids the user types); a run folder opened later from
    folder B, naming a module that lives in A, is still refused: only installed packages are trusted."""
    import sys

    from champion.envs.factory import EnvError, allow_current_folder_modules, import_recorded_env_module

    first, second = tmp_path / "A", tmp_path / "B"
    first.mkdir()
    second.mkdir()
    (first / "evilmod3_champion_test.py").write_text(EVIL_MODULE.format(marker=str(tmp_path / "MARKER")))
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry])  # as the console script has it
    monkeypatch.chdir(first)
    allow_current_folder_modules()
    monkeypatch.chdir(second)
    with pytest.raises(EnvError, match="--env-module evilmod3_champion_test"):
        import_recorded_env_module("evilmod3_champion_test:CartPole-v1", "config.yaml")
    assert not (tmp_path / "MARKER").exists()
    import_recorded_env_module("CartPole-v1", "config.yaml")  # no module: nothing to import


# --- found in review: ways around the first defences ---------------------------------------------------------

DECOYS = ("scipy", "jax", "pandas", "IPython", "dill", "cloudpickle", "torch", "matplotlib", "pygame", "moviepy",
          "psutil", "setproctitle", "sitecustomize", "usercustomize", "mujoco_py", "ale_py_roms", "shimmy")
"""Modules a command might try to import and find missing (or find installed): a decoy of each in the folder
the command runs from must never run."""


def test_decoy_modules_in_the_current_folder_never_run(area):
    """`champion replay` and `champion runs` run as the console script from a folder full of decoy modules (the
    current folder is never put on the path for them)."""
    import subprocess
    import sys

    for name in DECOYS:
        (area["run"] / f"{name}.py").write_text(EVIL_MODULE.format(marker=str(area["marker"])))
    champion_script = str(Path(sys.executable).parent / "champion")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    for arguments in (["replay", ".", "--json"], ["runs", "--results-dir", "."]):
        done = subprocess.run([champion_script, *arguments], cwd=area["run"], capture_output=True, text=True,
                              timeout=300, env=environment, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-2000:]
    assert not area["marker"].exists()


@pytest.mark.parametrize("module", ["venv.__main__", "antigravity", "unittest.__main__", "os.path"])
def test_a_recorded_module_that_is_a_program_or_the_standard_library_is_refused(area, capsys, monkeypatch, module):
    """'Installed' is not enough: a module's __main__ is a program, and no env lives in the standard library."""
    forge_manifest(list_entries(area["run"] / "best")[-1], env_id=f"{module}:CartPole-v1")
    monkeypatch.chdir(area["root"])
    before = tree_digest(area["root"])
    code, warnings, errors, _ = replay_json(capsys, area["run"], "--entry", "best")
    assert code == 2 and len(errors) == 1 and "not one an env lives in" in errors[0]
    assert tree_digest(area["root"]) == before  # e.g. no ./replay venv was made


def test_an_edited_mean_return_without_its_digest_is_named(area, capsys):
    """Removing the digest with the edit does not hide it: the entry is used, with a warning that its numbers are
    not checked."""
    entry = list_entries(area["run"] / "best")[-1]
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["mean_return"] = 900.4
    manifest.pop("digest")
    (entry / "manifest.json").write_text(json.dumps(manifest))
    warnings = []
    store = BestPolicyStore(area["run"] / "best", on_warning=warnings.append)
    assert store.best_mean_return == 900.4
    assert len(warnings) == 1 and entry.name in warnings[0] and "has no digest" in warnings[0]


@pytest.mark.parametrize("change", [{"hidden_sizes": ["a"]}, {"activation": "nope"}, {"cnn_layers": [[32, 8, 0]]},
                                    {"hidden_sizes": [10**400]}])
def test_a_forged_network_falls_back_to_the_older_entry(area, capsys, change):
    older = list_entries(area["run"] / "best")[-1]
    newer = add_better_entry(area["run"])
    network = json.loads((newer / "manifest.json").read_text())["network"]
    if "cnn_layers" in change:  # an image leaf, so that the CNN is built
        network["observation_leaves"] = [{"path": [], "kind": "image", "shape": [36, 36, 3]}]
    forge_manifest(newer, network=dict(network, **change))
    code, warnings, errors, result = replay_json(capsys, area["run"], "--entry", "best")
    assert code == 0 and not errors and result["entry"] == str(older)
    assert len(warnings) == 1 and newer.name in warnings[0] and "no network champion builds" in warnings[0]


def test_a_crown_record_with_absurd_seeds_falls_back_to_the_training_time_best(area, capsys):
    entry = list_entries(area["run"] / "best")[-1]
    record = {"entry": entry.name, "sha256": json.loads((entry / "manifest.json").read_text())["sha256"],
              "held_out_mean": 1.0, "held_out_std": 0.0, "held_out_seeds": 7, "candidates": []}
    (area["run"] / "best" / "champion.json").write_text(json.dumps(seal(record)))
    code, warnings, errors, result = replay_json(capsys, area["run"])
    assert code == 0 and not errors and result["crowned"] is False
    assert len(warnings) == 1 and "champion.json" in warnings[0]


def test_an_array_header_claiming_terabytes_falls_back_before_allocating(area, capsys):
    import io

    older = list_entries(area["run"] / "best")[-1]
    newer = add_better_entry(area["run"])
    npy = io.BytesIO()
    np.save(npy, np.zeros(4))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("policy_head/kernel.npy", npy.getvalue().replace(b"(4,), ", b"(2199023255552,),"))
    forge_weights(newer, buffer.getvalue())
    code, warnings, errors, result = replay_json(capsys, area["run"], "--entry", "best")
    assert code == 0 and not errors and result["entry"] == str(older)
    assert len(warnings) == 1 and "claims 17,592,186,044,416 bytes" in warnings[0]


def test_crowning_a_folder_of_runs_whose_newest_links_out_is_refused(area, capsys, tmp_path):
    results = tmp_path / "results"
    copy_run(area["run"], results / "CartPole-v1" / "ppo" / "a-older")
    newest = copy_run(area["run"], results / "CartPole-v1" / "ppo" / "b-newest")
    os.utime(newest / "config.yaml", (2e9, 2e9))
    shutil.move(newest / "best", area["outside"] / "best")
    (newest / "best").symlink_to(area["outside"] / "best")
    before = snapshot(area)
    assert champion("crown", results, "--episodes", "2", "--workers", "1") == 2
    warnings, errors, _ = outcome(capsys)
    assert snapshot(area) == before and len(errors) == 1 and "link out of the run folder" in errors[0]


def test_a_link_loop_is_named_and_the_other_runs_listed(area, capsys, tmp_path):
    copy_run(area["run"], tmp_path / "results" / "CartPole-v1" / "ppo" / "good")
    looped = copy_run(area["run"], tmp_path / "results" / "CartPole-v1" / "ppo" / "looped")
    (looped / "loop").symlink_to(looped / "loop")
    assert champion("runs", "--results-dir", tmp_path / "results", "--json") == 0
    warnings, errors, out = outcome(capsys)
    assert [run["run_name"] for run in json.loads(out)] == ["good"]
    assert len(warnings) == 1 and "loop" in warnings[0]


def test_a_fifo_pointer_never_blocks(area):
    """current.json made a FIFO: replay reads no pointer from it (in a child, so that a hang would be a timeout)."""
    import subprocess
    import sys

    pointer = area["run"] / "best" / "current.json"
    pointer.unlink()
    os.mkfifo(pointer)
    done = subprocess.run([str(Path(sys.executable).parent / "champion"), "replay", str(area["run"]), "--json",
                           "--entry", "best"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and len(warnings_in(done.stderr)) == 1 and "current.json" in done.stderr


def test_a_recorded_ray_address_is_joined_only_when_named(area, capsys):
    """A config naming a Ray cluster: a resume does not connect to it unless the user names it (a cluster someone
    else runs could send anything back); one line says how."""
    config = area["run"] / "config.yaml"
    config.write_text(config.read_text().replace("  address: null", "  address: 203.0.113.9:6379"))
    assert "203.0.113.9" in config.read_text()
    assert champion("train", "--resume", area["run"], "--total-steps", "8192", "-q") == 2
    warnings, errors, _ = outcome(capsys)
    assert len(errors) == 1 and "--ray-address 203.0.113.9:6379 to join it" in errors[0]


def test_numbers_too_large_for_a_float_fall_back(area, capsys, tmp_path):
    older = list_entries(area["run"] / "best")[-1]
    newer = add_better_entry(area["run"])
    text = json.dumps(seal(dict(json.loads((newer / "manifest.json").read_text()), mean_return=7)))
    manifest = json.loads(text)
    manifest["mean_return"] = 10**400
    manifest.pop("digest")
    (newer / "manifest.json").write_text(json.dumps(seal(manifest)))
    code, warnings, errors, result = replay_json(capsys, area["run"], "--entry", "best")
    assert code == 0 and not errors and result["entry"] == str(older)
    assert len(warnings) == 1 and "mean_return" in warnings[0]
    copy_run(area["run"], tmp_path / "results" / "CartPole-v1" / "ppo" / "R")
    assert champion("runs", "--results-dir", tmp_path / "results", "--json") == 0
    assert [run["best_mean_return"] for run in json.loads(outcome(capsys)[2])] == [None]


@pytest.mark.parametrize("what", ["a FIFO event file", "best/ a plain file", "a FIFO where a temporary goes"])
def test_special_files_where_champion_writes_or_reads_never_block(area, capsys, what):
    """A FIFO named like an event file (a resume rewrites them), best/ as a file, a FIFO at the name of the status
    file's temporary: one line, or the temporary is replaced, never a hang."""
    if what == "a FIFO event file":
        os.mkfifo(area["run"] / "tb" / "events.out.tfevents.1.fifo")
        expected = "is not an event file champion writes"
    elif what == "best/ a plain file":
        shutil.rmtree(area["run"] / "best")
        (area["run"] / "best").write_text("not a folder")
        expected = "is not a folder"
    else:
        os.mkfifo(area["run"] / f".tmp-status.json-{os.getpid()}")
        expected = None
    code = champion("train", "--resume", area["run"], "--total-steps", "5120", "-q")
    warnings, errors, _ = outcome(capsys)
    if expected is None:
        assert code == 0 and json.loads((area["run"] / "status.json").read_text())["status"] == "finished"
    else:
        assert code == 2 and len(errors) == 1 and expected in errors[0]


def test_names_in_a_listing_cannot_drive_the_terminal(area, capsys, tmp_path):
    run = copy_run(area["run"], tmp_path / "results" / "CartPole-v1" / "ppo" / "R")
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("env_id: CartPole-v1", 'env_id: "Cart\\e]0;owned\\aPole [bold]x"'))
    assert champion("runs", "--results-dir", tmp_path / "results") == 0
    out = outcome(capsys)[2]
    assert "\x1b" not in out and "\x07" not in out and "[bold]x" in out and "\\x1b]0;owned" in out
