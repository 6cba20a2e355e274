"""Crowning the champion: the newest best entries and the final policy, re-evaluated on held-out episodes.

The best store keeps the policy whose evaluation mean was the highest seen. That maximum over many
noisy means is biased upward (the winner's curse), so the entry it names is often a lucky one. The crown
plays the candidates on held-out seeds, disjoint from the evaluation seeds, as a race (``champion.runners.race``):
rounds of 10, 20, 40, ... episodes up to ``crown.episodes``, a candidate stopped once it is clearly worse than
the leader, the race over once one is left; within a time limit (``crown.time_share`` of the run's training time,
at least ``crown.min_seconds``). It crowns the leader in ``best/champion.json``, with intervals that hold
whichever round the race stopped at. Replay and export follow the crown.

Nothing here imports TensorFlow: the episodes are played with numpy policies (``champion.runners.crown_players``).
"""

from __future__ import annotations


import json
import math
import os
import re
import signal
import stat
import tempfile
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from champion.agents.config import CrownConfig, TrainConfig
from champion.agents.acting import acting_policy
from champion.agents.numpy_policy import NumpyPolicy
from champion.agents.spec import NetworkSpec
from champion.runners.crown_players import Player, ProcessPlayer, RayPlayer
from champion.runners.race import CONFIDENCE, Race, reported_interval
from champion.runners.store.atomic_files import TEMP_PREFIX, atomic_write_text, process_is_alive, warn
from champion.runners.store.best_store import (CHAMPION_FILE, FINAL_PREFIX, CrownError, StoredPolicy, crowned_entry, list_entries,
                                list_final_entries, pointer_name, read_champion, read_entry, warn_about_strays)
from champion.errors import first_line
from champion.runners.engines.base import EngineFailed
from champion.runners.evaluate import EvalResult, OutOfTime, episode_seeds
from champion.runners.store.folder_trust import check_links, read_record, seal

__all__ = ["Crown", "Player", "ProcessPlayer", "RayPlayer", "crown_run", "crown_saved_run", "crown_lines"]


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
        return acting_policy(NetworkSpec.from_dict(self.stored.manifest["network"]), self.stored.weights)


@dataclass(frozen=True)
class Judged:
    """One candidate's held-out episodes, the interval around their mean, and why it stopped playing early
    ("" if it played to the race's end)."""

    candidate: Candidate
    result: EvalResult
    interval: tuple[float, float] | None
    """None when every episode returned the same (no spread to build one from)."""
    stopped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"entry": self.candidate.name, "step": self.candidate.step,
                "training_mean_return": self.candidate.training_mean, "final_policy": self.candidate.is_final,
                "held_out_mean": self.result.mean_return, "held_out_std": self.result.std_return,
                "interval": _listed(self.interval), "episodes": len(self.result.returns), "stopped": self.stopped,
                "returns": list(self.result.returns), "lengths": list(self.result.lengths)}


@dataclass(frozen=True)
class Crown:
    """The outcome of a crown: every candidate judged, the champion, how the race went and what it cost."""

    run_dir: Path
    judged: list[Judged]
    champion: Judged
    training_best: str
    """The entry the training-time evaluations made best (``best/current.json``)."""
    seconds: float
    workers: str
    race: dict[str, Any] = field(default_factory=dict)
    """How the race went: its looks, the rounds played, why it ended, the time limit, the interval method."""
    replaced: dict[str, Any] | None = None
    """The crown record this one replaced (read under the run's lock), if there was one."""
    interval_method: str = ""

    @property
    def seeds(self) -> tuple[int, ...]:
        """The champion's held-out seeds."""
        return self.champion.result.seeds

    @property
    def env_steps(self) -> int:
        return sum(judged.result.env_steps for judged in self.judged)

    @property
    def episodes(self) -> int:
        return sum(len(judged.result.returns) for judged in self.judged)

    def record(self) -> dict[str, Any]:
        """``best/champion.json``: the crowned entry, its held-out seeds, returns and interval, and every candidate."""
        champion = self.champion
        return {
            "entry": champion.candidate.name, "step": champion.candidate.step,
            "sha256": champion.candidate.stored.manifest["sha256"],
            "held_out_mean": champion.result.mean_return, "held_out_std": champion.result.std_return,
            "interval": _listed(champion.interval), "confidence": CONFIDENCE,
            "interval_method": self.interval_method,
            "held_out_seeds": list(self.seeds), "returns": list(champion.result.returns),
            "lengths": list(champion.result.lengths),
            "training_best": self.training_best,
            "candidates": [judged.to_dict() for judged in self.judged],
            "race": self.race,
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
                "interval": _listed(self.champion.interval), "training_best": self.training_best,
                "training_best_mean": naive.candidate.training_mean if naive else None,
                "training_best_held_out_mean": naive.result.mean_return if naive else None,
                "candidates": len(self.judged), "ended": self.race.get("ended"), **self.cost()}

    def cost(self) -> dict[str, Any]:
        """What the crown took and left: wall seconds against its limit, env steps, episodes played and skipped."""
        most = self.race.get("max_episodes", 0) * len(self.judged)
        return {"seconds": round(self.seconds, 3), "time_limit_seconds": self.race.get("time_limit_seconds"),
                "env_steps": self.env_steps, "episodes": self.episodes,
                "episodes_skipped": max(most - self.episodes, 0), "workers": self.workers}


