"""The ``champion`` command (``main.main``, the console script) and what only it needs (``plotting`` for
``champion plot``).

The commands are a thin layer over the public API in ``champion``: they parse options, call it, and turn its
errors into one line and an exit code.
"""
