"""Starting or joining Ray for a run, and the checks that keep a bad address or a full cluster from hanging it.

Without an address a run starts a local Ray of its own (``address="local"``: a ``ray start`` head, a stale
address file or ``RAY_ADDRESS`` on the machine are ignored), in a session folder of its own that is removed
at the end, with a token of its own (nothing is written to ``~/.ray``), the dashboard off, Ray's log lines at
errors, as many CPUs as the machine has unless ``ray.num_cpus`` says otherwise. A small watchdog process
kills what is left of it and removes its folder within about a second if the run is killed (Ray's own agents
would otherwise wait 60 s for the dead head). With ``auto`` or ``HOST:PORT`` the run joins that cluster and
leaves it running, after checking within seconds that a Ray head answers there and accepts this machine's
token. A process that is already connected (a test session, a notebook) is used as it is. In every case
Ray's messages stay off stdout (the stream of evaluations and results).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from champion.agents.config import ConfigError
from champion.errors import first_line

INSTALL_HINT = "pip install -e '.[ray]' (in champion's folder)"
"""Said as for the other extras (``champion.envs.factory.describe_env``): the README installs champion that way."""
CAPACITY_PATIENCE = 5.0
"""How long a run waits for CPUs that stopping actors still hold before it says the cluster is full."""
PROBE_SECONDS = 3.0
"""How long the head's address may take to accept a connection before the run gives up on it."""
HEAD_CHECK_SECONDS = 5.0
"""How long a Ray head may take to answer one request (which also checks the token) before the run gives up."""
TOKEN_HINT = "on the head, 'ray get-auth-token' prints it"
"""Where the user finds a cluster's token."""


def require_ray() -> None:
    """ConfigError (one line, before anything is created) if Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"engine=ray needs Ray, which is not installed: {INSTALL_HINT}")


@dataclass
class _LocalRay:
    """What a run's own Ray leaves to undo at its end: its session folder, the watchdog, and the environment
    variables changed for it (with their values before)."""

    folder: str
    watchdog: subprocess.Popen | None
    environment: dict[str, str | None] = field(default_factory=dict)


_local: _LocalRay | None = None
"""The local Ray this process started, if it is connected to one (it shuts it down when the run ends)."""
_ray_printer: Callable[..., None] | None = None
"""Ray's own printer of the messages it pushes to the driver, while champion's replaces it."""


@dataclass
class RayConnection:
    """This process's connection to Ray; ``close`` shuts down a Ray this process started and leaves a cluster
    it joined, or one it was already connected to, running."""

    address: str
    owned: bool
    joined: bool = False
    """Whether champion joined this cluster for the run (then ``close`` disconnects from it, leaving it running)."""

    def close(self) -> None:
        """Shut down the local Ray this run started (its processes, its watchdog, its session folder), or leave
        the cluster it joined: a later run in this process starts from scratch (its own Ray, unless it names
        a cluster), and RAY_AUTH_MODE and Ray's printer are as they were."""
        if self.owned:
            _stop_local()
        elif self.joined:
            _leave_cluster()


