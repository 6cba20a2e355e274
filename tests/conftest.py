import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

import toy_envs  # noqa: E402

toy_envs.register()


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

    Its session folder is a short temporary one (Ray's socket paths must fit in 107 bytes); its token comes
    from RAY_AUTH_TOKEN, so Ray writes no token file into the user's home; the workers find the toy envs on
    PYTHONPATH and the fault files (toy_envs.FaultyCartPole) in CHAMPION_TEST_FAULTS, both inherited.
    """
    import logging
    import secrets
    import shutil
    import tempfile

    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ray-")
    faults = tmp_path_factory.mktemp("faults")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    os.environ["CHAMPION_TEST_FAULTS"] = str(faults)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, _temp_dir=temp,
             _node_ip_address="127.0.0.1")
    yield {"address": ray.get_runtime_context().gcs_address, "faults": str(faults)}
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
