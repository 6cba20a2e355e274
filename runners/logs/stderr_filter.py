"""Keep TensorFlow's harmless start-up lines off the terminal, and nothing else.

While its libraries load, TensorFlow prints a few lines (oneDNN is on, no CUDA driver found, and absl's
note that logging is not set up yet) before it reads any log level, and its TFLite interpreter prints
one whatever the level (the XNNPACK delegate is on), so ``TF_CPP_MIN_LOG_LEVEL`` cannot
reach them. Only the file descriptor can. Pointing fd 2 at /dev/null or a file would also swallow a
crash message, so here fd 2 becomes a pipe read by a forked process that forwards every byte to the real
stderr except whole lines matching ``HARMLESS``. That process reads until every writer has gone, so it
outlives a crash of the trainer and the crash message still arrives. The CLI installs it; from Python,
``runners.quiet_tensorflow()`` does (opt-in: it changes the process's fd 2).
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
import threading
import time

__all__ = ["HARMLESS", "forward", "install", "quiet_tensorflow", "stderr_is_terminal"]

# absl's note, TFLite's note when champion export checks a .tflite, ale-py's banner, MuJoCo's note on gymnasium's
# v5 models (and the empty line after it), then glog-style INFO lines
# "I0000 00:00:1796532540.476281   31700 port.cc:153] ..."
HARMLESS = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\r?"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\r?"
    rb"|A\.L\.E: Arcade Learning Environment \(version [^)]*\)\r?|\[Powered by Stella\]\r?"
    rb"|WARNING: compiler attribute 'settotalmass' is deprecated and will be removed in a future release: .*"
    rb"|I\d{4} [\d:.]+ +\d+ (port\.cc:\d+\] oneDNN custom operations are on\b"
    rb"|cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used)\..*"
)
_ABSL_NOTE = b"WARNING: All log messages before absl::InitializeLog()"
_MUJOCO_NOTE = b"WARNING: compiler attribute 'settotalmass'"
_LINE_START = re.compile(rb"I(\d|$)|A(\.|$)|\[P")  # how a glog INFO line or ale-py's banner begins

_state: dict[str, int] = {}
_was_terminal: bool | None = None


def quiet_tensorflow(filter_stderr: bool = True) -> bool:
    """Keep TensorFlow's C++ notes off stderr, as the champion command does, unless CHAMPION_TF_LOGS=1: its
    own log level set to fatal only (``TF_CPP_MIN_LOG_LEVEL=3``, unless the user chose one; a crash message is
    fatal and still printed) and, with ``filter_stderr``, the filter for the lines printed before TensorFlow
    reads that level. Call it before importing TensorFlow. Returns whether the filter is on."""
    if os.environ.get("CHAMPION_TF_LOGS") == "1":
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return install() if filter_stderr else False


def stderr_is_terminal() -> bool:
    """Whether the user's stderr is a terminal (after ``install`` fd 2 is a pipe, so ask this, not fd 2)."""
    return _was_terminal if _was_terminal is not None else sys.stderr.isatty()


def install() -> bool:
    """Route fd 2 through the filter process (POSIX only; CHAMPION_TF_LOGS=1 keeps every line). Call it
    before TensorFlow is imported: once another thread runs it does nothing. Returns whether it is installed."""
    global _was_terminal
    if _state or os.name != "posix" or os.environ.get("CHAMPION_TF_LOGS") == "1":
        return bool(_state)
    if threading.active_count() > 1:  # forking now could copy a lock another thread holds: stay unfiltered
        return False
    try:
        target = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        return False
    _was_terminal = os.isatty(target)
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the filter: forwards until every writer has gone, then exits without Python's clean-up
        try:
            for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(number, signal.SIG_IGN)  # Ctrl-C or a group's SIGTERM is for the trainer, which
                # still has to print its stop; the filter ends when the trainer's output does
            _close_all_but(read_end, target)
            forward(read_end, target)
        finally:
            os._exit(0)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    _state.update(target=target, pid=pid)
    atexit.register(finish)
    return True


def finish(timeout: float = 5.0) -> None:
    """Give fd 2 back to the real stderr and wait (up to ``timeout``) until the filter has written all it
    got, so that nothing of ours arrives after the shell's prompt."""
    if not _state:
        return
    sys.stderr.flush()
    os.dup2(_state["target"], 2)  # our end of the pipe closes; a child process of ours may still hold one
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(_state["pid"], os.WNOHANG) != (0, 0):
                break
        except ChildProcessError:  # already reaped
            break
        time.sleep(0.005)
    os.close(_state["target"])
    _state.clear()


def forward(source: int, target: int) -> None:
    """Copy ``source`` to ``target`` until end of file, leaving out whole lines that match ``HARMLESS``. A
    partial line is passed on at once (e.g. a progress bar's redraw) unless it may become a harmless one."""
    pending = b""
    while chunk := os.read(source, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in _without_harmless(lines))
        if pending and not _may_become_harmless(pending):
            kept, pending = kept + pending, b""
        target = _write_all(target, kept)
    _write_all(target, pending)


def _without_harmless(lines: list[bytes]) -> list[bytes]:
    """The lines that do not match HARMLESS, and not the empty line MuJoCo prints after its note."""
    kept, after_mujoco = [], False
    for line in lines:
        if HARMLESS.fullmatch(line):
            after_mujoco = line.startswith(_MUJOCO_NOTE)
        elif after_mujoco and not line.strip():
            after_mujoco = False
        else:
            kept.append(line)
            after_mujoco = False
    return kept


def _may_become_harmless(partial: bytes) -> bool:
    return _ABSL_NOTE.startswith(partial) or partial.startswith(_ABSL_NOTE) or _LINE_START.match(partial) is not None


def _write_all(target: int, data: bytes) -> int:
    """Write all of ``data``; once stderr is gone (closed, or its reader quit) keep draining into nothing,
    so the trainer never blocks on a full pipe. Returns the target to use next (-1: none)."""
    while data and target >= 0:
        try:
            data = data[os.write(target, data):]
        except InterruptedError:
            continue
        except OSError:
            return -1
    return target


def _close_all_but(*kept: int) -> None:
    """In the filter: hold no other descriptor (a copy of stdout or of the pipe's writing end would keep
    their readers waiting)."""
    null = os.open(os.devnull, os.O_RDWR)
    for descriptor in (0, 1, 2):
        if descriptor not in kept:
            os.dup2(null, descriptor)
    limit = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024
    for descriptor in range(3, min(limit, 4096)):
        if descriptor not in kept:
            try:
                os.close(descriptor)
            except OSError:
                pass
