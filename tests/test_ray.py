"""The Ray engine on a local Ray started by this test session: learning, the same evaluations as in process,
faults (a killed worker, a hung worker, a lost node), Ctrl-C and resume, and the clear errors."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from champion.agents.config import ConfigError
from champion.envs.factory import EnvError
from crash_helpers import (CHAMPION, champion, champion_here, evaluation_rows, kill_resume_and_compare, run_options,
                           tensorboard_steps)
from champion.runners.store.checkpoints import read_checkpoint
from champion.runners.configure import resolve_config
from champion.runners.replay import replay
from champion.runners.run_state import TrainingStopped
from champion.runners.training import resume, train

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one local Ray for all of them, in one xdist worker

HERE = Path(__file__).parent


def ray_config(tmp_path, name, env_id="CartPole-v1", **overrides):
    values = {"engine": "ray", "ray.workers": 2, "results_dir": str(tmp_path), "run_name": name, "media": False,
              "ray.eval_workers": 1}
    values.update(overrides)
    return resolve_config(env_id, "ppo", values)[0]


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_ray_trains_cartpole_to_475_and_the_best_policy_replays(local_ray, tmp_path):
    result = train(ray_config(tmp_path, "learn", total_steps=40_000, **{"crown.episodes": 40}), progress=False)
    assert result.best_mean_return >= 475
    outcome = replay(result.run_dir)
    assert outcome.crowned  # the crown played its episodes on Ray actors; here they are replayed in process
    assert outcome.result.mean_return == outcome.recorded_mean_return
    assert summary(result.run_dir)["crown"]["workers"] == "2 Ray actors"
    engine = summary(result.run_dir)["engine"]
    assert engine["kind"] == "ray" and engine["workers"] == 2 and engine["envs_per_worker"] == 4
    assert engine["worker_restarts"] == 0
    assert [process["tensorflow"] for process in engine["worker_processes"]] == [False, False]
    assert all(process["peak_rss_mb"] < 400 for process in engine["worker_processes"])
    tags = tensorboard_steps(result.run_dir)
    for tag in ("ray/fragment_wait_s", "ray/update_s", "ray/worker_0_steps_per_s", "ray/worker_1_steps_per_s",
                "ray/worker_restarts"):
        assert len(tags[tag]) >= 10, tag  # logged every log_every steps


def test_two_workers_of_four_envs_give_the_evaluations_of_eight_envs_in_process(local_ray, tmp_path):
    """Reward scaling and observation normalisation on, so the driver's scaling and the stacked batch count."""
    common = {"total_steps": 6144, "eval_every": 1024, "reward_scaling": True, "network.normalize_observations": True,
              "ppo.epochs": 4, "seed": 3}
    in_process = train(ray_config(tmp_path, "in-process", **common, engine="gymnasium"), progress=False)
    on_ray = train(ray_config(tmp_path, "on-ray", **common, **{"ray.envs_per_worker": 4}), progress=False)
    assert len(on_ray.evaluations) == 6
    assert on_ray.evaluations == in_process.evaluations
    assert len({mean for _, mean in on_ray.evaluations}) > 1  # it learned something: not the same number six times


SPACES = {  # a Dict observation with MultiDiscrete actions, MultiBinary, a (2, 2) Box action, an image
    "DictMultiCue": {},
    "BinaryCue": {},
    "MatrixCue": {},
    "QuadrantCue": {"network.cnn_layers": [[16, 4, 2], [32, 3, 2]], "network.cnn_features": 64},
}


@pytest.mark.parametrize("task", SPACES)
def test_every_space_trains_on_ray_workers_as_in_process(local_ray, tmp_path, task):
    """The toy envs of tests/test_spaces.py (from toy_envs, which the workers import), 2 workers x 2 envs against 4
    envs in process; evaluation split over two actors."""
    common = {"total_steps": 1024, "num_envs": 4, "eval_every": 512, "eval_episodes": 6, "ppo.num_steps": 64,
              "ppo.minibatch_size": 64, "ppo.epochs": 2, "ppo.learning_rate": 2e-3, "seed": 1, **SPACES[task]}
    env_id = f"toy_envs:champion-test/{task}-v0"
    in_process = train(ray_config(tmp_path, "in-process", env_id, **common, engine="gymnasium"), progress=False)
    on_ray = train(ray_config(tmp_path, "on-ray", env_id, **common, **{"ray.eval_workers": 2}), progress=False)
    assert on_ray.evaluations == in_process.evaluations and len(on_ray.evaluations) == 2


def fault(local_ray, kind):
    """Ask the first FaultyCartPole env on a worker to die (kill) or hang at its 50th step, sparing this process."""
    (Path(local_ray["faults"]) / kind).write_text(str(os.getpid()))


