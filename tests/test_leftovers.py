"""What killed exports and crowns leave behind, and a run folder that cannot be written (runners/export.py,
runners/crown.py).

Kills are real: a child process SIGKILLs itself at a named write point (runners/faults.py). Leftovers of other
shapes, and those of live processes, must stay as they are.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import crash_helpers
from hostile_helpers import champion, copy_run, errors_in, tree_digest
from champion.runners.store.best_store import load_best
from champion.runners.export import commit_tflite_files, recover_leftovers, sidecar_paths

COMMIT_POINTS = ["export: staged policy.metadata.json", "export: staged policy.README.md",
                 "export: staged policy.tflite", "export: committed policy.tflite", "export: policy.metadata.json in place",
                 "export: policy.README.md in place", "export: policy.tflite in place"]
"""Every write point of a TFLite export's commit, in order; the commit point is the fourth."""

COMMIT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from champion.runners.export import commit_tflite_files
    out, version = Path(sys.argv[1]), sys.argv[2]
    commit_tflite_files(out, f"model {version}".encode(), {"exported_by": "champion", "version": version},
                        f"readme {version}")
""")

DROP_ROOT_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                      "--bounding-set=-dac_override,-dac_read_search"]
"""Run a child without root's permission override, so a folder's mode applies to it as to any user."""


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def kill_at(point: str) -> dict[str, str]:
    return {"CHAMPION_FAULT_KILL_AT": point}


def names_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def write_points(log: Path) -> list[str]:
    """The labels of the write points a child passed (pids left out)."""
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]


def test_an_export_removes_what_killed_exports_left_and_nothing_else(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "R")
    export_dir, outside = tmp_path / "exports", tmp_path / "outside"  # not in the run folder, which takes no link out
    export_dir.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("not the export's")
    dead, live = dead_pid(), os.getppid()
    champion_metadata = json.dumps({"exported_by": "champion"})
    for name, files in {f".tmp-export-{dead}-saved_model": {"saved_model.pb": "half"},   # a new export being written
                        f".tmp-export-{dead}-policy.tflite": {"policy.metadata.json": "{"},
                        f".tmp-replaced-{dead}-earlier": {"metadata.json": champion_metadata},  # its new copy is there
                        "earlier": {"metadata.json": champion_metadata, "new.txt": "new"},
                        f".tmp-replaced-{dead}-gone": {"metadata.json": champion_metadata, "old.txt": "old"},
                        f".tmp-replaced-{dead}-foreign": {"notes.txt": "no champion metadata"},
                        f".tmp-export-{live}-saved_model": {"saved_model.pb": "being written right now"},
                        f".tmp-exports-{dead}-saved_model": {}, ".tmp-export-12ab-saved_model": {}}.items():
        (export_dir / name).mkdir()
        for file_name, text in files.items():
            (export_dir / name / file_name).write_text(text)
    (export_dir / f".tmp-export-{dead}-notes.txt").write_text("a file, which export never makes")
    (export_dir / f".tmp-export-{dead}-link").symlink_to(outside)
    outside_before = tree_digest(outside)

    assert champion("export", run_dir, "--out", export_dir / "saved_model") == 0

    assert names_in(export_dir) == sorted([
        ".tmp-export-12ab-saved_model", f".tmp-export-{dead}-link", f".tmp-export-{dead}-notes.txt",
        f".tmp-export-{live}-saved_model", f".tmp-exports-{dead}-saved_model", f".tmp-replaced-{dead}-foreign",
        "earlier", "gone", "saved_model"])
    assert names_in(export_dir / "gone") == ["metadata.json", "old.txt"]  # the only copy was put back
    assert names_in(export_dir / "earlier") == ["metadata.json", "new.txt"]
    assert (export_dir / f".tmp-export-{live}-saved_model" / "saved_model.pb").read_text() == "being written right now"
    assert json.loads((export_dir / "saved_model" / "metadata.json").read_text())["exported_by"] == "champion"
    assert tree_digest(outside) == outside_before


def test_a_saved_model_export_killed_between_its_renames_is_put_back(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "R")
    export_dir = run_dir / "export"
    assert champion("export", run_dir) == 0
    before = tree_digest(export_dir / "saved_model")

    killed = crash_helpers.champion(["export", str(run_dir)], env=kill_at("export: earlier saved_model moved aside#1"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [staging, replaced] = names_in(export_dir)  # no export at the destination: the old one is the only copy
    assert re.fullmatch(r"\.tmp-export-\d+-saved_model", staging)
    assert re.fullmatch(r"\.tmp-replaced-\d+-saved_model", replaced)
    assert tree_digest(export_dir / replaced) == before

    assert champion("export", run_dir, "--out", export_dir / "second") == 0  # the next export into this folder
    assert names_in(export_dir) == ["saved_model", "second"]
    assert tree_digest(export_dir / "saved_model") == before


def export_versions(out: Path) -> set[str]:
    """Which versions the model, metadata and README at ``out`` hold (one version: they are one export)."""
    readme, metadata = sidecar_paths(out, "tflite")
    return {out.read_text().split()[1], json.loads(metadata.read_text())["version"], readme.read_text().split()[1]}


def commit_in_child(out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", COMMIT, str(out), "new"], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=60)


def test_tflite_files_replace_the_earlier_ones_together_whatever_write_point_a_kill_hits(tmp_path):
    out = tmp_path / "straight" / "policy.tflite"
    out.parent.mkdir()
    commit_tflite_files(out, b"model old", {"exported_by": "champion", "version": "old"}, "readme old")
    straight = commit_in_child(out, {"CHAMPION_FAULT_LOG": str(tmp_path / "log")})
    assert straight.returncode == 0, straight.stderr
    assert write_points(tmp_path / "log") == COMMIT_POINTS
    assert export_versions(out) == {"new"} and names_in(out.parent) == sorted(path.name for path in
                                                                              sidecar_paths(out, "tflite") + (out,))
    for earlier in (True, False):  # over an earlier export, and the first one
        for point in range(1, len(COMMIT_POINTS) + 1):
            out = tmp_path / f"{'over' if earlier else 'first'}-{point}" / "policy.tflite"
            out.parent.mkdir()
            if earlier:
                commit_tflite_files(out, b"model old", {"exported_by": "champion", "version": "old"}, "readme old")
            killed = commit_in_child(out, kill_at(str(point)))
            assert killed.returncode == -signal.SIGKILL, killed.stderr
            recover_leftovers(out.parent)  # what the next export into this folder does first
            committed = point >= COMMIT_POINTS.index("export: committed policy.tflite") + 1
            if committed or earlier:
                assert export_versions(out) == {"new" if committed else "old"}, (point, earlier)
            else:
                assert names_in(out.parent) == [], point
            assert not [name for name in names_in(out.parent) if name.startswith(".tmp-")], point


def test_a_real_tflite_export_killed_with_new_metadata_beside_the_old_model_is_completed(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "R")
    out = run_dir / "export" / "policy.tflite"
    readme, metadata = sidecar_paths(out, "tflite")
    assert champion("export", run_dir, "--format", "tflite", "--entry", "final-step-4096") == 0
    step = int(load_best(run_dir / "best").manifest["step"])
    assert step != 4096

    killed = crash_helpers.champion(["export", str(run_dir), "--format", "tflite"],
                                    env={**kill_at("export: policy.metadata.json in place#1"),
                                         "CHAMPION_FAULT_LOG": str(tmp_path / "log")})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert write_points(tmp_path / "log") == COMMIT_POINTS[:5]  # the commit tested above, point for point
    described = json.loads(metadata.read_text())
    assert described["step"] == step and described["sha256"] != hashlib.sha256(out.read_bytes()).hexdigest()

    assert champion("export", run_dir, "--format", "tflite", "--out", out.with_name("other.tflite")) == 0
    described = json.loads(metadata.read_text())
    assert described["step"] == step and described["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"at env step {step:,}" in readme.read_text()
    assert not [name for name in names_in(out.parent) if name.startswith(".tmp-")]


def set_writable(root: Path, writable: bool) -> None:
    """chmod every folder under ``root`` (itself included) to 0o755, or to 0o555."""
    for folder in [root, *(path for path in root.rglob("*") if path.is_dir() and not path.is_symlink())]:
        folder.chmod(0o755 if writable else 0o555)


def crown_as_a_user(run_dir: Path, capsys, monkeypatch) -> tuple[int, str]:
    """``champion crown`` with folder modes applying (root's override dropped in a child); its exit code and stderr.
    In this process, judging must never start."""
    options = ["crown", str(run_dir), "--episodes", "2", "--workers", "1"]
    if os.geteuid() != 0:
        monkeypatch.setattr("champion.runners.crown.crown_run", lambda *args, **kwargs: pytest.fail("judging started"))
        return champion(*options), capsys.readouterr().err
    if not shutil.which("setpriv"):
        pytest.skip("root without setpriv: a folder's mode does not stop root's writes")
    child = crash_helpers.champion(options, prefix=DROP_ROOT_OVERRIDE)
    return child.returncode, child.stderr


def test_crowning_a_read_only_run_folder_is_one_line_before_any_judging(finished_run, tmp_path, capsys, monkeypatch):
    run_dir = copy_run(finished_run, tmp_path / "R")
    advice = (", and crowning writes best/champion.json and summary.json; crown a writable copy instead "
              f"(cp -r {run_dir} COPY && chmod -R u+w COPY, then champion crown COPY)")
    for read_only, where in ((run_dir / "best", "its best/ folder"), (run_dir, "the run folder")):
        set_writable(read_only, False)
        try:
            before = tree_digest(run_dir)
            code, stderr = crown_as_a_user(run_dir, capsys, monkeypatch)
            assert (code, errors_in(stderr)) == (2, [
                f"champion crown: error: cannot crown {run_dir}: {where} cannot be written (Permission denied)"
                + advice])
            assert "Traceback" not in stderr
            assert tree_digest(run_dir) == before
            if read_only == run_dir:
                copy = copy_run(run_dir, tmp_path / "copy")  # what the line advises
        finally:
            set_writable(read_only, True)
    monkeypatch.undo()
    set_writable(copy, True)
    assert champion("crown", copy, "--episodes", "2", "--workers", "1") == 0
    assert len(json.loads((copy / "best" / "champion.json").read_text())["held_out_seeds"]) == 2


def test_a_crown_removes_what_a_killed_crown_left(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "R")
    best_dir, options = run_dir / "best", ["--episodes", "2", "--workers", "1"]
    killed = crash_helpers.champion(["crown", str(run_dir), *options],
                                    env=kill_at("half-way through .tmp-champion.json#1"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [leftover] = [name for name in names_in(best_dir) if name.startswith(".tmp-")]
    assert re.fullmatch(r"\.tmp-champion\.json-\d+", leftover) and not (best_dir / "champion.json").exists()
    dead, live = dead_pid(), os.getppid()
    (run_dir / f".tmp-summary.json-{dead}").write_text("{")  # a kill while summary.json was written
    kept = [best_dir / f".tmp-champion.json-{live}", best_dir / ".tmp-champion.json-12ab",
            best_dir / f".tmp-current.json-{dead}", run_dir / f".tmp-summary.json-{live}"]
    for path in kept:
        path.write_text("not a dead crown's")

    assert champion("crown", run_dir, *options) == 0

    assert [name for name in names_in(best_dir) if name.startswith(".tmp-")] == sorted(
        path.name for path in kept if path.parent == best_dir)
    assert [name for name in names_in(run_dir) if name.startswith(".tmp-")] == [f".tmp-summary.json-{live}"]
    record = json.loads((best_dir / "champion.json").read_text())
    assert len(record["held_out_seeds"]) == 2
    assert json.loads((run_dir / "summary.json").read_text())["crown"]["champion"] == record["entry"]
