"""Starting or joining Ray for a run, and the checks that keep a bad address or a full cluster from hanging it.

Without an address a run starts a local Ray of its own (``address="local"``: a ``ray start`` head, a stale
address file or ``RAY_ADDRESS`` on the machine are ignored), in a session folder of its own (RAY_TMPDIR) that is
removed at the end (Ray's logs are first copied into the run folder when the run fails), with a token of its own (nothing is written to ``~/.ray``), the dashboard off, Ray's log lines at
errors, as many CPUs as the machine has unless ``ray.num_cpus`` says otherwise. A small watchdog process
kills what is left of it and removes its folder within seconds if the run is killed (Ray's own agents
would otherwise wait 60 s for the dead head), and sweeps it at a normal end. With ``auto`` or ``HOST:PORT`` the run joins that cluster and
leaves it running, after checking within seconds that a Ray head answers there and accepts this machine's
token. A process that is already connected (a test session, a notebook) is used as it is. In every case
Ray's messages stay off stdout (the stream of evaluations and results).

Three things need Ray's internals (``champion.agents.compile.compat``, on a tested Ray only): Ray's printer of the
messages it pushes, reading the token settings again in one process, and asking a head without joining it. On
another Ray those lines may reach stdout, a process keeps the token settings of its first connection, and an
address is checked only for accepting connections.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from champion.agents.compile import compat
from champion.agents.config import ConfigError
from champion.errors import first_line
from champion.runners.store.atomic_files import warn

INSTALL_HINT = "pip install -e '.[ray]' (in champion's folder)"
"""Said as for the other extras (``champion.envs.factory.describe_env``): the README installs champion that way."""
CAPACITY_PATIENCE = 5.0
"""How long a run waits for CPUs that stopping actors still hold before it says the cluster is full."""
PROBE_SECONDS = 3.0
"""How long the head's address may take to accept a connection before the run gives up on it."""
HEAD_CHECK_SECONDS = 2.0
"""How long a Ray head may take to answer the check's requests (which also check the token), counted from when the
checking process is ready (Python started, Ray imported), before the run gives up."""
CHECK_START_SECONDS = 30.0
"""How long the checking process may take to start and import Ray (seconds on a busy machine)."""
LOG_TAIL_BYTES = 256 * 1024
"""How much of each Ray log file of a failed run is kept in the run folder (its end)."""
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
    logs_on_failure: Path | None = None
    """Where Ray's logs of a local Ray go if the run fails (its session folder is removed at the end)."""

    def close(self) -> None:
        """Shut down the local Ray this run started (its processes, its watchdog, its session folder: its logs are
        first copied to ``logs_on_failure`` if the run is failing), or leave the cluster it joined: a later run in
        this process starts from scratch (its own Ray, unless it names a cluster), and RAY_AUTH_MODE and Ray's
        printer are as they were."""
        if self.owned:
            _stop_local(self.logs_on_failure if _run_failing() else None)
        elif self.joined:
            _leave_cluster()


def _run_failing() -> bool:
    """Whether ``close`` runs while an error unwinds the run (not a stop the user asked for: Ctrl-C, SIGTERM)."""
    from champion.runners.run_state import CrownInterrupted, TrainingInterrupted

    error = sys.exception()
    return isinstance(error, Exception) and not isinstance(error, (TrainingInterrupted, CrownInterrupted))