def test_a_worker_killed_mid_run_is_restarted_and_training_goes_on(local_ray, tmp_path, capsys):
    fault(local_ray, "kill")
    result = train(ray_config(tmp_path, "killed", "toy_envs:FaultyCartPole-v0", total_steps=4096, eval_every=2048,
                              **{"ray.eval_workers": 0}), progress=False)
    assert not (Path(local_ray["faults"]) / "kill").exists()  # the fault happened
    assert result.env_steps == 4096
    assert summary(result.run_dir)["engine"]["worker_restarts"] == 1
    assert "restarted it (1 of 3 restarts within 3600 s)" in capsys.readouterr().err


def kill_workers_before_rollout(monkeypatch, at: dict[int, list[int]]):
    """Before rollout v (the engine's weights version) SIGKILL the processes of the rollout workers at[v], all at once
    (as a lost node takes several); returns how long each batch of restarts took, by rollout."""
    import time

    from champion.runners.engines import ray_engine

    collect, restart, took = ray_engine.RayEngine._collect, ray_engine.RayEngine._restart, {}

    def collect_after_killing(engine, step):
        if engine.version + 1 in at:
            indices = at[engine.version + 1]
            pids = [report["pid"] for report in ray.get([engine.workers[index].process.remote() for index in indices])]
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        return collect(engine, step)

    def timed_restart(engine, lost, step):
        started = time.monotonic()
        try:
            return restart(engine, lost, step)
        finally:
            took.setdefault(engine.version, []).append((sorted(lost), time.monotonic() - started))

    monkeypatch.setattr(ray_engine.RayEngine, "_collect", collect_after_killing)
    monkeypatch.setattr(ray_engine.RayEngine, "_restart", timed_restart)
    return took


def four_workers(tmp_path, name, **overrides):
    """4 workers of 2 envs on the session's 2-CPU Ray (half a CPU each), evaluation in the driver."""
    values = {"total_steps": 2048, "eval_every": 1024, "ray.workers": 4, "ray.worker_cpus": 0.5, "ray.eval_workers": 0,
              "crown.at_end": False, **overrides}
    return ray_config(tmp_path, name, **values)


def test_several_workers_lost_at_once_are_restarted_together_each_within_its_own_budget(local_ray, tmp_path,
                                                                                         monkeypatch, capsys):
    """Three of four workers killed before rollout 3 (a node of three lost): with ray.max_worker_restarts=1 each, a
    budget the whole run's three restarts would have passed under a run-wide count, the run goes on; the three are
    started together (one warning line, one batch of restarts) and the final line says the run is no longer exact,
    also after a resume, and after one onto 2 workers, where indices 0, 1, 2 would name other workers."""
    took = kill_workers_before_rollout(monkeypatch, {3: [0, 1, 2]})
    result = train(four_workers(tmp_path, "node-lost", **{"ray.max_worker_restarts": 1, "schedule_steps": 4096}),
                   progress=True)
    assert result.env_steps == 2048
    engine = summary(result.run_dir)["engine"]
    assert engine["worker_restarts"] == 3 and engine["worker_restarts_by_worker"] == {"0": 1, "1": 1, "2": 1}
    assert [lost for lost, _ in took[3]] == [[0, 1, 2]]  # one batch: started together, awaited together
    captured = capsys.readouterr()
    [warning] = [line for line in captured.err.splitlines() if "restarted them" in line]
    assert "rollout workers 0, 1, 2 were lost" in warning and "(up to 1 of 1 restarts each within 3600 s)" in warning
    [done] = [line for line in captured.out.splitlines() if line.startswith("done:")]
    assert "not exact: rollout workers 0, 1, 2 were restarted (last at step 512)" in done
    [checkpoint] = sorted((result.run_dir / "checkpoints").glob("ckpt-*"))  # a resume's final line says it too
    assert read_checkpoint(checkpoint).state["restarted_workers"] == {0: 512, 1: 512, 2: 512}
    resume(result.run_dir, {"total_steps": 2560}, progress=True)  # two rollouts more, no fault
    [done] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("done:")]
    assert "not exact: rollout workers 0, 1, 2 were restarted (last at step 512)" in done
    resume(result.run_dir, {"total_steps": 3072, "ray.workers": 2}, progress=True)  # 2 workers of 4 envs now
    [done] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("done:")]
    assert ("not exact: rollout workers of an earlier layout were restarted (last at step 512) and the resume at step "
            "2,560 restarted episodes, so the same run without faults would differ") in done  # not "workers 0, 1, 2"
    newest = sorted((result.run_dir / "checkpoints").glob("ckpt-*"))[-1]
    state = read_checkpoint(newest).state
    assert state["restarted_workers"] == {} and state["restarted_earlier_layout"] == 512


def test_a_worker_past_its_own_restarts_ends_the_run_in_one_line(local_ray, tmp_path, monkeypatch):
    """Worker 1 killed before rollouts 2 and 4 with ray.max_worker_restarts=1: its second loss ends the run (with a
    checkpoint), though the other workers never restarted."""
    kill_workers_before_rollout(monkeypatch, {2: [1], 4: [1]})
    with pytest.raises(TrainingStopped) as stopped:
        train(four_workers(tmp_path, "budget", **{"ray.max_worker_restarts": 1}), progress=False)
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith("error: rollout worker 1 was lost")
    assert ", and it has used its ray.max_worker_restarts=1 restarts within ray.restart_window_s=3600 s" in message
    assert "continue with: champion train --resume" in message


