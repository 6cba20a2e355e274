"""What resume checkpoints cost a run: the time each checkpoint takes, its share of the run's wall time, and the
time a resume takes to restore the run (model, optimizer and envs) before it trains again.

    python benchmarks/checkpoint_cost.py --env HalfCheetah-v5 --num-envs 1 --total-steps 61440 \\
        --checkpoint-every 20480 --out docs/benchmark-runs/checkpoint-cost/halfcheetah-after.json
    CHAMPION_ROOT=/tmp/before python benchmarks/checkpoint_cost.py ...   # the same on another checkout

It trains in this process (the env's preset, no evaluation until the end, no media, no crown), timing every
call of the loop's checkpoint (``champion.runners.training._checkpoint``: flushing the logs, gathering the run's state,
writing and verifying the files). Then it removes summary.json, as a kill just before the end would, and
resumes the run, which restores everything from the last checkpoint and finishes at once; the restore
(``champion.runners.run.Run.restore``) is timed, and so is finding and verifying the checkpoint it restores
(``ResumeCheckpoints.latest``: decoding the state, and since issue 29 reading every TensorFlow tensor once). Both names exist in the code before and after the env journals, so
``CHAMPION_ROOT`` can point at either.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(os.environ.get("CHAMPION_ROOT", Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(ROOT))

import champion.runners.store.checkpoints  # noqa: E402
import champion.runners.run  # noqa: E402
import champion.runners.training  # noqa: E402
from champion.runners.store.checkpoints import read_checkpoint  # noqa: E402
from champion.runners.configure import resolve_config  # noqa: E402


def timed(owner: Any, name: str, seconds: list[float]) -> None:
    """Wrap ``owner.name`` so that each call's duration is appended to ``seconds``."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    setattr(owner, name, wrapper)


def measure(env_id: str, algo: str, num_envs: int, total_steps: int, checkpoint_every: int,
            results_dir: Path) -> dict[str, Any]:
    """Train, then resume the finished run from its last checkpoint; the times of both."""
    checkpoints: list[float] = []
    restores: list[float] = []
    finds: list[float] = []
    timed(champion.runners.training, "_checkpoint", checkpoints)
    timed(champion.runners.run.Run, "restore", restores)
    timed(champion.runners.store.checkpoints.ResumeCheckpoints, "latest", finds)
    config, _ = resolve_config(env_id, algo, {
        "num_envs": num_envs, "total_steps": total_steps, "checkpoint_every": checkpoint_every,
        "eval_every": total_steps, "eval_episodes": 1, "media": False, "crown.at_end": False,
        "results_dir": str(results_dir), "run_name": "run"})
    result = champion.runners.training.train(config, progress=False)
    (result.run_dir / "summary.json").unlink()
    checkpoint_dir = sorted((result.run_dir / "checkpoints").glob("ckpt-*"))[-1]
    size = sum(path.stat().st_size for path in checkpoint_dir.iterdir())
    saved = read_checkpoint(checkpoint_dir).state
    replayed = [journal.steps for journal in saved["env_state"].journals] if "env_state" in saved else None
    started = time.perf_counter()
    champion.runners.training.resume(result.run_dir, progress=False)
    resume_seconds = time.perf_counter() - started
    return {"env": env_id, "algo": algo, "num_envs": num_envs, "total_steps": total_steps,
            "checkpoint_every": checkpoint_every, "train_wall_seconds": result.wall_seconds,
            "checkpoint_seconds": checkpoints, "phase_seconds": result.timings,
            "checkpoint_share_of_wall": sum(checkpoints) / result.wall_seconds,
            "checkpoint_bytes": size, "journal_steps_replayed": replayed, "restore_seconds": restores[0],
            "find_checkpoint_seconds": finds[0], "resume_command_seconds": resume_seconds,
            "code": str(Path(champion.runners.training.__file__).resolve().parent.parent)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True)
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--num-envs", type=int, required=True)
    parser.add_argument("--total-steps", type=int, required=True)
    parser.add_argument("--checkpoint-every", type=int, required=True)
    parser.add_argument("--out", type=Path, help="also write the result to this JSON file")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        report = measure(args.env, args.algo, args.num_envs, args.total_steps, args.checkpoint_every, Path(folder))
    report.update(load_before=load_before, load_after=os.getloadavg()[0])
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
