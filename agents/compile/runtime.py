"""Process-wide settings a training run needs, applied when the run starts (never at import)."""

from __future__ import annotations

import tensorflow as tf

from champion.agents.numpy_policy import single_threaded_numpy


def configure_runtime() -> None:
    """Deterministic kernels (a resumed run and a replay reproduce their numbers on a GPU as on the CPU), on a
    GPU memory taken as needed (several runs may share one), and numpy's BLAS on one thread. Safe to call
    again."""
    single_threaded_numpy()
    tf.config.experimental.enable_op_determinism()
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the GPU is initialised already (an earlier run in this process): keep its setting
            pass