def dying_in_its_constructor(base, tally: Path, dies, index=None):
    """A subclass of the actor class ``base`` whose constructor writes a line into ``tally`` and kills its process
    when ``dies(lines)`` (for worker ``index`` only, if given), as a worker that dies as it starts. Made in a
    function, so that Ray sends the class by value to the workers, which do not import this module."""
    class DyingInItsConstructor(base):
        def __init__(self, *arguments):
            if index is None or arguments[0].worker_index == index:
                with open(tally, "a") as file:
                    file.write("constructed\n")
                with open(tally) as file:
                    if dies(len(file.readlines())):
                        os._exit(1)
            super().__init__(*arguments)

    return DyingInItsConstructor


def test_a_worker_that_dies_every_time_it_starts_stops_the_run_after_its_restarts(local_ray, tmp_path, monkeypatch):
    """Worker 1 is killed before rollout 2, and every fresh actor made for it dies in its constructor. The driver
    makes the actors itself (Ray restarts none), so with ray.max_worker_restarts=2 it makes exactly two, and the
    run stops in one line with a checkpoint; with Ray restarting them within a window, they looped unseen."""
    from champion.runners.engines import ray_engine

    tally = tmp_path / "constructions"
    monkeypatch.setattr(ray_engine, "RolloutWorker", dying_in_its_constructor(ray_engine.RolloutWorker, tally,
                                                                              lambda count: count > 1, index=1))
    kill_workers_before_rollout(monkeypatch, {2: [1]})
    with pytest.raises(TrainingStopped) as stopped:
        train(four_workers(tmp_path, "crash-loop", **{"ray.max_worker_restarts": 2}), progress=False)
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith("error: rollout worker 1 died as it started again (ActorDiedError: ")
    assert ("and it has used its ray.max_worker_restarts=2 restarts within ray.restart_window_s=3600 s; a checkpoint "
            "at step 256 was written") in message
    assert len(tally.read_text().splitlines()) == 1 + 2  # the first actor, then one per restart of its budget
    [run_dir] = tmp_path.glob("*/ppo/crash-loop")
    [checkpoint] = (run_dir / "checkpoints").glob("ckpt-*")
    assert read_checkpoint(checkpoint).manifest["step"] == 256


def test_an_evaluation_actor_that_dies_every_time_it_starts_stops_after_its_restarts(local_ray, tmp_path,
                                                                                    monkeypatch):
    """The same for evaluation actors: ray.max_worker_restarts=1, so the first actor and one fresh one, each dead in
    its constructor, then EvaluationFailed in one line; two warnings would be one too many."""
    from champion.runners.ray import evaluation as ray_evaluation

    config, spec, policy, seeds, _ = evaluation_setup(tmp_path, "CartPole-v1", **{"ray.max_worker_restarts": 1,
                                                                                  "eval_episodes": 2})
    tally = tmp_path / "constructions"
    monkeypatch.setattr(ray_evaluation, "EvaluationWorker",
                        dying_in_its_constructor(ray_evaluation.EvaluationWorker, tally, lambda count: True))
    warnings = []
    evaluation = ray_evaluation.RayEvaluation.from_config(config, spec, seeds, warn=warnings.append)
    try:
        evaluation.start(0, policy)
        with pytest.raises(ray_evaluation.EvaluationFailed) as failed:
            finished_by_polling(evaluation)
    finally:
        evaluation.close()
    assert re.fullmatch(r"evaluation actor 0 was lost \(ActorDiedError: [^\n]+\) during its 2 episodes of the "
                        r"evaluation at step 0, and it has used its ray.max_worker_restarts=1 restarts within "
                        r"ray.restart_window_s=3600 s", str(failed.value)), str(failed.value)
    assert len(warnings) == 1 and evaluation.restarts == 1
    assert len(tally.read_text().splitlines()) == 2  # the first actor and one fresh one


def test_the_crowns_ray_player_replaces_a_lost_actor_within_the_runs_window_and_warns_on_stderr(local_ray, tmp_path,
                                                                                                 monkeypatch, capsys):
    """The crown's first Ray actor dies in its constructor: the RayPlayer replaces it as the run's evaluations do
    (its warning counts within ray.restart_window_s, on stderr through champion's warning, not on stdout), and the
    returns are the in-process ones."""
    from champion.runners.crown_players import RayPlayer
    from champion.runners.ray import evaluation as ray_evaluation

    config, spec, policy, seeds, expected = evaluation_setup(tmp_path, "CartPole-v1", **{"ray.workers": 1,
                                                                                         "eval_episodes": 4})
    tally = tmp_path / "constructions"
    monkeypatch.setattr(ray_evaluation, "EvaluationWorker",
                        dying_in_its_constructor(ray_evaluation.EvaluationWorker, tally, lambda count: count == 1))
    capsys.readouterr()
    player = RayPlayer(config, spec)
    assert player.play([policy, policy], seeds) == [expected, expected]
    assert player.play([policy], seeds) == [expected]  # a second round, on an actor of its own
    assert player.budget.used(0) == 1  # one budget for the whole race, as for a run's evaluations
    captured = capsys.readouterr()
    [warning] = [line for line in captured.err.splitlines() if "evaluation actor" in line]
    assert re.match(r"champion: warning: evaluation actor 0 was lost \(ActorDiedError: [^\n]+\) during its 4 "
                    r"episodes", warning), warning
    assert "restarted it (1 of 3 restarts within 3600 s)" in warning
    assert "evaluation actor" not in captured.out
    assert len(tally.read_text().splitlines()) == 3  # the dead one, its replacement, the second round's actor