def connect(address: str | None, num_cpus: int | None) -> RayConnection:
    """Use this process's Ray, join the cluster at ``address`` (``auto`` or HOST:PORT), or start a local one."""
    global _joined
    require_ray()
    import ray

    if ray.is_initialized():  # a test session or notebook connected before the run, or the run's own preflight
        current = _gcs_address()
        if address not in (None, "auto") and address.removeprefix("ray://") != current and _local is None \
                and _joined is None:
            warn(f"this process is already connected to Ray at {current}, so the run uses it, not {address} "
                 "(ray.shutdown() first to join another)")
        return RayConnection(current, owned=_local is not None, joined=_joined is not None)
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
    compat.reload_ray_auth_settings()


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
    """Start this run's own Ray: ``address="local"`` (never another cluster on the machine), its session folder
    in a folder of its own (RAY_TMPDIR, read by Ray as its temp root), a token of its own unless the user has one,
    the watchdog first (a kill during the start is cleaned up too)."""
    global _local
    import ray

    if _local is not None:  # the Ray it started before was shut down by someone else: finish the clean-up
        _stop_local()
    folder = tempfile.mkdtemp(prefix="champion-ray-", dir=_short_temp_root())
    watchdog = _start_watchdog(folder)
    # Ray sets RAY_AUTH_MODE=token in this process as it starts; the three variables are put back at the end
    _local = _LocalRay(folder, watchdog, {name: os.environ.get(name)
                                          for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_TMPDIR")})
    os.environ["RAY_TMPDIR"] = folder  # the workers inherit it: their temporary files are the run's too
    if not _token_available():
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)  # else Ray writes a new one into ~/.ray/auth_token
        compat.reload_ray_auth_settings()
    try:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)
    except BaseException as error:  # a Ctrl-C during the start too: nothing of it is left
        _stop_local()
        if not isinstance(error, Exception):
            raise
        raise ConfigError(f"could not start a local Ray for the run: {first_line(error)}") from None
    if watchdog is not None and watchdog.poll() is not None:
        warn("the watchdog of the run's Ray ended at its start: if the run is killed, Ray's agents may outlive it by "
             "about a minute")
    _keep_ray_messages_off_stdout()


def _stop_local(keep_logs_in: Path | None = None) -> None:
    """Shut down the run's own Ray, have the watchdog sweep what is left of it and remove its session folder (after
    copying Ray's logs to ``keep_logs_in``, if given), put the environment back."""
    global _local
    local, _local = _local, None
    _disconnect(local.environment if local is not None else {})
    if local is None:
        return
    if keep_logs_in is not None:
        _keep_logs(Path(local.folder), keep_logs_in)
    if local.watchdog is not None and local.watchdog.poll() is None:
        local.watchdog.stdin.close()  # the watchdog's signal that the run ended: it sweeps, then exits
        try:
            local.watchdog.wait(timeout=10)
        except subprocess.TimeoutExpired:
            local.watchdog.kill()
    shutil.rmtree(local.folder, ignore_errors=True)


def _keep_logs(folder: Path, destination: Path) -> None:
    """Copy the end (LOG_TAIL_BYTES) of each of Ray's log files of the session in ``folder`` to ``destination``
    and say where on stderr: a failed run's worker errors are there."""
    logs = sorted(folder.glob("ray/session_[0-9]*/logs/*.*"))
    if not logs:
        return
    try:
        destination.mkdir(parents=True, exist_ok=True)
        for log in logs:
            with open(log, "rb") as source:
                source.seek(max(log.stat().st_size - LOG_TAIL_BYTES, 0))
                (destination / log.name).write_bytes(source.read())
    except OSError as error:
        warn(f"could not keep Ray's logs of the failed run in {destination}: {first_line(error)}")
        return
    warn(f"Ray's logs of the failed run (the last {LOG_TAIL_BYTES // 1024} KB of each file) are kept in {destination}")


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _short_temp_root() -> str:
    """The temporary folder, or /tmp when its path is too long for the sockets Ray puts in a session folder (a
    socket's path may have at most 107 bytes; ``SOCKET_IN_FOLDER`` is the longest Ray makes in the run's folder)."""
    root = tempfile.gettempdir()
    return root if len(root) + len(SOCKET_IN_FOLDER) <= 107 or not os.path.isdir("/tmp") else "/tmp"


SOCKET_IN_FOLDER = "/champion-ray-12345678/ray/session_2026-12-07_10-53-19_639720_4194304/sockets/plasma_store"
"""The longest path Ray gives a socket in the run's Ray folder, from the temporary folder on (Ray adds ``ray`` to
RAY_TMPDIR, then the session's folder, named by the date and the driver's pid)."""


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
    compat.reload_ray_auth_settings()


