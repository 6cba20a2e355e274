"""Process-wide settings a training run needs, applied when the run starts (never at import)."""

from __future__ import annotations

import tensorflow as tf


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


def single_threaded_numpy() -> None:
    """numpy's BLAS on one thread for the rest of the process. Acting and evaluation multiply small matrices,
    where threads cost more than they bring and fight TensorFlow's own for the cores: the Nature CNN acting
    for 8 Atari envs took 2.1 ms per step on one BLAS thread, 5.6 ms on two, and up to 160 ms beside a
    training process (docs/architecture-notes.md). TensorFlow does not use this BLAS. threadpoolctl is imported
    here, not at the top: importing it sets KMP_DUPLICATE_LIB_OK, and importing champion changes nothing."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
