"""The Ray engine's driver on paper: measured costs of its parts, and the iteration time they add up to at 16,
64 and 256 workers, for a CartPole-sized and a HalfCheetah-sized policy (issue 33, docs/scaling.md).

    python benchmarks/ray_driver_model.py measure --policy cartpole      # one record per run, a few minutes
    python benchmarks/ray_driver_model.py measure --policy halfcheetah
    python benchmarks/ray_driver_model.py report                          # the model's table, as Markdown

One synchronous iteration of ``--engine ray`` is: the driver puts the weights in the object store, calls
every worker's ``collect`` with a reference to them, waits for the fragments (the workers step their envs in
parallel, one CPU each), takes them out of the object store, stacks them and makes one update on the whole
batch. So, for W workers of M envs and T steps each:

    iteration(W) = collect(M, T) + put + W x (call + fragment) + stack(W) + update(W x M x T)

Each term is measured here, on this machine, with the policy's preset (network, epochs, minibatch):

- ``collect``: a real ``RolloutWorker`` stepping its M envs for T steps, in this process (no Ray: what one
  worker on its own CPU takes);
- ``put``: ``ray.put`` of the weights, median of 30;
- ``call``: submitting one ``collect``-shaped call with the weights' reference, per call, over 32 light
  actors; ``fragment``: ``ray.get`` of a finished fragment of M x T transitions, per fragment, over the same
  actors (what the driver spends taking it in: transfer and unpickling);
- ``stack``: ``stack_fragments`` of W fragments, measured at 16, 64 and 256;
- ``update``: the compiled PPO update at batches of W x M x T for W = 4, 16, 64 (a line through them gives
  256's: the update's work grows with the batch).

The actors here do no work, so ``call`` and ``fragment`` are the driver's own costs; on a real cluster the
fragment also crosses the network (a CartPole fragment of 4 envs x 32 steps is about 5 KB; HalfCheetah's
of 1 env x 512 steps about 100 KB). Records go to docs/benchmark-runs/ray-driver-model/ (one JSON line each).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "benchmark-runs" / "ray-driver-model"
POLICIES = {"cartpole": ("CartPole-v1", 4), "halfcheetah": ("HalfCheetah-v5", 1)}
"""Env and envs per worker: CartPole's preset has 8 envs of 32 steps (4 a worker on 2 workers); HalfCheetah's
has 1 env of 512 steps."""
WORKERS = (16, 64, 256)
UPDATE_WORKERS = (4, 16, 64)
LIGHT_ACTORS = 32


def measure(policy: str) -> dict:
    """Every term of the model for ``policy``, measured in this process and on a local Ray."""
    sys.path.insert(0, str(ROOT))
    from champion import quiet_tensorflow

    quiet_tensorflow()
    from champion.envs.factory import EnvOptions, describe_env
    from champion.runners.configure import resolve_config
    from champion.runners.store.run_metadata import network_spec

    env_id, envs_per_worker = POLICIES[policy]
    config, _ = resolve_config(env_id, "ppo")  # the preset; a worker's envs are envs_per_worker of its envs
    spec = network_spec(describe_env(env_id, EnvOptions.from_config(config)), config)
    fragment, collect_ms = _collect(config, spec, envs_per_worker)
    record = {"policy": policy, "env_id": env_id, "envs_per_worker": envs_per_worker,
              "steps_per_fragment": config.ppo.num_steps, "hidden_sizes": list(config.network.hidden_sizes),
              "epochs": config.ppo.epochs, "minibatch_size": config.ppo.minibatch_size,
              "collect_ms": collect_ms, "fragment_bytes": _size(fragment),
              "stack_ms": {str(workers): _stack_ms(fragment, workers) for workers in WORKERS},
              "update_ms": {str(workers): _update_ms(env_id, spec, workers * envs_per_worker, fragment)
                            for workers in UPDATE_WORKERS}}
    record.update(_ray_costs(spec, fragment))
    return record


def _collect(config, spec, envs_per_worker: int) -> tuple:
    """A fragment from a real rollout worker, and the median milliseconds of collecting one (of 10)."""
    from champion.envs.factory import EnvOptions
    from champion.runners.ray.workers import RolloutWorker, WorkerSetup

    setup = WorkerSetup(config.env_id, EnvOptions.from_config(config), spec, config.ppo.num_steps, envs_per_worker, 0)
    worker = RolloutWorker(setup)
    worker.start(0, 0)
    weights = _weights(spec)
    times, fragment = [], None
    for version in range(10):
        started = time.perf_counter()
        fragment = worker.collect(weights, version)
        times.append((time.perf_counter() - started) * 1000)
    worker.close()
    return fragment.rollout, statistics.median(times)


def _weights(spec) -> dict:
    """The policy's weights as the driver sends them (name -> array), from a freshly built model."""
    from champion.agents.networks import ActorCritic, numpy_policy

    return numpy_policy(ActorCritic(spec)).weights


