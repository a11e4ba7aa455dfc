"""Learning tests (slow, run in CI): the recipes' defaults must learn, not just run."""

from __future__ import annotations

import pytest

from .conftest import ROOT, run_recipe

CARTPOLE_FRAME_BUDGET = 500_000  # recipes/cartpole.py's model.max_frames
# Issue 2 asks for a mean return >= 450 within the budget. Nine runs of the default recipe
# reached 491, 488, 480, 477, 472, 396, 384, 379 and 361 (BENCHMARKS.md): not yet reliable, so this test asserts what
# is (clear learning: a random policy scores ~22) and prints the figure; the 450 target stays open for IMPALA.
# APPO (recipes/configs/cartpole_appo.yaml) does reach it: see the second test.
LEARNED = 200


@pytest.mark.slow
def test_cartpole_learns_within_500k_frames(tmp_path, no_stray_workers) -> None:
    run = run_recipe("cartpole", ["fit"], tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    mlflow_run = run.only_run("cartpole")
    client = run.client()
    frames = client.get_metric_history(mlflow_run.info.run_id, "frames")
    assert frames[-1].value <= CARTPOLE_FRAME_BUDGET + 32 * 20
    returns = client.get_metric_history(mlflow_run.info.run_id, "episode/return")  # mean of the last 100 games
    best = max(returns, key=lambda m: m.value)
    print(f"CartPole: best 100-game mean {best.value:.1f} at step {best.step}, wall {run.seconds:.0f}s")
    assert best.value >= LEARNED, f"best mean return {best.value:.1f} < {LEARNED} within {CARTPOLE_FRAME_BUDGET} frames"


@pytest.mark.slow
def test_appo_reaches_450_on_cartpole_within_the_same_budget(tmp_path, no_stray_workers) -> None:
    config = ROOT / "recipes" / "configs" / "cartpole_appo.yaml"
    stop = ["--trainer.callbacks+=impala_lit.callbacks.StopAtReturn", "--trainer.callbacks.threshold=450"]
    run = run_recipe("cartpole", ["fit", f"--config={config}", "--eval.every_n_steps=0", *stop], tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    client = run.client()
    mlflow_run = run.only_run("cartpole")
    assert mlflow_run.data.params["model.class"] == "impala_lit.APPOModule"
    frames = {m.step: m.value for m in client.get_metric_history(mlflow_run.info.run_id, "frames")}
    assert max(frames.values()) <= CARTPOLE_FRAME_BUDGET + 32 * 20
    returns = sorted(client.get_metric_history(mlflow_run.info.run_id, "episode/return"), key=lambda m: m.step)
    best = max(m.value for m in returns)
    reached = next((m for m in returns if m.value >= 450), None)
    print(f"APPO CartPole: best 100-game mean {best:.1f}; >= 450 at "
          f"{frames[reached.step] if reached else 'never'} frames; wall {run.seconds:.0f}s")  # fmt: skip
    assert reached is not None, f"APPO best mean return {best:.1f} < 450 within {CARTPOLE_FRAME_BUDGET} frames"
