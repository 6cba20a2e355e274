"""Replay the best policy of a run on fresh environments, by default on its evaluation seeds."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from champion.agents.config import SEED_LIMIT
from champion.agents.numpy_policy import NumpyPolicy, single_threaded_numpy
from champion.agents.spec import NetworkSpec
from champion.envs.factory import EnvOptions, describe_env, import_recorded_env_module, make_eval_env
from champion.runners.store.best_store import (BestPolicyError, StoredPolicy, list_entries, list_final_entries, load_best,
                                load_champion, read_entry)
from champion.runners.evaluate import EvalResult, episode_seeds, evaluate, joined, play_episodes
from champion.runners.store.folder_trust import is_entry_name
from champion.runners.logs.media import play_apart, write_video
from champion.runners.configure import import_torso_modules
from champion.runners.store.runs import ReplayError, choose_run


@dataclass(frozen=True)
class ReplayResult:
    """Returns of the replayed episodes next to what the run recorded for this policy."""

    run_dir: Path
    entry: Path
    result: EvalResult
    recorded_mean_return: float
    step: int
    recorded_seeds: tuple[int, ...] = ()
    """The evaluation seeds that made this policy best (its recorded mean is over these)."""
    picked: str = ""
    """Why this run, when a folder of runs was given."""
    crowned: bool = False
    """Whether the policy is the crowned champion (then the recorded mean and seeds are its held-out ones)."""
    recorded_returns: tuple[float, ...] = ()
    """The recorded return of each of ``recorded_seeds``' episodes (empty in records from before they were kept)."""

    @property
    def same_episodes(self) -> bool:
        """Whether the replay played exactly the recorded evaluation's episodes (then its mean must match)."""
        return tuple(self.result.seeds) == tuple(self.recorded_seeds)

    @property
    def common_episodes(self) -> int:
        """How many of the replayed episodes are recorded ones (the same seed)."""
        return len(set(self.result.seeds) & set(self.recorded_seeds))

    def common_means(self) -> tuple[int, float, float] | None:
        """Over the episodes both the replay and the record played (by seed): how many, the replay's mean and the
        recorded mean; None when they share none, or share some but the record keeps no per-episode returns (then
        only all of its episodes compare). Only these two means are comparable: other episodes are other draws of
        the env."""
        if self.same_episodes:
            return len(self.recorded_seeds), self.result.mean_return, self.recorded_mean_return
        recorded = dict(zip(self.recorded_seeds, self.recorded_returns))
        pairs = [(played, recorded[seed]) for seed, played in zip(self.result.seeds, self.result.returns)
                 if seed in recorded]
        if not pairs:
            return None
        return len(pairs), float(np.mean([pair[0] for pair in pairs])), float(np.mean([pair[1] for pair in pairs]))

    def to_dict(self) -> dict[str, Any]:
        """The JSON that ``champion replay --json`` prints (``matches_recorded`` compares the episodes both played,
        and is null when they share none)."""
        common = self.common_means()
        return {
            "run_dir": str(self.run_dir),
            "entry": str(self.entry),
            "step": self.step,
            "returns": list(self.result.returns),
            "lengths": list(self.result.lengths),
            "seeds": list(self.result.seeds),
            "mean_return": self.result.mean_return,
            "std_return": self.result.std_return,
            "crowned": self.crowned,
            "recorded_mean_return": self.recorded_mean_return,
            "recorded_episodes": len(self.recorded_seeds),
            "same_episodes_as_recorded": self.same_episodes,
            "common_episodes": self.common_episodes,
            "mean_return_on_common": common[1] if common else None,
            "recorded_mean_on_common": common[2] if common else None,
            "matches_recorded": (common[1] == common[2]) if common else None,
        }


TRAINING_BEST = "best"
"""``--entry best``: the training-time best (``best/current.json``) even when a champion is crowned."""


def load_policy(run_dir: Path, entry: str | None = None) -> tuple[NumpyPolicy, dict[str, Any]]:
    """The run's policy (verified) and its manifest: the crowned champion if there is one, else the training-time
    best; ``entry`` picks an entry folder of ``best/`` by name, or ``best`` the training-time best. A champion's
    manifest records its held-out mean and seeds (``crowned``: true). Refuses weights that do not fit. A wrong
    entry or unusable weights are refused before TensorFlow is imported (to build the network), in a moment."""
    stored, manifest = _stored(Path(run_dir) / "best", entry)
    import_recorded_env_module(str(manifest.get("env_id", "")), str(stored.entry / "manifest.json"))
    spec = NetworkSpec.from_dict(stored.manifest["network"])
    import_torso_modules(spec, str(stored.entry / "manifest.json"))  # a torso of the user's: under the same rule
    from champion.agents.acting import model_policy
    from champion.agents.networks import ActorCritic, assign_weight_arrays

    model = ActorCritic(spec)
    try:
        assign_weight_arrays(model, stored.weights)
    except ValueError as error:
        raise ReplayError(f"{stored.entry}: {error}") from None
    return model_policy(model), dict(manifest, entry=str(stored.entry))


