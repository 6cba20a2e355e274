"""Crowning the champion: the newest best entries and the final policy, re-evaluated on held-out episodes.

The best store keeps the policy whose evaluation mean was the highest seen. That maximum over many
noisy means is biased upward (the winner's curse), so the entry it names is often a lucky one. The crown
plays each candidate on ``crown.episodes`` held-out seeds, disjoint from the evaluation seeds, and
crowns the highest held-out mean in ``best/champion.json``. Replay and export follow the crown.

Nothing here imports TensorFlow: the episodes are played with numpy policies, in this process, in
spawned processes beside it, or on the Ray engine's actors, with the same results in each (acting is
row by row, see ``champion.agents.numpy_policy``).
"""

from __future__ import annotations


import json
import math
import multiprocessing
import os
import re
import stat
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from champion.agents.config import TrainConfig
from champion.agents.numpy_policy import NumpyPolicy
from champion.agents.spec import NetworkSpec
from champion.envs.factory import EnvOptions
from champion.runners.store.atomic_files import TEMP_PREFIX, atomic_write_text, process_is_alive, warn
from champion.runners.store.best_store import (CHAMPION_FILE, FINAL_PREFIX, CrownError, StoredPolicy, crowned_entry, list_entries,
                                list_final_entries, pointer_name, read_entry, warn_about_strays)
from champion.runners.evaluate import EvalResult, episode_seeds, joined, play_episodes
from champion.runners.store.folder_trust import check_links, read_record, seal

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
INTERVAL_METHOD = f"percentile bootstrap, {BOOTSTRAP_RESAMPLES:,} resamples of the held-out returns, seed 0"
SPAWN_PAYS_AFTER_S = 5.0
"""crown.workers 0: the rest of the candidates go to spawned processes when, played here, they would take longer
(starting the processes costs a few seconds)."""

class Player(Protocol):
    """Plays every policy on every seed (one episode per seed), and says where it did."""

    where: str

    def play(self, policies: Sequence[NumpyPolicy], seeds: Sequence[int]) -> list[EvalResult]: ...


@dataclass(frozen=True)
class Candidate:
    """A policy that may be crowned: a best entry, or the final policy's entry."""

    stored: StoredPolicy

    @property
    def name(self) -> str:
        return self.stored.entry.name

    @property
    def step(self) -> int:
        return int(self.stored.manifest.get("step", 0))

    @property
    def training_mean(self) -> float:
        """The mean return its training-time evaluation recorded."""
        return float(self.stored.manifest.get("mean_return", math.nan))

    @property
    def is_final(self) -> bool:
        return self.name.startswith(FINAL_PREFIX)

    def policy(self) -> NumpyPolicy:
        return NumpyPolicy(NetworkSpec.from_dict(self.stored.manifest["network"]), weights=self.stored.weights)


@dataclass(frozen=True)
class Judged:
    """One candidate's held-out episodes and the interval around their mean."""

    candidate: Candidate
    result: EvalResult
    interval: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"entry": self.candidate.name, "step": self.candidate.step,
                "training_mean_return": self.candidate.training_mean, "final_policy": self.candidate.is_final,
                "held_out_mean": self.result.mean_return, "held_out_std": self.result.std_return,
                "interval": list(self.interval), "returns": list(self.result.returns),
                "lengths": list(self.result.lengths)}