def test_a_restart_budget_counts_each_worker_apart_and_lets_old_restarts_lapse(monkeypatch):
    """ray.max_worker_restarts per worker within ray.restart_window_s: a whole node's workers once each are within
    it, one worker twice within the window is not, and a restart older than the window no longer counts."""
    from champion.runners.ray import workers

    now = [1000.0]
    monkeypatch.setattr(workers.time, "monotonic", lambda: now[0])
    budget = workers.RestartBudget(8, limit=1, window_s=3600)
    assert [budget.count(index) for index in range(8)] == [1] * 8  # a node of 8 workers lost: one restart each
    assert all(budget.exhausted(index) for index in range(8))
    now[0] += 3601
    assert not budget.exhausted(3) and budget.count(3) == 1  # an hour on, worker 3 may be restarted again
    whole_session = workers.RestartBudget(2, limit=2, window_s=0)
    whole_session.count(0)
    now[0] += 10 ** 6
    assert whole_session.used(0) == 1
    assert budget.settings() == "ray.max_worker_restarts=1 restarts within ray.restart_window_s=3600 s"


def test_a_run_config_from_before_restart_window_s_loads_with_its_default():
    """The before-package run's config.yaml has ray.eval_timeout_s=600 (the old default wait, which is no cap the
    user chose: dropped, since hangs are found by ray.eval_stall_s now) and neither ray.restart_window_s nor
    ray.eval_stall_s."""
    from champion.runners.configure import load_run_config

    config = load_run_config(HERE / "fixtures" / "before-package" / "run")
    assert config.ray.restart_window_s == 3600.0 and config.ray.eval_timeout_s is None
    assert config.ray.eval_stall_s == 60.0
    assert config.ray.max_worker_restarts == 3


def test_a_clean_run_on_ray_ends_with_no_not_exact_clause(local_ray, tmp_path, capsys):
    result = train(four_workers(tmp_path, "clean", total_steps=512), progress=True)
    assert summary(result.run_dir)["engine"]["not_exact"] is None
    [done] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("done:")]
    assert "not exact" not in done


def test_weights_go_into_the_object_store_once_per_rollout_and_every_call_gets_the_reference(local_ray, tmp_path,
                                                                                            monkeypatch):
    """ray.put counted in the driver; every collect call's weights argument is an ObjectRef, one per rollout."""
    from ray.actor import ActorMethod

    puts, collects = [], []
    real_put, real_remote = ray.put, ActorMethod.remote

    def counting_put(value, *rest, **options):
        reference = real_put(value, *rest, **options)
        puts.append(reference)
        return reference

    def recording_remote(method, *args, **kwargs):
        if method._method_name == "collect":
            collects.append(args)
        return real_remote(method, *args, **kwargs)

    monkeypatch.setattr(ray, "put", counting_put)
    monkeypatch.setattr(ActorMethod, "remote", recording_remote)
    train(four_workers(tmp_path, "put-once", total_steps=1024), progress=False)  # 4 rollouts of 4 x 2 envs x 32 steps
    assert len(collects) == 4 * 4
    assert all(isinstance(weights, ray.ObjectRef) for weights, _ in collects)
    assert len(puts) == 4 and {weights for weights, _ in collects} == set(puts)
    assert [version for _, version in collects] == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4


def evaluation_setup(tmp_path, env_id="toy_envs:FaultyCartPole-v0", **overrides):
    """A config, an untrained policy and the evaluation seeds, with the in-process evaluation of that policy."""
    from champion.agents.networks import ActorCritic, numpy_policy
    from champion.envs.factory import EnvOptions, describe_env, make_eval_env
    from champion.runners.evaluate import episode_seeds, evaluate
    from champion.runners.store.run_metadata import network_spec

    config = ray_config(tmp_path, "unused", env_id, **overrides)
    spec = network_spec(describe_env(env_id), config)
    policy = numpy_policy(ActorCritic(spec, seed=0), seed=0)
    seeds = episode_seeds(config.eval_seed, config.eval_episodes)
    expected = evaluate(policy, make_eval_env(env_id, len(seeds), options=EnvOptions.from_config(config)), seeds,
                        env_id=env_id)
    return config, spec, policy, seeds, expected


