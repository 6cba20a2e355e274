"""Fault injection for the crash tests: kill this process at a chosen durable-write point.

Inert unless CHAMPION_FAULT_KILL_AT (the Nth write point, counting from 1) or
CHAMPION_FAULT_KILL_AT_STEP (the first loop iteration that ends at or past this env step) is set.
CHAMPION_FAULT_LOG names a file that receives one line per write point passed, so a test can see
where the kills landed. The per-call cost when inert is one integer comparison.
"""

from __future__ import annotations

import os
import signal

_KILL_AT = int(os.environ.get("CHAMPION_FAULT_KILL_AT", "0"))
_KILL_AT_STEP = int(os.environ.get("CHAMPION_FAULT_KILL_AT_STEP", "0"))
_LOG = os.environ.get("CHAMPION_FAULT_LOG")
_passed = 0


def write_point(label: str) -> None:
    """Mark a point inside a durable write; SIGKILL here if it is the chosen one."""
    global _passed
    if not (_KILL_AT or _LOG):
        return
    _passed += 1
    if _LOG:
        with open(_LOG, "a") as handle:
            handle.write(f"{_passed} {label}\n")
    if _passed == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def step_point(step: int) -> None:
    """Mark the end of a loop iteration; SIGKILL here once step reaches the chosen step."""
    if _KILL_AT_STEP and step >= _KILL_AT_STEP:
        os.kill(os.getpid(), signal.SIGKILL)
