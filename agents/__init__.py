"""The learning algorithms (TensorFlow only; never imports gymnasium)."""

import os

# TensorFlow's C++ start-up chatter (CPU feature notes, oneDNN) hides our own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The agents are written for Keras 3 on TensorFlow, whatever ~/.keras/keras.json says.
os.environ["KERAS_BACKEND"] = "tensorflow"
# On a GPU: take memory as needed (several processes may share one), and use deterministic
# kernels so that a resumed run and a replay reproduce their numbers there as on the CPU.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

# Keep XLA-compiled executables on disk so that the next run with the same shapes skips the compile
# (see agents/xla_cache.py). Set before TensorFlow starts, which reads the flag once.
from agents import xla_cache as _xla_cache  # noqa: E402

_xla_cache.configure()
