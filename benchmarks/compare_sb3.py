"""champion against Stable-Baselines3 (PyTorch) and SBX (JAX) on the same machine, same settings, alternating runs.

    pip install -e '.[bench]'     # stable-baselines3 and torch (CPU build) among them; sbx-rl optional
    python benchmarks/compare_sb3.py                                 # every case, 3 pairs each
    python benchmarks/compare_sb3.py --cases ppo-cartpole --pairs 5 --out docs/compare_sb3.md
    python benchmarks/compare_sb3.py --scale 0.05 --pairs 1         # a smoke test of the script

Each run is a fresh Python process (so peak RSS is that run's own), started alternately for
champion and SB3 so that a change in the machine's load hits both. A run's wall time is measured
inside its process from building the envs and model to the end of training, evaluations
included; importing the libraries is reported separately. Both evaluate 10 deterministic
episodes on 10 envs every ``eval_every`` steps, with the same hyperparameters, network (64x64
tanh, separate actor and critic, orthogonal init) and seeds. SB3 runs with tensorflow hidden, so
that its TensorBoard import does not load TensorFlow into its process.

champion runs twice per pair: `champion` with an empty XLA compile cache (it compiles its step, as
a first run on a machine does) and `champion-warm` with a cache that an uncounted run of the same
case filled before the pairs (as every later run with the same shapes finds it; see
agents/compile/xla_cache.py). Ratios are given for both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    """One comparison: the env, the algorithm and its settings in both libraries."""

    name: str
    env_id: str
    algo: str
    total_steps: int
    eval_every: int
    threshold: float
    champion_overrides: dict[str, Any]
    sb3_kwargs: dict[str, Any]
    sb3_network: dict[str, Any] = dataclasses.field(default_factory=lambda: {"net_arch": [64, 64], "activation": "tanh"})
    """SB3's policy_kwargs in plain terms: net_arch (both torsos), activation (tanh or relu), and optionally
    log_std_init and ortho_init."""
    sb3_normalize: bool = False
    """Wrap SB3's envs in VecNormalize (observations and rewards; its evaluation env shares the statistics)."""


CASES = {
    "ppo-cartpole": Case(
        "ppo-cartpole", "CartPole-v1", "ppo", 100_000, 10_000, 475.0, {},
        dict(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, learning_rate=("linear", 1e-3),
             clip_range=("linear", 0.2), ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, n_envs=8)),
    "a2c-cartpole": Case(
        "a2c-cartpole", "CartPole-v1", "a2c", 500_000, 10_000, 475.0, {},
        dict(n_steps=5, gamma=0.99, gae_lambda=1.0, learning_rate=7e-4, ent_coef=0.0, vf_coef=0.5,
             max_grad_norm=0.5, n_envs=8)),
    "ppo-halfcheetah": Case(  # RL Zoo's tuned HalfCheetah settings (champion's HalfCheetah-v5 preset)
        "ppo-halfcheetah", "HalfCheetah-v5", "ppo", 1_000_000, 20_000, 5819.0, {},
        dict(n_steps=512, batch_size=64, n_epochs=20, gamma=0.98, gae_lambda=0.92, learning_rate=2.0633e-05,
             ent_coef=0.000401762, clip_range=0.1, max_grad_norm=0.8, vf_coef=0.58096, n_envs=1),
        sb3_network={"net_arch": [256, 256], "activation": "relu", "log_std_init": -2.0, "ortho_init": False},
        sb3_normalize=True),
    "ppo-hopper": Case(  # RL Zoo's MuJoCo defaults: SB3's PPO defaults with VecNormalize (champion's Hopper-v5 preset)
        "ppo-hopper", "Hopper-v5", "ppo", 1_000_000, 20_000, 2410.0, {},
        dict(n_steps=2048, batch_size=64, n_epochs=10, gamma=0.99, gae_lambda=0.95, learning_rate=3e-4,
             ent_coef=0.0, clip_range=0.2, max_grad_norm=0.5, vf_coef=0.5, n_envs=1),
        sb3_normalize=True),
    "ppo-ant": Case(  # RL Zoo's Ant entry: SB3's PPO defaults with VecNormalize (champion's Ant-v5 preset)
        "ppo-ant", "Ant-v5", "ppo", 1_000_000, 20_000, 1327.0, {},
        dict(n_steps=2048, batch_size=64, n_epochs=10, gamma=0.99, gae_lambda=0.95, learning_rate=3e-4,
             ent_coef=0.0, clip_range=0.2, max_grad_norm=0.5, vf_coef=0.5, n_envs=1),
        sb3_normalize=True),
    "ppo-lunarlander": Case(
        "ppo-lunarlander", "LunarLander-v3", "ppo", 100_000, 25_000, 200.0, {},
        dict(n_steps=1024, batch_size=64, n_epochs=4, gamma=0.999, gae_lambda=0.98, learning_rate=3e-4,
             ent_coef=0.01, n_envs=16)),
}


