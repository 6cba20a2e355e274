"""champion installs as one package, `champion`: its wheel holds nothing else, a user's own `agents`, `envs` or
`runners` folder is theirs, and run folders written before the move still replay and resume.

The repository's folders agents/, envs/ and runners/ install as champion.agents, champion.envs and
champion.runners (pyproject.toml's [tool.setuptools] packages and package-dir).
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BEFORE_PACKAGE = FIXTURES / "before-package"
PROJECT = FIXTURES / "project"
BIN = Path(sys.executable).parent
CHAMPION = str(BIN / "champion")
"""The console script pip made for the venv: what a user types."""
OWN_NAMES = ("agents", "envs", "runners")
"""Top-level names champion used to install and no longer may: users' projects have folders with these names."""
DOC_SUFFIXES = (".md",)
"""Files in a package folder that are notes for developers, not package data the installed code reads."""

SMALL_RUN = ["--eval-every", "256", "--eval-episodes", "2", "--set", "num_envs=2", "--set", "ppo.num_steps=64",
             "--set", "ppo.minibatch_size=32", "--set", "ppo.epochs=2", "--set", "network.hidden_sizes=[8]",
             "--set", "crown.episodes=3", "--set", "media=false",
             "--set", "ppo.jit_compile=false"]  # a tiny run: no XLA compile to wait for
REACH = "envs.my_env:Reach-v0"


# ---------------------------------------------------------------------------------------------------- helpers


def setuptools_table(pyproject: Path) -> dict:
    return tomllib.loads(pyproject.read_text())["tool"]["setuptools"]


