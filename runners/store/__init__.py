"""The run folder and what it keeps: the folder itself and its lock (``run_folder``), the best store
(``best_store``), resume checkpoints (``checkpoints``, with ``state_codec`` for their state as data), the
run's metadata (``run_metadata``), atomic writes and bounded reads (``atomic_files``, ``folder_trust``), and
finding runs in a results folder (``runs``).

Everything written here survives a kill: a temporary file in the same folder, flushed, then renamed.
"""
