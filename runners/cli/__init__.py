"""The ``champion`` command (``main``) and what only it needs (``plotting`` for ``champion plot``).

The commands are a thin layer over the public API in ``champion``: they parse options, call it, and turn its
errors into one line and an exit code.
"""

from champion.runners.cli.main import main

__all__ = ["main"]