def _schedule(value: Any) -> Any:
    if isinstance(value, tuple) and value[0] == "linear":
        initial = value[1]
        return lambda progress_remaining: progress_remaining * initial
    return value


def run_champion(case: Case, seed: int, results_dir: str) -> dict[str, Any]:
    """Train with champion's preset for the env (the settings SB3 gets too) and report."""
    import csv

    started_import = time.perf_counter()
    from champion.runners.configure import resolve_config
    from champion.runners.training import train
    imported = time.perf_counter()
    overrides = {"seed": seed, "total_steps": case.total_steps, "eval_every": case.eval_every, "eval_episodes": 10,
                 "results_dir": results_dir, "run_name": f"{case.name}-seed{seed}-{time.time_ns()}",
                 "checkpoint_every": 10 * case.total_steps, **case.champion_overrides}
    config, _ = resolve_config(case.env_id, case.algo, overrides)
    start = time.perf_counter()
    result = train(config, progress=False)
    wall = time.perf_counter() - start
    offset = result.startup_seconds  # run folder, model and envs, before the loop's clock starts
    with open(result.run_dir / "evaluations.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    evaluations = [(int(row["step"]), float(row["wall_seconds"]) + offset, float(row["mean_return"])) for row in rows]
    return {"wall_seconds": wall, "import_seconds": imported - started_import, "evaluations": evaluations,
            "env_steps": result.env_steps, "timings": result.timings}


def run_sb3(case: Case, seed: int, jax: bool = False) -> dict[str, Any]:
    """Train SB3's (or with ``jax``, SBX's) PPO or A2C with the same settings and evaluation schedule."""
    sys.modules["tensorflow"] = None  # type: ignore[assignment]  # keep TF out of SB3's TensorBoard import
    started_import = time.perf_counter()
    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
    from stable_baselines3.common.env_util import make_vec_env
    if jax:
        import flax.linen
        from sbx import PPO as SbxPPO  # SBX has no A2C
    imported = time.perf_counter()
    kwargs = dict(case.sb3_kwargs)
    n_envs = kwargs.pop("n_envs")
    kwargs = {key: _schedule(value) for key, value in kwargs.items()}
    evaluations: list[tuple[int, float, float]] = []

    start = time.perf_counter()

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            evaluations.append((self.num_timesteps, time.perf_counter() - start, float(self.parent.last_mean_reward)))
            return True

    envs = make_vec_env(case.env_id, n_envs=n_envs, seed=seed)
    eval_envs = make_vec_env(case.env_id, n_envs=10, seed=1_000_000)
    if case.sb3_normalize:  # EvalCallback copies the training statistics into the evaluation env before each one
        from stable_baselines3.common.vec_env import VecNormalize

        envs = VecNormalize(envs, gamma=kwargs.get("gamma", 0.99))
        eval_envs = VecNormalize(eval_envs, training=False, norm_reward=False)
    algorithm = A2C if case.algo == "a2c" else (SbxPPO if jax else PPO)
    network = dict(case.sb3_network)
    layers = network.pop("net_arch")
    activation = network.pop("activation")
    policy_kwargs = dict(net_arch=dict(pi=list(layers), vf=list(layers)),
                         activation_fn={"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation], **network)
    if jax:
        policy_kwargs = dict(net_arch=dict(pi=list(layers), vf=list(layers)),
                             activation_fn={"tanh": flax.linen.tanh, "relu": flax.linen.relu}[activation],
                             ortho_init=network.get("ortho_init", True))
    model = algorithm("MlpPolicy", envs, seed=seed, device="cpu", policy_kwargs=policy_kwargs, verbose=0, **kwargs)
    callback = EvalCallback(eval_envs, n_eval_episodes=10, eval_freq=max(case.eval_every // n_envs, 1),
                            deterministic=True, verbose=0, callback_after_eval=Record())
    model.learn(total_timesteps=case.total_steps, callback=callback)
    wall = time.perf_counter() - start
    return {"wall_seconds": wall, "import_seconds": imported - started_import, "evaluations": evaluations,
            "env_steps": int(model.num_timesteps), "torch_threads": torch.get_num_threads()}


def scaled(case: Case, scale: float) -> Case:
    """The case with its step budget and evaluation interval multiplied by scale."""
    return dataclasses.replace(case, total_steps=max(int(case.total_steps * scale), 1),
                               eval_every=max(int(case.eval_every * scale), 1))


CHAMPIONS = ("champion", "champion-warm")
"""champion with an empty XLA compile cache, and with one filled by an earlier run of the same case."""


def xla_cache_dir(library: str, case_name: str, seed: int, results_dir: str) -> str:
    """The compile cache a champion run gets: its own empty one (cold), or the case's shared one (warm)."""
    if library == "champion-warm":
        return str(Path(results_dir, "xla-cache", case_name).resolve())
    return str(Path(results_dir, "xla-cache", f"{case_name}-cold-{seed}-{time.time_ns()}").resolve())


def run_child(library: str, case_name: str, seed: int, results_dir: str, scale: float) -> dict[str, Any]:
    """One run in a fresh process; returns its report with peak RSS added."""
    command = [sys.executable, __file__, "--child", library, case_name, str(seed), results_dir, str(scale)]
    environment = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", TF_XLA_FLAGS="",
                       CHAMPION_XLA_CACHE=xla_cache_dir(library, case_name, seed, results_dir))
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{library} {case_name} seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(report: dict[str, Any], case: Case) -> dict[str, Any]:
    """Wall time, steps/s, first evaluation at the threshold, best and final returns, peak RSS."""
    evaluations = report["evaluations"]
    reached = next(((step, seconds) for step, seconds, mean in evaluations if mean >= case.threshold), None)
    return {
        "wall": report["wall_seconds"],
        "steps_per_second": report["env_steps"] / report["wall_seconds"],
        "threshold_step": reached[0] if reached else None,
        "threshold_seconds": reached[1] if reached else None,
        "best": max(mean for _, _, mean in evaluations),
        "final": evaluations[-1][2],
        "rss_mb": report["peak_rss_mb"],
        "import": report["import_seconds"],
    }


def raw_env_speed(env_id: str, num_envs: int, vectorization: str, steps: int = 20_000) -> float:
    """Env steps/s of champion's training vector env with random actions and no agent."""
    from champion.envs.factory import make_vector_env

    envs = make_vector_env(env_id, num_envs, vectorization)
    envs.reset(seed=0)
    actions = [envs.action_space.sample() for _ in range(64)]
    start = time.perf_counter()
    for index in range(steps // num_envs):
        envs.step(actions[index % 64])
    seconds = time.perf_counter() - start
    envs.close()
    return (steps // num_envs) * num_envs / seconds


def raw_graph_env_speed(num_envs: int, steps: int = 2_000_000) -> float:
    """Env steps/s of the TF-op CartPole (the graph engine's env) stepped with random actions in one XLA call."""
    import tensorflow as tf

    from champion.envs.graph.cartpole import CartPoleState, GraphCartPole

    generator = tf.random.Generator.from_seed(0)
    env = GraphCartPole(num_envs, generator)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)], autograph=False, jit_compile=True)
    def run(vector_steps: tf.Tensor) -> tf.Tensor:
        def body(index: tf.Tensor, physics: tf.Tensor, elapsed: tf.Tensor) -> tuple[tf.Tensor, ...]:
            actions = generator.uniform([num_envs], 0, 2, dtype=tf.int32)
            state, _ = env.step(CartPoleState(physics, elapsed), actions)
            return index + 1, state.physics, state.elapsed
        start = env.reset()
        return tf.while_loop(lambda index, *_: index < vector_steps, body, (0, start.physics, start.elapsed))[1]

    run(tf.constant(1)).numpy()  # compile
    started = time.perf_counter()
    run(tf.constant(steps // num_envs)).numpy()
    return (steps // num_envs) * num_envs / (time.perf_counter() - started)


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if len(present) == len(values) and present else None


def _format(value: float | None, pattern: str) -> str:
    return "never" if value is None else format(value, pattern)


def sbx_installed() -> bool:
    """Whether SBX (the JAX port of SB3) can be imported here."""
    import importlib.util

    return importlib.util.find_spec("sbx") is not None


def compare(case: Case, pairs: range, results_dir: str, scale: float) -> tuple[list[str], dict[str, Any]]:
    """Alternate champion and SB3 (and SBX for PPO) runs, champion first on even pairs; rows and medians.

    Pair N runs seed N, so a long comparison can run in pieces (--first-pair) that add up to the whole.
    """
    peers = ["sb3", "sbx"] if case.algo == "ppo" and sbx_installed() else ["sb3"]
    rows: list[str] = []
    runs: dict[str, list[dict[str, Any]]] = {library: [] for library in [*CHAMPIONS, *peers]}
    run_child("champion-warm", case.name, 1_000, results_dir, scale)  # fills the warm cache; not counted
    for pair in pairs:
        order = [*CHAMPIONS, *peers] if pair % 2 == 0 else [*peers, *reversed(CHAMPIONS)]
        for library in order:
            summary = summarise(run_child(library, case.name, pair, results_dir, scale), case)
            runs[library].append(summary)
            rows.append(f"| {case.name} | {library} | {pair} | {summary['wall']:.1f} | {summary['steps_per_second']:,.0f} | "
                        f"{_format(summary['threshold_seconds'], '.1f')} | {_format(summary['threshold_step'], ',')} | "
                        f"{summary['best']:.1f} | {summary['final']:.1f} | {summary['rss_mb']:.0f} | {summary['import']:.1f} |")
            print(rows[-1], flush=True)
    medians = {library: {key: _median([run[key] for run in runs[library]]) for key in runs[library][0]}
               for library in runs}
    return rows, medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--pairs", type=int, default=3, help="alternating champion/SB3 pairs per case (default 3)")
    parser.add_argument("--first-pair", type=int, default=0,
                        help="number (and seed) of the first pair, to run a long comparison in pieces (default 0)")
    parser.add_argument("--results-dir", default="results/compare_sb3")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step budget (e.g. 0.05 for a smoke test)")
    parser.add_argument("--out", type=Path, help="write the tables to this Markdown file")
    parser.add_argument("--child", nargs=5, metavar=("LIBRARY", "CASE", "SEED", "RESULTS_DIR", "SCALE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(*args.child)
        return
    if args.first_pair < 0 or args.pairs < 1:
        parser.error(f"--first-pair must be 0 or more and --pairs 1 or more (got {args.first_pair} and {args.pairs})")
    started = time.time()
    load_before = os.getloadavg()[0]
    header = ("| case | library | pair | wall s | env steps/s | s to threshold | step at threshold | best eval | "
              "final eval | peak RSS MB | import s |\n|---|---|---|---|---|---|---|---|---|---|---|")
    print(header)
    lines, ratio_lines, champion_speeds = [], [], {}
    for name in args.cases:
        case = scaled(CASES[name], args.scale)
        rows, medians = compare(case, range(args.first_pair, args.first_pair + args.pairs), args.results_dir,
                                args.scale)
        lines += rows
        ratio_lines += _ratio_lines(case, medians)
        champion_speeds[name] = medians["champion-warm"]["steps_per_second"]
        print("\n".join(ratio_lines), flush=True)
    speed = _env_speed_lines(champion_speeds)
    text = _report(header, lines, ratio_lines, speed, args, load_before, os.getloadavg()[0], time.time() - started)
    print(text)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")


def _ratio_lines(case: Case, medians: dict[str, Any]) -> list[str]:
    lines = []
    for champion, peer in ((champion, peer) for champion in CHAMPIONS for peer in medians if peer not in CHAMPIONS):
        ours, theirs = medians[champion], medians[peer]

        def ratio(key: str) -> str:
            return "-" if ours[key] is None or theirs[key] is None else f"{theirs[key] / ours[key]:.2f}x"

        lines.append(
            f"| {case.name} ({case.total_steps:,} steps) | {peer} / {champion} | {theirs['wall']:.1f} / {ours['wall']:.1f} = "
            f"**{ratio('wall')}** | {_format(theirs['threshold_seconds'], '.1f')} / "
            f"{_format(ours['threshold_seconds'], '.1f')} = **{ratio('threshold_seconds')}** | "
            f"{theirs['best']:.1f} / {ours['best']:.1f} | {theirs['rss_mb']:.0f} / {ours['rss_mb']:.0f} |")
    return lines


def _env_speed_lines(champion_speeds: dict[str, float]) -> list[str]:
    """Raw CartPole stepping speed, and champion's training speed as a fraction of it."""
    lines = []
    raw = {"graph": raw_graph_env_speed(8)}
    lines.append(f"- CartPole-v1, 8 envs, TF-op env of the graph engine (what champion trains on), random actions in "
                 f"one XLA call, no agent: {raw['graph']:,.0f} env steps/s")
    raw["sync"] = raw_env_speed("CartPole-v1", 8, "sync")
    lines.append(f"- CartPole-v1, 8 envs, gymnasium `vectorization=sync`, random actions, no agent: "
                 f"{raw['sync']:,.0f} env steps/s")
    for name, speed in champion_speeds.items():
        if name.endswith("cartpole"):
            lines.append(f"- champion {name} (warm cache): {speed:,.0f} env steps/s (evaluation, update and acting included) = "
                         f"{100 * speed / raw['graph']:.1f}% of the graph env's raw speed, "
                         f"{100 * speed / raw['sync']:.0f}% of gymnasium's SyncVectorEnv CartPole's")
    return lines


def _report(header: str, lines: list[str], ratio_lines: list[str], speed: list[str], args: argparse.Namespace,
            load_before: float, load_after: float, seconds: float) -> str:
    scale_note = f" --scale {args.scale}" if args.scale != 1.0 else ""
    first_note = f" --first-pair {args.first_pair}" if args.first_pair else ""
    cases_note = f" --cases {' '.join(args.cases)}" if args.cases != list(CASES) else ""
    return "\n".join([
        "# champion vs Stable-Baselines3, side by side", "",
        f"Produced by `python benchmarks/compare_sb3.py{cases_note} --pairs {args.pairs}{first_note}{scale_note}` in {seconds / 60:.0f} min on "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), load average {load_before:.2f} before "
        f"and {load_after:.2f} after. Python {platform.python_version()}.", "",
        "## Ratios (peer / champion, medians over the pairs)", "",
        "| case | peer / champion | wall s | s to threshold | best eval (peer / champion) | peak RSS MB (peer / champion) |",
        "|---|---|---|---|---|---|", *ratio_lines, "",
        "## Raw environment speed (the trainer's ceiling)", "", *speed, "",
        "## Every run", "", header, *lines, "",
    ])


def child_main(library: str, case_name: str, seed: str, results_dir: str, scale: str) -> None:
    """Entry point of one run's process: train, then print one JSON line with peak RSS."""
    import resource

    case = scaled(CASES[case_name], float(scale))
    if library in CHAMPIONS:
        report = run_champion(case, int(seed), results_dir)
    else:
        report = run_sb3(case, int(seed), jax=library == "sbx")
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report))


if __name__ == "__main__":
    main()
