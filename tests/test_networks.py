"""The paper's networks as TorchRL operators."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from impala_lit.agent.networks import NatureCNN, ResNetTorso, make_actor_critic, set_inference_precision


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_shallow_torso_is_the_nature_cnn() -> None:
    # conv 8x8/4 x32, 4x4/2 x64, 3x3/1 x64, fc 512 on 4 stacked 84x84 frames (Mnih et al. 2015)
    expected = (4 * 32 * 64 + 32) + (32 * 64 * 16 + 64) + (64 * 64 * 9 + 64) + (3136 * 512 + 512)
    assert n_params(NatureCNN()) == expected


def test_deep_torso_has_three_stages_of_conv_pool_and_two_residual_blocks() -> None:
    torso = ResNetTorso()
    convs = [m for m in torso.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in torso.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == [16] * 5 + [32] * 5 + [32] * 5
    assert len(pools) == 3 and torso.out_features == 256


@pytest.mark.parametrize(("network", "shape"), [("shallow", (4, 84, 84)), ("deep", (4, 84, 84)), ("mlp", (4,))])
def test_actor_and_critic_share_one_torso(network: str, shape: tuple[int, ...]) -> None:
    avo = make_actor_critic(network, shape, num_actions=6)
    actor, critic = avo.get_policy_operator(), avo.get_value_operator()
    dtype = torch.uint8 if len(shape) == 3 else torch.float32
    obs = torch.zeros(2, 3, *shape, dtype=dtype)
    out = actor(TensorDict(observation=obs, batch_size=[2, 3]))
    assert out["action"].shape == (2, 3) and out["action_log_prob"].shape == (2, 3)
    assert critic(TensorDict(observation=obs, batch_size=[2, 3]))["state_value"].shape == (2, 3, 1)
    torso = avo.module[0]
    assert {id(p) for p in torso.parameters()} <= {id(p) for p in actor.parameters()}
    assert {id(p) for p in torso.parameters()} <= {id(p) for p in critic.parameters()}


def test_pixels_are_scaled_inside_the_network() -> None:
    torso = NatureCNN()
    pixels = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(torso(pixels), torso(pixels.float() / 255))


def test_wrong_network_for_the_observations_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"^model.network: 'mlp' needs vector observations"):
        make_actor_critic("mlp", (4, 84, 84), 6)


@pytest.mark.parametrize("network", ["shallow", "deep"])
def test_bf16_actor_inference_keeps_weights_and_fp32_log_probs(network: str) -> None:
    torch.manual_seed(0)
    learner = make_actor_critic(network, (4, 84, 84), 6)
    for param in learner.parameters():  # away from the near-uniform initial policy
        param.data.add_(torch.randn_like(param) * 0.02)
    obs = torch.randint(0, 256, (16, 4, 84, 84), dtype=torch.uint8)
    actors = set_inference_precision(make_actor_critic(network, (4, 84, 84), 6), "bf16-mixed")
    # same parameter names: the learner's weights load into the actors' copy as weight sync does
    weights = TensorDict.from_module(learner).data
    assert set(TensorDict.from_module(actors).keys(True, True)) == set(weights.keys(True, True))
    weights.to_module(actors)

    def logits(operator) -> torch.Tensor:
        td = operator.module[0](TensorDict(observation=obs, batch_size=[16]))  # the torso
        return operator.get_policy_head().get_dist_params(td)["logits"]

    exact, approx = torch.log_softmax(logits(learner), -1), torch.log_softmax(logits(actors), -1)
    assert approx.dtype == torch.float32
    assert not torch.equal(approx, exact)  # it did run in bf16
    assert (approx - exact).abs().max() < 0.05  # importance ratios off by < 5%
    sampled = actors.get_policy_operator()(TensorDict(observation=obs, batch_size=[16]))
    assert sampled["action_log_prob"].dtype == torch.float32
    with pytest.raises(ValueError, match=r"data.actor_precision: 'fp16' is not one of 32-true, bf16-mixed"):
        set_inference_precision(actors, "fp16")
