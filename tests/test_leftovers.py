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
from hostile_helpers import champion, copy_run, errors_in, finished_run, tree_digest  # noqa: F401 - fixture
from runners.best_store import load_best
from runners.export import commit_tflite_files, recover_leftovers, sidecar_paths

COMMIT_POINTS = ["export: staged policy.metadata.json", "export: staged policy.README.md",
                 "export: staged policy.tflite", "export: committed policy.tflite", "export: policy.metadata.json in place",
                 "export: policy.README.md in place", "export: policy.tflite in place"]
"""Every write point of a TFLite export's commit, in order; the commit point is the fourth."""

COMMIT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from runners.export import commit_tflite_files
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
    export_dir, outside = run_dir / "export", tmp_path / "outside"
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

    assert champion("export", run_dir) == 0

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
