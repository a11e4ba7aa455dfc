"""Atari Pong with IMPALA under the paper's protocol (no sticky actions, 4-frame skip and stack).

python recipes/pong.py fit                      # train on the defaults below
python recipes/pong.py fit --ckpt_path last     # resume
python recipes/pong.py test --ckpt_path last    # play evaluation games
"""

from impala_lit.cli import ImpalaCLI, cpu_has_native_bf16, fastest_precision

DEFAULTS = {
    "data.env_id": "ALE/Pong-v5",
    # ale-py's C++ vector env, same protocol: 5.8k vs 4.7k frames/s end to end (BENCHMARKS.md)
    "data.backend": "ale_vector",
    # 2 actors x 32 envs: each batch of 32 x 20 is one rollout and a second one waits while the
    # learner steps; 6.6k vs 5.4k frames/s end to end for 2 x 16, policy lag 2.9 vs 2.0 steps,
    # and it learns at least as fast per frame (P7 vs P6, BENCHMARKS.md)
    "data.envs_per_worker": 32,
    "model.network": "shallow",
    # bf16-mixed where the CPU runs bf16 natively (2x the fp32 learner here, and P6/P7 learned
    # with it), else 32-true; the choice is logged as the run's trainer.precision param
    "trainer.precision": fastest_precision(),
    # the actors' CNN in bf16 where the CPU runs it natively: 5.5 vs 8.3 ms per 32-env call,
    # +10% end to end, and P8 learned as P6/P7 did per frame (BENCHMARKS.md)
    "data.actor_precision": "bf16-mixed" if cpu_has_native_bf16() else "32-true",
    # Learning per frame (issue 14, BENCHMARKS.md "Pong: winning within the hour"): unrolls of 10
    # steps give twice the updates per frame at the same learner cost per frame (-17.3 vs -19.4 at
    # 6M frames, S3 vs S1), where the paper's 20 stay flat near -20 for 6M frames; unrolls of 5
    # learned no faster per frame and ran 17% slower (S4). The paper's settings:
    # --config recipes/configs/pong_paper.yaml
    "data.unroll_length": 10,
    # torchbeast's and moolib's entropy cost: 0.01 (the paper's) keeps the policy near uniform for
    # longer (-19.4 vs -20.1 at 6M frames, S1 vs P6-P8)
    "model.entropy_cost": 0.0006,
    # a constant rate: the paper's decay to 0 over the budget had halved it before Pong took off
    "model.lr_decay": False,
    "eval.every_n_steps": 5000,  # evaluation games + GIF in MLflow, every 6.4M frames
    "model.max_frames": 22_000_000,  # about an hour at the 6.3k frames/s measured on 2 cores
}


def main() -> None:
    ImpalaCLI(experiment="pong", defaults=DEFAULTS)


if __name__ == "__main__":  # required: TorchRL starts its actor processes with spawn
    main()
