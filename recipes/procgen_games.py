"""Procgen with IMPALA's deep ResNet under the benchmark's easy protocol (Cobbe et al. 2020).

python recipes/procgen_games.py fit                                    # StarPilot, 200 training levels
python recipes/procgen_games.py fit --data.env_id procgen/bigfish      # any of the 16 games
python recipes/procgen_games.py fit --config recipes/configs/procgen_games_coinrun.yaml
                                      # CoinRun: discount 0.999, entropy 0.001, lr 2e-4 (docs/benchmarks/procgen.md)
python recipes/procgen_games.py fit --ckpt_path last                   # resume
python recipes/procgen_games.py test --ckpt_path last                  # games on unseen levels (and training levels)

Not ``recipes/procgen.py``: Python puts a script's folder first on ``sys.path``, and a file of that
name would stand in for the procgen package in every recipe (TorchRL imports ``procgen``).
Needs the procgen package: ``./setup.sh`` installs it (``requirements-procgen.txt``).
"""

from impala_lit.agent.networks import cpu_has_native_bf16, fastest_precision

DEFAULTS = {
    # StarPilot's rewards come every few steps, so a short run shows learning; CoinRun pays once, at the end
    "data.env_id": "procgen/starpilot",
    # the benchmark's easy protocol: train on levels 0-199, test on the full distribution
    "data.distribution_mode": "easy",
    "data.num_levels": 200,
    "data.start_level": 0,
    "data.frame_stack": 1,  # Procgen frames are not stacked (nor skipped)
    # learning on clipped rewards as on Atari (the logged scores are raw): Procgen's rewards run
    # from 1 per kill (StarPilot) to 10 per level (CoinRun), and the learner's RMSProp step, eps
    # and gradient clip were tuned for rewards of at most 1
    "data.clip_rewards": True,
    "data.envs_per_worker": 32,
    "data.unroll_length": 20,
    # the IMPALA CNN of the Procgen paper: 16-32-32 channels, 2 residual blocks per stage, 256 units
    "model.network": "deep",
    "model.entropy_cost": 0.01,  # Procgen's PPO baseline and the IMPALA paper agree on 0.01
    "model.max_frames": 25_000_000,  # the benchmark's budget per game: 25M agent steps (no frame skip)
    "trainer.precision": fastest_precision(),
    "data.actor_precision": "bf16-mixed" if cpu_has_native_bf16() else "32-true",
    # evaluation: 10 games on unseen levels (eval/*) and 10 on training levels (eval_train/*)
    "eval.every_n_steps": 1000,  # every 640k steps (batches of 32 x 20)
}


def main() -> None:
    from impala_lit.app.cli import ImpalaCLI  # not at the top: the actors would import Lightning too

    ImpalaCLI(experiment="procgen", defaults=DEFAULTS)


if __name__ == "__main__":  # required: TorchRL starts its actor processes with spawn
    from impala_lit.app.process import run_and_exit

    run_and_exit(main)
