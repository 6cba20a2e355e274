"""The learning algorithms (TensorFlow only; never imports gymnasium)."""

import os

# TensorFlow's C++ start-up chatter (CPU feature notes, oneDNN) hides our own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
