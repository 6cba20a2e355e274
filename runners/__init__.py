"""Everything that drives a run, in subpackages by job:

- ``training`` (the one loop), ``run`` (what a run is built from), ``run_state`` (what carries a run across a
  stop), ``configure`` (defaults -> preset -> overrides), ``hooks`` (callbacks and stop rules), ``evaluate``,
  ``rollout``, ``crown``, ``replay``, ``export``, ``faults`` and ``timing``: the loop and what it does;
- ``engines/``: how env steps become updates (gymnasium, graph, ray);
- ``store/``: the run folder and what it keeps (best entries, checkpoints, atomic files, bounded reads);
- ``logs/``: TensorBoard, evaluations.csv, best-policy GIFs, the stderr filter;
- ``ray/``: the Ray cluster, rollout workers and evaluation actors;
- ``cli/``: the ``champion`` command, a thin layer over the public API in ``champion``.

Scripts use ``champion`` (``champion.train``, ``champion.load``); these modules are its implementation.
"""
