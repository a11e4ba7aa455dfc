"""The paper's networks as TorchRL operators."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from impala_lit.networks import NatureCNN, ResNetTorso, make_actor_critic


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
