"""Learning tests (slow, run in CI): the recipes' defaults must learn, not just run."""

from __future__ import annotations

import pytest

from .conftest import ROOT, run_recipe

CARTPOLE_FRAME_BUDGET = 500_000  # recipes/cartpole.py's model.max_frames
STOP_AT_450 = ["--trainer.callbacks+=impala_lit.StopAtReturn", "--trainer.callbacks.threshold=450"]


@pytest.mark.xdist_group("learning")
@pytest.mark.slow
def test_cartpole_reaches_450_within_500k_frames(tmp_path, no_stray_workers) -> None:
    # Issue 2's target. The default recipe reached it in 10 of 10 seeds at 154k-454k frames
    # (bench/compare_runs.py, docs/benchmarks/cartpole.md); it stops at 450 here to save CI time.
    run = run_recipe("cartpole", ["fit", "--eval.every_n_steps=0", *STOP_AT_450], tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    mlflow_run = run.only_run("cartpole")
    assert mlflow_run.data.params["model.class"] == "impala_lit.ImpalaModule"
    reached = run.return_reached("cartpole", 450, "IMPALA CartPole")
    assert reached.max_frames <= CARTPOLE_FRAME_BUDGET + 32 * 20
    assert reached.frames is not None, f"no mean return >= 450 within the budget: {reached}"


@pytest.mark.xdist_group("learning")
@pytest.mark.slow
def test_appo_reaches_450_on_cartpole_within_the_same_budget(tmp_path, no_stray_workers) -> None:
    config = ROOT / "recipes" / "configs" / "cartpole_appo.yaml"
    args = ["fit", f"--config={config}", "--eval.every_n_steps=0", *STOP_AT_450]
    run = run_recipe("cartpole", args, tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.only_run("cartpole").data.params["model.class"] == "impala_lit.APPOModule"
    reached = run.return_reached("cartpole", 450, "APPO CartPole")
    assert reached.max_frames <= CARTPOLE_FRAME_BUDGET + 32 * 20
    assert reached.frames is not None, f"no mean return >= 450 within the budget: {reached}"


@pytest.mark.xdist_group("learning")
@pytest.mark.slow
def test_an_lstm_balances_cartpole_from_positions_alone(tmp_path, no_stray_workers) -> None:
    # Issue 15: CartPole observing only x and theta (impala_lit/CartPoleNoVelocity-v1). Measured
    # (docs/benchmarks/cartpole.md, recipe defaults, 500k frames): feed-forward best 100-game mean 46.6 and 46.4
    # (seeds 0, 1), the LSTM config 350.4 and 198.0; the target sits well above what a policy
    # without memory reaches (those runs started RMSProp at 0; at the recipe's 0.1 it reached 150 at
    # 218k-280k frames in 3 of 3, docs/benchmarks/cartpole.md). Stops there to save CI time.
    config = ROOT / "recipes" / "configs" / "cartpole_lstm.yaml"
    stop = ["--trainer.callbacks+=impala_lit.StopAtReturn", "--trainer.callbacks.threshold=150"]
    run = run_recipe("cartpole", ["fit", f"--config={config}", "--eval.every_n_steps=0", *stop], tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.only_run("cartpole").data.params["model.core"] == "lstm"
    reached = run.return_reached("cartpole", 150, "LSTM CartPole, positions only")
    assert reached.max_frames <= CARTPOLE_FRAME_BUDGET + 32 * 20
    assert reached.frames is not None, f"no mean return >= 150 within the budget: {reached}"
