"""``StopAtReturn``: stops on the 100-game mean only once the window holds enough games."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from jsonargparse import ArgumentError, ArgumentParser

from impala_lit.app.callbacks import StopAtReturn


def _stops(callback: StopAtReturn, metrics: dict[str, float]) -> bool:
    trainer = SimpleNamespace(callback_metrics={k: torch.tensor(v) for k, v in metrics.items()}, should_stop=False)
    callback.on_train_batch_end(trainer, None)
    return trainer.should_stop


@pytest.mark.parametrize(
    ("metrics", "stops"),
    [
        ({"episode/return": 20.0, "episode/games": 3.0}, False),  # a resumed run's first games: not yet
        ({"episode/return": 20.0, "episode/games": 100.0}, True),
        ({"episode/return": 17.9, "episode/games": 100.0}, False),
        ({"episode/return": 20.0}, False),  # no game has ended
        ({}, False),
    ],
)
def test_stop_at_return_waits_for_a_full_window(metrics: dict[str, float], stops: bool) -> None:
    assert _stops(StopAtReturn(threshold=18.0), metrics) is stops


def test_stop_at_return_min_games_is_a_setting() -> None:
    assert _stops(StopAtReturn(threshold=18.0, min_games=3), {"episode/return": 20.0, "episode/games": 3.0})
    parser = ArgumentParser(exit_on_error=False)  # as --trainer.callbacks parses it: checked by its type
    parser.add_class_arguments(StopAtReturn, "stop")
    with pytest.raises(ArgumentError, match="stop.min_games"):
        parser.parse_args(["--stop.threshold=18", "--stop.min_games=0"])


def test_other_monitors_do_not_wait_for_the_game_window() -> None:
    # evaluation games are a figure of their own: a resumed run's empty 100-game window does not hold them back
    evaluation = StopAtReturn(threshold=18.0, monitor="eval/return_mean")
    assert _stops(evaluation, {"eval/return_mean": 19.0, "episode/return": -3.0, "episode/games": 2.0})
    assert _stops(evaluation, {"eval/return_mean": 19.0})
    assert not _stops(evaluation, {"eval/return_mean": 17.0, "episode/games": 100.0})
    assert not _stops(evaluation, {"episode/return": 20.0, "episode/games": 100.0})  # not what it watches