def package_folder(package: str, package_dir: dict[str, str], root: Path) -> Path:
    """Where setuptools takes ``package`` from: the longest package-dir prefix, then the remaining name parts."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in package_dir:
            return root / package_dir[prefix] / Path(*parts[cut:])
    return root / package_dir.get("", ".") / Path(*parts)


def package_folders(package_dir: dict[str, str], root: Path) -> tuple[dict[str, Path], list[str]]:
    """Every package (a folder with __init__.py) below each package-dir root, by the dotted name it installs as;
    and the folders setuptools would pass over because package-dir takes their name from another folder."""
    found: dict[str, Path] = {}
    passed_over = []
    for prefix, folder in package_dir.items():
        base = root / folder
        for init in sorted(base.rglob("__init__.py")):
            if "__pycache__" in init.parts:
                continue
            name = ".".join(filter(None, (prefix, *init.parent.relative_to(base).parts)))
            mapped = package_folder(name, package_dir, root)
            if mapped != init.parent:
                passed_over.append(f"{init.parent.relative_to(root)}/ would be {name}, but package-dir takes {name} "
                                   f"from {mapped.relative_to(root)}/: a wheel would leave it out")
                continue
            found[name] = init.parent
    return found, passed_over


def package_problems(pyproject: Path, root: Path = REPO) -> list[str]:
    """What a wheel built from ``pyproject`` (sources under ``root``) would miss or choke on: one line each.

    [tool.setuptools] packages must name exactly the package folders below package-dir's roots, each mapped to
    an existing folder with __init__.py; a folder with Python files but no __init__.py (which setuptools leaves
    out without a word) is a problem; every non-Python file in a package folder (notes *.md aside) must match
    one of package-data's patterns for its package.
    """
    setup = setuptools_table(pyproject)
    listed = list(setup.get("packages", []))
    package_dir = dict(setup.get("package-dir", {}))
    package_data = {key: list(value) for key, value in setup.get("package-data", {}).items()}
    problems = []
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    if duplicates:
        problems.append(f"packages lists {duplicates} more than once")
    for prefix, folder in package_dir.items():
        if prefix not in listed:
            problems.append(f"package-dir maps {prefix!r} to {folder!r}, but packages does not list {prefix!r}")
    found, passed_over = package_folders(package_dir, root)
    problems += passed_over
    for name in sorted(set(found) - set(listed)):
        problems.append(f"{found[name].relative_to(root)}/ is a package ({name}) that packages does not list: "
                        "a wheel would leave it out")
    for name in sorted(set(listed) - set(found)):
        folder = package_folder(name, package_dir, root)
        problems.append(f"packages lists {name}, but {folder.relative_to(root)}/__init__.py does not exist")
    for prefix, folder in package_dir.items():
        for directory in sorted(path for path in (root / folder).rglob("*") if path.is_dir()):
            if "__pycache__" in directory.parts:
                continue
            if any(directory.glob("*.py")) and not (directory / "__init__.py").exists():
                problems.append(f"{directory.relative_to(root)}/ has Python files but no __init__.py: setuptools "
                                "would leave it out of the wheel")
    for name, folder in sorted(found.items()):
        patterns = package_data.get(name, []) + package_data.get("*", []) + package_data.get("", [])
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix not in (".py", ".pyc") + DOC_SUFFIXES \
                    and not any(fnmatch(path.name, pattern) for pattern in patterns):
                problems.append(f"{path.relative_to(root)} is in package {name} but matches none of its package-data "
                                f"patterns {patterns}: a wheel would leave it out")
    return problems


def expected_wheel_files(root: Path) -> set[str]:
    """The package files a wheel built from ``root`` must hold, by their names in the wheel."""
    setup = setuptools_table(root / "pyproject.toml")
    package_dir = setup.get("package-dir", {})
    package_data = setup.get("package-data", {})
    names = set()
    for package in setup["packages"]:
        folder = package_folder(package, package_dir, root)
        inside = package.replace(".", "/")
        patterns = package_data.get(package, [])
        for path in folder.iterdir():
            if path.is_file() and (path.suffix == ".py" or any(fnmatch(path.name, pattern) for pattern in patterns)):
                names.add(f"{inside}/{path.name}")
    return names


def clean_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment (CHAMPION_XLA_CACHE from conftest among it) with HOME and caches in tmp_path
    (Keras writes ~/.keras on import) and no PYTHONPATH (conftest's Ray fixture may have set one)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), TF_CPP_MIN_LOG_LEVEL="2",
               PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def run(args: list, cwd: Path, env: dict[str, str], what: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command, failing with its exit code and the end of its output unless it exits 0."""
    done = subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    shown = " ".join(arg if len(arg) < 200 else "<script>" for arg in map(str, args))
    assert done.returncode == 0, (f"{what} exited {done.returncode}: {shown} (cwd {cwd})\n"
                                  f"--- stdout (end) ---\n{done.stdout[-3000:]}\n"
                                  f"--- stderr (end) ---\n{done.stderr[-3000:]}")
    return done


