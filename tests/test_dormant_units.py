"""``bench/dormant_units.py``: units that get no gradient are counted from the optimizer's state."""

from __future__ import annotations

import torch

from bench import dormant_units
from impala_lit.learning.learner import ImpalaModule


def test_a_unit_without_gradient_is_counted_dead_and_the_others_are_not() -> None:
    module = ImpalaModule(observation_shape=(4, 84, 84), num_actions=6, network="shallow")
    optimizer = torch.optim.RMSprop(module.parameters(), lr=1e-4)
    for _ in range(3):
        for parameter in module.parameters():
            parameter.grad = torch.randn_like(parameter)
        conv1 = next(module.parameters())
        conv1.grad[[2, 5]] = 0.0  # two of the first conv's 32 filters are never active
        optimizer.step()
    checkpoint = {"state_dict": module.state_dict(), "optimizer_states": [optimizer.state_dict()]}
    rows = {name: (dead, units) for name, dead, units in dormant_units.dead_units(checkpoint)}
    assert len(rows) == 6  # 3 convs, the dense layer, the policy and value heads
    first, *rest = rows.values()
    assert first == (2, 32)
    assert all(dead == 0 for dead, _ in rest)


def test_the_gradient_scale_is_read_against_eps_per_tensor() -> None:
    module = ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp")
    optimizer = torch.optim.RMSprop(module.parameters(), lr=1e-4, alpha=0.0)  # alpha 0: the last squared gradient
    first, *rest = list(module.parameters())
    for parameter in module.parameters():
        parameter.grad = torch.full_like(parameter, 0.1)
    first.grad[0] = 1e-3  # one row of the first weight far below eps
    optimizer.step()
    checkpoint = {"state_dict": module.state_dict(), "optimizer_states": [optimizer.state_dict()]}
    rows = dormant_units.gradient_scale(checkpoint, eps=0.03)
    assert len(rows) == len(rest) + 1
    name, rms, below = rows[0]
    assert below == 1 / first.shape[0]
    expected = ((first.shape[0] - 1) * 0.1**2 + 1e-3**2) / first.shape[0]
    assert abs(rms - expected**0.5) < 1e-6
    assert all(below == 0.0 and abs(rms - 0.1) < 1e-6 for _, rms, below in rows[1:])
