"""Tuned hyperparameters per (environment, algorithm), stored as plain YAML beside this file.

A preset is a starting point: the command line (``--set key=value``) overrides any field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).parent
ATARI_FILE, ATARI_NAME = "ALE-games", "ALE/*"
"""Every Atari game shares one preset per algorithm, listed as ALE/*: ``ALE/<Game>-v5`` and ale-py's older ids
such as RL Zoo's ``<Game>NoFrameskip-v4`` (``champion.envs.atari.is_atari``)."""


def preset_path(env_id: str, algo: str) -> Path:
    """Where the preset for (env_id, algo) lives, whether or not it exists."""
    own = PRESET_DIR / f"{env_id}.{algo}.yaml"
    if not own.is_file() and _is_atari(env_id):
        return PRESET_DIR / f"{ATARI_FILE}.{algo}.yaml"
    return own


def _is_atari(env_id: str) -> bool:
    """``champion.envs.atari.is_atari``, imported (with gymnasium) only for an id shaped like ale-py's older ones."""
    if env_id.startswith("ALE/"):
        return True
    if not env_id.endswith(("-v0", "-v4")):
        return False
    from champion.envs.atari import is_atari

    return is_atari(env_id)


def load(env_id: str, algo: str) -> dict[str, Any] | None:
    """The preset's settings as a dict, or None when there is no preset for this pair."""
    path = preset_path(env_id, algo)
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"preset {path} must be a mapping of config keys, got {type(data).__name__}")
    return data


def available() -> list[tuple[str, str, Path]]:
    """Every (env_id, algo, path) with a preset, sorted."""
    found = []
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        env_id, _, algo = path.name.removesuffix(".yaml").rpartition(".")
        found.append((ATARI_NAME if env_id == ATARI_FILE else env_id, algo, path))
    return found