def last_json(done: subprocess.CompletedProcess, what: str) -> dict:
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, (f"{what} printed no JSON object\n--- stdout ---\n{done.stdout[-3000:]}\n"
                   f"--- stderr ---\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def evaluation_rows(path: Path) -> list[tuple[int, float]]:
    with path.open(newline="") as file:
        return [(int(row["step"]), float(row["mean_return"])) for row in csv.DictReader(file)]


def copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return project


def the_run(results: Path, run_name: str) -> Path:
    runs = sorted(results.glob(f"*/ppo/{run_name}"))
    assert len(runs) == 1, f"expected one run folder {results}/*/ppo/{run_name}, found {runs}"
    return runs[0]


def check_best_entries(run_dir: Path) -> dict:
    """The run's best/ has a current entry and a crowned champion, each with its weights; the champion record."""
    best = run_dir / "best"
    current = json.loads((best / "current.json").read_text())
    crowned = json.loads((best / "champion.json").read_text())
    for entry in {current["entry"], crowned["entry"]}:
        assert re.fullmatch(r"\d{4}-step-\d+|final-step-\d+", entry), f"{best}: unexpected entry name {entry!r}"
        for name in ("policy.npz", "manifest.json"):
            assert (best / entry / name).is_file(), f"{best / entry} has no {name}: {sorted(os.listdir(best / entry))}"
    return crowned


# ------------------------------------------------------------------------------------- 1. the packages list


def test_pyproject_lists_exactly_the_package_folders():
    problems = package_problems(PYPROJECT)
    assert problems == [], "pyproject.toml [tool.setuptools]:\n" + "\n".join(problems)
    setup = setuptools_table(PYPROJECT)
    assert set(setup["package-dir"]) == {"champion", *(f"champion.{name}" for name in OWN_NAMES)}, setup["package-dir"]
    assert all(name == "champion" or name.startswith("champion.") for name in setup["packages"]), setup["packages"]


@pytest.mark.parametrize("change, message", [
    (('"champion.runners.store",', ""),
     "runners/store/ is a package (champion.runners.store) that packages does not list: a wheel would leave it out"),
    (('"champion.envs.graph",', '"champion.envs.graph", "champion.envs.nothing",'),
     "packages lists champion.envs.nothing, but envs/nothing/__init__.py does not exist"),
    (('"champion.envs.presets" = ["*.yaml"]', '"champion.envs.presets" = ["*.yml"]'),
     "envs/presets/CartPole-v1.ppo.yaml is in package champion.envs.presets but matches none of its package-data "
     "patterns ['*.yml']: a wheel would leave it out"),
])
def test_the_packages_check_notices_a_changed_list(tmp_path, change, message):
    """The checker above, on a copy of pyproject.toml with one package left out, one too many, or data missed."""
    old, new = change
    text = PYPROJECT.read_text()
    assert text.count(old) == 1, f"pyproject.toml no longer has {old!r} once: update this test's changes"
    changed = tmp_path / "pyproject.toml"
    changed.write_text(text.replace(old, new))
    problems = package_problems(changed, REPO)
    assert message in problems, f"expected {message!r} among the problems found:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------------------ 2. the wheel


WHEEL_CHECK = r"""
import importlib, importlib.metadata, json, sys
site, venv_site = sys.argv[1], sys.argv[2]
sys.path.insert(0, site)
sys.path.append(venv_site)  # a plain entry: with -S no .pth file runs, so champion's editable finder is not loaded
import champion
cli = importlib.import_module("champion.runners.cli.main")  # the module: the package's attribute main is the function
report = {"champion": champion.__file__, "cli": cli.__file__,
          "presets": sorted([p.env_id, p.algo, str(p.path)] for p in champion.presets()),
          "distribution": str(importlib.metadata.distribution("champion").locate_file("")),
          "version": importlib.metadata.version("champion"),
          "meta_path": [repr(finder) for finder in sys.meta_path]}
for name in ("agents", "envs", "runners"):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        report[name] = f"ModuleNotFoundError: {error}"
    else:
        report[name] = f"imported from {module.__file__}"
print(json.dumps(report))
"""

EDITABLE_CHECK = r"""
import importlib.metadata, importlib.util, json, sys
distribution = importlib.metadata.distribution("champion")
found = {}
for package in json.loads(sys.argv[1]):
    spec = importlib.util.find_spec(package)
    found[package] = list(spec.submodule_search_locations or []) if spec else None
print(json.dumps({
    "top_level": (distribution.read_text("top_level.txt") or "").split(),
    "scripts": {point.name: point.value for point in distribution.entry_points if point.group == "console_scripts"},
    "own_names": {name: repr(importlib.util.find_spec(name)) for name in ("agents", "envs", "runners")},
    "found": found}))
"""


def test_the_wheel_holds_only_champion_and_installs_without_top_level_agents_envs_runners(tmp_path):
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    version = project["version"]
    env = clean_env(tmp_path)
    # Built from a copy of the package sources: a build in the repository writes build/ and *.egg-info there
    # (others work in it), and setuptools adds whatever an earlier build left in build/lib to the wheel, so a
    # deleted module would come back. Offline: the venv's setuptools and wheel, nothing from an index.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", project["readme"]):
        shutil.copy2(REPO / name, source / name)
    for folder in sorted(set(setuptools_table(PYPROJECT)["package-dir"].values())):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
         "-q", "-w", wheels, source], cwd=tmp_path, env=env, what="pip wheel")
    built = sorted(wheels.glob("*.whl"))
    assert [path.name for path in built] == [f"champion-{version}-py3-none-any.whl"], built

    with zipfile.ZipFile(built[0]) as wheel:
        names = [info.filename for info in wheel.infolist() if not info.is_dir()]
        dist_info = f"champion-{version}.dist-info"
        top = sorted({name.split("/")[0] for name in names})
        assert top == ["champion", dist_info], f"the wheel's top-level names are {top}"
        package_files = {name for name in names if not name.startswith(dist_info + "/")}
        expected = expected_wheel_files(source)
        assert package_files == expected, (f"missing from the wheel: {sorted(expected - package_files)}; "
                                           f"not expected in it: {sorted(package_files - expected)}")
        presets = sorted(name.rsplit("/", 1)[1] for name in names if fnmatch(name, "champion/envs/presets/*.yaml"))
        assert presets == sorted(path.name for path in (REPO / "envs" / "presets").glob("*.yaml")) and presets, presets
        assert "champion/runners/cli/main.py" in names
        assert wheel.read(f"{dist_info}/top_level.txt").decode().split() == ["champion"]
        scripts = wheel.read(f"{dist_info}/entry_points.txt").decode()
        assert f"champion = {project['scripts']['champion']}" in scripts, scripts

    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir", "-q",
         "--target", site, built[0]], cwd=tmp_path, env=env, what="pip install --target")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    venv_site = sysconfig.get_paths()["purelib"]
    isolated = {"PATH": os.environ.get("PATH", ""), "HOME": env["HOME"]}
    done = run([sys.executable, "-I", "-S", "-c", WHEEL_CHECK, site, venv_site], cwd=cwd, env=isolated,
               what="importing the installed wheel")
    report = last_json(done, "the installed-wheel check")
    assert not [finder for finder in report["meta_path"] if "editable" in finder.lower()], report["meta_path"]
    assert Path(report["champion"]) == site / "champion" / "__init__.py", report["champion"]
    assert Path(report["cli"]) == site / "champion" / "runners" / "cli" / "main.py", report["cli"]
    assert Path(report["distribution"]) == site and report["version"] == version, report
    assert report["presets"], "champion.presets() is empty in the installed wheel"
    assert {Path(path).parent for _, _, path in report["presets"]} == {site / "champion" / "envs" / "presets"}, \
        report["presets"]
    assert ["CartPole-v1", "ppo"] in [preset[:2] for preset in report["presets"]], report["presets"]
    for name in OWN_NAMES:
        assert report[name] == f"ModuleNotFoundError: No module named '{name}'", f"import {name}: {report[name]}"

    # The editable install in the venv (pip install -e .): the same single top-level name, and every package
    # of pyproject's list served from the repository folder package-dir maps it to.
    setup = setuptools_table(PYPROJECT)
    done = run([sys.executable, "-c", EDITABLE_CHECK, json.dumps(setup["packages"])], cwd=cwd,
               env=clean_env(tmp_path), what="the editable install's check")
    report = last_json(done, "the editable install's check")
    assert report["top_level"] == ["champion"], report["top_level"]
    assert report["scripts"] == project["scripts"], report["scripts"]
    assert report["own_names"] == {name: "None" for name in OWN_NAMES}, report["own_names"]
    expected = {package: [str(package_folder(package, setup["package-dir"], REPO))] for package in setup["packages"]}
    assert report["found"] == expected, ("the editable install serves other folders than pyproject.toml says "
                                         "(reinstall with pip install -e . after changing package-dir): "
                                         f"{report['found']}")


