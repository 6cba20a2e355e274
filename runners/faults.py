"""Fault injection for the crash tests: kill this process at a chosen durable-write point.

Inert unless CHAMPION_FAULT_KILL_AT or CHAMPION_FAULT_KILL_AT_STEP is set. CHAMPION_FAULT_KILL_AT
is either N (the Nth write point, counting from 1) or TEXT#K (the Kth write point whose label
contains TEXT); CHAMPION_FAULT_KILL_AT_STEP kills at the end of the first loop iteration that
reaches that env step.
CHAMPION_FAULT_LOG names a file that receives one line per write point passed, so a test can see
where the kills landed. The per-call cost when inert is one integer comparison.
"""

from __future__ import annotations

import os
import signal

_KILL_SPEC = os.environ.get("CHAMPION_FAULT_KILL_AT", "")
_KILL_TEXT, _, _KILL_COUNT = _KILL_SPEC.rpartition("#") if "#" in _KILL_SPEC else ("", "", _KILL_SPEC or "0")
_KILL_AT = int(_KILL_COUNT)
_KILL_AT_STEP = int(os.environ.get("CHAMPION_FAULT_KILL_AT_STEP", "0"))
_LOG = os.environ.get("CHAMPION_FAULT_LOG")
_passed = 0
_matched = 0


def write_point(label: str) -> None:
    """Mark a point inside a durable write; SIGKILL here if it is the chosen one."""
    global _passed, _matched
    if not (_KILL_AT or _LOG):
        return
    _passed += 1
    _matched += _KILL_TEXT in label
    if _LOG:
        with open(_LOG, "a") as handle:
            handle.write(f"{_passed} {label}\n")
    if (_matched if _KILL_TEXT else _passed) == _KILL_AT and _KILL_TEXT in label:
        os.kill(os.getpid(), signal.SIGKILL)


def step_point(step: int) -> None:
    """Mark the end of a loop iteration; SIGKILL here once step reaches the chosen step."""
    if _KILL_AT_STEP and step >= _KILL_AT_STEP:
        os.kill(os.getpid(), signal.SIGKILL)
