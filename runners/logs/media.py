"""An animated GIF of each new best policy for TensorBoard, within a budget of the run's time.

At a new best, one evaluation episode (the first evaluation seed, so it is an episode the
policy was scored on) is played again with rgb_array rendering, thinned and shrunk, and encoded
as a GIF. Rendering costs far more than stepping, so it is throttled: a recording starts only
if, at the cost of the last one (before the first, an estimate), media stay within ``budget`` of the
session's wall time; a best that was skipped is recorded at the end of the run if the budget then allows,
and otherwise stays without a GIF (the run says so). The loop counts every recording as its "media" phase.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from champion.agents.acting import acting_policy
from champion.agents.numpy_policy import NumpyPolicy
from champion.agents.spec import NetworkSpec
from champion.envs.factory import EnvOptions, make_eval_env, renders_apart
from champion.runners.evaluate import EvalResult, evaluate
from champion.runners.store.runs import ReplayError

MEDIA_BUDGET = 0.04
"""At most this share of the wall time goes to recording GIFs (plus the one recording that crosses it)."""
FIRST_ESTIMATE = 0.5
"""Seconds a recording in this process is assumed to take before one has been measured (measured 2026-12-07,
load about 4: CartPole 0.03-0.06, LunarLander 0.2-0.3, Pendulum and Acrobot 0.3-0.8, Breakout 0.35 on one BLAS
thread as in training)."""
FIRST_ESTIMATE_APART = 15.0
"""The same for an env rendered in a spawned process (``renders_apart``: MuJoCo). HalfCheetah's and Ant's GIFs took
14-15 s each (measured 2026-12-07, load about 4: 100 frames of 480x480 by Mesa's CPU renderer at about 0.11 s
each, and the process's start), so a short run records none instead of spending half its time on one."""
MAX_FRAMES = 100
"""Frames per GIF: every ``FRAME_STRIDE``-th frame of the episode, from its start."""
FRAME_STRIDE = 2
MAX_WIDTH = 320
"""Frames are thinned to at most this many pixels across."""


@dataclass
class PendingBest:
    """A new best that the budget did not allow recording when it came: its step and the policy to play."""

    step: int
    policy: NumpyPolicy


class BestPolicyMedia:
    """Records GIFs of new best policies for ``write(step, gif_bytes)`` (the logger)."""

    def __init__(self, env_id: str, seed: int, write: Callable[[int, bytes, int, int], None],
                 budget: float | None = None, options: EnvOptions = EnvOptions()) -> None:
        self.env_id, self.seed, self.options = env_id, seed, options
        self.write = write
        self.budget = MEDIA_BUDGET if budget is None else budget
        self.seconds = self.last_seconds = 0.0
        self.attempts = self.recorded = 0
        self.pending: PendingBest | None = None

    def offer(self, step: int, wall_seconds: float, policy: NumpyPolicy) -> bool:
        """Record the new best at ``step`` (``policy``: a snapshot of it) now if the budget allows, else keep it
        for ``finish``."""
        if not self._affordable(wall_seconds):
            self.pending = PendingBest(step, policy)
            return False
        self.pending = None
        self._record(step, policy)
        return True

    def finish(self, wall_seconds: float) -> bool:
        """At the end of a run: record the last skipped best if the budget allows it now; else it stays
        ``pending`` (without a GIF), for the caller to say so."""
        if self.pending is None or not self._affordable(wall_seconds):
            return False
        self._record(self.pending.step, self.pending.policy)
        self.pending = None
        return True

    def expected_seconds(self) -> float:
        """What the next recording is expected to cost: the last one's, else a first estimate for how it renders."""
        if self.attempts:
            return self.last_seconds
        return FIRST_ESTIMATE_APART if renders_apart(self.env_id) else FIRST_ESTIMATE

    def _affordable(self, wall_seconds: float) -> bool:
        """Whether one more recording at its expected cost keeps media within the budget of ``wall_seconds``."""
        return self.seconds + self.expected_seconds() <= self.budget * wall_seconds

    def _record(self, step: int, policy: NumpyPolicy) -> None:
        started = time.perf_counter()
        self.attempts += 1
        frames, fps = play_apart(play_and_render, self.env_id, self.options, self.seed, policy.spec, policy.weights)
        if frames and frames[0] is not None:
            thinned = [shrink(frame) for frame in frames[:MAX_FRAMES]]
            height, width = thinned[0].shape[:2]
            self.write(step, encode_gif(thinned, fps / FRAME_STRIDE), width, height)
            self.recorded += 1
        self.last_seconds = time.perf_counter() - started
        self.seconds += self.last_seconds


def play_apart(play: Callable[..., Any], env_id: str, *arguments: Any) -> Any:
    """``play(env_id, *arguments)`` here, or in a fresh process without TensorFlow for an env that must render
    apart from it (``champion.envs.factory.renders_apart``); the episodes and returns are the same either way. A
    torso of the user's needs TensorFlow to act, so its episodes cannot render apart (ReplayError, one line)."""
    if not renders_apart(env_id):
        return play(env_id, *arguments)
    spec = next((argument for argument in arguments if isinstance(argument, NetworkSpec)), None)
    if spec is not None and spec.user_torso:
        raise ReplayError(f"{env_id} renders only in a process without TensorFlow, and network.torso {spec.torso} "
                          "acts in TensorFlow, so its episodes cannot be rendered; replay without --video")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as process:
        return process.submit(play, env_id, *arguments).result()


def play_and_render(env_id: str, options: EnvOptions, seed: int, spec: NetworkSpec,
                    weights: dict[str, np.ndarray]) -> tuple[list[np.ndarray], float]:
    """The frames (every FRAME_STRIDE-th, up to MAX_FRAMES) of the episode from ``seed`` played with these weights,
    and the env's frame rate. TensorFlow-free, so it can run in a process of its own (``renders_apart``)."""
    policy = acting_policy(spec, weights)
    frames: list[np.ndarray] = []
    envs = make_eval_env(env_id, 1, render_mode="rgb_array", options=options)
    try:
        evaluate(policy, envs, [seed], frames, max_steps=MAX_FRAMES * FRAME_STRIDE, frame_every=FRAME_STRIDE,
                 env_id=env_id)
        return frames, envs.metadata.get("render_fps") or 30
    finally:
        envs.close()


def shrink(frame: np.ndarray) -> np.ndarray:
    """Every k-th pixel so the frame is at most MAX_WIDTH wide (cheap, and enough to see the policy)."""
    stride = max(1, -(-frame.shape[1] // MAX_WIDTH))
    return np.ascontiguousarray(frame[::stride, ::stride, :3])


def encode_gif(frames: list[np.ndarray], fps: float) -> bytes:
    """An endlessly looping GIF of ``frames``, every frame on the first frame's 64-colour palette (fast, and
    enough for rendered control tasks, whose colours do not change)."""
    from PIL import Image

    first = Image.fromarray(frames[0]).quantize(colors=64, method=Image.Quantize.FASTOCTREE)
    rest = [Image.fromarray(frame).quantize(palette=first, dither=Image.Dither.NONE) for frame in frames[1:]]
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)
    return buffer.getvalue()


def write_video(env_id: str, options: EnvOptions, seeds: list[int], spec: NetworkSpec, weights: dict[str, np.ndarray],
                path: Path) -> EvalResult:
    """Play one episode per seed with these weights (as ``evaluate`` does), writing the first one's frames to a GIF
    or MP4 at ``path``. TensorFlow-free, so it can run in a process of its own (``renders_apart``)."""
    envs = make_eval_env(env_id, len(seeds), "rgb_array", options)
    try:
        fps = envs.metadata.get("render_fps") or 30
        with VideoWriter(path, fps) as frames:
            return evaluate(acting_policy(spec, weights), envs, seeds, frames, env_id=env_id)
    finally:
        envs.close()


class VideoWriter:
    """Frames of the first episode written to a GIF (pillow) or MP4 (ffmpeg) as they come, so that the episode
    is never held in memory whole; the file takes its name only once complete (a temporary name until then)."""

    PROGRESS_EVERY = 5.0
    """Seconds between progress lines on stderr (a long episode rendered and encoded takes minutes)."""

    def __init__(self, path: Path, fps: int) -> None:
        self.path, self.fps, self.frames = path, fps, 0
        self.temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        self._writer: Any = None
        self._started = self._last_progress = time.monotonic()
        self._said = False

    def __enter__(self) -> "VideoWriter":
        import imageio.v2 as imageio

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.suffix.lower() == ".gif":
                self._writer = imageio.get_writer(self.temporary, mode="I", duration=1000 / self.fps, loop=0)
            else:
                self._writer = imageio.get_writer(self.temporary, fps=self.fps, macro_block_size=1)
        except OSError as error:
            raise ReplayError(f"cannot write the video to {self.path} ({error.strerror or error}); "
                              "choose another --video path") from None
        return self

    def append(self, frame: np.ndarray | None) -> None:
        """Write one rgb_array frame (``evaluate`` calls it for each frame of the first episode)."""
        if frame is None:
            raise ReplayError("the environment produced no rgb_array frames, so no video can be written")
        self._writer.append_data(frame)
        self.frames += 1
        now = time.monotonic()
        if now - self._last_progress >= self.PROGRESS_EVERY:
            self._last_progress, self._said = now, True
            self._progress(f"{self.frames:,} frames of the first episode so far ({now - self._started:.0f} s)")

    def _progress(self, text: str) -> None:
        """One line on stderr (stdout holds the results): the video's name and how far it is."""
        import sys

        print(f"video {self.path.name}: {text}", file=sys.stderr, flush=True)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        try:
            self._writer.close()
            if kind is None:
                if not self.frames:
                    raise ReplayError("the environment produced no rgb_array frames, so no video can be written")
                os.replace(self.temporary, self.path)
                if self._said:
                    self._progress(f"{self.frames:,} frames written in {time.monotonic() - self._started:.0f} s")
        except OSError as failure:
            raise ReplayError(f"cannot write the video to {self.path} ({failure.strerror or failure}); "
                              "choose another --video path") from None
        finally:
            self.temporary.unlink(missing_ok=True)