@dataclass(frozen=True)
class Crown:
    """The outcome of a crown: every candidate judged, the champion, and what it cost."""

    run_dir: Path
    judged: list[Judged]
    champion: Judged
    training_best: str
    """The entry the training-time evaluations made best (``best/current.json``)."""
    seeds: tuple[int, ...]
    seconds: float
    workers: str

    @property
    def env_steps(self) -> int:
        return sum(judged.result.env_steps for judged in self.judged)

    def record(self) -> dict[str, Any]:
        """``best/champion.json``: the crowned entry, its held-out seeds, returns and interval, and every candidate."""
        champion = self.champion
        return {
            "entry": champion.candidate.name, "step": champion.candidate.step,
            "sha256": champion.candidate.stored.manifest["sha256"],
            "held_out_mean": champion.result.mean_return, "held_out_std": champion.result.std_return,
            "interval": list(champion.interval), "confidence": CONFIDENCE, "interval_method": INTERVAL_METHOD,
            "held_out_seeds": list(self.seeds), "returns": list(champion.result.returns),
            "lengths": list(champion.result.lengths),
            "training_best": self.training_best,
            "candidates": [judged.to_dict() for judged in self.judged],
            "cost": self.cost(),
            "crowned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def training_best_judged(self) -> Judged | None:
        """The training-time best among the candidates (None if it could not be judged)."""
        return next((judged for judged in self.judged if judged.candidate.name == self.training_best), None)

    def summary(self) -> dict[str, Any]:
        """For summary.json: the champion, the training-time best beside it, and the cost."""
        naive = self.training_best_judged()
        return {"champion": self.champion.candidate.name, "held_out_mean": self.champion.result.mean_return,
                "interval": list(self.champion.interval), "training_best": self.training_best,
                "training_best_mean": naive.candidate.training_mean if naive else None,
                "training_best_held_out_mean": naive.result.mean_return if naive else None,
                "candidates": len(self.judged), **self.cost()}

    def cost(self) -> dict[str, Any]:
        """What the crown took: wall seconds, env steps, episodes and where they ran."""
        return {"seconds": round(self.seconds, 3), "env_steps": self.env_steps,
                "episodes": len(self.seeds) * len(self.judged), "workers": self.workers}


def held_out_seeds(config: TrainConfig) -> list[int]:
    """The crown's episode seeds: ``crown.episodes`` of them from ``crown.seed`` (disjoint from the evaluation
    seeds; ``champion.agents.config.validate`` refuses an overlap)."""
    return episode_seeds(config.crown.held_out_seed(config.eval_seed), config.crown.episodes)


def bootstrap_interval(returns: Sequence[float], confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval for the mean of ``returns`` (seeded, so it is reproducible)."""
    values = np.asarray(returns, np.float64)
    if len(values) < 2 or np.all(values == values[0]):
        return float(values.mean()), float(values.mean())
    generator, means = np.random.default_rng(0), []
    block = max(1, 1_000_000 // len(values))  # resamples drawn a block at a time: memory stays bounded
    for start in range(0, resamples, block):
        picks = generator.integers(0, len(values), (min(block, resamples - start), len(values)))
        means.append(values[picks].mean(axis=1))
    means = np.concatenate(means)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def candidates(best_dir: Path, count: int, on_warning: Callable[[str], None] = warn) -> list[Candidate]:
    """The newest ``count`` best entries that verify, oldest first, then the newest final-policy entry; before them
    the entry an earlier crown chose, if it is not one of those (a resumed run judges it again). An entry holding
    the same weights as one already taken is left out."""
    found: list[Candidate] = []
    warn_about_strays(best_dir, on_warning)
    reference: list[dict[str, Any]] = []  # the newest verified entry's network, which the env was checked against
    for entry in reversed(list_entries(best_dir)):
        if len(found) == count:
            break
        stored = _verified(entry, on_warning, reference)
        if stored is not None:
            found.insert(0, Candidate(stored))
    crowned, finals = crowned_entry(best_dir), list_final_entries(best_dir)
    earlier = _verified(crowned, on_warning, reference) if crowned is not None and crowned.is_dir() else None
    final = _verified(finals[-1], on_warning, reference) if finals else None
    for stored, at_end in ((earlier, False), (final, True)):
        if stored is not None and stored.manifest["sha256"] not in {each.stored.manifest["sha256"] for each in found}:
            found.insert(len(found) if at_end else 0, Candidate(stored))
    return found


def _verified(entry: Path, on_warning: Callable[[str], None], reference: list[dict[str, Any]]) -> StoredPolicy | None:
    """The entry, verified, if its network takes the same observations and actions as ``reference``'s (the first
    verified entry becomes it); else None, with a warning."""
    try:
        stored = read_entry(entry)
    except (OSError, ValueError, KeyError) as error:
        on_warning(f"best-policy entry {entry.name} is unusable ({error}); it is not a crown candidate")
        return None
    layout = {key: stored.manifest["network"].get(key) for key in ("observation_leaves", "action_kind", "action_size")}
    if reference and layout != reference[0]:
        on_warning(f"best-policy entry {entry.name} takes other observations or actions than the newest entry; it is "
                   "not a crown candidate")
        return None
    reference[:1] = [layout]
    return stored


def crown_run(run_dir: Path, config: TrainConfig, player: Player | None = None,
              on_warning: Callable[[str], None] = warn) -> Crown:
    """Judge the run's candidates on the held-out seeds and write ``best/champion.json`` atomically (the only write:
    a crash before it leaves the store as it was). ``player`` defaults to a ``ProcessPlayer`` for the config."""
    best_dir = Path(run_dir) / "best"
    found = candidates(best_dir, config.crown.candidates, on_warning)
    if not found:
        raise CrownError(f"{best_dir} holds no usable best-policy entry to crown; train the run first")
    seeds = held_out_seeds(config)
    player = player or ProcessPlayer(config)
    started = time.perf_counter()
    results = player.play([candidate.policy() for candidate in found], seeds)
    seconds = time.perf_counter() - started
    judged = [Judged(candidate, result, bootstrap_interval(result.returns)) for candidate, result in zip(found, results)]
    training_best = _training_best(best_dir, found)
    champion = max(judged, key=lambda each: (each.result.mean_return, each.candidate.name == training_best,
                                            each.candidate.step))
    crown = Crown(Path(run_dir), judged, champion, training_best, tuple(seeds), seconds, player.where)
    remove_dead_temporaries(best_dir / CHAMPION_FILE)
    atomic_write_text(best_dir / CHAMPION_FILE, json.dumps(seal(crown.record()), indent=2) + "\n")
    return crown


def remove_dead_temporaries(path: Path) -> None:
    """Delete the temporary files that atomic writes of ``path`` left when their process was killed (.tmp-NAME-PID,
    PID no longer running); those of live processes, and any other name, stay."""
    shape = re.compile(re.escape(f"{TEMP_PREFIX}{path.name}-") + r"(\d+)")
    try:
        names = os.listdir(path.parent)
    except OSError:  # the write that follows says what is wrong
        return
    for name in names:
        match, leftover = shape.fullmatch(name), path.parent / name
        try:
            if match and stat.S_ISREG(leftover.lstat().st_mode) and not process_is_alive(int(match[1])):
                leftover.unlink()
        except OSError:
            continue


def crown_saved_run(run_dir: Path, overrides: dict[str, Any] | None = None,
                    on_warning: Callable[[str], None] = warn) -> Crown:
    """``champion crown RUN_DIR``: crown a finished (or stopped) run with its config's ``crown.*`` settings and
    ``overrides`` of them, while holding the run's lock; log it to TensorBoard and add it to summary.json."""
    from champion.agents.config import validate
    from champion.runners.configure import apply_overrides, load_run_config, validate_recorded
    from champion.runners.store.run_folder import RunLock
    from champion.runners.store.runs import RunNotFoundError, is_run_dir

    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise RunNotFoundError(f"{run_dir} is not a run folder (no config.yaml); give one such as "
                               "results/CartPole-v1/ppo/<run>")
    check_links(run_dir)
    check_writable(run_dir)
    saved = load_run_config(run_dir)
    config = apply_overrides(saved, overrides or {})
    validate_recorded(config)
    _check_env_fits(run_dir, config)
    with RunLock(run_dir):
        crown = crown_run(run_dir, config, on_warning=on_warning)
        log_crown_to_tensorboard(crown)
        add_to_summary(run_dir / "summary.json", crown)
    return crown


