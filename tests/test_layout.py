"""The code's shape: private framework APIs in one module only, no side effects when importing champion, and
no import cycles between champion's modules."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
FOLDERS = {"champion": "champion", "agents": "champion.agents", "envs": "champion.envs", "runners": "champion.runners"}
"""The repository's package folders and the import names they install as."""
PACKAGES = tuple(FOLDERS.values())
COMPAT = ROOT / "agents" / "compile" / "compat.py"
PRIVATE_FRAMEWORKS = re.compile(
    r"tensorflow\.(python|core|compiler)\b|keras\.src\b|keras\._(?!_\w*__\b)|gymnasium\.envs\.\w+\.\w+"
    r"|\b(tf|keras|gym|gymnasium|tensorflow|optimizer|context)\.(\w+\.)*_[A-Za-z]"
    r"|\._(get_variable_index|momentums|velocities|functions|apply_op_helper|get_attr_type)\b|context\.context\(\)"
    r"|\bray\.(\w+\.)*_[A-Za-z]|\b_temp_dir\b")
"""Private TensorFlow/Keras/gymnasium/Ray names: their internal modules, underscore attributes and keywords, known
internals."""
PRIVATE_TENSORBOARD = re.compile(
    r"tensorboard\.(compat|util|backend|data_compat|dataclass_compat|summary\.(writer|_\w+))\b"
    r"|from tensorboard import (compat|util|backend|data_compat|dataclass_compat)\b|from tensorboard\.summary import (writer|_)"
    r"|tensorboard\.plugins\.\w+\.(?!api\b)\w+|from tensorboard\.plugins\.\w+ import (?!api\b)")
"""TensorBoard's internal modules: its protos (compat.proto, a plugin's *_pb2), event writer (summary.writer),
utilities, loader (backend) and the plugins' metadata and summary modules. Public: ``tensorboard.summary``
(v1, v2, Writer) and each plugin's ``api`` (the hparams API)."""
PRIVATE = re.compile(f"{PRIVATE_FRAMEWORKS.pattern}|{PRIVATE_TENSORBOARD.pattern}")


def python_files() -> list[Path]:
    folders = [ROOT / name for name in (*FOLDERS, "tests", "benchmarks", "examples")]
    return sorted(path for folder in folders for path in folder.rglob("*.py") if ".venv" not in path.parts)


def test_private_framework_names_appear_only_in_the_compat_module():
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in python_files() if path not in (COMPAT, Path(__file__).resolve())
                 for number, line in enumerate(path.read_text().splitlines(), 1) if PRIVATE.search(line)]
    assert offenders == []
    # the patterns find what the compat module does use, of TensorFlow and of TensorBoard
    assert PRIVATE_FRAMEWORKS.search(COMPAT.read_text()) and PRIVATE_TENSORBOARD.search(COMPAT.read_text())


def test_the_private_name_pattern_tells_tensorboards_internal_modules_from_its_public_api():
    internal = ["from tensorboard.compat.proto import event_pb2, summary_pb2",
                "from tensorboard.summary.writer.event_file_writer import EventFileWriter",
                "from tensorboard.util import tensor_util", "from tensorboard import util",
                "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator",
                "from tensorboard.plugins.scalar import metadata", "from tensorboard.plugins.hparams import plugin_data_pb2",
                "tensorboard.plugins.histogram.summary_v2.histogram_pb(tag, values)",
                "from tensorboard.summary import _writer", "keras._tf_keras", "from tensorflow.python.eager import context",
                "from ray._raylet import GcsClient", "from ray._private import worker", "ray.init(_temp_dir=folder)"]
    public = ["from tensorboard.plugins.hparams import api as hp", "tensorboard.plugins.hparams.api.hparams_pb(values)",
              "from tensorboard.summary import v2", "tensorboard.summary.Writer(folder)", "tf.summary.scalar(tag, value)",
              "tf.compat.v1.Event.FromString(record)", "keras.__version__", "from google.protobuf import empty_pb2",
              "ray.init(address='local')", "ray.get_runtime_context().gcs_address", "_ray_printer = None"]
    assert [line for line in internal if not PRIVATE.search(line)] == []
    assert [line for line in public if PRIVATE.search(line)] == []


