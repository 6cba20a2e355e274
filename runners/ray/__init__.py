"""The Ray side of the ``ray`` engine: joining or starting a cluster (``cluster``), the rollout workers
(``workers``) and the evaluation actors (``evaluation``). Imported only by runs that use Ray."""
