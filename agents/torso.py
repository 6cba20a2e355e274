"""A torso of the user's own: how a run names it ("module:function") and finds it again. No TensorFlow here.

A run is built again in other processes (resume, replay, export, crown), so the torso is recorded by the name
that imports it, never pickled. A function given as an object is recorded under its module and qualified name; one
defined in the script being run (``__main__``) under the script's file name, which is how another process imports
that file (as an env id ``module:Env-v0`` names it). A lambda, a nested function or anything but a function is
refused in one line: nothing could import it again. The modules are imported by the runners under the rules of
``champion.envs.factory`` (from installed packages only, for a name read from a run folder); ``find_torso`` only
looks names up among the modules already imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Callable

from champion.agents.config import ConfigError

GIVEN_TORSOS: dict[str, Callable[..., Any]] = {}
"""The functions this process was given as objects, by the name their run records (a script's function is found
here rather than by importing the script a second time)."""
DEFINE_IT = "define it with def at the top level of a module file, or give its name as 'module:function'"


def torso_reference(torso: Any, argument: str = "torso") -> str:
    """The "module:function" name a run records for ``torso`` (a function, or that name already); ConfigError (one
    line) for what another process could not import again."""
    if isinstance(torso, str):
        return torso  # its form is checked with the config (``champion.agents.config``)
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(torso, keras.layers.Layer):
        raise ConfigError(f"{argument}= takes a function that builds the Keras model, not a model object: a run "
                          "builds its torso again on resume, replay and export, so champion records the function's "
                          "name, never the object; e.g. def my_torso(width): return keras.saving.load_model("
                          "'encoder.keras') for a pretrained one")
    qualified = getattr(torso, "__qualname__", None)
    module = getattr(torso, "__module__", None)
    if not callable(torso) or not isinstance(qualified, str) or not isinstance(module, str):
        raise ConfigError(f"{argument} must be a function (feature width -> keras.Model) or 'module:function', got "
                          f"{type(torso).__name__}")
    if "<lambda>" in qualified or "<locals>" in qualified:
        kind = "lambda" if "<lambda>" in qualified else "nested function"
        raise ConfigError(f"{argument}={qualified} cannot be recorded: a run builds its torso again on resume, replay "
                          f"and export by importing it, and a {kind} cannot be imported; {DEFINE_IT}")
    if module == "__main__":
        module = _script_module(qualified, argument)
    reference = f"{module}:{qualified}"
    if module in sys.modules and _lookup(sys.modules[module], qualified) is not torso:
        raise ConfigError(f"{argument}={qualified} is not what {reference} names in its module (a decorated or "
                          f"replaced function?), so it could not be found again; {DEFINE_IT}")
    GIVEN_TORSOS[reference] = torso
    return reference


def _script_module(qualified: str, argument: str) -> str:
    """The module name under which another process imports the script being run (its file name), if it can."""
    path = getattr(sys.modules["__main__"], "__file__", None)
    name = os.path.splitext(os.path.basename(path))[0] if path else ""
    if running_script(name) is None:
        where = f"the script {path}" if path else "an interactive session (or python -c)"
        raise ConfigError(f"{argument}={qualified} is defined in {where}, which another process cannot import to "
                          f"build it again on resume, replay and export; {DEFINE_IT}")
    return name


def find_torso(reference: str) -> Callable[..., Any]:
    """The function ``reference`` names: one this process was given, or one in a module already imported (the
    runners import it first, under the trust rules of ``champion.envs.factory``). ConfigError (one line) if not."""
    if reference in GIVEN_TORSOS:
        return GIVEN_TORSOS[reference]
    named, _, qualified = reference.partition(":")
    module = named
    if module not in sys.modules and running_script(module) is not None:
        module = "__main__"  # the program being run defines it: itself, not a second import of its file
    if module not in sys.modules:
        raise ConfigError(f"network.torso {reference}: its module {module!r} has not been imported; import it first "
                          f"(champion's commands: --env-module {module})")
    function = _lookup(sys.modules[module], qualified)
    if function is None:
        raise ConfigError(f"network.torso {reference}: module {named!r} has no {qualified!r}")
    # only what the module itself defines: a name read from a run folder never reaches a function the module
    # merely imported (os.close, sys.exit)
    if not callable(function) or getattr(function, "__module__", None) != module:
        raise ConfigError(f"network.torso {reference} is not a function defined in {named!r} (it is "
                          f"{type(function).__name__} {getattr(function, '__module__', None)!r}); name the function "
                          "that builds your Keras model")
    return function


def running_script(module: str) -> Any:
    """``__main__`` when it is the script ``module`` names (run as ``python module.py`` from its folder), else None."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or os.path.splitext(os.path.basename(path))[0] != module:
        return None
    found = importlib.util.find_spec(module) if module.isidentifier() else None
    same = found is not None and found.origin is not None and os.path.realpath(found.origin) == os.path.realpath(path)
    return main if same else None


def _lookup(module: Any, qualified: str) -> Any:
    """``module.a.b`` for the qualified name ``a.b``, or None."""
    found = module
    for part in qualified.split("."):
        found = getattr(found, part, None)
        if found is None:
            return None
    return found
