"""Everything that drives a run: rollouts, evaluation, saving, logging, the loop and the CLI.

``runners.train(config)`` is the Python entry point. It is imported lazily so that quick
commands (``champion runs``, ``champion presets``) do not pay for importing TensorFlow.
"""

from typing import Any

__all__ = ["train", "TrainResult", "resolve_config"]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult"):
        from runners import training

        return getattr(training, name)
    if name == "resolve_config":
        from runners.configure import resolve_config

        return resolve_config
    raise AttributeError(f"module 'runners' has no attribute {name!r}")