def check_writable(run_dir: Path) -> None:
    """CrownError, before anything is judged, if the run folder, its best/ or its tb/ cannot be written (a file is
    created there and dropped unnamed: permissions, a read-only mount, and what root may do all count)."""
    for folder in (run_dir, run_dir / "best", run_dir / "tb"):
        if not folder.is_dir():
            continue
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            where = "the run folder" if folder == run_dir else f"its {folder.name}/ folder"
            raise CrownError(f"cannot crown {run_dir}: {where} cannot be written ({error.strerror or error}), and "
                             "crowning writes best/champion.json and summary.json; crown a writable copy instead "
                             f"(cp -r {run_dir} COPY && chmod -R u+w COPY, then champion crown COPY)") from None


def _check_env_fits(run_dir: Path, config: TrainConfig) -> None:
    """EnvError if the run's env cannot be made here, ReplayError if its spaces no longer fit the saved policies."""
    from champion.runners.replay import check_env_fits

    entries = list_entries(run_dir / "best")
    if entries:
        try:
            manifest = read_record(entries[-1] / "manifest.json")
        except (OSError, ValueError):
            return  # an unreadable entry is reported by the crown itself
        check_env_fits(dict(manifest, env_id=config.env_id))


def add_to_summary(path: Path, crown: Crown) -> None:
    """summary.json gains (or replaces) its ``crown`` part; a run without a summary (stopped early) gets none."""
    try:
        summary = read_record(path)
    except (OSError, ValueError):
        return
    summary["crown"] = crown.summary()
    remove_dead_temporaries(path)
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")


