"""``RolloutSource``: all the learner and its evaluation know of whatever feeds them rollouts.

``ImpalaDataModule`` is one (actors, optionally replay); a new actor backend or environment family
is a new source, or a new part behind this one, and the learner does not change.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from tensordict import TensorDict, TensorDictBase

from impala_lit.envs import EnvSpec


@runtime_checkable
class RolloutSource(Protocol):
    """Batches ``[B, T]`` come from the source's ``train_dataloader``; the rest of the contract is here."""

    @property
    def env_spec(self) -> EnvSpec:
        """The environments the rollouts come from (evaluation games are played in its ``evaluation_sets``)."""
        ...

    @property
    def frames_per_step(self) -> int:
        """Emulator frames per agent step (Atari's frame skip; 1 elsewhere)."""
        ...

    @property
    def frames_per_batch(self) -> int:
        """Emulator frames the actors produce per learner batch (of one learner)."""
        ...

    @property
    def actor_restarts(self) -> int:
        """Times the actors were restarted after one of them died."""
        ...

    def update_weights(self, weights: TensorDict) -> None:
        """The learner's new policy weights (on the CPU), for the actors."""
        ...

    def fresh(self, batch: TensorDictBase) -> torch.Tensor:
        """``[B]`` bool: the rollouts of ``batch`` that the learner has not seen before."""
        ...

    def feedback(self, batch: TensorDictBase, policy_version: int) -> dict[str, float | torch.Tensor]:
        """``batch`` after V-trace (``value_target``, ``state_value``); returns the source's metrics to log."""
        ...


class NoSource:
    """What a learner runs against without a ``RolloutSource`` (batches fed by hand): one frame per
    step, every rollout new, no actors to update."""

    env_spec = None
    frames_per_step = 1
    frames_per_batch = None
    actor_restarts = 0

    def update_weights(self, weights: TensorDict) -> None:
        pass

    def fresh(self, batch: TensorDictBase) -> torch.Tensor:
        return torch.ones(batch.shape[0], dtype=torch.bool, device=batch.device)

    def feedback(self, batch: TensorDictBase, policy_version: int) -> dict[str, float | torch.Tensor]:
        return {}
