"""How champion compiles the learners' updates and the graph engine's fused call, and keeps what it compiled.

- ``update``: a learner's update as one compiled graph with a fixed signature (traces once).
- ``packing``: the rollout batch as two arrays in and out of a compiled call.
- ``xla_cache``: TensorFlow's persistent XLA cache (a supported flag), set up when a run starts, and the
  recovery from an entry TensorFlow cannot read.
- ``graph_cache``: traced graphs kept beside it, so a later run with the same settings skips tracing.
- ``compat``: the only module that touches private TensorFlow APIs, each behind a version check with a
  public fallback.
- ``runtime``: process settings a run needs (GPU memory growth, deterministic ops), applied at run start.

Nothing here runs at import: importing champion changes no environment variable and writes no file.
"""
