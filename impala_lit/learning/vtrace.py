"""V-trace (Espeholt et al. 2018, Sec. 4.1) on TorchRL's ``VTrace``, scoring the action taken.

TorchRL 0.14.1's ``VTrace.forward`` gets ``log_pi`` from ``_call_actor_net``, which scores a
*freshly sampled* (or modal) action instead of ``batch["action"]``: off-policy its
importance ratios, and so its targets, are wrong (``tests/test_vtrace.py`` shows it).
This subclass keeps TorchRL's keys, buffers and functional estimator and only feeds it
the right ``log_pi``.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.objectives.value import VTrace
from torchrl.objectives.value.functional import vtrace_advantage_estimate


class TakenActionVTrace(VTrace):
    """V-trace targets from precomputed values and log-probs of the taken actions.

    Reads (``[*B, T]`` tensordict): ``state_value`` and ``("next", "state_value")``
    (``[*B, T, 1]``), the behaviour policy's ``action_log_prob``, the learner's
    ``learner_log_prob``, and ``("next", "reward"|"done"|"terminated")``.
    Writes ``advantage`` (rho-clipped, for the policy gradient) and ``value_target`` (v_s).
    Termination stops bootstrapping; truncation (``done`` without ``terminated``)
    bootstraps from ``("next", "state_value")`` of the true next observation and cuts the trace.
    """

    def __init__(
        self,
        *,
        gamma: float,
        rho_thresh: float = 1.0,
        c_thresh: float = 1.0,
        learner_log_prob_key: str = "learner_log_prob",
    ):
        super().__init__(gamma=gamma, actor_network=None, value_network=None, rho_thresh=rho_thresh, c_thresh=c_thresh)
        self.set_keys(sample_log_prob="action_log_prob")
        self.learner_log_prob_key = learner_log_prob_key

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:  # type: ignore[override]
        keys = self.tensor_keys
        value = tensordict.get(keys.value).float()
        next_value = tensordict.get(("next", keys.value)).float()
        log_mu = tensordict.get(keys.sample_log_prob).float().view_as(value)
        log_pi = tensordict.get(self.learner_log_prob_key).float().view_as(value)
        advantage, value_target = vtrace_advantage_estimate(
            self.gamma,
            log_pi,
            log_mu,
            value,
            next_value,
            tensordict.get(("next", keys.reward)).float(),
            tensordict.get(("next", keys.done)),
            tensordict.get(("next", keys.terminated)),
            rho_thresh=self.rho_thresh,
            c_thresh=self.c_thresh,
            time_dim=-2,
        )
        tensordict.set(keys.advantage, advantage)
        tensordict.set(keys.value_target, value_target)
        return tensordict
