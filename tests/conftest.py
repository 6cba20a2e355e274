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