def test_importing_champion_changes_no_environment_variable_and_writes_or_deletes_no_file(tmp_path):
    home, work, cache = tmp_path / "home", tmp_path / "work", tmp_path / "cache"
    home.mkdir(), work.mkdir()
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("XDG_CACHE_HOME", "MPLCONFIGDIR", "KERAS_BACKEND", "TF_XLA_FLAGS")}
    environment.update({"HOME": str(home), "CHAMPION_XLA_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "1",
})
    libraries = "import tensorflow, keras, gymnasium, matplotlib.pyplot\n"
    # the libraries' own first-import files (Keras' keras.json, matplotlib's font cache) are theirs, not ours
    subprocess.run([sys.executable, "-c", libraries], cwd=work, env=environment, check=True, capture_output=True,
                   timeout=300)
    files_before = sorted(str(path) for path in tmp_path.rglob("*"))
    script = (libraries + "import json, os, pkgutil, importlib\n"
              "before = dict(os.environ)\n"
              f"for package in {PACKAGES!r}:\n"
              "    importlib.import_module(package)\n"
              "    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + '.'):\n"
              "        importlib.import_module(module.name)\n"
              "print(json.dumps([before, dict(os.environ)]))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=work, env=environment, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout.splitlines()[-1])
    assert after == before
    assert sorted(str(path) for path in tmp_path.rglob("*")) == files_before
    assert not cache.exists()


def _imports(path: Path, module: str) -> set[str]:
    """champion modules that ``module`` imports anywhere in its code (module level or inside functions)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "champion"}


def champion_modules() -> dict[str, Path]:
    """Every champion module by its import name (a package by its ``__init__.py``)."""
    modules = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = (package, *path.relative_to(ROOT / folder).with_suffix("").parts)
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """champion module -> the champion modules its code imports (anywhere in it, lazily too)."""
    modules = champion_modules()
    return {name: {target for target in _imports(path, name) if target in modules and target != name}
            for name, path in modules.items()}


def reachable_imports(graph: dict[str, set[str]], start: str) -> set[str]:
    """The champion modules ``start`` imports, directly or through the modules it imports."""
    found, queue = set(), [start]
    while queue:
        for target in graph[queue.pop()] - found:
            found.add(target)
            queue.append(target)
    return found


def test_the_learners_update_math_never_imports_the_compile_machinery():
    """PPO's and A2C's update math (and the modules it is built from) import nothing of champion.agents.compile,
    directly or through another module, lazily included: the compile package wraps the learners, not the
    reverse. The walk does find the compile package from the module that builds the compiled learner."""
    graph = import_graph()
    compile_modules = {name for name in graph if name.startswith("champion.agents.compile")}
    for math in ("ppo", "a2c", "losses", "optimization", "networks", "distributions"):
        reached = reachable_imports(graph, f"champion.agents.{math}")
        assert sorted(reached & compile_modules) == [], math
    assert {"champion.agents.losses", "champion.agents.networks", "champion.agents.optimization",
            "champion.agents.distributions"} <= reachable_imports(graph, "champion.agents.ppo")
    assert "champion.agents.compile.update" in reachable_imports(graph, "champion.agents.learners")


def test_importing_a_learner_loads_no_compile_module():
    """What Python actually loads for ``import champion.agents.ppo, champion.agents.a2c`` (parent packages
    included): no module of champion.agents.compile."""
    script = ("import json, sys, champion.agents.ppo, champion.agents.a2c\n"
              "print(json.dumps(sorted(name for name in sys.modules if name.startswith('champion.agents'))))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert "champion.agents.ppo" in loaded and "champion.agents.a2c" in loaded
    assert [name for name in loaded if name.startswith("champion.agents.compile")] == []


def test_no_import_cycles_between_champion_modules():
    graph = import_graph()
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in trail:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif len(trail) < 30 and target not in done:
                visit(target, trail + [target])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [name])
    # a package's __init__ may lazily re-export its own modules (champion.train); that is not a cycle of code
    cycles = [cycle for cycle in cycles if not re.fullmatch(r"([\w.]+) -> \1\.[\w.]+( -> \1)?", cycle)]
    assert cycles == []


def test_the_private_api_versions_are_the_tensorflow_range_pyproject_allows():
    import tomllib

    from champion.agents.compile import compat

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    frameworks = {re.match(r"[\w-]+", text).group(): text for text in dependencies}
    for name in ("tensorflow", "keras", "gymnasium", "numpy", "tensorboard"):
        assert re.search(r">=[\d.]+,<[\d.]+", frameworks[name]), f"{name} needs a floor and a cap: {frameworks[name]}"
    floor, cap = re.search(r">=(\d+\.\d+),<(\d+\.\d+)", frameworks["tensorflow"]).groups()
    major, first, last = int(floor.split(".")[0]), int(floor.split(".")[1]), int(cap.split(".")[1])
    assert compat.TESTED_TENSORFLOW == tuple(f"{major}.{minor}" for minor in range(first, last))
    floor, cap = re.search(r">=(\d+\.\d+),<(\d+\.\d+)", frameworks["tensorboard"]).groups()
    major, first, last = int(floor.split(".")[0]), int(floor.split(".")[1]), int(cap.split(".")[1])
    assert compat.TESTED_TENSORBOARD == tuple(f"{major}.{minor}" for minor in range(first, last))


def test_the_suite_keeps_compiled_code_in_a_temporary_folder_not_the_users_cache(tmp_path_factory):
    from champion.agents.compile import xla_cache

    cache = Path(os.environ[xla_cache.ENVIRONMENT_VARIABLE])
    assert cache.is_relative_to(tmp_path_factory.getbasetemp())
    assert not cache.is_relative_to(Path.home())
    assert xla_cache.configured_cache_dir() in (None, cache)  # never a directory the user's flags named


def test_acting_and_the_env_side_import_no_tensorflow():
    """What a worker that only steps envs and acts needs (the numpy policy, the spec, the env factory) loads
    without TensorFlow or Keras: acting on a MultiDiscrete action from a Dict observation, in numpy."""
    script = (
        "import sys, numpy as np\n"
        "from champion.agents.numpy_policy import NumpyPolicy\n"
        "from champion.agents.spec import NetworkSpec, ObservationLeaf\n"
        "from champion.envs.factory import make_vector_env\n"
        "leaves = (ObservationLeaf(('cue',), 'onehot', (), 'int64', (4,), (0,)), ObservationLeaf(('noise',), 'box', (3,)))\n"
        "spec = NetworkSpec(leaves, 'multidiscrete', 5, hidden_sizes=(4,), action_nvec=(2, 3), action_start=(0, 0),"
        " action_env_shape=(2,))\n"
        "weights = {'policy_torso_0/kernel': np.ones((7, 4), np.float32), 'policy_torso_0/bias': np.zeros(4, np.float32),"
        " 'value_torso_0/kernel': np.ones((7, 4), np.float32), 'value_torso_0/bias': np.zeros(4, np.float32),"
        " 'policy_head/kernel': np.ones((4, 5), np.float32), 'policy_head/bias': np.arange(5, dtype=np.float32),"
        " 'value_head/kernel': np.ones((4, 1), np.float32), 'value_head/bias': np.zeros(1, np.float32)}\n"
        "policy = NumpyPolicy(spec, weights=weights)\n"
        "print(policy.env_actions(policy.mode(np.zeros((1, 7), np.float32))).tolist())\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # logits [0, 1 | 2, 3, 4] (the torso adds the same to each): argmax 1 of the first component, 2 of the second
    assert done.stdout.splitlines() == ["[[1, 2]]", "[]"]