def _stored(best_dir: Path, entry: str | None) -> tuple[StoredPolicy, dict[str, Any]]:
    if entry is None:
        crowned = load_champion(best_dir)
        if crowned is not None:
            stored, record = crowned
            return stored, dict(stored.manifest, crowned=True, training_mean_return=stored.manifest["mean_return"],
                                mean_return=record["held_out_mean"], std_return=record["held_out_std"],
                                eval_seeds=record["held_out_seeds"], episodes=len(record["held_out_seeds"]),
                                returns=record.get("returns", ()), interval=record.get("interval"))
    if entry is None or entry == TRAINING_BEST:
        stored = load_best(best_dir)
        return stored, dict(stored.manifest, crowned=False)
    folder = best_dir / entry
    if not is_entry_name(entry) or not (folder / "manifest.json").is_file():
        names = [path.name for path in [*list_entries(best_dir), *list_final_entries(best_dir)]]
        raise ReplayError(f"no entry {entry!r} in {best_dir}; choose one of: {', '.join(names) or 'none saved yet'}, "
                          f"or {TRAINING_BEST!r} for the training-time best")
    try:
        stored = read_entry(folder)
    except (OSError, ValueError, KeyError) as error:
        raise BestPolicyError(f"entry {folder} is unusable ({error})") from None
    return stored, dict(stored.manifest, crowned=False)


def replay(run_dir: Path, episodes: int | None = None, seed: int | None = None, render: bool = False,
           video: Path | None = None, best: bool = False, entry: str | None = None) -> ReplayResult:
    """Play the champion (else the training-time best; ``entry`` picks another) deterministically; with no
    episodes/seed, on the seeds its recorded mean is over. A folder of runs stands for its newest run, or with
    ``best`` the one with the highest best return."""
    run_dir, picked = choose_run(run_dir, best)
    if episodes is not None and episodes <= 0:
        raise ReplayError(f"--episodes must be a positive integer, got {episodes}")
    if seed is not None and not 0 <= seed < SEED_LIMIT:
        raise ReplayError(f"--seed must be from 0 to {SEED_LIMIT - 1:,}, got {seed}")
    if render and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux"):
        raise ReplayError("--render needs a display and none was found (DISPLAY is unset); use --video PATH instead")
    if video is not None and Path(video).suffix.lower() not in (".gif", ".mp4"):
        raise ReplayError(f"--video must end in .gif or .mp4, got {video}")
    policy, manifest = load_policy(run_dir, entry)
    single_threaded_numpy()  # it acts in numpy: small matrices (see agents/compile/runtime.py)
    check_env_fits(manifest)
    seeds = _seeds(manifest, episodes, seed)
    env_id, options = manifest["env_id"], EnvOptions.from_dict(manifest.get("env_options"))
    if video is not None:
        result = play_apart(write_video, env_id, options, seeds, policy.spec, policy.weights, Path(video))
    elif render:  # the first episode in a window, the others as usual (the same returns either way)
        eval_envs = make_eval_env(env_id, 1, "human", options)
        try:
            first = evaluate(policy, eval_envs, seeds[:1], env_id=env_id)
        finally:
            eval_envs.close()
        rest = [play_episodes(env_id, options, policy.spec, policy.weights, seeds[1:])] if len(seeds) > 1 else []
        result = joined([first, *rest], seeds)
    else:  # a crowned champion's 100 held-out episodes are played a few dozen at a time
        result = play_episodes(env_id, options, policy.spec, policy.weights, seeds)
    return ReplayResult(run_dir, Path(manifest["entry"]), result, float(manifest["mean_return"]), int(manifest["step"]),
                        tuple(int(seed) for seed in manifest["eval_seeds"]), picked, bool(manifest.get("crowned")),
                        _recorded_returns(manifest))


def _recorded_returns(manifest: dict[str, Any]) -> tuple[float, ...]:
    """The recorded return of each recorded episode; none when the record keeps no such list, one that is not a
    number per seed included (an older or edited record: then only all its episodes compare, by their mean)."""
    returns, seeds = manifest.get("returns"), manifest["eval_seeds"]
    if not isinstance(returns, list) or len(returns) != len(seeds) or not all(
            isinstance(value, (int, float)) and not isinstance(value, bool) for value in returns):
        return ()
    return tuple(float(value) for value in returns)


def _seeds(manifest: dict[str, Any], episodes: int | None, seed: int | None) -> list[int]:
    """The recorded episodes' seeds; ``episodes`` alone takes the first of them, or goes on past the last, so
    that what replay compares is the same episodes; ``seed`` starts elsewhere."""
    recorded = [int(value) for value in manifest["eval_seeds"]]
    count = episodes or len(recorded)
    if seed is None:
        return recorded[:count] + episode_seeds(max(recorded) + 1, max(0, count - len(recorded)))
    return episode_seeds(seed, count)




def check_env_fits(manifest: dict[str, Any]) -> None:
    """Refuse to replay on an env whose spaces are no longer those the policy was trained on."""
    info = describe_env(manifest["env_id"], EnvOptions.from_dict(manifest.get("env_options")))
    saved = NetworkSpec.from_dict(manifest["network"])
    def layout(leaves: Any, kind: str, size: int) -> tuple:
        return [(leaf.path, leaf.kind, leaf.shape, leaf.categories) for leaf in leaves], kind, size

    if (layout(info.observation_leaves, info.action.kind, info.action.size)
            != layout(saved.observation_leaves, saved.action_kind, saved.action_size)):
        raise ReplayError(
            f"the saved policy expects {_leaves_text(saved.observation_leaves)} and {saved.action_kind} actions of "
            f"size {saved.action_size}, but {manifest['env_id']} now has {_leaves_text(info.observation_leaves)} "
            f"and {info.action.kind} actions of size {info.action.size}"
        )


def _leaves_text(leaves: Any) -> str:
    return "observations " + ", ".join(f"{'/'.join(leaf.path) + ' ' if leaf.path else ''}{leaf.kind} {list(leaf.shape)}"
                                       for leaf in leaves)
