"""CartPole-v1 with IMPALA: a minute-scale check that the whole pipeline learns.

python recipes/cartpole.py fit
"""

DEFAULTS = {
    "data.env_id": "CartPole-v1",
    "data.num_workers": 2,
    "data.envs_per_worker": 16,
    "data.batch_size": 32,
    "data.unroll_length": 20,
    "data.clip_rewards": False,
    "model.network": "mlp",
    "eval.every_n_steps": 200,  # evaluation games + GIF in MLflow
    "model.max_frames": 500_000,
    "model.lr": 0.01,  # only ~780 updates fit in the budget: a larger step than Atari's 6e-4
    # summed losses on a shared torso: at 0.5 the baseline's gradient (returns up to ~100) swamps the policy's
    "model.baseline_cost": 0.1,
    # PyTorch's RMSProp starts at 0 and its first steps are sign steps that collapsed the policy in 6 of 10
    # runs (docs/benchmarks/cartpole.md)
    "model.rms_init": 0.1,
}


def main() -> None:
    from impala_lit.app.cli import ImpalaCLI  # not at the top: the actors would import Lightning too

    ImpalaCLI(experiment="cartpole", defaults=DEFAULTS)


if __name__ == "__main__":  # required: TorchRL starts its actor processes with spawn
    from impala_lit.app.process import run_and_exit

    run_and_exit(main)
