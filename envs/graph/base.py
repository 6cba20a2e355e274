"""What the in-graph engine needs of an environment written in TF ops."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol


class Transition(NamedTuple):
    """What one vector step returns (all [N] except the observations, [N, *observation_shape] float32)."""

    observations: Any
    """The observation to act on next (a fresh episode's first one where an episode ended)."""
    rewards: Any
    terminated: Any
    truncated: Any
    final_observations: Any
    """The observation the step ended in, before any reset (what a truncation bootstraps from)."""


class GraphEnv(Protocol):
    """``num_envs`` environments as TF ops; the state is a NamedTuple of tensors the engine keeps in variables."""

    num_envs: int
    observation_shape: tuple[int, ...]

    def reset(self) -> Any:
        """The state of fresh episodes in every env."""
        ...

    def observe(self, state: Any) -> Any:
        """[N, *observation_shape] float32 observations of ``state``."""
        ...

    def step(self, state: Any, actions: Any) -> tuple[Any, Transition]:
        """Apply the actions (as the env takes them: clipped, for continuous ones); restart finished envs."""
        ...