def finished_by_polling(evaluation, patience_s=120.0):
    """What the training loop does: finished() once an iteration until the evaluation is in (patience_s only keeps a
    broken evaluation from hanging the test)."""
    import time

    give_up = time.monotonic() + patience_s
    while not (finished := evaluation.finished()):
        assert time.monotonic() < give_up, "the evaluation never finished"
        time.sleep(0.05)
    return finished


def test_an_evaluation_actor_that_stops_stepping_is_found_by_finished_replaced_and_counted_once(local_ray, tmp_path):
    """FaultyCartPole's first env on an actor to take its 50th step (the untrained policy's episodes are 14-15
    steps, and an actor keeps its envs: in the fourth evaluation) sleeps for an hour. finished(), called as
    the training loop calls it, finds the actor took no step for ray.eval_stall_s=3 s, warns once, counts one
    restart and plays the share again on a fresh actor: every evaluation is the in-process one, exactly."""
    from champion.runners.ray.evaluation import RayEvaluation

    config, spec, policy, seeds, expected = evaluation_setup(tmp_path, **{"ray.eval_stall_s": 3, "eval_episodes": 4,
                                                                          "ray.eval_workers": 2})
    warnings = []
    evaluation = RayEvaluation.from_config(config, spec, seeds, warn=warnings.append)
    fault(local_ray, "hang")
    try:
        results = []
        while (Path(local_ray["faults"]) / "hang").exists() and len(results) < 20:
            evaluation.start(len(results), policy)
            results.append(finished_by_polling(evaluation)[0].result)
        evaluation.start(len(results), policy)  # one more on the fresh actor
        results.append(finished_by_polling(evaluation)[0].result)
    finally:
        evaluation.close()
    assert not (Path(local_ray["faults"]) / "hang").exists()  # an evaluation actor claimed it
    assert len(warnings) == 1 and evaluation.restarts == 1
    assert "took no env step for ray.eval_stall_s=3 s during its 2 episodes of the evaluation at step" in warnings[0]
    assert "; restarted it (1 of 3 restarts within 3600 s), its episodes are played again" in warnings[0]
    assert all(result == expected for result in results) and len(results) >= 3


def test_a_long_evaluation_that_keeps_stepping_is_never_cut_short(local_ray, tmp_path, monkeypatch):
    """Every env step on the actor takes 0.12 s, so its 4 episodes (58 steps) take 7 s or more, past
    ray.eval_stall_s=3 s: the actor is stepping all along, so no warning, no restart, the in-process result."""
    from champion.runners.ray import evaluation as ray_evaluation
    from champion.runners.ray.workers import EvaluationWorker

    def slow_worker():  # defined in a function, so Ray sends the classes by value, not as this test module's
        import time

        import gymnasium as gym

        class SlowSteps(gym.Wrapper):
            def step(self, action):
                time.sleep(0.12)
                return self.env.step(action)

        class SlowEvaluationWorker(EvaluationWorker):
            def __init__(self, *arguments):
                super().__init__(*arguments)
                self.counted = [SlowSteps(env) for env in self.counted]

        return SlowEvaluationWorker

    config, spec, policy, seeds, expected = evaluation_setup(tmp_path, "CartPole-v1", **{"ray.eval_stall_s": 3,
                                                                                         "eval_episodes": 4})
    monkeypatch.setattr(ray_evaluation, "EvaluationWorker", slow_worker())
    warnings = []
    evaluation = ray_evaluation.RayEvaluation.from_config(config, spec, seeds, warn=warnings.append)
    try:
        evaluation.start(0, policy)
        [finished] = finished_by_polling(evaluation)
    finally:
        evaluation.close()
    assert finished.result == expected and sum(expected.lengths) * 0.12 > 2 * 3  # it slept past the stall setting
    assert warnings == [] and evaluation.restarts == 0


def test_a_worker_that_hangs_past_the_timeout_is_replaced(local_ray, tmp_path, capsys):
    fault(local_ray, "hang")
    result = train(ray_config(tmp_path, "hung", "toy_envs:FaultyCartPole-v0", total_steps=4096, eval_every=2048,
                              **{"ray.eval_workers": 0, "ray.fragment_timeout_s": 4}), progress=False)
    assert not (Path(local_ray["faults"]) / "hang").exists()
    assert result.env_steps == 4096
    assert summary(result.run_dir)["engine"]["worker_restarts"] == 1
    assert "did not answer within ray.fragment_timeout_s=4 s" in capsys.readouterr().err


