import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

import toy_envs  # noqa: E402

toy_envs.register()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """``--dist loadgroup`` (pyproject.toml) runs the tests of one ``xdist_group`` in one worker: the Ray tests on one
    local Ray (``local_ray``), test_crash's kills after one dry run. pytest-xdist 3.8 tells the scheduler a test's
    group by appending ``@group`` to the test's id through ``item._nodeid``, which pytest 9.2 no longer reads (its
    ids are structured: pytest-dev/pytest-xdist#1386), so every test went to whichever worker was free, and each
    worker started a Ray of its own. Here the suffix goes on the structured id too; nothing changes where xdist's
    own works (the id then ends with it already) or without loadgroup."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                         for mark in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(groups)
        if groups and not item.nodeid.endswith(suffix) and hasattr(type(getattr(item, "_id", None)), "parse"):
            item._id = type(item._id).parse(item.nodeid + suffix)


@pytest.fixture(autouse=True, scope="session")
def compile_cache_in_a_temporary_folder(tmp_path_factory):
    """Runs in the tests (in this process and the ones it starts) keep their compiled code in a temporary folder,
    never in the user's ~/.cache nor a directory of their own TF_XLA_FLAGS; each xdist worker has its own."""
    os.environ["CHAMPION_XLA_CACHE"] = str(tmp_path_factory.getbasetemp() / "xla-cache")
    os.environ["TF_XLA_FLAGS"] = ""
    yield


@pytest.fixture(scope="session")
def local_ray(tmp_path_factory):
    """A local Ray with 2 CPUs for this test session (tests/test_ray.py), shut down after them.

    Its session folder is a short temporary one of its own, removed after (under pytest's folder Ray's socket
    paths would pass the 107-byte limit); it is a new one whatever other Ray runs on the machine
    (``address="local"``); its token comes from RAY_AUTH_TOKEN, so Ray writes no token file into
    the user's home; the workers find the toy envs on PYTHONPATH and the fault files (toy_envs.FaultyCartPole)
    in CHAMPION_TEST_FAULTS, both inherited. The variables are put back afterwards. Ray's ports listen on every
    interface (Ray has no setting for that); the token guards them.
    """
    import logging
    import secrets
    import shutil
    import tempfile

    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ray-")
    faults = tmp_path_factory.mktemp("faults")
    changed = {"RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(16),
               "CHAMPION_TEST_FAULTS": str(faults), "RAY_TMPDIR": temp,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}
    before = {name: os.environ.get(name) for name in changed}
    os.environ.update(changed)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield {"address": ray.get_runtime_context().gcs_address, "faults": str(faults)}
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def shared_run(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """The run folder ``build(results)`` trains into an empty ``results`` folder, built once for the whole test run.

    Under pytest-xdist every worker is a session of its own, with ``<the run's basetemp>/popen-gwN`` as its
    basetemp; the workers share the run through that common parent and a lock file there: the first to need it
    trains it, the others wait and read it. Without xdist it lives in the session's basetemp. A build that failed
    leaves no ``done`` mark, so the next test that needs the run trains it again (and fails the same way). Tests
    read the run as it is; one that changes anything in it copies it first (``shutil.copytree``)."""
    import fcntl

    basetemp = tmp_path_factory.getbasetemp()
    shared = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
    results, done = shared / f"shared-{name}", shared / f"shared-{name}.done"
    with open(shared / f"shared-{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                shutil.rmtree(results, ignore_errors=True)
                results.mkdir()
                run_dir = build(results)
                done.write_text(str(run_dir.relative_to(results)))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return results / done.read_text()


CROWNED_CARTPOLE_OPTIONS = ("--total-steps", "20000", "--eval-every", "5000", "--seed", "3", "--no-media",
                            "--quiet", "--set", "crown.episodes=30")
"""A PPO CartPole run on the graph engine with 4 evaluations and the crown at its end (30 held-out episodes)."""


@pytest.fixture(scope="session")
def crowned_cartpole_run(tmp_path_factory) -> Path:
    """One finished, crowned CartPole PPO run (``CROWNED_CARTPOLE_OPTIONS``) shared by every test that only reads,
    replays, exports or crowns a run (tests/test_crown.py, tests/test_cli.py), trained once per test run
    (``shared_run``). Read it as it is; a test that changes it (a crown, a lock, an edited file) copies it first."""
    from champion.runners.cli.main import main

    def train(results: Path) -> Path:
        try:
            main(["train", "CartPole-v1", "--results-dir", str(results), "--run-name", "crowned",
                  *CROWNED_CARTPOLE_OPTIONS])
        except SystemExit as done:
            assert not done.code, f"the shared CartPole run failed to train: exit {done.code}"
        return results / "CartPole-v1" / "ppo" / "crowned"

    return shared_run(tmp_path_factory, "crowned-cartpole", train)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """The small finished CartPole run of tests/hostile_helpers.py (uncrowned, with checkpoints), trained once per
    test run (``shared_run``); tests copy it before changing anything (``hostile_helpers.copy_run``). A module
    uses it by naming it, importing nothing (a fixture imported into a module is that module's own, built once
    per module and worker)."""
    from hostile_helpers import make_finished_run

    return shared_run(tmp_path_factory, "finished-cartpole", make_finished_run)


@pytest.fixture(scope="session")
def python_without_champion(tmp_path_factory):
    """A venv's python that sees this venv's packages (TensorFlow, Keras, numpy) but not champion: its .pth line
    adds the site-packages folder without running that folder's own .pth files, so champion's editable finder is
    never installed there (tests/test_keras_export.py, tests/test_user_network.py)."""
    import subprocess
    import sysconfig

    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    [site_packages] = (venv / "lib").glob("python*/site-packages")
    (site_packages / "champion_venv_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin" / "python"
