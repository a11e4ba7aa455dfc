"""Other objectives on the same actors and V-trace: subclasses of ``ImpalaModule`` that override ``loss``."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

from impala_lit.learner import ImpalaModule


class APPOModule(ImpalaModule):
    """Asynchronous PPO as Sample Factory runs it (Petrenko et al. 2020).

    PPO's clipped surrogate on the ratio learner / behaviour policy, with V-trace
    advantages ``r + gamma v_{s+1} - V(x_s)`` (the surrogate carries the ratio, so
    V-trace's rho is divided out); the value loss regresses V-trace targets. One
    update per batch of rollouts, as Sample Factory's default.

    Args:
        clip_range: epsilon of the clipped surrogate, ``ratio`` kept in ``[1 - eps, 1 + eps]``.
        normalize_advantage: standardize advantages over the batch.
        **kwargs: ``ImpalaModule``'s settings.
    """

    def __init__(self, *, clip_range: float = 0.1, normalize_advantage: bool = True, **kwargs: Any):
        if not 0.0 < clip_range < 1.0:
            raise ValueError(f"model.clip_range: must be in (0, 1), got {clip_range}")
        super().__init__(**kwargs)
        self.save_hyperparameters()

    def loss(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        terms = super().loss(batch)  # baseline and entropy terms are IMPALA's
        eps = self.hparams.clip_range
        log_ratio = batch["learner_log_prob"] - batch["action_log_prob"]
        ratio = log_ratio.exp()
        with torch.no_grad():
            advantage = batch["advantage"].squeeze(-1) / ratio.clamp_max(self.hparams.rho_thresh)
            if self.hparams.normalize_advantage:
                advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        surrogate = torch.min(ratio * advantage, ratio.clamp(1.0 - eps, 1.0 + eps) * advantage)
        policy = -surrogate.sum()
        terms["loss"] = terms["loss"] - terms["policy"] + policy
        terms["policy"] = policy
        terms["clip_fraction"] = ((ratio - 1.0).abs() > eps).float().mean().detach()
        return terms
