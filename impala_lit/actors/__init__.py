"""Actors: TorchRL collector workers (local processes or Ray actors) that stream rollouts to the learner."""

from impala_lit.actors.stream import ACTOR_BACKENDS, ActorSettings, ActorsFailedError, RolloutStream

__all__ = ["ACTOR_BACKENDS", "ActorSettings", "ActorsFailedError", "RolloutStream"]
