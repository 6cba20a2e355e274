"""Run by tests/test_ray.py in its own process: Ray's multi-node test cluster (a head and two nodes, one CPU
each, on this machine), a Ray-engine run on it, and the node holding a rollout worker removed mid-run.
Prints one JSON line: whether the removed node held a worker, the steps reached, and the restarts."""

import json
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))  # no token file in the user's home
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-")  # the cluster's files and address file, not /tmp/ray
os.makedirs(os.path.join(os.environ["RAY_TMPDIR"], "ray"))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from runners.configure import resolve_config  # noqa: E402
from runners.engines import ray_engine  # noqa: E402
from runners.training import train  # noqa: E402

# the test cluster notices a lost node within about 2 s (Ray's _system_config, as its own cluster tests set it)
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}


def main(results: Path) -> None:
    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": FAST_NODE_DEATH})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    engines, report = [], {"removed_node_held_worker": False}
    start = ray_engine.RayEngine.start

    def start_and_keep(engine, *args, **kwargs):  # the test's handle on the run's engine
        engines.append(engine)
        return start(engine, *args, **kwargs)

    ray_engine.RayEngine.start = start_and_keep

    def remove_a_worker_node() -> None:
        while not engines or engines[0].version < 5:  # five rollouts in: the run is under way
            time.sleep(0.05)
        held = [info["node"] for info in ray.get([worker.process.remote() for worker in engines[0].workers])]
        victim = next(node for node in nodes if node.node_id in held)
        cluster.remove_node(victim, allow_graceful=False)
        report.update(removed_node_held_worker=True, workers_on_removed_node=held.count(victim.node_id),
                      removed_at_rollout=engines[0].version)

    remover = threading.Thread(target=remove_a_worker_node, daemon=True)
    remover.start()
    config, _ = resolve_config("CartPole-v1", "ppo", {"engine": "ray", "ray.workers": 2, "total_steps": 16384,
                                                       "eval_every": 4096, "results_dir": str(results),
                                                       "run_name": "multinode", "media": False})
    result = train(config, progress=False)
    remover.join(timeout=60)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    report.update(env_steps=result.env_steps, total_steps=config.total_steps,
                  worker_restarts=summary["engine"]["worker_restarts"])
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