def connect(address: str | None, num_cpus: int | None) -> RayConnection:
    """Use this process's Ray, join the cluster at ``address`` (``auto`` or HOST:PORT), or start a local one."""
    global _joined
    require_ray()
    import ray

    if ray.is_initialized():  # a test session or notebook connected before the run, or the run's own preflight
        return RayConnection(_gcs_address(), owned=_local is not None, joined=_joined is not None)
    if address is None:
        _start_local(num_cpus)
        return RayConnection(_gcs_address(), owned=True)
    head = check_cluster(address)
    _joined = {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE")}
    if head.checks_tokens and os.environ.get("RAY_AUTH_MODE") is None:  # a head found by auto: as ray.init does
        _use_token_mode()
    try:
        ray.init(address=head.address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as error:  # the checks passed, so this is rare: still one line
        _leave_cluster()
        raise ConfigError(f"could not join the Ray cluster at {head.address}: {first_line(error)}") from None
    _keep_ray_messages_off_stdout()
    return RayConnection(head.address, owned=False, joined=True)


_joined: dict[str, str | None] | None = None
"""While this process is connected to a cluster champion joined: the variables to put back when it leaves."""


def _leave_cluster() -> None:
    """Disconnect from the cluster champion joined (it keeps running) and put back what joining changed."""
    global _joined
    saved, _joined = _joined, None
    _disconnect(saved or {})


def _disconnect(environment: dict[str, str | None]) -> None:
    """Leave Ray (``ray.shutdown``), put Ray's printer and ``environment``'s variables back, and have Ray read
    its settings again."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _restore_ray_messages()
    for name, value in environment.items():
        _restore(name, value)
    _reload_ray_settings()


def preflight(address: str | None, num_cpus: int | None, workers: int, cpus_per_worker: float) -> None:
    """Connect (or start a local Ray) and check the cluster can hold the workers, before the run folder exists;
    on a ConfigError a Ray started here is shut down again."""
    connection = connect(address, num_cpus)
    try:
        check_capacity(workers, cpus_per_worker)
    except ConfigError:
        connection.close()
        raise


def _start_local(num_cpus: int | None) -> None:
    """Start this run's own Ray: ``address="local"`` (never another cluster on the machine), a session folder
    of its own, a token of its own unless the user has one, the watchdog first (a kill during the start is
    cleaned up too)."""
    global _local
    import ray

    if _local is not None:  # the Ray it started before was shut down by someone else: finish the clean-up
        _stop_local()
    folder = tempfile.mkdtemp(prefix="champion-ray-", dir=_short_temp_root())
    watchdog = _start_watchdog(folder)
    # Ray sets RAY_AUTH_MODE=token in this process as it starts; both variables are put back at the end
    local = _LocalRay(folder, watchdog, {name: os.environ.get(name) for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")})
    if os.environ.get("RAY_AUTH_MODE") is None and not _token_available():
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)  # else Ray writes a new one into ~/.ray/auth_token
        _reload_ray_settings()
    _local = local
    try:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False, _temp_dir=folder)
    except Exception as error:
        _stop_local()
        raise ConfigError(f"could not start a local Ray for the run: {first_line(error)}") from None
    _keep_ray_messages_off_stdout()


def _stop_local() -> None:
    """Shut down the run's own Ray, stop its watchdog, remove its session folder, put the environment back."""
    global _local
    local, _local = _local, None
    _disconnect(local.environment if local is not None else {})
    if local is None:
        return
    if local.watchdog is not None and local.watchdog.poll() is None:
        local.watchdog.terminate()
        local.watchdog.wait(timeout=10)
    shutil.rmtree(local.folder, ignore_errors=True)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _short_temp_root() -> str:
    """The temporary folder, or /tmp when its path is too long for the sockets Ray puts in a session folder
    (a socket path may have at most 107 bytes, and Ray adds about 60)."""
    root = tempfile.gettempdir()
    return root if len(root) <= 40 or not os.path.isdir("/tmp") else "/tmp"


def _token_available() -> bool:
    """Whether Ray would find a token on this machine (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH's file,
    ~/.ray/auth_token), as Ray looks for one."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).is_file() if path else (Path.home() / ".ray" / "auth_token").is_file()


def _use_token_mode() -> None:
    """Send this machine's token from now on, as ``ray.init`` does for a head it found itself (``auto``): it sets
    RAY_AUTH_MODE=token in this process and has Ray read its settings again."""
    os.environ["RAY_AUTH_MODE"] = "token"
    _reload_ray_settings()


def _reload_ray_settings() -> None:
    """Make Ray read RAY_AUTH_MODE and the token again (it keeps what it read first for the life of the process),
    as Ray does when it turns token mode on itself; nothing on a Ray without these functions."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _child_environment(**settings: str) -> dict[str, str]:
    """This process's environment for a child that imports champion and Ray as this process does (its path)."""
    path = os.pathsep.join(filter(None, [*sys.path, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **settings}


def _start_watchdog(folder: str) -> subprocess.Popen | None:
    """A small process (no Ray, no TensorFlow) that waits for this one to end, then kills every process of the
    run's Ray still alive and removes its folder; stopped by ``_stop_local`` on a normal end. In a session of
    its own, so that a Ctrl-C at the terminal does not stop it first."""
    command = [sys.executable, "-c", "from champion.runners.ray.cluster import _watch; _watch()", str(os.getpid()),
               folder]
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, env=_child_environment())
    except OSError:  # no watchdog: Ray's own clean-up (about a minute) is what is left
        return None


def _watch() -> None:
    """The watchdog (``sys.argv``: the driver's pid, the run's Ray folder). While the driver lives it notes the
    run's Ray processes every half second (Ray's agents outlive a killed driver by 60 s, and once the raylet
    is gone nothing links them to the run); then it SIGKILLs those still alive (the same pid and start time)
    and any new one, until none is left for half a second, and removes the folder. Linux only (/proc);
    elsewhere it only removes the folder."""
    driver, folder = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    known: dict[int, int] = {}
    noted = 0.0
    while os.getppid() == driver:
        if time.monotonic() - noted >= 0.5:
            known.update(ray_processes(folder, process_table()))
            noted = time.monotonic()
        time.sleep(0.1)
    quiet_since, deadline = time.monotonic(), time.monotonic() + 30
    while time.monotonic() - quiet_since < 0.5 and time.monotonic() < deadline:
        table = process_table()
        alive = {pid for pid, started in known.items() if pid in table and table[pid][1] == started}
        alive = (alive | set(ray_processes(folder, table))) - {os.getpid()}
        for pid in alive:
            quiet_since = time.monotonic()
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
    shutil.rmtree(folder, ignore_errors=True)


def process_table() -> dict[int, tuple[int, int]]:
    """Every process (Linux: from /proc; empty elsewhere): pid -> (parent's pid, start time in clock ticks)."""
    table = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_bytes()
            fields = stat[stat.rindex(b")") + 2:].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[19]))
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    return table


def ray_processes(folder: str, table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """The processes of the Ray whose session folder is ``folder`` (pid -> start time): those whose command line
    names the folder (the GCS server, the raylet, Ray's monitors), and their descendants (agents, workers)."""
    name, found = folder.encode(), {}
    for pid in table:
        try:
            if name in Path(f"/proc/{pid}/cmdline").read_bytes():
                found[pid] = table[pid][1]
        except OSError:
            continue
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    waiting = list(found)
    while waiting:
        for child in children.get(waiting.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                waiting.append(child)
    return found


def _keep_ray_messages_off_stdout() -> None:
    """Ray prints the errors it pushes to the driver ("(raylet) A worker died...", in colour) on stdout even
    with ``log_to_driver=False``; champion says itself what happened to its workers, on stderr. Ray's printer
    is replaced for the connection's life: the first line of each message goes to Ray's logger (shown at
    warnings, that is on a cluster the run joined; a local Ray's log level is errors)."""
    global _ray_printer
    from ray._private import worker

    if _ray_printer is None and callable(getattr(worker, "print_to_stdstream", None)):
        _ray_printer = worker.print_to_stdstream
        worker.print_to_stdstream = _ray_message_to_log


def _restore_ray_messages() -> None:
    global _ray_printer
    from ray._private import worker

    if _ray_printer is not None:
        worker.print_to_stdstream, _ray_printer = _ray_printer, None


def _ray_message_to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", str(line)).strip() for line in data.get("lines", [])]
    text = next((line for line in lines if line), "")
    if text:
        logging.getLogger("ray").warning("Ray (%s): %s", data.get("pid", "?"), text[:300])


@dataclass(frozen=True)
class Head:
    """A Ray head that answered: its address (HOST:PORT), and whether it checks tokens."""

    address: str
    checks_tokens: bool


def check_cluster(address: str) -> Head:
    """The head of the cluster ``address`` (``auto`` or HOST:PORT) names, once something accepts connections there
    and a Ray head answers as this machine would talk to it; a ConfigError of one line otherwise, within
    PROBE_SECONDS + HEAD_CHECK_SECONDS (before TensorFlow is imported: ``champion.api`` calls it first)."""
    target = resolve_address(address)
    asked_as = (target, address, os.environ.get("RAY_AUTH_MODE"), os.environ.get("RAY_AUTH_TOKEN"))
    if asked_as in _heads_checked and time.monotonic() - _heads_checked[asked_as][1] < 60:
        return _heads_checked[asked_as][0]  # checked a moment ago (``champion.api``), before the run connects
    probe(target, given=address)
    if target.startswith("ray://"):  # Ray Client's own protocol: ray.init speaks it, a GCS request would not
        return Head(target, os.environ.get("RAY_AUTH_MODE", "").lower() == "token")
    head = Head(target, check_head(target, given=address))
    _heads_checked[asked_as] = (head, time.monotonic())
    return head


_heads_checked: dict[tuple[str | None, ...], tuple[Head, float]] = {}
"""The heads ``check_cluster`` found answering lately (with the settings it asked with), and when."""


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
        raise ConfigError(f"no Ray cluster answers at {address}{_source(given)}: {error.strerror or error}; start "
                          "one with 'ray start --head', or leave out --ray-address to run a local Ray") from error


def check_head(address: str, given: str) -> bool:
    """Whether the Ray head at ``address`` checks tokens; ConfigError (one line, within HEAD_CHECK_SECONDS) unless it
    answers and ``ray.init`` would talk to it as it must: with the head's token if it checks them, else without
    one (a driver that sends a token to a head that does not check them has its workers refused). Ray itself
    prints 30 s of InvalidAuthToken lines and a traceback, or loses the workers, or waits longer where something
    else listens. Asked from child processes, whose stderr takes Ray's C++ warnings."""
    deadline = time.monotonic() + HEAD_CHECK_SECONDS
    token_here = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    answer = _ask_head_from_child(address, given, {"RAY_AUTH_MODE": "disabled"}, deadline)
    if answer == "ok" and token_here:
        raise ConfigError(f"the Ray cluster at {address} does not check tokens, but RAY_AUTH_MODE=token here: unset "
                          "RAY_AUTH_MODE (or start the head with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN set)")
    if answer == "ok":
        return False
    if not token_here and not _ray_takes_local_token(given):
        if _token_available():
            raise ConfigError(f"the Ray cluster at {address} requires a token: set RAY_AUTH_MODE=token (Ray sends "
                              f"{_token_source()} only then; it must be the head's token: {TOKEN_HINT})")
        raise ConfigError(f"the Ray cluster at {address} requires a token: set RAY_AUTH_MODE=token and "
                          f"RAY_AUTH_TOKEN=<the head's token> ({TOKEN_HINT})")
    if _ask_head_from_child(address, given, {"RAY_AUTH_MODE": "token"}, deadline) != "ok":
        raise ConfigError(f"the Ray cluster at {address} refused this machine's token ({_token_source()}): set "
                          f"RAY_AUTH_TOKEN to the head's token ({TOKEN_HINT})")
    return True


def _ask_head_from_child(address: str, given: str, settings: dict[str, str], deadline: float) -> str:
    """``_ask_head``'s answer (ok, or token: the head refused the token or its absence) from a child process with
    ``settings`` in its environment; ConfigError if it finds no Ray head there by ``deadline``."""
    command = [sys.executable, "-c", "from champion.runners.ray.cluster import _ask_head; _ask_head()", address]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(deadline - time.monotonic(), 0.5),
                              env=_child_environment(**settings), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"no Ray head answered at {address}{_source(given)} within {HEAD_CHECK_SECONDS:g} s "
                          "(something else may listen there); give the address 'ray start --head' printed, or "
                          "leave out --ray-address to run a local Ray") from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ConfigError(f"could not ask the Ray head at {address}: "
                          f"{first_line(RuntimeError(done.stderr.strip()[-300:]))}") from None
    if answer["answer"] == "error":
        raise ConfigError(f"no Ray head answers at {address}{_source(given)}: {answer['message']}; give the address "
                          "'ray start --head' printed, or leave out --ray-address to run a local Ray")
    return str(answer["answer"])


def _ask_head() -> None:
    """In the child process of ``check_head``: one request to the head at ``sys.argv[1]``, the answer as one JSON
    line on stdout (ok, token: the head refused the token or its absence, error)."""
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=sys.argv[1]).internal_kv_get(b"session_name", None, timeout=HEAD_CHECK_SECONDS - 1)
        answer = {"answer": "ok"}
    except AuthenticationError as error:
        answer = {"answer": "token", "message": first_line(error)}
    except Exception as error:
        answer = {"answer": "error", "message": first_line(error)}
    print(json.dumps(answer), flush=True)


def _ray_takes_local_token(given: str) -> bool:
    """Whether ``ray.init`` sends this machine's token unasked: for a head it found itself (``auto`` without
    RAY_ADDRESS), when RAY_AUTH_MODE is unset and a token is there. Never for an address given: Ray keeps a
    local token from an address someone typed, and so does champion."""
    return (given == "auto" and not os.environ.get("RAY_ADDRESS") and os.environ.get("RAY_AUTH_MODE") is None
            and _token_available())


def _token_source() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    return "the file RAY_AUTH_TOKEN_PATH names" if os.environ.get("RAY_AUTH_TOKEN_PATH") else "~/.ray/auth_token"


def _source(given: str) -> str:
    return "" if given != "auto" else " (from RAY_ADDRESS or the address file of a head that may have stopped)"


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
