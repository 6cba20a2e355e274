"""Where the Ray engine pays off: an env with a set CPU cost per step, in process and on 1, 2 and 4 Ray workers.

    python benchmarks/scaling.py                          # every layout, 0.2 ms and 2 ms per step
    python benchmarks/scaling.py --step-ms 2 --layouts ray-2 sync
    python benchmarks/scaling.py --fixed-cost             # Ray's own start-up, first fragment and shut-down
    python benchmarks/scaling.py --report docs/scaling.md # the table and plot from the records

The env (``BusyCartPole-v0``, defined here) is CartPole whose every step also spins the CPU in pure Python
for ``CHAMPION_BENCH_STEP_MS`` milliseconds (inherited by Ray's workers), like a simulator written in
Python. Each (step cost, layout) is one fresh ``champion train`` process, PPO with CartPole's preset over
8 envs and one short evaluation at the end: ``sync`` and ``async`` are the in-process gymnasium engine
(``vectorization``), ``ray-W`` the Ray engine with W workers of 8/W envs on a local Ray of max(2, W) CPUs
that the run starts and stops. A record holds env steps/s, the run's seconds per phase (collect /
transfer / update; for Ray: waiting for workers, sending weights, receiving fragments, stacking, update),
the driver's peak resident memory and each worker's, and the machine's load before and after. Records go
to docs/benchmark-runs/scaling/ (one JSON line per run), so the runs can be done in pieces.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "benchmark-runs" / "scaling"
LAYOUTS = ("sync", "async", "ray-1", "ray-2", "ray-4")
STEP_COSTS_MS = (0.2, 2.0)
BUDGET_SECONDS_OF_ENV = 24.0
"""Each run takes this many seconds of env work on one core (steps = this / step cost), so both costs take
about the same time."""


class BusyCartPole(CartPoleEnv):
    """CartPole plus CHAMPION_BENCH_STEP_MS milliseconds of pure-Python work per step."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.busy_seconds = float(os.environ.get("CHAMPION_BENCH_STEP_MS", "0")) / 1000.0

    def step(self, action):
        until = time.perf_counter() + self.busy_seconds
        while time.perf_counter() < until:
            pass
        return super().step(action)


if "BusyCartPole-v0" not in gym.registry:
    gym.register(id="BusyCartPole-v0", entry_point=BusyCartPole, max_episode_steps=500)


def run_one(layout: str, step_ms: float) -> dict:
    """Train in this process (called in a fresh child by ``main``) and return the record."""
    sys.path.insert(0, str(ROOT))
    from champion import quiet_tensorflow

    quiet_tensorflow()
    from champion.runners.configure import resolve_config
    from champion.runners.training import train

    steps = int(BUDGET_SECONDS_OF_ENV / (step_ms / 1000.0)) // 2048 * 2048
    overrides = {"total_steps": steps, "eval_every": steps, "eval_episodes": 1, "media": False,
                 "results_dir": f"/tmp/champion-scaling/{os.getpid()}", "checkpoint_every": 10 * steps}
    if layout in ("sync", "async"):
        overrides.update(engine="gymnasium", vectorization=layout)
    else:
        workers = int(layout.split("-")[1])
        overrides.update({"engine": "ray", "ray.workers": workers, "ray.num_cpus": max(2, workers)})
    config, _ = resolve_config("scaling:BusyCartPole-v0", "ppo", {**_cartpole_preset(), **overrides}, use_preset=False)
    started = time.perf_counter()
    result = train(config, progress=False)
    wall = time.perf_counter() - started
    summary = json.loads((result.run_dir / "summary.json").read_text())
    return {"layout": layout, "step_ms": step_ms, "steps": result.session_steps, "wall_seconds": round(wall, 2),
            "loop_seconds": summary["wall_seconds"], "startup_seconds": summary["startup_seconds"],
            "steps_per_second": summary["steps_per_second"], "timings": summary["timings"],
            "iterations": summary["timing_calls"].get("update", 0) + summary["timing_calls"].get("first update", 0),
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "workers": summary["engine"].get("worker_processes", [])}


def _cartpole_preset() -> dict:
    """CartPole-v1's PPO preset as overrides (the env is CartPole, only slower)."""
    import yaml

    preset = yaml.safe_load((ROOT / "envs" / "presets" / "CartPole-v1.ppo.yaml").read_text())
    flat = {}
    for key, value in preset.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        elif key not in ("total_steps", "eval_every"):
            flat[key] = value
    return flat


