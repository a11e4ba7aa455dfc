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