def held_out_seeds(config: TrainConfig) -> list[int]:
    """The crown's episode seeds, as many as a candidate may play: ``crown.episodes`` of them from ``crown.seed``
    (disjoint from the evaluation seeds; ``champion.agents.config.validate`` refuses an overlap). A race plays
    them in order, so every candidate's episodes are the first of these."""
    return episode_seeds(config.crown.held_out_seed(config.eval_seed), config.crown.episodes)


def time_limit(crown: CrownConfig, training_seconds: float | None) -> float | None:
    """The crown's time limit in seconds: ``crown.seconds`` if set, else ``crown.time_share`` of the training
    time but at least ``crown.min_seconds``; None (no limit) when ``time_share`` is 0 or the crown does not race
    (its one round would be dropped whole)."""
    if crown.seconds is not None:
        return float(crown.seconds)
    if crown.time_share <= 0 or not crown.race:  # a fixed crown has one round: a limit could only leave no crown
        return None
    return max(float(crown.min_seconds), crown.time_share * (training_seconds or 0.0))


def run_time_limit(run_dir: Path, config: TrainConfig) -> float | None:
    """The time limit of a crown of the run in ``run_dir``, from the training time its summary.json records."""
    return time_limit(config.crown, _recorded_training_seconds(Path(run_dir)))


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
              on_warning: Callable[[str], None] = warn, training_seconds: float | None = None,
              display: RaceDisplay | None = None) -> Crown:
    """Race the run's candidates on the held-out seeds and write ``best/champion.json`` atomically (the only write:
    a crash before it leaves the store as it was). ``player`` defaults to a ``ProcessPlayer`` for the config;
    ``training_seconds`` (default: summary.json's) sets the time limit; ``display`` shows the race's progress."""
    best_dir = Path(run_dir) / "best"
    found = candidates(best_dir, config.crown.candidates, on_warning)
    if not found:
        raise CrownError(f"{best_dir} holds no usable best-policy entry to crown; train the run first")
    training_best = _training_best(best_dir, found)
    if training_seconds is None:
        training_seconds = _recorded_training_seconds(Path(run_dir))
    limit = time_limit(config.crown, training_seconds)
    race = Race([candidate.name for candidate in found], config.crown.episodes, config.crown.tolerance,
                config.crown.race, order=[(candidate.name == training_best, candidate.step) for candidate in found])
    display = display or RaceDisplay(None)
    player = player or ProcessPlayer(config)
    started = time.perf_counter()
    try:
        returns, lengths, ended = _run_race(race, found, held_out_seeds(config), player, limit, display)
    finally:
        try:
            player.close()
        finally:
            display.close()
    seconds = time.perf_counter() - started
    crown = _judged(Path(run_dir), found, race, returns, lengths, held_out_seeds(config), training_best, seconds,
                    player.where, {"ended": ended, "time_limit_seconds": limit, "tolerance": config.crown.tolerance,
                                   "training_seconds": training_seconds})
    remove_dead_temporaries(best_dir / CHAMPION_FILE)
    crown = _with_replaced(crown, best_dir)
    atomic_write_text(best_dir / CHAMPION_FILE, json.dumps(seal(crown.record()), indent=2) + "\n")
    return crown


