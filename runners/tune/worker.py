"""One worker process of a study (``champion tune --workers W`` starts W of them):
``python -m champion.runners.tune.worker STUDY_DIR [--quiet]``. It dies with the process that started it: a
SIGKILLed ``champion tune`` leaves no worker training on, and the trials they ran are found lost and run again when
the study goes on. A stop by a signal (forwarded by that process) ends it quietly with 130 or 143: that process says
it once for all its workers."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process within a second of its parent's death (its running trial is then found lost)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="champion-tune-parent", daemon=True).start()


def main(argv: list[str]) -> None:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    _die_with_parent(os.getppid())
    from champion.errors import ChampionError
    from champion.runners.logs import stderr_filter

    stderr_filter.quiet_tensorflow(filter_stderr=False)
    from champion.runners.tune.settings import read_settings
    from champion.runners.tune.study import STOP_CODES, run_worker

    try:
        run_worker(read_settings(argv[0]), progress="--quiet" not in argv)
    except ChampionError as error:
        if error.exit_code not in STOP_CODES:  # a stop is said once, by the process that started the workers
            print(f"champion tune: {error.label}{error}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
