"""champion: train PPO and A2C agents on gymnasium environments, and never lose the best policy.

    import champion

    result = champion.train("CartPole-v1", total_steps=50_000, callbacks=[champion.StopAtReturn(475)])
    policy = champion.load(result.run_dir)          # the crowned champion, verified
    action = policy.act(observation)                # the env's own observation and action formats

Importing champion loads no TensorFlow and changes nothing: each function imports what it needs when called.
The packages below are champion's own code (``champion.agents``, ``champion.envs``, ``champion.runners``);
this module is the API to build on.
"""

from champion.api import (Preset, RunResult, evaluate, export, load, presets, quiet_tensorflow, replay, resume,
                          train, tune)
from champion.callbacks import (BestEntry, Callback, Stop, StopAfterEvaluationsWithoutBest, StopAtReturn)
from champion.errors import CallbackError, ChampionError, UsageError
from champion.policy import Policy

__all__ = [
    "train", "resume", "tune", "load", "evaluate", "replay", "export", "presets", "quiet_tensorflow",
    "RunResult", "StudyResult", "Policy", "Preset", "EvalResult", "ReplayResult", "ExportResult",
    "Callback", "Stop", "StopAtReturn", "StopAfterEvaluationsWithoutBest", "BestEntry",
    "ChampionError", "UsageError", "CallbackError", "ConfigError", "EnvError", "EnvStepError", "RunFolderError",
    "RunNotFoundError", "BestPolicyError", "CheckpointError", "TrainingStopped", "ReplayError", "ExportError",
    "BestKeeper", "KeptModel",
]

_LAZY = {
    "EvalResult": "champion.runners.evaluate",
    "ReplayResult": "champion.runners.replay",
    "ExportResult": "champion.runners.export",
    "StudyResult": "champion.runners.tune.report",
    "ConfigError": "champion.agents.config",
    "EnvError": "champion.envs.factory",
    "EnvStepError": "champion.envs.factory",
    "RunFolderError": "champion.runners.store.folder_trust",
    "RunNotFoundError": "champion.runners.store.runs",
    "BestPolicyError": "champion.runners.store.best_store",
    "CheckpointError": "champion.runners.store.checkpoints",
    "TrainingStopped": "champion.runners.run_state",
    "ReplayError": "champion.runners.store.runs",
    "ExportError": "champion.runners.export",
    "BestKeeper": "champion.keeper",
    "KeptModel": "champion.runners.store.kept_models",
}
"""Names whose modules import more (gymnasium, TensorFlow): loaded on first use."""


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'champion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})
