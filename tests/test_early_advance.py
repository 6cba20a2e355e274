"""A fresh run's first advance runs on a worker thread while the run is built, traced on the caller's thread."""

import signal
import threading

import pytest

from runners import training
from runners.configure import resolve_config
from runners.engines import Advance, EarlyAdvance, EpisodeStats, GymnasiumEngine
from runners.graph_engine import GraphEngine
from runners.training import train


class RecordingEngine:
    """Records which thread prepared and advanced it, and can be made to fail or to hold its advance."""

    kind = "fake"

    def __init__(self, error: Exception | None = None) -> None:
        self.error, self.release = error, threading.Event()
        self.prepared_on: str | None = None
        self.advanced: list[tuple[str, tuple[int, int, int]]] = []
        self.events: list[str] = []

    def prepare(self) -> None:
        self.prepared_on = threading.current_thread().name

    def advance(self, step: int, max_env_steps: int, total_steps: int) -> Advance:
        self.release.wait(timeout=10)
        self.events.append("advance finished")
        if self.error is not None:
            raise self.error
        self.advanced.append((threading.current_thread().name, (step, max_env_steps, total_steps)))
        return Advance(max_env_steps, 1, {"loss": 0.5}, EpisodeStats(2, 30.0, 30.0))

    def start(self, saved, step, warn) -> None:
        self.events.append("started")

    def close(self) -> None:
        self.events.append("closed")


def test_the_trace_is_made_on_the_calling_thread_and_the_advance_on_a_worker():
    engine = RecordingEngine()
    early = EarlyAdvance(engine, 0, 2_048, 10_000)
    assert engine.prepared_on == threading.current_thread().name  # before the worker starts: names stay stable
    assert engine.advanced == []  # held: the caller goes on building meanwhile
    engine.release.set()
    advanced = early.result()
    assert engine.advanced == [("champion-first-advance", (0, 2_048, 10_000))]
    assert (advanced.env_steps, advanced.metrics, advanced.episodes.count) == (2_048, {"loss": 0.5}, 2)


def test_an_error_in_the_first_advance_is_raised_where_the_loop_takes_it():
    engine = RecordingEngine(error=ValueError("the env exploded"))
    early = EarlyAdvance(engine, 0, 2_048, 10_000)
    engine.release.set()
    early.wait()  # waiting alone (a run unwinding after another error) raises nothing
    with pytest.raises(ValueError, match="the env exploded"):
        early.result()


def test_ctrl_c_while_waiting_is_raised_only_once_the_advance_has_finished():
    engine = RecordingEngine()
    early = EarlyAdvance(engine, 0, 2_048, 10_000)
    threading.Timer(0.2, signal.raise_signal, (signal.SIGINT,)).start()  # lands in the main thread's wait
    threading.Timer(0.6, engine.release.set).start()
    with pytest.raises(KeyboardInterrupt):
        early.wait()
    assert engine.events == ["advance finished"]  # a compiled call cannot be stopped: the wait outlasts it


def test_a_failure_while_the_run_is_built_closes_the_engine_after_its_first_advance(tmp_path, monkeypatch):
    engine = RecordingEngine()
    threading.Timer(0.3, engine.release.set).start()
    monkeypatch.setattr(training, "make_engine", lambda *arguments: engine)

    def broken_eval_env(*arguments, **keywords):
        raise OSError("no room for the evaluation envs")

    monkeypatch.setattr(training, "make_eval_env", broken_eval_env)
    config, _ = resolve_config("CartPole-v1", "ppo", {"total_steps": 1_024, "results_dir": str(tmp_path),
                                                      "run_name": "broken", "media": False})
    with pytest.raises(training.TrainingStopped, match="no room for the evaluation envs"):
        train(config, progress=False)
    assert engine.events == ["started", "advance finished", "closed"]


@pytest.mark.parametrize("engine_kind", ["graph", "gymnasium"])
def test_a_fresh_run_makes_its_first_advance_on_the_worker_and_the_rest_on_the_loop(tmp_path, monkeypatch, engine_kind):
    threads = []
    engine_class = GraphEngine if engine_kind == "graph" else GymnasiumEngine
    original = engine_class.advance

    def recording_advance(self, *arguments):
        threads.append(threading.current_thread().name)
        return original(self, *arguments)

    monkeypatch.setattr(engine_class, "advance", recording_advance)
    config, _ = resolve_config("CartPole-v1", "ppo", {"total_steps": 1_024, "eval_every": 512, "log_every": 256,
                                                      "engine": engine_kind, "ppo.epochs": 2, "media": False,
                                                      "results_dir": str(tmp_path), "run_name": "early"})
    result = train(config, progress=False)
    loop = threading.current_thread().name
    assert threads[0] == "champion-first-advance" and set(threads[1:]) == {loop}
    assert result.env_steps == 1_024 and [step for step, _ in result.evaluations] == [512, 1_024]
    first_phase = "compile+first call (graph)" if engine_kind == "graph" else "first update"
    assert result.timing_calls[first_phase] == 1  # the advance made early is still the one that compiled
