"""``champion tune``: hyperparameter search with Optuna in which every trial is an ordinary champion run (best store,
crown, TensorBoard, resumable) and the study's champion is chosen on held-out episodes no trial saw.

``settings.py`` (study.yaml, checks), ``spaces.py`` (default spaces, space files), ``study.py`` (storage, workers,
pruning, lost trials), ``ray_trials.py`` (trials as Ray tasks), ``report.py`` (re-evaluation, table, winner),
``tuning.py`` (the command's flow), ``worker.py`` (a worker process). Optuna is imported only while tuning.
"""
