"""The Atari suite's scoring: human-normalised scores, the Atari-5 estimate, and scores at a frame budget."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))  # bench/ scripts import their helpers
import atari_suite  # noqa: E402


def test_atari5_reproduces_the_published_estimates_of_two_baselines() -> None:
    """CleanRL's PPO and baselines' ppo2 at 40M frames: about 77% and 68% (Aitchison et al.'s weights)."""
    for key, expected in [("cleanrl_ppo", 76.6), ("ppo2", 68.1)]:
        scores = {game: getattr(atari_suite.REFERENCES[game], key) for game in atari_suite.ATARI5_WEIGHTS}
        assert atari_suite.atari5_median(scores) == pytest.approx(expected, abs=0.15)
    assert atari_suite.hns("Breakout", 1.7) == 0.0 and atari_suite.hns("Breakout", 30.5) == pytest.approx(100.0)


def test_the_report_scores_each_run_at_the_budget(tmp_path: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("atari-breakout")
    for seed, returns in [(0, [1.0, 10.0, 30.5, 99.0]), (1, [2.0, 20.0, 30.5, 99.0])]:
        run = client.create_run(experiment, run_name=f"base-s{seed}")
        for step, value in enumerate(returns):
            client.log_metric(run.info.run_id, "frames", (step + 1) * 4e6, step=step)  # 4, 8, 12, 16M
            client.log_metric(run.info.run_id, "episode/return", value, step=step)
    table = atari_suite.report(client, ["base", "absent"], ["Breakout", "Qbert"], frames=12e6)
    row = next(line for line in table.splitlines() if line.startswith("| base | Breakout"))
    assert "| 2 | 16.0 | 15.0 | - | - | - | 30.5 (30.5, 30.5) | 100.0 |" in row  # at 12M, not the later 99
    assert "base: 1 games, mean HNS 100.0%" in table and "absent" not in table and "Qbert" not in table


def test_an_interrupted_suite_skips_finished_runs_and_resumes_the_unfinished(tmp_path: Path, monkeypatch) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("atari-breakout")
    done = client.create_run(experiment, run_name="base-s0")
    client.set_terminated(done.info.run_id, "FINISHED")
    client.create_run(experiment, run_name="base-s1")  # interrupted: still RUNNING
    calls = []
    monkeypatch.setattr(atari_suite, "run_recipe", lambda recipe, name, seed, args, uri, log_prefix: calls.append(
        (recipe, name, seed, args)))  # fmt: skip
    atari_suite.run_suite(client, "base", ["Breakout"], [0, 1, 2], 10e6, ["--model.rms_eps=0.01"], "uri")
    game = ["--data.env_id=ALE/Breakout-v5", "--model.max_frames=10000000"]
    assert calls == [
        ("atari", "base", 1, [*game, "--ckpt_path=last", "--model.rms_eps=0.01"]),
        ("atari", "base", 2, [*game, "--model.rms_eps=0.01"]),
    ]


def test_minutes_are_of_training_so_a_resumed_runs_pause_does_not_count(tmp_path: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("atari-breakout"), run_name="base-s0")
    start = run.info.start_time
    # 40 and 55 minutes of training; the second point logged after a 30-minute pause (a resume)
    for step, (train_min, wall_min, value) in enumerate([(40.0, 40.0, 5.0), (55.0, 85.0, 20.0)]):
        stamp = int(start + wall_min * 60_000)
        for key, logged in [("frames", (step + 1) * 4e6), ("time/train_min", train_min), ("episode/return", value)]:
            client.log_metric(run.info.run_id, key, logged, timestamp=stamp, step=step)
    curve = atari_suite.load_curve(client, run.info.run_id)
    assert curve.minutes == [40.0, 55.0]
    assert atari_suite.score_at_minutes(curve, 60.0) == 20.0  # by the wall clock, 5.0


def test_older_runs_without_training_minutes_leave_out_the_pause_of_a_resume(tmp_path: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("atari-breakout"), run_name="base-s0")
    start = run.info.start_time
    for step, wall_min in enumerate([1.0, 2.0, 40.0, 41.0]):  # stopped after 2 minutes, resumed at 39
        stamp = int(start + wall_min * 60_000)
        client.log_metric(run.info.run_id, "frames", (step + 1) * 1e6, timestamp=stamp, step=step)
        client.log_metric(run.info.run_id, "episode/return", 1.0, timestamp=stamp, step=step)
    assert atari_suite.load_curve(client, run.info.run_id).minutes == pytest.approx([1.0, 2.0, 2.0, 3.0])


def test_means_over_a_window_that_shrank_reach_no_threshold(tmp_path: Path) -> None:
    """A run resumed before the window was in the checkpoint logged means over its first few games;
    a young run's window that is still filling counts."""
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("pong"), run_name="base-s0")
    points = [(-20.0, 3), (-15.0, 60), (8.0, 100), (19.4, 3), (9.0, 40), (18.5, 100)]
    for step, (value, games) in enumerate(points):
        for key, logged in [("frames", (step + 1) * 1e6), ("episode/return", value), ("episode/games", games)]:
            client.log_metric(run.info.run_id, key, logged, step=step)
    curve = atari_suite.load_curve(client, run.info.run_id)
    assert curve.settled() == [True, True, True, False, False, True]
    assert curve.first_reached(-20.0) == (1e6, curve.minutes[0])
    assert curve.first_reached(18.0) == (6e6, curve.minutes[5]) and curve.best == 18.5
