"""A run's own local Ray beside other Ray clusters on the machine, joining a head started as the README starts
one (with and without token authentication), what a SIGKILLed driver leaves behind, and stdout of a Ray run
whose worker was killed.

Every head these tests start has a temporary folder of its own (RAY_TMPDIR and --temp-dir), its own ports
and, where it checks tokens, its own token; it is stopped by killing its own process group, never with
`ray stop` (which stops every Ray on the machine, other tests' included). The champion commands run with a
HOME and a TMPDIR of their own, without the test session's Ray settings."""

import json
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
from pathlib import Path

import pytest

from crash_helpers import CHAMPION

ray = pytest.importorskip("ray")
import psutil  # noqa: E402  (Ray's own copy, on the path once Ray is imported)

from champion.runners.ray import cluster  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray-cluster")  # one xdist worker; beside test_ray.py's, whose session Ray
# these runs ignore (each run here starts its own Ray or joins a head of its own, in folders of its own)

HERE = Path(__file__).parent
RAY = str(Path(sys.executable).parent / "ray")
SMALL = ["--engine", "ray", "--workers", "2", "--total-steps", "1024", "--eval-every", "512", "--no-media",
         "--set", "ppo.epochs=2", "--set", "ppo.jit_compile=false", "--set", "ray.eval_workers=0",
         "--set", "crown.at_end=false"]