def test_past_the_restart_limit_the_run_stops_with_a_checkpoint(local_ray, tmp_path, capsys):
    fault(local_ray, "kill")
    config = ray_config(tmp_path, "limit", "toy_envs:FaultyCartPole-v0", total_steps=4096, eval_every=2048,
                        checkpoint_every=1024, **{"ray.eval_workers": 0, "ray.max_worker_restarts": 0})
    with pytest.raises(TrainingStopped, match="ray.max_worker_restarts=0 .* continue with: champion train --resume"):
        train(config, progress=False)
    [run_dir] = (tmp_path).glob("*/ppo/limit")
    [checkpoint] = sorted((run_dir / "checkpoints").glob("ckpt-*"))  # written on the way out, at the step reached
    saved = read_checkpoint(checkpoint)
    assert saved.manifest["step"] == 0 and saved.state["envs_problem"]  # killed at its 50th step: the first rollout
    result = resume(run_dir, {"ray.max_worker_restarts": 3}, progress=False)
    assert result.env_steps == 4096
    assert "not bit-exact" in capsys.readouterr().err
    assert summary(run_dir)["engine"]["not_exact"] == ("not exact: the resume at step 0 restarted episodes, so the same "
                                                       "run without faults would differ")


def test_ctrl_c_writes_a_checkpoint_and_resume_continues(local_ray, tmp_path, capsys):
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "sigint"
    child = subprocess.Popen(CHAMPION + ["train", "CartPole-v1", "--total-steps", "200000", "--results-dir",
                                         str(tmp_path), "--run-name", "sigint", "--eval-every", "1024", "--workers", "2",
                                         "--ray-address", local_ray["address"], "--set", "checkpoint_every=100000",
                                         "--no-media"],
                             stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    for line in child.stdout:
        if line.startswith("step"):  # the first evaluation: training is under way
            break
    os.killpg(child.pid, signal.SIGINT)
    _, rest = child.communicate(timeout=120)
    assert child.returncode == 130, rest
    assert f"continue with: champion train --resume {run_dir}" in rest
    stopped_at = max(int(row["step"]) for row in evaluation_rows(run_dir))
    capsys.readouterr()  # the command that resumes it runs in this process, on the same Ray
    champion_here(["train", "--resume", str(run_dir), "--total-steps", str(stopped_at + 2048),
                   "--ray-address", local_ray["address"]])
    assert "resuming from ckpt-" in capsys.readouterr().err
    assert summary(run_dir)["env_steps"] >= stopped_at + 2048


def test_removing_a_node_that_holds_several_workers_does_not_stop_training(tmp_path, workers=16, worker_cpus=0.5):
    """A lost node of several workers (tests/ray_multinode.py): 16 light workers (half a CPU each) over a head and
    three nodes of 4 CPUs; the run completes, each lost worker restarted once and counted against its own budget,
    and its best policy replays its recorded mean. Ray's multi-node test cluster in its own process (one process connects to one cluster). Its temporary files
    (the cluster's session folders, in a folder of its own under TMPDIR) go into a short temporary folder of this
    test, removed after: under pytest's folder Ray's socket paths would pass the 107-byte limit."""
    import shutil
    import tempfile

    script = HERE / "ray_multinode.py"
    temp = tempfile.mkdtemp(prefix="r")
    try:
        done = subprocess.run([sys.executable, str(script), str(tmp_path), str(workers), str(worker_cpus)],
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(HERE), "TMPDIR": temp})
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["removed_node_held_worker"] is True and report["loss_seen_by_ray"] is True  # after rollout 5 of 8
    assert report["env_steps"] == report["total_steps"]
    assert report["workers_on_removed_node"] >= 2  # of the workers spread over four nodes
    assert report["replayed_mean"] == report["recorded_mean"]
    assert report["worker_restarts"] == report["workers_on_removed_node"]  # each once: within its own budget of 3
    assert report["worker_restarts_by_worker"] == {str(index): 1 for index in report["removed_workers"]}
    assert [batch["workers"] for batch in report["restarts"]] == [report["removed_workers"]]  # together, in one batch
    assert report["not_exact"].startswith(f"not exact: rollout workers {', '.join(map(str, report['removed_workers']))}")


def test_without_ray_installed_engine_ray_is_one_line_and_nothing_is_created(tmp_path, monkeypatch, capsys):
    import importlib.util

    from champion.runners.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "ray" else real(name, *rest))
    with pytest.raises(SystemExit) as exited:
        main(["train", "CartPole-v1", "--engine", "ray", "--results-dir", str(tmp_path)])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("champion train: error: engine=ray needs Ray") and line.endswith("pip install -e '.[ray]' (in champion's folder)")
    assert list(tmp_path.iterdir()) == []