def _training_best(best_dir: Path, found: list[Candidate]) -> str:
    """The entry the pointer names (the training-time best), else the newest best candidate."""
    try:
        return pointer_name(best_dir)
    except (OSError, ValueError):
        bests = [candidate.name for candidate in found if not candidate.is_final]
        return bests[-1] if bests else ""


class ProcessPlayer:
    """Plays in this process (``crown.workers`` 1), or splits the episodes over that many spawned processes without
    TensorFlow; all give the same returns. With 0 (auto) the first candidate is played here, and the others on
    one process per CPU if at its pace they would take more than ``SPAWN_PAYS_AFTER_S``."""

    def __init__(self, config: TrainConfig) -> None:
        self.env_id, self.options, self.workers = config.env_id, EnvOptions.from_config(config), config.crown.workers
        self.where = "this process"
        """Where the last ``play`` ran (for the crown's cost)."""

    def play(self, policies: Sequence[NumpyPolicy], seeds: Sequence[int]) -> list[EvalResult]:
        """Every policy on every seed, results in the order of the policies."""
        if self.workers == 1:
            return self._here(policies, seeds)
        if self.workers > 1:
            return self._apart(policies, seeds, self.workers)
        cpus = os.cpu_count() or 1
        started = time.perf_counter()
        first, rest = self._here(policies[:1], seeds), policies[1:]
        if cpus > 1 and (time.perf_counter() - started) * len(rest) > SPAWN_PAYS_AFTER_S:
            return first + self._apart(rest, seeds, cpus)
        return first + self._here(rest, seeds)

    def _here(self, policies: Sequence[NumpyPolicy], seeds: Sequence[int]) -> list[EvalResult]:
        return [play_episodes(self.env_id, self.options, policy.spec, policy.weights, seeds) for policy in policies]

    def _apart(self, policies: Sequence[NumpyPolicy], seeds: Sequence[int], workers: int) -> list[EvalResult]:
        self.where = f"{workers} processes"
        return _play_apart(self.env_id, self.options, policies, seeds, workers) if policies else []


