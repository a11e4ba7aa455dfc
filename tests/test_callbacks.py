"""``StopAtReturn``: stops on the 100-game mean only once the window holds enough games."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from impala_lit.callbacks import StopAtReturn


def _stops(callback: StopAtReturn, **metrics: float) -> bool:
    trainer = SimpleNamespace(callback_metrics={k.replace("_", "/"): torch.tensor(v) for k, v in metrics.items()},
                              should_stop=False)  # fmt: skip
    callback.on_train_batch_end(trainer, None)
    return trainer.should_stop


@pytest.mark.parametrize(
    ("metrics", "stops"),
    [
        ({"episode_return": 20.0, "episode_games": 3.0}, False),  # a resumed run's first games: not yet
        ({"episode_return": 20.0, "episode_games": 100.0}, True),
        ({"episode_return": 17.9, "episode_games": 100.0}, False),
        ({"episode_return": 20.0}, False),  # no game has ended
        ({}, False),
    ],
)
def test_stop_at_return_waits_for_a_full_window(metrics: dict[str, float], stops: bool) -> None:
    assert _stops(StopAtReturn(threshold=18.0), **metrics) is stops


def test_stop_at_return_min_games_is_a_setting() -> None:
    assert _stops(StopAtReturn(threshold=18.0, min_games=3), episode_return=20.0, episode_games=3.0)
    with pytest.raises(ValueError, match="StopAtReturn.min_games"):
        StopAtReturn(threshold=18.0, min_games=0)