def test_an_address_nobody_answers_fails_within_seconds(tmp_path):
    done = subprocess.run(CHAMPION + ["train", "CartPole-v1", "--ray-address", "127.0.0.1:9", "--results-dir",
                                      str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no Ray cluster answers at 127.0.0.1:9" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_more_workers_than_free_cpus_is_a_clear_error_before_the_run_folder(local_ray, tmp_path, monkeypatch):
    from champion.runners.ray import cluster

    monkeypatch.setattr(cluster, "CAPACITY_PATIENCE", 0.5)  # no earlier run's actors are stopping here
    with pytest.raises(ConfigError, match="has 2 free CPUs, but 5 rollout workers need 5"):
        train(ray_config(tmp_path, "too-many", num_envs=10, **{"ray.workers": 5, "ppo.minibatch_size": 64}),
              progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ray_layout_keys_are_checked():
    with pytest.raises(ConfigError, match="num_envs=8 does not split evenly over ray.workers=3; use num_envs=9"):
        resolve_config("CartPole-v1", "ppo", {"engine": "ray", "ray.workers": 3})
    config, _ = resolve_config("CartPole-v1", "ppo", {"engine": "ray", "ray.workers": 3, "ray.envs_per_worker": 2,
                                                       "ppo.minibatch_size": 64})
    assert config.num_envs == 6


RAY_NUMBERS_REFUSED = [("workers", True, "ray.workers must be an integer >= 1, got True"),
                       ("envs_per_worker", False, "ray.envs_per_worker must be an integer >= 0, got False"),
                       ("eval_workers", True, "ray.eval_workers must be an integer >= 0, got True"),
                       ("max_worker_restarts", True, "ray.max_worker_restarts must be an integer >= 0, got True"),
                       ("num_cpus", True, "ray.num_cpus must be a positive integer or null, got True"),
                       ("worker_cpus", True, "ray.worker_cpus must be a number of CPUs >= 0, got True"),
                       ("worker_cpus", "1", "ray.worker_cpus must be a number of CPUs >= 0, got '1'"),
                       ("fragment_timeout_s", True, "ray.fragment_timeout_s must be a positive number of seconds, got True"),
                       ("restart_window_s", True, "ray.restart_window_s must be a number of seconds >= 0 (0: the whole "
                                                  "session), got True"),
                       ("restart_window_s", float("nan"), "ray.restart_window_s must be a number of seconds >= 0 (0: the "
                                                          "whole session), got nan"),
                       ("eval_stall_s", 1, "ray.eval_stall_s must be a number of seconds >= 3 (an actor is asked about its "
                                           "progress about once a second), got 1")]


@pytest.mark.parametrize("name, value, line", RAY_NUMBERS_REFUSED, ids=[f"{name}={value!r}" for name, value, _ in
                                                                       RAY_NUMBERS_REFUSED])
def test_a_bool_or_text_for_a_ray_number_is_one_line(name, value, line):
    """The API takes a TrainConfig built in Python, where True is an int and passed as 1 (the command line's types
    are checked before); a string worker_cpus was a TypeError."""
    import dataclasses

    from champion.agents.config import RayConfig, TrainConfig, validate

    with pytest.raises(ConfigError) as refused:
        validate(TrainConfig(engine="ray", ray=dataclasses.replace(RayConfig(), **{name: value})))
    assert str(refused.value) == line


def test_a_worker_fragment_equals_the_same_envs_in_one_process(local_ray):
    """Worker 1 of 2 (envs 4..7) collects exactly the columns 4..7 of an 8-env in-process rollout."""
    from champion.agents.networks import ActorCritic, numpy_policy
    from champion.envs.factory import EnvOptions, describe_env, make_vector_env
    from champion.runners.rollout import VectorEnvCollector
    from champion.runners.store.run_metadata import network_spec
    from champion.runners.ray.workers import RolloutWorker, WorkerSetup

    config = ray_config(Path("/unused"), "unused")
    spec = network_spec(describe_env("CartPole-v1"), config)
    policy = numpy_policy(ActorCritic(spec, seed=0), seed=0)
    whole = VectorEnvCollector(make_vector_env("CartPole-v1", 8), 16, seed=7).collect(policy)
    worker = ray.remote(RolloutWorker).remote(WorkerSetup("CartPole-v1", EnvOptions(), spec, 16, 4, 1))
    ray.get(worker.start.remote(7, 0), timeout=60)
    fragment = ray.get(worker.collect.remote(policy.weights, 1), timeout=60)
    for name in ("observations", "actions", "log_probs", "values", "rewards", "terminated", "truncated"):
        assert np.array_equal(getattr(fragment.rollout.batch, name), getattr(whole.batch, name)[:, 4:]), name
    assert np.array_equal(fragment.rollout.batch.last_values, whole.batch.last_values[4:])
    assert fragment.version == 1
    report = ray.get(worker.process.remote(), timeout=60)
    assert report["tensorflow"] is False and report["pid"] != os.getpid()
    ray.kill(worker)


@pytest.mark.slow
def test_pendulum_ppo_on_two_workers_reaches_the_learning_bar_in_its_budget(local_ray, tmp_path):
    """benchmarks/learning.py's bar for Pendulum-v1 PPO: -200 within the preset's 300k steps (4 envs: 2 x 2)."""
    config = ray_config(tmp_path, "pendulum", "Pendulum-v1", seed=0)
    assert config.total_steps == 300_000 and config.num_envs == 4
    result = train(config, progress=False)
    assert result.best_mean_return >= -200
    outcome = replay(result.run_dir)
    assert outcome.result.mean_return == outcome.recorded_mean_return


def test_an_env_module_the_workers_cannot_import_is_one_line_naming_it(local_ray, tmp_path, monkeypatch):
    """The module is on this process's path only, as a user's env is on a cluster where it is not installed."""
    (tmp_path / "only_here.py").write_text(
        "import gymnasium as gym\nfrom gymnasium.envs.classic_control import CartPoleEnv\n"
        "if 'OnlyHere-v0' not in gym.registry:\n    gym.register(id='OnlyHere-v0', entry_point=CartPoleEnv)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EnvError, match="a Ray rollout worker could not start: .*only_here"):
        train(ray_config(tmp_path / "results", "elsewhere", "only_here:OnlyHere-v0", total_steps=1024), progress=False)


def test_an_env_that_raises_on_a_worker_stops_the_run_as_in_process(local_ray, tmp_path):
    config = ray_config(tmp_path, "fails", "toy_envs:champion-test/FailsAfter-v0", total_steps=4096, num_envs=2,
                        **{"ppo.num_steps": 32, "ppo.minibatch_size": 64, "ray.eval_workers": 0})
    with pytest.raises(TrainingStopped, match="environment toy_envs:champion-test/FailsAfter-v0 raised ValueError in "
                                              r"step\(\): the simulator lost its state at step 151; the best policy"):
        train(config, progress=False)


def test_auto_with_the_address_file_of_a_stopped_head_fails_within_seconds(tmp_path):
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")  # what `ray start --head` leaves behind
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run(CHAMPION + ["train", "CartPole-v1", "--ray-address", "auto", "--results-dir",
                                      str(tmp_path / "results")], capture_output=True, text=True, timeout=60,
                          env={**environment, "RAY_TMPDIR": str(tmp_path)})
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("champion train: error: no Ray cluster answers at 127.0.0.1:9 (from RAY_ADDRESS or the "
                           "address file of a head that may have stopped)")
    assert not (tmp_path / "results").exists()
    (tmp_path / "ray" / "ray_current_cluster").unlink()
    done = subprocess.run(CHAMPION + ["train", "CartPole-v1", "--ray-address", "auto", "--results-dir",
                                      str(tmp_path / "results")], capture_output=True, text=True, timeout=60,
                          env={**environment, "RAY_TMPDIR": str(tmp_path)})
    assert done.returncode == 2 and "--ray-address auto found no Ray cluster" in done.stderr


@pytest.mark.skipif(importlib.util.find_spec("Box2D") is None, reason="needs the box2d extra")
def test_a_lunarlander_run_killed_mid_save_on_ray_resumes_exactly_like_a_straight_run(local_ray, tmp_path):
    """Box2D's state cannot be pickled; the workers' envs are replayed from their journals and checked. With reward
    scaling, so that the driver's reward scaler goes through the resume too."""
    options = run_options(tmp_path, "ppo", 4, 32, ["engine=ray", "ray.workers=2", "ray.eval_workers=1",
                                                   "reward_scaling=true"])
    options += ["--ray-address", local_ray["address"]]
    kill_resume_and_compare(tmp_path, "LunarLander-v3", "ppo", options, ["--ray-address", local_ray["address"]])


@pytest.mark.slow
def test_a_run_killed_and_resumed_on_ray_continues_exactly_like_a_straight_run(local_ray, tmp_path):
    """The driver is SIGKILLed after step 2560 (checkpoint at 2048); the resume restores every worker's envs and
    noise, the reward scaler and the learner, so every evaluation equals a straight run's.

    Slow: the LunarLander case above, in the default suite, proves the same on Ray (its workers' envs, their noise,
    the reward scaler and the learner restored bit for bit after a SIGKILL, there in the middle of a checkpoint's
    save rather than after one); a kill after a checkpoint (CHAMPION_FAULT_KILL_AT_STEP) is tested on
    the graph engine (tests/test_resume.py)."""
    options = ["--total-steps", "4096", "--eval-every", "512", "--results-dir", str(tmp_path), "--workers", "2",
               "--ray-address", local_ray["address"], "--no-media", "-q", "--set", "checkpoint_every=1024",
               "--set", "reward_scaling=true", "--set", "ppo.epochs=2"]
    champion_here(["train", "CartPole-v1", "--run-name", "straight"] + options)  # on the same Ray, from this process
    killed = champion(["train", "CartPole-v1", "--run-name", "resumed"] + options,
                      env={"CHAMPION_FAULT_KILL_AT_STEP": "2560"})
    assert killed.returncode == -signal.SIGKILL
    resumed_dir = tmp_path / "CartPole-v1" / "ppo" / "resumed"
    again = champion(["train", "--resume", str(resumed_dir), "-q", "--ray-address", local_ray["address"]])
    assert again.returncode == 0, again.stderr
    assert "not bit-exact" not in again.stderr
    columns = ("step", "mean_return", "best_mean_return")
    rows = {name: [[row[column] for column in columns] for row in evaluation_rows(tmp_path / "CartPole-v1" / "ppo" / name)]
            for name in ("straight", "resumed")}
    assert rows["resumed"] == rows["straight"] and len(rows["straight"]) == 8