def _run_race(race: Race, found: list[Candidate], seeds: list[int], player: Player, limit: float | None,
              display: RaceDisplay) -> tuple[list[list[float]], list[list[int]], str]:
    """Play round after round until the race is over or out of time; the returns and lengths of each candidate's
    whole rounds (a round cut by the time limit is dropped: its finished episodes are the short ones) and why it
    ended."""
    policies = [candidate.policy() for candidate in found]
    returns: list[list[float]] = [[] for _ in found]
    lengths: list[list[int]] = [[] for _ in found]
    deadline = time.time() + limit if limit is not None else None
    display.start(race, limit)
    played = 0
    while True:
        target = race.next_count(played)
        running = list(race.running)
        try:
            results = player.play([policies[index] for index in running], seeds[played:target], deadline,
                                  display.episodes)
        except OutOfTime:
            if played == 0:
                raise CrownError(f"the crown's time limit ({limit:.0f} s) ran out before each candidate had played "
                                 f"{target} held-out episodes; raise crown.min_seconds or set crown.seconds") from None
            return returns, lengths, f"time limit after {played} episodes per candidate"
        except (BrokenProcessPool, EngineFailed) as error:  # processes or actors lost: keep the whole rounds
            if played == 0:
                raise
            return returns, lengths, f"players lost after {played} episodes per candidate ({first_line(error)})"
        for index, result in zip(running, results):
            returns[index].extend(result.returns)
            lengths[index].extend(result.lengths)
        played = target
        over = race.look(returns)
        display.round(race, played, [index for index in running if index not in race.running])
        if over:
            ended = ("one candidate left" if len(race.running) == 1
                     else f"its last round played ({played} episodes each)")
            return returns, lengths, ended


def _judged(run_dir: Path, found: list[Candidate], race: Race, returns: list[list[float]], lengths: list[list[int]],
            seeds: list[int], training_best: str, seconds: float, where: str, how: dict[str, Any]) -> Crown:
    """The Crown: each candidate's whole rounds with its interval, the leader of those still running crowned."""
    judged = []
    for index, candidate in enumerate(found):
        count = len(returns[index])
        result = EvalResult(tuple(returns[index]), tuple(lengths[index]), tuple(seeds[:count]))
        judged.append(Judged(candidate, result, reported_interval(returns[index], race.interval_error),
                             race.dropped.get(index, "")))
    champion = judged[race.leader(returns)]
    error, looked = race.interval_error, len(race.schedule)
    over = f"{len(found)} candidates and {looked} looks" if looked > 1 else f"{len(found)} candidates"
    method = (f"Student t at {1 - error:.4%} each (Bonferroni over {over}), so all intervals hold together at "
              f"{CONFIDENCE:.0%}" + (" whichever look the race stopped at" if looked > 1 else ""))
    info = {"looks": race.schedule, "max_episodes": race.max_episodes, "racing": race.racing, **how}
    return Crown(run_dir, judged, champion, training_best, seconds, where, info, interval_method=method)


def _with_replaced(crown: Crown, best_dir: Path) -> Crown:
    """The crown, knowing the record it is about to replace (read here, under the run's lock)."""
    from dataclasses import replace

    return replace(crown, replaced=read_champion(best_dir))


def _recorded_training_seconds(run_dir: Path) -> float | None:
    """The run's training wall time over all its sessions as summary.json records it (a summary from before this
    figure: its last session's); None without one."""
    try:
        summary = read_record(run_dir / "summary.json")
        seconds = summary.get("run_wall_seconds", summary.get("wall_seconds"))
    except (OSError, ValueError, AttributeError):
        return None
    return float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else None


def _listed(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else list(interval)


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
                    on_warning: Callable[[str], None] = warn, display: RaceDisplay | None = None) -> Crown:
    """``champion crown RUN_DIR``: crown a finished (or stopped) run with its config's ``crown.*`` settings and
    ``overrides`` of them, while holding the run's lock; log it to TensorBoard and add it to summary.json. The
    time limit is measured against the training time summary.json records."""
    from champion.agents.config import validate
    from champion.runners.configure import apply_overrides, load_run_config, validate_recorded
    from champion.runners.run_state import CrownInterrupted, CrownSignals
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
    signals = CrownSignals()  # SIGTERM too unwinds: the lock is released, the spawned players are stopped
    try:
        with signals, RunLock(run_dir):
            crown = crown_run(run_dir, config, on_warning=on_warning, display=display)
            log_crown_to_tensorboard(crown)
            add_to_summary(run_dir / "summary.json", crown)
    except KeyboardInterrupt:
        if signals.signal_number == signal.SIGTERM:
            earlier = read_champion(run_dir / "best") is not None  # an earlier crown's record stands
            raise CrownInterrupted(signal.SIGTERM, run_dir, crowned=earlier) from None
        raise
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