def _child_environment(**settings: str) -> dict[str, str]:
    """This process's environment for a child that imports champion and Ray as this process does (its path)."""
    path = os.pathsep.join(filter(None, [*sys.path, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **settings}


def _start_watchdog(folder: str) -> subprocess.Popen | None:
    """A small process (no Ray, no TensorFlow) that notes the run's Ray processes while this one lives, and sweeps
    them (and removes the folder) when this one ends: killed, or closing the watchdog's stdin at a normal end
    (``_stop_local``). In a session of its own, so that a Ctrl-C at the terminal does not stop it first."""
    command = [sys.executable, "-c", "from champion.runners.ray.cluster import _watch; _watch()", str(os.getpid()),
               folder]
    try:
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, env=_child_environment())
    except OSError:  # no watchdog: Ray's own clean-up (about a minute) is what is left
        return None


def _watch() -> None:
    """The watchdog (``sys.argv``: the driver's pid, the run's Ray folder). While the driver lives it notes the
    run's Ray processes every half second (Ray's agents outlive a killed driver by 60 s, and once the driver is
    gone nothing links them to the run). When the driver closes the pipe or dies, it SIGKILLs those still alive
    (the same pid and start time) and any of their new children, until none is left for a moment, and removes
    the folder. Linux only (/proc); elsewhere it only removes the folder."""
    driver, folder = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    known: dict[int, int] = {}
    while True:
        known.update(ray_processes(folder, driver, process_table(), known))
        if _driver_ended(driver, wait=0.5):
            break
    started = process_table().get(os.getpid(), (0, 0))[1]
    quiet_since, deadline = time.monotonic(), time.monotonic() + 30
    while time.monotonic() - quiet_since < 0.2 and time.monotonic() < deadline:
        table = process_table()
        alive = set(ray_processes(folder, driver, table, {**known, **orphans(folder, table, started)}))
        for pid in alive:
            quiet_since = time.monotonic()
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        known.update({pid: table[pid][1] for pid in alive if pid in table})
        time.sleep(0.05)
    shutil.rmtree(folder, ignore_errors=True)


def _driver_ended(driver: int, wait: float) -> bool:
    """Whether the driver closed the watchdog's stdin (a normal end) or died (its end of the pipe closes with it, and
    the watchdog gets another parent), waiting up to ``wait`` seconds for either."""
    readable, _, _ = select.select([sys.stdin], [], [], wait)
    if readable and not os.read(sys.stdin.fileno(), 1024):
        return True
    return os.getppid() != driver


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


def ray_processes(folder: str, driver: int, table: dict[int, tuple[int, int]],
                  known: dict[int, int] | None = None) -> dict[int, int]:
    """The run's Ray processes alive in ``table`` (pid -> start time): the driver's descendants whose command line
    names the run's Ray folder (the GCS server, the raylet, Ray's monitors), the ``known`` ones still alive (the
    same start time: orphans of a dead driver), and all their descendants (agents, workers). Only processes under
    the driver: a user's ``tail -f`` of a log in the folder is not the run's."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    roots = {pid for pid in _descendants([driver], children) if _names(pid, folder.encode())}
    roots |= {pid for pid, started in (known or {}).items() if pid in table and table[pid][1] == started}
    roots -= {os.getpid()}  # the watchdog names the folder too
    return {pid: table[pid][1] for pid in roots | _descendants(roots, children)}


def orphans(folder: str, table: dict[int, tuple[int, int]], since: int) -> dict[int, int]:
    """Processes that name the run's Ray folder, started since the watchdog (``since``, in clock ticks) and have lost
    their parent (now init's, or the reaper that adopted the watchdog too): Ray's agents of a driver killed before
    the watchdog noted them. A user's ``tail -f`` of a log there still has its shell."""
    reapers = {1, os.getppid()}
    return {pid: begun for pid, (parent, begun) in table.items()
            if parent in reapers and begun >= since and pid != os.getpid() and _names(pid, folder.encode())}


def _descendants(pids: Any, children: dict[int, list[int]]) -> set[int]:
    found, waiting = set(), list(pids)
    while waiting:
        for child in children.get(waiting.pop(), []):
            if child not in found:
                found.add(child)
                waiting.append(child)
    return found


def _names(pid: int, folder: bytes) -> bool:
    try:
        return folder in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _keep_ray_messages_off_stdout() -> None:
    """Ray prints the errors it pushes to the driver ("(raylet) A worker died...", in colour) on stdout even
    with ``log_to_driver=False``; champion says itself what happened to its workers, on stderr. Ray's printer
    is replaced for the connection's life: the first line of each message goes to stderr too (Ray's reason, such
    as the OOM killer's, beside champion's line)."""
    global _ray_printer
    if _ray_printer is None:
        _ray_printer = compat.replace_ray_printer(_ray_message_to_log)


def _restore_ray_messages() -> None:
    global _ray_printer
    if _ray_printer is not None:
        compat.replace_ray_printer(_ray_printer)
        _ray_printer = None


def _ray_message_to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
    """One line on stderr for a message Ray pushed (a worker's death, the OOM killer): its first line, without
    Ray's colour codes."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", str(line)).strip() for line in data.get("lines", [])]
    text = next((line for line in lines if line), "")
    if text:
        warn(f"Ray (pid {data.get('pid', '?')}): {text[:300]}")


@dataclass(frozen=True)
class Head:
    """A Ray head that answered: its address (HOST:PORT), and whether it checks tokens."""

    address: str
    checks_tokens: bool


def check_cluster(address: str) -> Head:
    """The head of the cluster ``address`` (``auto`` or HOST:PORT) names, once something accepts connections there
    and a Ray head answers as this machine would talk to it; a ConfigError of one line otherwise, within
    PROBE_SECONDS + HEAD_CHECK_SECONDS once the checking process has started (before TensorFlow is imported:
    ``champion.api`` calls it first). On an untested Ray only the address is probed (``compat.ask_ray_head``)."""
    target = resolve_address(address)
    asked_as = (target, address, os.environ.get("RAY_AUTH_MODE"), os.environ.get("RAY_AUTH_TOKEN"))
    probe(target, given=address)
    if asked_as in _heads_checked and time.monotonic() - _heads_checked[asked_as][1] < 60:
        return _heads_checked[asked_as][0]  # checked a moment ago (``champion.api``), before the run connects
    if target.startswith("ray://") or not compat.ray_available():  # Ray Client's own protocol (a GCS request would
        # not speak it), or a Ray whose GCS client champion was not tested with: ray.init checks the rest
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
    """Whether the Ray head at ``address`` checks tokens; ConfigError (one line, within HEAD_CHECK_SECONDS of the
    checking process's start) unless it answers and ``ray.init`` would talk to it as it must: with the head's
    token if it checks them, else without one (a driver that sends a token to a head that does not check them has
    its workers refused). Ray itself prints 30 s of InvalidAuthToken lines and a traceback, or loses the workers,
    or waits longer where something else listens."""
    token_here = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    token_next = token_here or _ray_takes_local_token(given)
    answers = _ask_head_from_child(address, given, ["disabled", "token"] if token_next else ["disabled"])
    if answers[0] == "ok" and token_here:
        raise ConfigError(f"the Ray cluster at {address} does not check tokens, but RAY_AUTH_MODE=token here: unset "
                          "RAY_AUTH_MODE (or start the head with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN set)")
    if answers[0] == "ok":
        return False
    if not token_next:
        if _token_available():
            raise ConfigError(f"the Ray cluster at {address} requires a token: set RAY_AUTH_MODE=token (Ray sends "
                              f"{_token_source()} only then; it must be the head's token: {TOKEN_HINT})")
        raise ConfigError(f"the Ray cluster at {address} requires a token: set RAY_AUTH_MODE=token and "
                          f"RAY_AUTH_TOKEN=<the head's token> ({TOKEN_HINT})")
    if answers[1] != "ok":
        raise ConfigError(f"the Ray cluster at {address} refused this machine's token ({_token_source()}): set "
                          f"RAY_AUTH_TOKEN to the head's token ({TOKEN_HINT})")
    return True


def _ask_head_from_child(address: str, given: str, modes: list[str]) -> list[str]:
    """The head's answers (ok, or token: it refused the token or its absence) to a request with each RAY_AUTH_MODE
    in ``modes`` in turn (until one is not refused), asked from one child process (whose stderr takes Ray's C++
    warnings); ConfigError if no Ray head answers there within HEAD_CHECK_SECONDS of the child's "ready"."""
    command = [sys.executable, "-c", "from champion.runners.ray.cluster import _ask_head; _ask_head()", address,
               ",".join(modes)]
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL, text=True,
                                 env=_child_environment())
        try:
            answers = _read_answers(child, len(modes), address, given)
        finally:
            child.kill()
            child.wait()
        if answers is None:  # the child ended without an answer: its last error line says why
            errors.seek(0)
            said = [line.strip() for line in errors.read().splitlines() if line.strip()]
            raise ConfigError(f"could not ask the Ray head at {address}: {said[-1][:300] if said else 'no answer'}")
    if answers[-1]["answer"] == "error":
        raise ConfigError(f"no Ray head answers at {address}{_source(given)}: {answers[-1]['message']}; give the "
                          "address 'ray start --head' printed, or leave out --ray-address to run a local Ray")
    return [str(answer["answer"]) for answer in answers]


def _read_answers(child: subprocess.Popen, wanted: int, address: str, given: str) -> list[dict[str, str]] | None:
    """The child's JSON answers, read as they come: the first within CHECK_START_SECONDS (its start and Ray's
    import), the rest within HEAD_CHECK_SECONDS of its "ready" line. None if it ends first."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [*map(lines.put, child.stdout), lines.put(None)], daemon=True).start()
    deadline, ready, answers = time.monotonic() + CHECK_START_SECONDS, False, []
    while len(answers) < wanted and (not answers or answers[-1]["answer"] == "token"):
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            if not ready:
                raise ConfigError(f"could not ask the Ray head at {address}: the check did not start within "
                                  f"{CHECK_START_SECONDS:g} s (is the machine very busy?)") from None
            raise ConfigError(f"no Ray head answered at {address}{_source(given)} within {HEAD_CHECK_SECONDS:g} s "
                              "(something else may listen there); give the address 'ray start --head' printed, or "
                              "leave out --ray-address to run a local Ray") from None
        if line is None:
            return None
        try:
            message = json.loads(line)
        except ValueError:  # something else the child printed
            continue
        if message.get("ready"):
            deadline, ready = time.monotonic() + HEAD_CHECK_SECONDS, True
        elif "answer" in message:
            answers.append(message)
    return answers


def _ask_head() -> None:
    """In the child process of ``check_head``: Ray imported, a "ready" line, then one request to the head at
    ``sys.argv[1]`` with each RAY_AUTH_MODE of ``sys.argv[2]`` (comma-separated) until one is not refused, each
    answer as one JSON line on stdout."""
    import ray  # noqa: F401  (imported before the clock starts: most of the child's time)

    deadline = time.monotonic() + HEAD_CHECK_SECONDS - 0.3
    print(json.dumps({"ready": True}), flush=True)
    for mode in sys.argv[2].split(","):
        os.environ["RAY_AUTH_MODE"] = mode
        compat.reload_ray_auth_settings()
        answer = compat.ask_ray_head(sys.argv[1], max(deadline - time.monotonic(), 0.1))
        print(json.dumps(answer), flush=True)
        if answer["answer"] != "token":
            break


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
