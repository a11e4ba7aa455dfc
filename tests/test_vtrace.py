"""V-trace: ``ImpalaModule.compute_advantages`` against the paper's recursion, written here in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives.value import VTrace

from impala_lit import ImpalaModule

B, T, OBS, ACTIONS = 4, 12, 5, 3
GAMMA, RHO_BAR, C_BAR = 0.97, 1.0, 0.9


def reference_vtrace(values, next_values, rewards, log_pi, log_mu, done, terminated):
    """Espeholt et al. (2018), Eq. 1 and Sec. 4.2, one sequence at a time, plain loops.

    v_s = V(x_s) + delta_s + gamma c_s (v_{s+1} - V(x_{s+1})),
    delta_s = rho_s (r_s + gamma V(x_{s+1}) - V(x_s)),
    advantage_s = rho_s (r_s + gamma v_{s+1} - V(x_s)).
    ``next_values[s]`` is V of the true next observation of step s. An episode that
    terminates at s has gamma = 0 there; one that is cut (truncated, or the unroll ends)
    bootstraps from V(x_{s+1}) and no trace flows across, so there v_{s+1} = V(x_{s+1}).
    """
    n_seq, n_t = values.shape
    vs = np.zeros_like(values)
    adv = np.zeros_like(values)
    for b in range(n_seq):
        for s in reversed(range(n_t)):
            ratio = np.exp(log_pi[b, s] - log_mu[b, s])
            rho, c = min(RHO_BAR, ratio), min(C_BAR, ratio)
            discount = 0.0 if terminated[b, s] else GAMMA
            cut = done[b, s] or s == n_t - 1
            delta = rho * (rewards[b, s] + discount * next_values[b, s] - values[b, s])
            correction = 0.0 if cut else vs[b, s + 1] - values[b, s + 1]
            vs[b, s] = values[b, s] + delta + discount * c * correction
            v_next = next_values[b, s] if cut else vs[b, s + 1]
            adv[b, s] = rho * (rewards[b, s] + discount * v_next - values[b, s])
    return vs, adv


def off_policy_batch(seed: int = 0) -> TensorDict:
    """Rollouts with terminations and truncations inside the unroll and a behaviour policy far from the learner."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, T + 1, OBS, generator=g)
    next_obs = obs[:, 1:].clone()
    terminated = torch.zeros(B, T, 1, dtype=torch.bool)
    truncated = torch.zeros(B, T, 1, dtype=torch.bool)
    terminated[0, 3] = terminated[2, 7] = terminated[3, T - 1] = True
    truncated[1, 5] = truncated[2, 2] = truncated[3, 0] = True
    done = terminated | truncated
    # after an episode ends the next root observation is a reset, not the final one
    final = done.squeeze(-1)
    next_obs[final] = torch.randn(int(final.sum()), OBS, generator=g) * 3
    logits_mu = torch.randn(B, T, ACTIONS, generator=g) * 2
    action = torch.distributions.Categorical(logits=logits_mu).sample()
    log_mu = torch.log_softmax(logits_mu, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
    return TensorDict(
        {
            "observation": obs[:, :T],
            "action": action,
            "action_log_prob": log_mu,
            "policy_version": torch.zeros(B, T, dtype=torch.int64),
            "next": {
                "observation": next_obs,
                "reward": torch.randn(B, T, 1, generator=g),
                "done": done,
                "terminated": terminated,
                "truncated": truncated,
            },
        },
        batch_size=[B, T],
    )


@pytest.fixture(scope="module")
def module() -> ImpalaModule:
    torch.manual_seed(0)
    return ImpalaModule(
        observation_shape=(OBS,), num_actions=ACTIONS, network="mlp", discount=GAMMA, rho_thresh=RHO_BAR, c_thresh=C_BAR
    )


def independent_inputs(module: ImpalaModule, batch: TensorDict):
    """Values and learner log-probs of the taken actions, computed without compute_advantages."""
    with torch.no_grad():
        values = module.critic(batch.select("observation").clone())["state_value"].squeeze(-1)
        next_values = module.critic(TensorDict(observation=batch["next", "observation"], batch_size=[B, T]))[
            "state_value"
        ].squeeze(-1)
        dist = module.actor.get_dist(batch.select("observation").clone())
        log_pi = dist.log_prob(batch["action"])
    return values, next_values, log_pi


def test_compute_advantages_matches_paper_recursion(module: ImpalaModule) -> None:
    batch = off_policy_batch()
    values, next_values, log_pi = independent_inputs(module, batch)
    ratio = (log_pi - batch["action_log_prob"]).exp()
    assert (ratio > RHO_BAR).float().mean() > 0.1, "the data must exercise rho clipping"
    assert (ratio < C_BAR).float().mean() > 0.2, "the data must exercise traces below c-bar"

    vs_ref, adv_ref = reference_vtrace(
        values.double().numpy(),
        next_values.double().numpy(),
        batch["next", "reward"].squeeze(-1).double().numpy(),
        log_pi.double().numpy(),
        batch["action_log_prob"].double().numpy(),
        batch["next", "done"].squeeze(-1).numpy(),
        batch["next", "terminated"].squeeze(-1).numpy(),
    )
    with torch.no_grad():
        out = module.compute_advantages(batch.clone())
    np.testing.assert_allclose(out["value_target"].squeeze(-1).numpy(), vs_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["advantage"].squeeze(-1).numpy(), adv_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["learner_log_prob"].numpy(), log_pi.numpy(), atol=1e-6)


def test_truncation_bootstraps_from_the_true_next_observation(module: ImpalaModule) -> None:
    batch = off_policy_batch()
    with torch.no_grad():
        base = module.compute_advantages(batch.clone())["value_target"]
        moved = batch.clone()
        moved["next", "observation"][1, 5] += 10.0  # the final observation of a truncated episode
        changed = module.compute_advantages(moved)["value_target"]
        ended = batch.clone()
        ended["next", "observation"][0, 3] += 10.0  # a terminated episode never bootstraps
        unchanged = module.compute_advantages(ended)["value_target"]
    assert not torch.allclose(base[1, 5], changed[1, 5])
    torch.testing.assert_close(base, unchanged)


@pytest.mark.parametrize("mode", [ExplorationType.RANDOM, ExplorationType.DETERMINISTIC])
def test_stock_torchrl_vtrace_still_scores_a_fresh_action(module: ImpalaModule, mode) -> None:
    """Upstream TorchRL 0.14.1 disagrees with the paper off-policy; when this fails, upstream is fixed."""
    batch = off_policy_batch()
    with torch.no_grad():
        ours = module.compute_advantages(batch.clone())
        stock = VTrace(
            gamma=GAMMA,
            rho_thresh=RHO_BAR,
            c_thresh=C_BAR,
            value_network=module.critic,
            actor_network=module.actor,
        )
        stock.set_keys(sample_log_prob="action_log_prob")
        torch.manual_seed(1)
        with set_exploration_type(mode):
            theirs = stock(batch.clone())
    gap = (theirs["advantage"] - ours["advantage"]).abs().max().item()
    assert gap > 1e-2, f"stock VTrace now matches the paper (gap {gap:.2e}): drop TakenActionVTrace"