class RayPlayer:
    """Plays on Ray actors (the Ray engine's cluster, which must be up), the seeds split among as many actors as
    the run had rollout workers; the same returns as in process."""

    def __init__(self, config: TrainConfig, spec: NetworkSpec) -> None:
        self.config, self.spec = config, spec
        self.actors = max(config.ray.workers, config.ray.eval_workers, 1)
        self.where = f"{self.actors} Ray actors"

    def play(self, policies: Sequence[NumpyPolicy], seeds: Sequence[int]) -> list[EvalResult]:
        """Every policy on every seed, results in the order of the policies."""
        from champion.runners.ray.evaluation import RayEvaluation

        ray = self.config.ray
        evaluation = RayEvaluation(self.config.env_id, EnvOptions.from_config(self.config), self.spec, seeds,
                                   self.actors, ray.eval_timeout_s, ray.max_worker_restarts, background=False)
        try:
            return [evaluation.start(index, policy)[0].result for index, policy in enumerate(policies)]
        finally:
            evaluation.close()


def _play_apart(env_id: str, options: EnvOptions, policies: Sequence[NumpyPolicy], seeds: Sequence[int],
                workers: int) -> list[EvalResult]:
    shares = [list(share) for share in np.array_split(np.asarray(seeds, np.int64), workers) if len(share)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [[pool.submit(play_episodes, env_id, options, policy.spec, policy.weights, [int(seed) for seed in share])
                    for share in shares] for policy in policies]
        return [joined([future.result() for future in parts], seeds) for parts in futures]


def crown_table(crown: Crown) -> list[str]:
    """Markdown lines: one row per candidate, the champion marked (for the terminal and TensorBoard)."""
    lines = [f"| entry | step | training mean | held-out mean ± std | {CONFIDENCE:.0%} interval | |",
             "|---|---|---|---|---|---|"]
    for judged in crown.judged:
        marks = [mark for mark, applies in (("crowned", judged is crown.champion),
                                            ("training-time best", judged.candidate.name == crown.training_best),
                                            ("final policy", judged.candidate.is_final)) if applies]
        low, high = judged.interval
        lines.append(f"| {judged.candidate.name} | {judged.candidate.step:,} | {judged.candidate.training_mean:.2f} | "
                     f"{judged.result.mean_return:.2f} ± {judged.result.std_return:.2f} | [{low:.2f}, {high:.2f}] | "
                     f"{', '.join(marks)} |")
    return lines


def crown_lines(crown: Crown) -> list[str]:
    """What the terminal shows after a crown: the table, the champion, the training-time best beside it, the cost."""
    champion, naive = crown.champion, crown.training_best_judged()
    low, high = champion.interval
    lines = ["", *crown_table(crown), "",
             f"crowned: {champion.candidate.name}, held-out mean {champion.result.mean_return:.2f} "
             f"({CONFIDENCE:.0%} interval {low:.2f} to {high:.2f}) over {len(crown.seeds)} episodes"]
    if naive is not None and naive is not champion:
        lines.append(f"the training-time best {naive.candidate.name} recorded {naive.candidate.training_mean:.2f} "
                     f"and holds {naive.result.mean_return:.2f} on the held-out episodes")
    elif naive is not None:
        lines.append(f"the training-time best is the champion; it recorded {naive.candidate.training_mean:.2f}")
    cost = crown.cost()
    lines.append(f"the crown took {cost['seconds']:.1f}s for {cost['episodes']:,} episodes "
                 f"({cost['env_steps']:,} env steps, {cost['workers']}); champion: {crown.run_dir / 'best' / champion.candidate.name}")
    return lines


def log_crown_to_tensorboard(crown: Crown) -> None:
    """The crown's scalars and table in the run's TensorBoard folder."""
    from champion.runners.logs.run_logger import log_crown

    log_crown(crown.run_dir, {judged.candidate.step: judged.result.mean_return for judged in crown.judged},
              max(judged.candidate.step for judged in crown.judged), crown.champion.result.mean_return,
              "\n".join(crown_table(crown)))
