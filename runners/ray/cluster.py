"""Starting or joining Ray for a run, and the checks that keep a bad address or a full cluster from hanging it.

Without an address a run starts a local Ray of its own (dashboard off, Ray's log lines at warnings and
above, as many CPUs as the machine has unless ``ray.num_cpus`` says otherwise) and shuts it down at the
end. With ``auto`` or ``HOST:PORT`` it joins that cluster and leaves it running. A process that is already
connected (a test session, a notebook) is used as it is.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from champion.agents.config import ConfigError

INSTALL_HINT = "pip install -e '.[ray]' (in champion's folder)"
"""Said as for the other extras (``champion.envs.factory.describe_env``): the README installs champion that way."""
CAPACITY_PATIENCE = 5.0
"""How long a run waits for CPUs that stopping actors still hold before it says the cluster is full."""
PROBE_SECONDS = 3.0
"""How long the head's address may take to accept a connection before the run gives up on it."""


def require_ray() -> None:
    """ConfigError (one line, before anything is created) if Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"engine=ray needs Ray, which is not installed: {INSTALL_HINT}")


_started_here = False
"""Whether this process started the Ray it is connected to (then it shuts it down when the run ends)."""


@dataclass
class RayConnection:
    """This process's connection to Ray; ``close`` shuts down a Ray this process started and leaves a cluster
    it joined, or one it was already connected to, running."""

    address: str
    owned: bool

    def close(self) -> None:
        """Shut down the local Ray this run started, or disconnect from a cluster it joined."""
        global _started_here
        import ray

        if self.owned and ray.is_initialized():
            ray.shutdown()
            _started_here = False


def connect(address: str | None, num_cpus: int | None) -> RayConnection:
    """Use this process's Ray, join the cluster at ``address`` (``auto`` or HOST:PORT), or start a local one."""
    global _started_here
    require_ray()
    import ray

    if ray.is_initialized():  # a test session or notebook connected before the run, or the run's own preflight
        return RayConnection(_gcs_address(), owned=_started_here)
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if address is None:  # errors only: a local Ray's notes (its token set-up above all) are not the user's business
        ray.init(num_cpus=num_cpus or os.cpu_count(), **{**quiet, "logging_level": logging.ERROR})
        _started_here = True
        return RayConnection(_gcs_address(), owned=True)
    target = resolve_address(address)
    probe(target, given=address)
    ray.init(address=target, **quiet)
    return RayConnection(target, owned=False)


def preflight(address: str | None, num_cpus: int | None, workers: int, cpus_per_worker: float) -> None:
    """Connect (or start a local Ray) and check the cluster can hold the workers, before the run folder exists;
    on a ConfigError a Ray started here is shut down again."""
    connection = connect(address, num_cpus)
    try:
        check_capacity(workers, cpus_per_worker)
    except ConfigError:
        connection.close()
        raise


def resolve_address(address: str) -> str:
    """HOST:PORT for ``auto`` (``RAY_ADDRESS``, else the address file of the newest head started on this machine);
    any other address as given."""
    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    recorded = _address_file()
    if recorded is None or not recorded.is_file():
        raise ConfigError("--ray-address auto found no Ray cluster (RAY_ADDRESS is unset and no head was started on "
                          "this machine); start one with 'ray start --head', give its HOST:PORT, or leave out "
                          "--ray-address to run a local Ray")
    return recorded.read_text().strip()


def probe(address: str, given: str) -> None:
    """ConfigError within PROBE_SECONDS if nothing accepts connections at ``address`` (ray.init would wait for
    minutes on a head that was stopped)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be auto or HOST:PORT (for example 10.0.0.5:6379), got {given!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_SECONDS):
            pass
    except OSError as error:
        source = "" if given != "auto" else " (from RAY_ADDRESS or the address file of a head that may have stopped)"
        raise ConfigError(f"no Ray cluster answers at {address}{source}: {error.strerror or error}; start one with "
                          "'ray start --head', or leave out --ray-address to run a local Ray") from error


def free_cpus() -> float:
    """CPUs of the cluster not held by any actor or task now."""
    import ray

    return float(ray.available_resources().get("CPU", 0.0))


def check_capacity(workers: int, cpus_per_worker: float) -> None:
    """ConfigError if the cluster has too few free CPUs for the rollout workers (their actors would never start).
    CPUs still held by actors that are being stopped (an earlier run's) are waited for, up to CAPACITY_PATIENCE s."""
    needed, deadline = workers * cpus_per_worker, time.monotonic() + CAPACITY_PATIENCE
    while (free := free_cpus()) + 1e-9 < needed and time.monotonic() < deadline:
        time.sleep(0.2)
    if needed > free + 1e-9:
        raise ConfigError(f"the Ray cluster has {free:g} free CPUs, but {workers} rollout workers need {needed:g} "
                          f"({cpus_per_worker:g} each); use fewer --workers, a smaller ray.worker_cpus, or a bigger "
                          "cluster")


def _gcs_address() -> str:
    import ray

    return str(ray.get_runtime_context().gcs_address)


def _address_file() -> Path | None:
    """Where ``ray start --head`` records the newest head's address on this machine (Ray's temp root)."""
    root = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    root = root or ("/tmp" if os.name == "posix" else tempfile.gettempdir())  # as Ray picks it
    return Path(root) / "ray" / "ray_current_cluster"

