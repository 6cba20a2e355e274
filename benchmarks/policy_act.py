"""What the public API costs over champion's own acting path: ``Policy.act`` (the env's observation in, the env's
action out, with its checks) against the numpy policy it wraps, for one observation and a batch of 64, and how
long ``import champion`` takes.

    python benchmarks/policy_act.py RUN_DIR        # any run folder, e.g. tests/fixtures/before-package/run
"""

import os
import sys
import time
import timeit

import numpy as np


def best_microseconds(call, number: int = 2000) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def main(run_dir: str) -> None:
    started = time.perf_counter()
    import champion

    import_seconds = time.perf_counter() - started
    policy = champion.load(run_dir)
    inner = policy._policy  # the NumpyPolicy that replay and evaluation act with
    env = policy.make_env()
    env.observation_space.seed(0)
    one = env.observation_space.sample()
    batch = np.stack([env.observation_space.sample() for _ in range(64)])
    flat_one, flat_batch = one[None].astype(np.float32), batch.astype(np.float32)
    assert np.array_equal(policy.act(batch), inner.env_actions(inner.mode(flat_batch)))
    print(f"load average {os.getloadavg()[0]:.2f}; {policy!r}")
    print(f"import champion: {import_seconds:.3f} s")
    for size, observations, flat in (("1", one, flat_one), ("64", batch, flat_batch)):
        direct = best_microseconds(lambda: inner.env_actions(inner.mode(flat)))
        public = best_microseconds(lambda: policy.act(observations))
        print(f"batch {size:>2}: NumpyPolicy {direct:7.1f} us, Policy.act {public:7.1f} us (+{public - direct:.1f} us)")


if __name__ == "__main__":
    main(sys.argv[1])
