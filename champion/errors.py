"""champion's own exception type: every error champion raises for bad input or a stopped run is a
``ChampionError``, and its message is the one line the ``champion`` command prints."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (at most ``limit`` characters), or its type's name when it has none:
    what one line about an error from someone else's code can quote."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


class ChampionError(Exception):
    """Base of champion's errors: bad input (a config, an env, a run folder, a saved policy) or a run that
    stopped. ``str(error)`` is one line that says what is wrong and what would be right."""

    exit_code: int = 2
    """The exit code the ``champion`` command ends with for this error (2: usage, as command-line tools do)."""
    label: str = "error: "
    """What the ``champion`` command prints before the message."""


class CallbackError(ChampionError):
    """A user's callback raised: the run stopped with a checkpoint, its best policy untouched."""

    exit_code = 1


class UsageError(ChampionError, ValueError):
    """A bad argument to one of champion's functions; the message says what would be right."""