class RaceDisplay:
    """The race's progress: a live line on a terminal (episodes played, candidates in the race, time left) and a
    line per round wherever the console prints (a log file gets the rounds only). ``RaceDisplay(None)`` shows
    nothing."""

    def __init__(self, console: Any | None) -> None:
        self.console, self.progress, self.task = console, None, None
        self.started, self.limit = time.perf_counter(), None

    def start(self, race: Race, limit: float | None) -> None:
        self.started, self.limit = time.perf_counter(), limit
        if self.console is None or self.console.quiet or not self.console.is_terminal:
            return
        from rich.progress import BarColumn, Progress, TextColumn

        self.progress = Progress(TextColumn("[bold blue]crown"), BarColumn(bar_width=10),
                                 TextColumn("{task.completed:,.0f} episodes, {task.fields[running]} in the race, "
                                            "{task.fields[left]}"), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("crown", total=race.max_episodes * len(race.names),
                                           running=len(race.running), left=self._left())

    def episodes(self, count: int) -> None:
        """``count`` more episodes finished."""
        if self.progress is not None:
            self.progress.update(self.task, advance=count, left=self._left())

    def round(self, race: Race, played: int, stopped: list[int]) -> None:
        """A round is over: one line saying who stopped and who is still in the race."""
        if self.progress is not None:
            done = self.progress.tasks[0].completed  # what is left: the running candidates' episodes to come
            self.progress.update(self.task, running=len(race.running), left=self._left(),
                                 total=done + (race.max_episodes - played) * len(race.running))
        if self.console is None:
            return
        dropped = "".join(f"; {race.names[index]} stops ({race.dropped[index].rsplit(' after ', 1)[0]})"
                          for index in stopped)
        self.console.print(f"crown: {played} held-out episodes per candidate{dropped}; {len(race.running)} in the "
                           f"race; {time.perf_counter() - self.started:.1f}s{self._of_limit()}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _left(self) -> str:
        if self.limit is None:
            return "no time limit"
        return f"{max(self.limit - (time.perf_counter() - self.started), 0.0):.0f}s of {self.limit:.0f}s left"

    def _of_limit(self) -> str:
        return f" of its {self.limit:.0f}s limit" if self.limit is not None else ""


def crown_table(crown: Crown) -> list[str]:
    """Markdown lines: one row per candidate, the champion marked (for the terminal and TensorBoard)."""
    lines = [f"| entry | step | training mean | held-out mean ± std | episodes | interval | |",
             "|---|---|---|---|---|---|---|"]
    for judged in crown.judged:
        marks = [mark for mark, applies in (("crowned", judged is crown.champion),
                                            ("training-time best", judged.candidate.name == crown.training_best),
                                            ("final policy", judged.candidate.is_final)) if applies]
        interval = "none: all equal" if judged.interval is None else "[{:.2f}, {:.2f}]".format(*judged.interval)
        lines.append(f"| {judged.candidate.name} | {judged.candidate.step:,} | {judged.candidate.training_mean:.2f} | "
                     f"{judged.result.mean_return:.2f} ± {judged.result.std_return:.2f} | "
                     f"{len(judged.result.returns)} | {interval} | {', '.join(marks)} |")
    return lines


def crown_lines(crown: Crown) -> list[str]:
    """What the terminal shows after a crown: the table, the champion, the training-time best beside it, how the
    race ended, and what it cost against its limit (the champion's path is the caller's closing line)."""
    champion, naive = crown.champion, crown.training_best_judged()
    count = len(champion.result.returns)
    if champion.interval is None:  # every episode returned the same: no spread to build an interval from
        held = f"held-out return {champion.result.mean_return:.2f} in every one of its {count} episodes"
    else:
        low, high = champion.interval
        held = (f"held-out mean {champion.result.mean_return:.2f} ({CONFIDENCE:.0%} interval {low:.2f} to {high:.2f}, "
                f"holding for every candidate at once) over {count} episodes")
    lines = ["", *crown_table(crown), "", f"crowned: {champion.candidate.name}, {held}"]
    if naive is not None and naive is not champion:
        lines.append(f"the training-time best {naive.candidate.name} recorded {naive.candidate.training_mean:.2f} "
                     f"and holds {naive.result.mean_return:.2f} on the held-out episodes")
    elif naive is not None:
        lines.append(f"the training-time best is the champion; it recorded {naive.candidate.training_mean:.2f}")
    cost, race = crown.cost(), crown.race
    limit = cost["time_limit_seconds"]
    of_limit = f" of its {limit:.0f}s limit" if limit is not None else ""
    skipped = f", {cost['episodes_skipped']:,} skipped" if cost["episodes_skipped"] else ""
    lines.append(f"the race ended: {race.get('ended', '')}; the crown took {cost['seconds']:.1f}s{of_limit} for "
                 f"{cost['episodes']:,} episodes{skipped} ({cost['env_steps']:,} env steps, {cost['workers']})")
    return lines


def log_crown_to_tensorboard(crown: Crown) -> None:
    """The crown's scalars and table in the run's TensorBoard folder."""
    from champion.runners.logs.run_logger import log_crown

    log_crown(crown.run_dir, {judged.candidate.step: judged.result.mean_return for judged in crown.judged},
              max(judged.candidate.step for judged in crown.judged), crown.champion.result.mean_return,
              "\n".join(crown_table(crown)))
