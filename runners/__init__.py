"""Everything that drives a run: rollouts, evaluation, saving, logging, the loop and the CLI.

``runners.train(config)`` is the Python entry point. It is imported lazily so that quick
commands (``champion runs``, ``champion presets``) do not pay for importing TensorFlow.

The ``champion`` command keeps TensorFlow's C++ notes off stderr; from Python, call
``runners.quiet_tensorflow()`` before importing TensorFlow to do the same (opt-in: it routes this
process's stderr through a filter process).
"""

from typing import Any

__all__ = ["train", "TrainResult", "resolve_config", "quiet_tensorflow"]


def quiet_tensorflow() -> bool:
    """Keep TensorFlow's C++ start-up and log notes off stderr, as the champion command does, and pass
    everything else (a crash message above all) on. Call it before importing TensorFlow and before starting
    threads; the filter is POSIX only, and CHAMPION_TF_LOGS=1 turns all of it off. Returns whether the
    filter is on."""
    from runners import stderr_filter

    return stderr_filter.quiet_tensorflow()


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult"):
        from runners import training

        return getattr(training, name)
    if name == "resolve_config":
        from runners.configure import resolve_config

        return resolve_config
    raise AttributeError(f"module 'runners' has no attribute {name!r}")