# ----------------------------------------------------------- 3. a user's project with its own agents/ and envs/


def test_a_project_with_its_own_envs_and_agents_trains_and_replays_through_the_command(tmp_path):
    project = copy_project(tmp_path)
    env = clean_env(tmp_path)
    results = tmp_path / "results"

    show = "import envs, agents; print(envs.__file__, agents.__file__, agents.PROJECT_PACKAGE)"
    done = run([sys.executable, "-c", show], cwd=project, env=env, what="importing the project's packages")
    assert done.stdout.split() == [str(project / "envs" / "__init__.py"), str(project / "agents" / "__init__.py"),
                                   "project-agents"], done.stdout

    # The command puts the current folder on the path after the installed packages: the project's envs is
    # found only because champion installs no top-level envs.
    run([CHAMPION, "train", REACH, "--total-steps", "512", "--results-dir", results, "--run-name", "cli", *SMALL_RUN],
        cwd=project, env=env, what="champion train in the project")
    run_dir = the_run(results, "cli")
    config = (run_dir / "config.yaml").read_text()
    assert f"env_id: {REACH}\n" in config, config[:500]
    assert [step for step, _ in evaluation_rows(run_dir / "evaluations.csv")] == [256, 512]
    crowned = check_best_entries(run_dir)

    done = run([CHAMPION, "replay", run_dir, "--env-module", "envs.my_env", "--json"], cwd=project, env=env,
               what="champion replay --env-module envs.my_env")
    replay = last_json(done, "champion replay --json")
    assert replay["matches_recorded"] is True, replay
    assert replay["mean_return"] == replay["recorded_mean_return"] == crowned["held_out_mean"], (replay, crowned)
    assert replay["seeds"] == crowned["held_out_seeds"] and replay["returns"] == crowned["returns"], (replay, crowned)
    assert Path(replay["entry"]) == run_dir / "best" / crowned["entry"], replay["entry"]

    # Without --env-module the recorded env's module must be an installed package: the project's envs is not one.
    refused = subprocess.run([CHAMPION, "replay", str(run_dir), "--json"], cwd=project, env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2, (refused.returncode, refused.stderr[-2000:])
    assert (f"names the env '{REACH}', whose module 'envs.my_env' is not an installed package"
            in refused.stderr), refused.stderr[-2000:]


API_TRAIN = r"""
import json, sys
import gymnasium as gym
import numpy as np
import champion
import envs, agents
result = champion.train("envs.my_env:Reach-v0", total_steps=512, eval_every=256, eval_episodes=2,
                        results_dir=sys.argv[1], run_name="api", num_envs=2,
                        ppo={"num_steps": 64, "minibatch_size": 32, "epochs": 2, "jit_compile": False},
                        network={"hidden_sizes": [8]},
                        crown={"episodes": 3}, media=False, progress=False)
env = gym.make("envs.my_env:Reach-v0")
observations = [env.reset(seed=seed)[0] for seed in range(4)]
policy = champion.load(result.run_dir)
print(json.dumps({
    "run_dir": str(result.run_dir), "env_steps": result.env_steps,
    "best_entry": str(result.best_entry), "champion_entry": str(result.champion_entry),
    "champion_mean_return": result.champion_mean_return,
    "env_id": policy.env_id, "entry": str(policy.entry), "crowned": policy.crowned,
    "mean_return": policy.mean_return,
    "actions": [int(policy.act(observation)) for observation in observations],
    "batch_actions": np.asarray(policy.act(np.stack(observations))).tolist(),
    "envs": envs.__file__, "agents": agents.PROJECT_PACKAGE}))
"""


def test_a_project_with_its_own_envs_and_agents_trains_through_the_api_and_loads_the_policy(tmp_path):
    project = copy_project(tmp_path)
    results = tmp_path / "results"
    done = run([sys.executable, "-c", API_TRAIN, results], cwd=project, env=clean_env(tmp_path),
               what="champion.train and champion.load in the project")
    report = last_json(done, "the API script")
    run_dir = the_run(results, "api")
    assert Path(report["run_dir"]) == run_dir and report["env_steps"] == 512, report
    assert (report["envs"], report["agents"]) == (str(project / "envs" / "__init__.py"), "project-agents"), report
    crowned = check_best_entries(run_dir)
    assert Path(report["champion_entry"]) == run_dir / "best" / crowned["entry"], (report, crowned)
    assert Path(report["best_entry"]).parent == run_dir / "best" and Path(report["best_entry"]).is_dir(), report
    assert report["env_id"] == REACH, report["env_id"]
    assert Path(report["entry"]) == run_dir / "best" / crowned["entry"] and report["crowned"] is True, report
    assert report["mean_return"] == report["champion_mean_return"] == crowned["held_out_mean"], (report, crowned)
    assert set(report["actions"]) <= {0, 1} and report["batch_actions"] == report["actions"], report


# ----------------------------------------------------------- 4. a run folder written before the package move


def test_a_run_from_before_the_package_move_replays_its_recorded_return(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(BEFORE_PACKAGE / "run", run_dir)  # the fixture stays as it is
    crowned = json.loads((run_dir / "best" / "champion.json").read_text())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = run([CHAMPION, "replay", run_dir, "--json"], cwd=cwd, env=clean_env(tmp_path),
               what="champion replay of the before-package run")
    replay = last_json(done, "champion replay --json")
    assert replay["matches_recorded"] is True and replay["same_episodes_as_recorded"] is True, replay
    assert replay["mean_return"] == replay["recorded_mean_return"] == crowned["held_out_mean"], (replay, crowned)
    assert replay["seeds"] == crowned["held_out_seeds"] and replay["returns"] == crowned["returns"], (replay, crowned)
    assert Path(replay["entry"]) == run_dir / "best" / crowned["entry"], replay["entry"]


def test_a_run_from_before_the_package_move_resumes_to_the_uninterrupted_weights(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(BEFORE_PACKAGE / "run", run_dir)  # the fixture stays as it is
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = run([CHAMPION, "train", "--resume", run_dir, "--total-steps", "512"], cwd=cwd, env=clean_env(tmp_path),
               what="champion train --resume of the before-package run")
    output = done.stdout + done.stderr
    assert "resuming from ckpt-0000000256 at step 256: 2 of 2 envs restored exactly" in output, output[-3000:]
    assert list(cwd.iterdir()) == [], f"the resume wrote into its working folder: {list(cwd.iterdir())}"

    final = run_dir / "best" / "final-step-512" / "policy.npz"
    assert final.is_file(), f"no {final}: best/ holds {sorted(os.listdir(run_dir / 'best'))}"
    with np.load(final) as resumed, np.load(BEFORE_PACKAGE / "uninterrupted" / "policy.npz") as uninterrupted:
        assert sorted(resumed.files) == sorted(uninterrupted.files)
        shapes = {name: (resumed[name].shape, uninterrupted[name].shape) for name in uninterrupted.files
                  if resumed[name].shape != uninterrupted[name].shape}
        assert not shapes, f"resumed weights have other shapes than the uninterrupted run's: {shapes}"
        # Bit-equal on the machine that wrote the fixture; other CPUs (CI) may round differently, hence a tolerance.
        different = {name: float(np.max(np.abs(resumed[name] - uninterrupted[name]))) for name in uninterrupted.files
                     if not np.allclose(resumed[name], uninterrupted[name], rtol=1e-5, atol=1e-6)}
        assert not different, f"resumed weights differ from the uninterrupted run's (max abs difference): {different}"
    assert evaluation_rows(run_dir / "evaluations.csv") == \
        evaluation_rows(BEFORE_PACKAGE / "uninterrupted" / "evaluations.csv")
