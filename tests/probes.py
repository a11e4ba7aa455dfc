"""Learners that report their state, selected with ``--model tests.probes.<Name>`` in subprocess tests."""

from __future__ import annotations

import os

import torch
from tensordict import TensorDict

from impala_lit import ImpalaModule


class RecordsResume(ImpalaModule):
    """Saves, at the first training step of the process, what a resume must have restored.

    Written to ``$IMPALA_LIT_PROBE`` with ``torch.save``: global step, frames, policy version,
    training seconds so far, the 100-game window, learning rate, optimizer state, the oldest policy
    version in the first batch and whether the actors' weights equal the learner's.
    """

    _recorded = False

    def training_step(self, batch, batch_idx):
        path = os.environ.get("IMPALA_LIT_PROBE")
        if path and not self._recorded:
            self._recorded = True
            stream = self.trainer.datamodule.stream
            actor_weights = TensorDict.from_module(stream.policy).data
            learner_weights = TensorDict.from_module(self.actor).data.cpu()
            torch.save(
                {
                    "global_step": self.global_step,
                    "frames": self.frames,
                    "policy_version": self.policy_version,
                    "train_seconds": self.train_seconds,
                    "recent_games": list(self._recent_games),
                    "lr": self.optimizers().param_groups[0]["lr"],
                    "optimizer": self.optimizers().optimizer.state_dict(),
                    "batch_min_version": int(batch["policy_version"].min()),
                    "actors_have_learner_weights": bool((actor_weights == learner_weights).all()),
                },
                path,
            )
        return super().training_step(batch, batch_idx)


class RecordsRanks(ImpalaModule):
    """Saves, when training ends, each DDP rank's view to ``$IMPALA_LIT_PROBE.rank<N>``: its
    weights, its actors' weights, its share of the actors, its frame counter and policy version."""

    def on_train_end(self) -> None:
        path = os.environ.get("IMPALA_LIT_PROBE")
        if path:
            stream = self.trainer.datamodule.stream
            torch.save(
                {
                    "weights": TensorDict.from_module(self).data.cpu(),
                    "learner_actor_weights": TensorDict.from_module(self.actor).data.cpu(),
                    "actor_weights": TensorDict.from_module(stream.policy).data,
                    "num_workers": stream.settings.num_workers,
                    "frames": self.frames,
                    "policy_version": self.policy_version,
                    "world_size": self.trainer.world_size,
                },
                f"{path}.rank{self.trainer.global_rank}",
            )