def _size(rollout) -> int:
    import pickle

    return len(pickle.dumps(rollout, protocol=5))


def _stack_ms(rollout, workers: int) -> float:
    from champion.runners.rollout import stack_fragments

    fragments = [rollout] * workers
    times = []
    for _ in range(5):
        started = time.perf_counter()
        stack_fragments(fragments)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _update_ms(env_id: str, spec, num_envs: int, rollout) -> float:
    """Median milliseconds of the preset's compiled PPO update on a batch of ``num_envs`` such fragments' envs
    (the first call, which compiles, left out)."""
    from champion.agents.learners import make_learner
    from champion.agents.networks import ActorCritic
    from champion.runners.configure import resolve_config
    from champion.runners.rollout import stack_fragments

    config, _ = resolve_config(env_id, "ppo", {"num_envs": num_envs})
    learner = make_learner(ActorCritic(spec), config)
    per_fragment = rollout.batch.rewards.shape[1]
    batch = stack_fragments([rollout] * (num_envs // per_fragment)).batch
    learner.update(batch, 1.0)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        learner.update(batch, 1.0)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _ray_costs(spec, rollout) -> dict:
    """The driver's per-iteration Ray costs: a put of the weights, a call per worker, a fragment per worker."""
    import secrets

    import ray

    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))  # no token file in the user's home
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        weights = _weights(spec)

        @ray.remote(num_cpus=0.01)
        class Light:
            def __init__(self, fragment):
                self.fragment = fragment

            def collect(self, weights, version):
                return self.fragment

        actors = [Light.remote(rollout) for _ in range(LIGHT_ACTORS)]
        ray.get([actor.collect.remote(None, 0) for actor in actors])  # all started
        puts, calls, gets = [], [], []
        for version in range(30):
            started = time.perf_counter()
            reference = ray.put(weights)
            puts.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            futures = [actor.collect.remote(reference, version) for actor in actors]
            calls.append((time.perf_counter() - started) * 1000 / LIGHT_ACTORS)
            ray.wait(futures, num_returns=len(futures))
            started = time.perf_counter()
            ray.get(futures)
            gets.append((time.perf_counter() - started) * 1000 / LIGHT_ACTORS)
        return {"put_ms": statistics.median(puts), "call_ms": statistics.median(calls),
                "fragment_ms": statistics.median(gets), "weights_bytes": _size(weights)}
    finally:
        ray.shutdown()


def model(record: dict, workers: int) -> dict:
    """Iteration time at ``workers`` from the measured terms (an update not measured at ``workers`` is read off the
    line through the smallest and largest batch measured)."""
    points = sorted((int(key), value) for key, value in record["update_ms"].items())
    (x0, y0), (x1, y1) = points[0], points[-1]
    update = record["update_ms"].get(str(workers), y0 + (y1 - y0) * (workers - x0) / (x1 - x0))
    stack = record["stack_ms"].get(str(workers), record["stack_ms"][str(WORKERS[-1])] * workers / WORKERS[-1])
    driver = record["put_ms"] + workers * (record["call_ms"] + record["fragment_ms"]) + stack + update
    iteration = record["collect_ms"] + driver
    steps = workers * record["envs_per_worker"] * record["steps_per_fragment"]
    return {"workers": workers, "collect_ms": record["collect_ms"], "driver_ms": driver, "update_ms": update,
            "iteration_ms": iteration, "steps_per_second": steps / iteration * 1000,
            "driver_share": driver / iteration}


def report() -> str:
    """The model's table for the newest record of each policy."""
    newest = {}
    for path in sorted(RECORDS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            newest[record["policy"]] = record
    rows = ["| policy | W | collect (ms) | put + W x (call + fragment) + stack (ms) | update (ms) | iteration (ms) "
            "| env steps/s | driver share |", "|---|---|---|---|---|---|---|---|"]
    for policy, record in newest.items():
        for workers in WORKERS:
            row = model(record, workers)
            overhead = row["driver_ms"] - row["update_ms"]
            rows.append(f"| {policy} | {workers} | {row['collect_ms']:.1f} | {overhead:.1f} | {row['update_ms']:.0f} | "
                        f"{row['iteration_ms']:.0f} | {row['steps_per_second']:,.0f} | {row['driver_share']:.0%} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("measure", "report"))
    parser.add_argument("--policy", choices=sorted(POLICIES), default="cartpole")
    arguments = parser.parse_args()
    if arguments.command == "report":
        print(report())
        return
    load_before = os.getloadavg()[0]
    record = measure(arguments.policy)
    record.update(load_before=load_before, load_after=os.getloadavg()[0],
                  time=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    RECORDS.mkdir(parents=True, exist_ok=True)
    with open(RECORDS / f"{arguments.policy}.jsonl", "a") as records:
        records.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
