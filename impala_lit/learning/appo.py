"""Other objectives on the same actors and V-trace: subclasses of ``ImpalaModule`` that override ``loss``."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

from impala_lit.learning.learner import ImpalaModule
from impala_lit.settings import OpenUnitInterval, PositiveInt


class APPOModule(ImpalaModule):
    """Asynchronous PPO as Sample Factory runs it (Petrenko et al. 2020).

    PPO's clipped surrogate on the ratio learner / behaviour policy, with V-trace
    advantages ``r + gamma v_{s+1} - V(x_s)`` (the surrogate carries the ratio, so
    V-trace's rho is divided out); the value loss regresses V-trace targets. By default
    one update per batch of rollouts (Sample Factory's default); ``num_epochs`` x
    ``num_minibatches`` updates per batch reuse it, V-trace recomputed with the current
    network for every minibatch. Each update is a full Lightning optimizer step (gradient
    clip, precision, hooks); the actors get the weights once per batch.

    Args:
        clip_range: epsilon of the clipped surrogate, ``ratio`` kept in ``[1 - eps, 1 + eps]``.
        num_epochs: passes over each batch of rollouts.
        num_minibatches: minibatches per pass (rollouts are shuffled, whole rollouts per minibatch).
        normalize_advantage: standardize advantages over the (mini)batch (on by default, as PPO).
        **kwargs: ``ImpalaModule``'s settings.
    """

    def __init__(
        self,
        *,
        clip_range: OpenUnitInterval = 0.1,
        normalize_advantage: bool = True,
        num_epochs: PositiveInt = 1,
        num_minibatches: PositiveInt = 1,
        **kwargs: Any,
    ):
        super().__init__(normalize_advantage=normalize_advantage, **kwargs)
        self.save_hyperparameters()
        self._update = 0  # index of the update within the current batch
        self._order: torch.Tensor | None = None

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> torch.Tensor | None:
        passes = self.hparams.num_epochs * self.hparams.num_minibatches
        if passes == 1:
            return super().training_step(batch, batch_idx)
        minibatches = self.hparams.num_minibatches
        if self._update % minibatches == 0:  # a new epoch: reshuffle the rollouts
            self._order = torch.randperm(batch.shape[0], device=batch.device)
        rows = self._order.chunk(minibatches)[self._update % minibatches]
        if self._update > 0:
            return self._train_on(batch[rows], new_steps=0, log=False)
        # the batch's frames, games and metrics once, at its first update (as IMPALA's: before the update)
        return self._train_on(batch[rows], new_steps=self.new_steps(batch), games=batch)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """``num_epochs x num_minibatches`` optimizer steps on this batch, then the weights to the actors.

        Each ``optimizer.step(closure)`` runs ``training_step`` (the next minibatch), backward,
        clipping and the step, as Lightning does for optimizers that call their closure repeatedly.
        """
        passes = self.hparams.num_epochs * self.hparams.num_minibatches
        for self._update in range(passes):
            optimizer.step(closure=optimizer_closure)
        self._update = 0
        self.send_weights()

    def loss(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        terms = super().loss(batch)  # baseline and entropy terms are IMPALA's
        eps = self.hparams.clip_range
        log_ratio = batch["learner_log_prob"] - batch["action_log_prob"]
        ratio = log_ratio.exp()
        with torch.no_grad():
            advantage = self.scale_advantage(batch["advantage"].squeeze(-1) / ratio.clamp_max(self.hparams.rho_thresh))
        surrogate = torch.min(ratio * advantage, ratio.clamp(1.0 - eps, 1.0 + eps) * advantage)
        policy = -self.reduce_term(surrogate, batch)
        terms["loss"] = terms["loss"] - terms["policy"] + policy
        terms["policy"] = policy
        terms["clip_fraction"] = ((ratio - 1.0).abs() > eps).float().mean().detach()
        return terms
