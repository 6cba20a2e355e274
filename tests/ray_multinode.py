"""Run by tests/test_ray.py in its own process: Ray's multi-node test cluster on this machine (a head of one CPU
and three nodes of four), a Ray-engine run of 8 workers on it (or ``RESULTS WORKERS WORKER_CPUS``: 16 workers
of half a CPU, say), and the node holding the most rollout workers
(two or more) removed between two rollouts once the run is under way. Prints one JSON line: which workers the
removed node held, the steps reached, and the restarts per worker."""

import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))  # no token file in the user's home
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-")  # the cluster's files and address file, not /tmp/ray
os.makedirs(os.path.join(os.environ["RAY_TMPDIR"], "ray"))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from champion.runners.configure import resolve_config  # noqa: E402
from champion.runners.engines import ray_engine  # noqa: E402
from champion.runners.training import train  # noqa: E402

# the test cluster notices a lost node within about 2 s (Ray's _system_config, as its own cluster tests set it)
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}


def main(results: Path, workers: int = 8, worker_cpus: float = 1.0) -> None:
    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": FAST_NODE_DEATH})
    nodes = [cluster.add_node(num_cpus=4) for _ in range(3)]
    cluster.wait_for_nodes()
    report = {"removed_node_held_worker": False}
    collect = ray_engine.RayEngine._collect

    def collect_after_removing_a_node(engine, step):  # before the sixth rollout: the run is under way
        if engine.version == 5:
            remove_a_worker_node(engine)
        return collect(engine, step)

    def remove_a_worker_node(engine) -> None:
        """Remove the node holding the most workers between two rollouts, and wait until their processes are gone
        and Ray has marked the node dead: the next rollout then meets the loss, however fast the run goes."""
        held = ray.get([worker.process.remote() for worker in engine.workers])
        on_node = {node.node_id: [index for index, info in enumerate(held) if info["node"] == node.node_id]
                   for node in nodes}
        victim = max(nodes, key=lambda node: len(on_node[node.node_id]))
        cluster.remove_node(victim, allow_graceful=False)
        pids = [held[index]["pid"] for index in on_node[victim.node_id]]
        def loss_seen() -> bool:
            return not any(map(alive, pids)) and not node_alive(victim.node_id)

        deadline = time.monotonic() + 60
        while not (lost := loss_seen()) and time.monotonic() < deadline:
            time.sleep(0.1)
        report.update(removed_node_held_worker=bool(pids), workers_on_removed_node=len(pids),
                      removed_workers=on_node[victim.node_id],
                      removed_at_rollout=engine.version, loss_seen_by_ray=lost)

    restart = ray_engine.RayEngine._restart

    def timed_restart(engine, lost, step):  # how long bringing the lost workers back took, all at once
        started = time.monotonic()
        try:
            return restart(engine, lost, step)
        finally:
            report.setdefault("restarts", []).append({"workers": sorted(lost), "seconds": round(time.monotonic() - started, 2)})

    ray_engine.RayEngine._collect = collect_after_removing_a_node
    ray_engine.RayEngine._restart = timed_restart
    config, _ = resolve_config("CartPole-v1", "ppo", {"engine": "ray", "ray.workers": workers, "num_envs": 2 * workers,
                                                       "ray.worker_cpus": worker_cpus, "total_steps": 512 * workers,
                                                       "eval_every": 128 * workers, "results_dir": str(results),
                                                       "run_name": "multinode", "media": False})
    result = train(config, progress=False)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    from champion.runners.replay import replay  # the best policy, played in this process: no Ray needed

    replayed = replay(result.run_dir, entry="best")
    report.update(replayed_mean=replayed.result.mean_return, recorded_mean=replayed.recorded_mean_return)
    report.update(env_steps=result.env_steps, total_steps=config.total_steps,
                  worker_restarts=summary["engine"]["worker_restarts"],
                  worker_restarts_by_worker=summary["engine"]["worker_restarts_by_worker"],
                  not_exact=summary["engine"]["not_exact"])
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(report))


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (the worker's node is on this machine): not gone, and not a zombie
    waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def node_alive(node_id: str) -> bool:
    """Whether Ray still lists node ``node_id`` as alive."""
    return any(node["NodeID"] == node_id and node["Alive"] for node in ray.nodes())


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]), *(int(sys.argv[2]), float(sys.argv[3])) if len(sys.argv) > 3 else ())
    finally:  # Ray's session files of this cluster, which nothing else reads
        import shutil

        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