"""A tiny Ray run (crash_helpers.QUICK's settings, on Ray, no crown): about 10 s, most of it Ray's start."""
RAY_LINE = re.compile(r"\x1b\[|^\((raylet|\w+ pid=\d+)\)|^\[\d{4}-\d\d-\d\d |"
                      r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[A-Z]+ |A worker died|\[repeated \d+x")
"""What Ray's own lines look like: colour codes, "(raylet) ..." and "(RolloutWorker pid=1234) ..." (its messages
and workers' output), C++ log lines ("[2026-12-07 09:06:00,884 W ...]"), Python log lines."""


RAY_RETRIES_S = 25
"""Less than Ray's own 30 s of retries before it gives up on a head: a refusal sooner than this is champion's check."""


def free_port() -> int:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        return listening.getsockname()[1]


@pytest.fixture
def folder():
    """A short temporary folder (Ray's socket paths inside a session folder must stay under 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def clean_environment(folder: Path, **settings: str) -> dict[str, str]:
    """The environment of a champion command or a head: none of the test session's Ray settings, a HOME and a
    TMPDIR of its own (so ~/.ray and the run's Ray folder are the test's), the toy envs on the path."""
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH",
                                   "RAY_TMPDIR", "CHAMPION_TEST_FAULTS")}
    (folder / "home").mkdir(parents=True, exist_ok=True)
    environment.update(HOME=str(folder / "home"), TMPDIR=str(folder),
                       PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    environment.update(settings)
    return environment


def start_head(root: Path, token: str | None = None) -> dict:
    """`ray start --head` as the README shows it, in ``root`` (its RAY_TMPDIR; the address file is
    ``root/ray/ray_current_cluster``, where Ray looks for it with RAY_TMPDIR=root), on free ports, with
    RAY_AUTH_MODE=token and ``token`` when given (the README's cluster set-up)."""
    settings = {"RAY_TMPDIR": str(root)} | ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token} if token else {})
    port = free_port()
    started = subprocess.Popen([RAY, "start", "--head", f"--port={port}", f"--temp-dir={root / 'ray'}", "--num-cpus=2",
                              "--include-dashboard=false", "--disable-usage-stats",
                              f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                              f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}"],
                               env=clean_environment(root, **settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    head = {"address": f"127.0.0.1:{port}", "root": root, "processes": []}
    try:
        said, _ = started.communicate(timeout=120)
        assert started.returncode == 0, said[-3000:]
    except BaseException:  # a head that failed or hangs half-started: nothing of it stays
        started.kill()
        stop_head(head)
        raise
    head["processes"] = head_processes(root)
    return head


def head_processes(root: Path) -> list[psutil.Process]:
    """The processes of the head in ``root``: those whose command line names its folder, and their children."""
    found = []
    for process in psutil.process_iter():
        try:
            if any(str(root) in part for part in process.cmdline()):
                found += [process, *process.children(recursive=True)]
        except psutil.Error:
            continue
    return found


def processes_naming(path: Path) -> list[str]:
    """The command lines of the processes that name ``path`` (a Ray started in it names it in its processes')."""
    found = []
    for process in psutil.process_iter():
        try:
            command = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if str(path) in command and process.pid != os.getpid():
            found.append(command[:200])
    return found


def stop_head(head: dict) -> None:
    """Kill the head's own processes (its process group, and any of them that left it), never `ray stop`."""
    for process in head["processes"] + head_processes(head["root"]):
        try:
            os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.kill()
        except psutil.Error:
            pass


@pytest.fixture
def token_head(folder):
    """A head that checks tokens, as the README sets one up for a cluster."""
    token = secrets.token_hex(16)
    head = start_head(folder / "head", token) | {"token": token}
    yield head
    stop_head(head)


def train(folder: Path, name: str, options: list[str], settings: dict[str, str], env_id: str = "CartPole-v1",
          timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(CHAMPION + ["train", env_id, "--results-dir", str(folder / "results"), "--run-name", name]
                          + options, env=clean_environment(folder, **settings), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def summary(folder: Path, name: str) -> dict:
    [path] = (folder / "results").glob(f"*/ppo/{name}/summary.json")
    return json.loads(path.read_text())


def assert_only_champion_on_stdout(done: subprocess.CompletedProcess) -> None:
    strangers = [line for line in done.stdout.splitlines() if RAY_LINE.search(line)]
    assert not strangers, done.stdout


def assert_own_ray_gone(folder: Path) -> None:
    """The run's own Ray left nothing: its folder (in the run's TMPDIR) removed, none of its processes running once
    the command returned, no token written into ~/.ray."""
    assert len(str(folder)) + len(cluster.SOCKET_IN_FOLDER) <= 107  # the run's Ray folder was made there, not in /tmp
    assert list(folder.glob("champion-ray-*")) == []
    assert processes_naming(folder / "champion-ray-") == []
    assert not (folder / "home" / ".ray").exists()


def test_without_an_address_the_run_starts_its_own_ray_beside_a_running_head_and_RAY_ADDRESS(folder, token_head):
    """Ray's ray.init() would join the head (through its address file, or RAY_ADDRESS: both are set): the run's own
    Ray ignores them. A resume that names a cluster checks it first, as a new run does."""
    settings = {"RAY_TMPDIR": str(token_head["root"]),  # where Ray finds the head's address file
                "RAY_ADDRESS": token_head["address"]}
    done = train(folder, "own", SMALL + ["--set", "schedule_steps=4096"], settings)  # resumable to 2048 below
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert_only_champion_on_stdout(done)
    engine = summary(folder, "own")["engine"]
    assert engine["ray_started_for_run"] is True
    assert engine["ray_address"].rpartition(":")[2] != token_head["address"].rpartition(":")[2]
    assert_own_ray_gone(folder)
    [run] = (folder / "results").glob("*/ppo/own")
    for address, said in [(f"127.0.0.1:{free_port()}", "no Ray cluster answers at 127.0.0.1:"),
                          (token_head["address"], f"the Ray cluster at {token_head['address']} requires a token")]:
        done = subprocess.run(CHAMPION + ["train", "--resume", str(run), "--total-steps", "2048", "--ray-address",
                                          address], env=clean_environment(folder), capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 2 and said in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
            done.stderr[-3000:]
    assert summary(folder, "own")["env_steps"] == 1024  # not resumed


def test_beside_a_stale_address_file_with_a_worker_killed_only_champions_lines_reach_stdout(folder):
    """Ray's ray.init() would fail on the address file a crashed head left: the run's own Ray ignores it. One of its
    workers is killed: Ray pushes "(raylet) A worker died..." (in colour, on stdout); champion puts its first line
    on stderr, beside its own warning that it replaced the worker, and stdout holds only champion's lines."""
    stale = folder / "stale"
    (stale / "ray").mkdir(parents=True)
    (stale / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")  # a head that crashed
    faults = folder / "faults"
    faults.mkdir()
    child = subprocess.Popen(CHAMPION + ["train", "toy_envs:FaultyCartPole-v0", "--results-dir",
                                         str(folder / "results"), "--run-name", "worker-killed"]
                             + SMALL + ["--total-steps", "4096", "--eval-every", "2048"],
                             env=clean_environment(folder, CHAMPION_TEST_FAULTS=str(faults), RAY_TMPDIR=str(stale)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    (faults / "kill").write_text(str(child.pid))  # spares the driver; its workers start seconds later
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert summary(folder, "worker-killed")["engine"]["ray_started_for_run"] is True
    assert_own_ray_gone(folder)
    assert not (faults / "kill").exists()  # the fault happened
    assert "rollout worker" in err and "restarted it" in err
    ray_said = [line for line in err.splitlines() if line.startswith("champion: warning: Ray (pid ")]
    assert any("worker" in line.lower() for line in ray_said), err[-3000:]
    assert "\x1b[" not in "".join(ray_said)  # Ray's message, pushed to the driver, taken off stdout, without colour
    assert out.strip(), "champion's own lines are missing"
    assert_only_champion_on_stdout(subprocess.CompletedProcess([], 0, out, err))


def test_the_advice_after_a_stale_address_file_is_true(folder):
    """`--ray-address auto` on the address file of a crashed head says to leave out --ray-address; that works (the
    test above beside a stale address file trains with that file and no --ray-address)."""
    stale = folder / "stale"
    (stale / "ray").mkdir(parents=True)
    (stale / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    done = train(folder, "auto", SMALL + ["--ray-address", "auto"], {"RAY_TMPDIR": str(stale)})
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "or leave out --ray-address to run a local Ray" in line


def test_a_head_that_checks_tokens_is_one_line_naming_the_settings_then_joined_with_them(folder, token_head):
    """Each refusal comes from the head check, long before Ray's own 30 s of InvalidAuthToken retries (the bound
    below only tells the two apart; the check's own time is in the README)."""
    address = ["--ray-address", token_head["address"]]
    started = time.monotonic()
    done = train(folder, "no-token", SMALL + address, {})
    elapsed = time.monotonic() - started
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line == (f"champion train: error: the Ray cluster at {token_head['address']} requires a token: set "
                    "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the head's token> (on the head, 'ray get-auth-token' "
                    "prints it)")
    assert elapsed < RAY_RETRIES_S, elapsed
    assert not (folder / "results").exists()

    done = train(folder, "token-not-sent", SMALL + address, {"RAY_AUTH_TOKEN": token_head["token"]})
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "requires a token: set RAY_AUTH_MODE=token (Ray sends RAY_AUTH_TOKEN only then" in line

    started = time.monotonic()
    done = train(folder, "wrong-token", SMALL + address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-it"})
    assert done.returncode == 2 and time.monotonic() - started < RAY_RETRIES_S, time.monotonic() - started
    [line] = done.stderr.strip().splitlines()
    assert line.endswith("refused this machine's token (RAY_AUTH_TOKEN): set RAY_AUTH_TOKEN to the head's token "
                         "(on the head, 'ray get-auth-token' prints it)")

    done = train(folder, "joined", SMALL + address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token_head["token"]})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "InvalidAuthToken" not in done.stderr
    assert_only_champion_on_stdout(done)
    engine = summary(folder, "joined")["engine"]
    assert engine["ray_started_for_run"] is False  # Ray names the head by this machine's address, not 127.0.0.1
    assert engine["ray_address"].rpartition(":")[2] == token_head["address"].rpartition(":")[2]


def test_a_head_without_tokens_is_joined_as_is_and_refused_in_one_line_with_token_mode_on(folder):
    """`ray start --head` on a machine without a token (Ray then checks none): joined without settings; with
    RAY_AUTH_MODE=token the head's workers would be refused by the driver, so that is one line."""
    head = start_head(folder / "head")
    try:
        address = ["--ray-address", head["address"]]
        started = time.monotonic()
        done = train(folder, "token-mode", SMALL + address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "x"})
        assert done.returncode == 2 and time.monotonic() - started < RAY_RETRIES_S, time.monotonic() - started
        [line] = done.stderr.strip().splitlines()
        assert line.endswith(f"the Ray cluster at {head['address']} does not check tokens, but RAY_AUTH_MODE=token "
                             "here: unset RAY_AUTH_MODE (or start the head with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                             "set)")
        done = train(folder, "joined", SMALL + address, {})
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
    finally:
        stop_head(head)


def test_a_port_where_something_else_listens_is_one_line_within_seconds(folder):
    with socket.socket() as listening:  # accepts connections, answers nothing
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        started = time.monotonic()
        done = train(folder, "not-ray", SMALL + ["--ray-address", f"127.0.0.1:{listening.getsockname()[1]}"], {})
    assert done.returncode == 2 and time.monotonic() - started < RAY_RETRIES_S
    [line] = done.stderr.strip().splitlines()
    assert "no Ray head answered at 127.0.0.1:" in line and "within 2 s" in line


def test_a_sigkilled_driver_leaves_no_ray_process_of_its_run_after_10_s(folder):
    """Ray's dashboard and runtime-env agents outlived a killed driver by about 60 s (they wait for the dead head);
    the run's watchdog kills them, and only them: a `tail -f` of a log in the run's Ray folder, not started by the
    run, lives on. The kill comes at the first evaluation."""
    child = subprocess.Popen(CHAMPION + ["train", "CartPole-v1", "--results-dir", str(folder / "results"),
                                         "--run-name", "killed"] + SMALL + ["--total-steps", "200000"],
                             env=clean_environment(folder), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, start_new_session=True)
    processes: list[psutil.Process] = []
    bystander = None
    try:
        for line in child.stdout:
            if line.startswith("step"):
                break
        processes = psutil.Process(child.pid).children(recursive=True)
        commands = [" ".join(process.cmdline()) for process in processes]
        assert any("raylet" in command for command in commands) and any("gcs_server" in command for command in commands)
        [session] = list(folder.glob("champion-ray-*"))
        [log] = sorted(session.glob("ray/session_[0-9]*/logs/raylet.out"))
        bystander = subprocess.Popen(["tail", "-f", str(log)], stdout=subprocess.DEVNULL)
        child.kill()
        killed = time.monotonic()
        child.wait()
        gone: dict[str, float] = {}
        while time.monotonic() - killed < 10 and len(gone) < len(processes):
            for process, command in zip(processes, commands):
                if not process.is_running() and command not in gone:
                    gone[command] = time.monotonic() - killed
            time.sleep(0.05)
        left = [process for process in processes if process.is_running() and process.status() != psutil.STATUS_ZOMBIE]
        gone_after = max(gone.values(), default=0.0)
        assert left == [], [(process.pid, process.name()) for process in left]
        while session.exists() and time.monotonic() - killed < 10:
            time.sleep(0.1)
        assert not session.exists()
        assert bystander.poll() is None  # named the folder, but is not the run's
        print(f"the run's {len(processes)} processes were gone {gone_after:.1f} s after the SIGKILL:",
              {command[:60]: round(seconds, 1) for command, seconds in gone.items()})
    finally:
        for process in [child, bystander, *processes]:
            try:
                process and process.kill()
            except (psutil.Error, OSError):
                pass


def test_on_an_untested_ray_the_cluster_code_takes_its_public_path(monkeypatch):
    """Ray's internals are used only on a Ray in compat.TESTED_RAY. Elsewhere: Ray's printer stays, the token
    settings are not read again, and an address is only probed (ray.init checks the rest)."""
    from champion.agents.compile import compat

    def printer(data, ignore_prefix=False):
        pass

    monkeypatch.setattr(compat, "TESTED_RAY", ())
    assert compat.replace_ray_printer(printer) is None
    assert compat.reload_ray_auth_settings() is False
    assert compat.ask_ray_head("127.0.0.1:1", 1.0) == {"answer": "untested"}
    with socket.socket() as listening:  # accepts connections, answers nothing: the tested path says no head is there
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        assert cluster.check_cluster(address) == cluster.Head(address, checks_tokens=False)
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        assert cluster.check_cluster(address) == cluster.Head(address, checks_tokens=True)
    with pytest.raises(cluster.ConfigError, match="no Ray cluster answers at 127.0.0.1:"):
        cluster.check_cluster(f"127.0.0.1:{free_port()}")  # the probe is public: still one line

    monkeypatch.setattr(compat, "TESTED_RAY", (compat.ray_minor_version(),))
    previous = compat.replace_ray_printer(printer)  # the tested path: Ray's printer, not the one offered above
    assert previous is not None and previous is not printer
    assert compat.replace_ray_printer(previous) is printer


def test_a_failing_runs_ray_logs_are_kept_in_the_run_folder(tmp_path, monkeypatch, capsys):
    """The run's own Ray folder is removed at the end; when the run fails (close while its error unwinds, not a
    Ctrl-C or SIGTERM), the end of each of Ray's log files is copied into the run folder first, and stderr says
    where."""
    session = tmp_path / "champion-ray-x" / "ray" / "session_2026-12-07_10-00-00_000000_123"
    (session / "logs").mkdir(parents=True)
    (session.parent / "session_latest").symlink_to(session)  # Ray's link to the newest session: not copied twice
    worker_log = bytes(range(256)) * 1200  # 300 KB, more than is kept
    (session / "logs" / "worker-1.err").write_bytes(worker_log)
    (session / "logs" / "raylet.out").write_text("raylet started\n")
    kept = tmp_path / "run" / "ray-logs"
    cluster._keep_logs(tmp_path / "champion-ray-x", kept)
    assert sorted(path.name for path in kept.iterdir()) == ["raylet.out", "worker-1.err"]
    assert (kept / "worker-1.err").read_bytes() == worker_log[-cluster.LOG_TAIL_BYTES:]
    assert (kept / "raylet.out").read_text() == "raylet started\n"
    assert capsys.readouterr().err == (f"champion: warning: Ray's logs of the failed run (the last 256 KB of each file) "
                                       f"are kept in {kept}\n")

    from champion.runners.run_state import TrainingInterrupted

    stops = []
    monkeypatch.setattr(cluster, "_stop_local", lambda keep_logs_in=None: stops.append(keep_logs_in))
    connection = cluster.RayConnection("127.0.0.1:1", owned=True, logs_on_failure=kept)
    connection.close()
    for stop in [RuntimeError("a worker was lost"), TrainingInterrupted(signal.SIGTERM, 0, tmp_path),
                 KeyboardInterrupt()]:
        try:
            raise stop
        except BaseException:
            connection.close()
    assert stops == [None, kept, None, None]  # a failure keeps the logs; a stop the user asked for does not