def fixed_cost() -> dict:
    """Ray's fixed cost on this machine: import, ray.init of a local cluster, one worker's start and first fragment
    of CartPole (32 steps x 4 envs), and shutdown."""
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    import ray

    imported = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    initialised = time.perf_counter()
    from champion.agents.networks import ActorCritic, numpy_policy
    from champion.envs.factory import EnvOptions, describe_env
    from champion.runners.configure import resolve_config
    from champion.runners.store.run_metadata import network_spec
    from champion.runners.ray.workers import RolloutWorker, WorkerSetup

    config, _ = resolve_config("CartPole-v1", "ppo")
    spec = network_spec(describe_env("CartPole-v1"), config)
    weights = numpy_policy(ActorCritic(spec, seed=0), seed=0).weights
    before_worker = time.perf_counter()
    worker = ray.remote(RolloutWorker).options(num_cpus=1).remote(WorkerSetup("CartPole-v1", EnvOptions(), spec, 32, 4, 0))
    ray.get(worker.start.remote(0, 0))
    worker_started = time.perf_counter()
    ray.get(worker.collect.remote(weights, 1))
    first_fragment = time.perf_counter()
    round_trips = []
    for version in range(2, 22):
        sent = time.perf_counter()
        ray.get(worker.collect.remote(weights, version))
        round_trips.append(time.perf_counter() - sent)
    local = RolloutWorker(WorkerSetup("CartPole-v1", EnvOptions(), spec, 32, 4, 0))  # the same work in this process
    local.start(0, 0)
    local_times = []
    for version in range(20):
        sent = time.perf_counter()
        local.collect(weights, version)
        local_times.append(time.perf_counter() - sent)
    report = ray.get(worker.process.remote())
    ray_processes_mb = _ray_processes_rss_mb()
    shutting = time.perf_counter()
    ray.shutdown()
    return {"kind": "fixed_cost", "import_s": round(imported - started, 2), "init_s": round(initialised - imported, 2),
            "worker_start_s": round(worker_started - before_worker, 2),
            "first_fragment_s": round(first_fragment - worker_started, 3),
            "fragment_median_s": round(sorted(round_trips)[len(round_trips) // 2], 4),
            "local_fragment_median_s": round(sorted(local_times)[len(local_times) // 2], 4),
            "shutdown_s": round(time.perf_counter() - shutting, 2), "worker_peak_rss_mb": report["peak_rss_mb"],
            "ray_processes_rss_mb": ray_processes_mb,
            "worker_tensorflow": report["tensorflow"]}


def write_report(markdown: Path) -> None:
    """The table (per step cost: steps/s, speed-up over sync, seconds per iteration by phase, memory) and a plot."""
    records = [json.loads(line) for line in (RECORDS / "runs.jsonl").read_text().splitlines() if line.strip()]
    runs = {(record["step_ms"], record["layout"]): record for record in records if record.get("layout")}  # newest wins
    lines = ["| step cost | layout | env steps/s | vs sync | per iteration: collect / transfer / update (ms) | "
             "driver peak MB | worker peak MB | load before/after |", "|---|---|---|---|---|---|---|---|"]
    for cost in sorted({cost for cost, _ in runs}):
        sync = runs.get((cost, "sync"))
        for layout in LAYOUTS:
            record = runs.get((cost, layout))
            if record is None:
                continue
            collect, transfer, update = _phases(record)
            workers = ", ".join(f"{worker['peak_rss_mb']:.0f}" for worker in record["workers"]) or "-"
            ratio = f"{record['steps_per_second'] / sync['steps_per_second']:.2f}x" if sync else "-"
            lines.append(f"| {cost:g} ms | {layout} | {record['steps_per_second']:,.0f} | {ratio} | "
                         f"{collect:.1f} / {transfer:.1f} / {update:.1f} | {record['driver_peak_rss_mb']} | {workers} | "
                         f"{record['load_before']}/{record['load_after']} |")
    fixed = [record for record in records if record.get("kind") == "fixed_cost"]
    if fixed:
        last = fixed[-1]
        lines += ["", f"Ray's fixed cost (newest of {len(fixed)}): import {last['import_s']} s, local `ray.init` "
                  f"{last['init_s']} s, a worker's start {last['worker_start_s']} s, its first fragment "
                  f"{last['first_fragment_s']} s, then a CartPole fragment (32 steps x 4 envs) round trip "
                  f"{last['fragment_median_s'] * 1000:.1f} ms (median of 20; the same collection in the driver's process: "
                  f"{last.get('local_fragment_median_s', float('nan')) * 1000:.1f} ms), shutdown {last['shutdown_s']} s; Ray's "
                  f"own processes (one worker among them) {last.get('ray_processes_rss_mb', '?')} MB resident; the "
                  f"worker's peak RSS {last['worker_peak_rss_mb']:.0f} MB, TensorFlow imported on it: "
                  f"{last['worker_tensorflow']} (load {last['load_before']} before, {last['load_after']} after)."]
    markdown.write_text(_with_table(markdown.read_text() if markdown.exists() else "", "\n".join(lines)))
    _plot(runs, markdown.with_suffix(".png"))


def _phases(record: dict) -> tuple[float, float, float]:
    """Milliseconds per iteration spent collecting (env, acting; waiting for workers), transferring (weights out,
    fragments in, stacking) and updating."""
    timings, iterations = record["timings"], max(record["iterations"], 1)
    collect = sum(timings.get(name, 0.0) for name in ("env_stepping", "acting", "waiting for workers"))
    transfer = sum(timings.get(name, 0.0) for name in ("sending weights", "receiving fragments", "stacking fragments"))
    update = sum(timings.get(name, 0.0) for name in ("update", "first update", "policy snapshot"))
    return tuple(1000.0 * value / iterations for value in (collect, transfer, update))


TABLE_START, TABLE_END = "<!-- scaling table -->", "<!-- end of scaling table -->"


def _with_table(text: str, table: str) -> str:
    """The Markdown with the generated table between its markers (appended if the markers are missing)."""
    block = f"{TABLE_START}\n{table}\n{TABLE_END}"
    if TABLE_START in text and TABLE_END in text:
        return text[:text.index(TABLE_START)] + block + text[text.index(TABLE_END) + len(TABLE_END):]
    return text.rstrip() + "\n\n" + block + "\n"


def _plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs = sorted({cost for cost, _ in runs})
    figure, axes = plt.subplots(1, len(costs), figsize=(5 * len(costs), 3.5), squeeze=False)
    for axis, cost in zip(axes[0], costs):
        layouts = [layout for layout in LAYOUTS if (cost, layout) in runs]
        axis.bar(layouts, [runs[(cost, layout)]["steps_per_second"] for layout in layouts], color="#4477aa")
        axis.set_title(f"{cost:g} ms of Python per env step")
        axis.set_ylabel("env steps/s (2 cores)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _ray_processes_rss_mb() -> int:
    """Resident memory of Ray's own processes on this machine (GCS, raylet, dashboard agents, idle and actor
    workers), from /proc: what a local Ray costs besides the driver."""
    total_kb = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            command = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ")
            if not any(name in command for name in (b"gcs_server", b"raylet", b"ray::", b"/ray/", b"default_worker")):
                continue
            total_kb += next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS"))
        except (OSError, StopIteration, ValueError):  # a process that ended meanwhile, or a kernel thread
            continue
    return total_kb // 1024


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--step-ms", nargs="+", type=float, default=list(STEP_COSTS_MS))
    parser.add_argument("--fixed-cost", action="store_true", help="measure Ray's fixed cost instead")
    parser.add_argument("--report", type=Path, help="write the table and plot (next to it) from the records")
    parser.add_argument("--child", nargs=2, metavar=("LAYOUT", "STEP_MS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], float(args.child[1]))))
        return
    if args.report:
        write_report(args.report)
        return
    RECORDS.mkdir(parents=True, exist_ok=True)
    jobs = [("fixed", 0.0)] if args.fixed_cost else [(layout, cost) for cost in args.step_ms for layout in args.layouts]
    for layout, cost in jobs:
        load_before = _load()
        environment = {**os.environ, "CHAMPION_BENCH_STEP_MS": str(cost),
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, __file__, "--child", layout, str(cost)] if layout != "fixed" else \
            [sys.executable, "-c", f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                                   "import scaling; print(json.dumps(scaling.fixed_cost()))"]
        done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=1800)
        if done.returncode != 0:
            print(f"{layout} {cost} ms failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        record = json.loads(done.stdout.strip().splitlines()[-1])
        record.update(load_before=load_before, load_after=_load(),
                      date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"))
        with open(RECORDS / "runs.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        print(json.dumps(record))


if __name__ == "__main__":
    main()
