"""Atari Pong with IMPALA's actors and V-trace, the paper's protocol (no sticky actions, 4-frame skip).

The default agent is the paper's recurrent one (one frame per observation, an LSTM after the Nature
CNN) trained with APPO's clipped surrogate on V-trace advantages (BENCHMARKS.md, issue 14, T8).

python recipes/pong.py fit                      # train on the defaults below
python recipes/pong.py fit --ckpt_path last     # resume
python recipes/pong.py test --ckpt_path last    # play evaluation games
python recipes/pong.py fit --config recipes/configs/pong_feedforward.yaml  # the earlier default: 4 frames, no core
"""

from impala_lit.cli import ImpalaCLI, cpu_has_native_bf16, fastest_precision

DEFAULTS = {
    "data.env_id": "ALE/Pong-v5",
    # ale-py's C++ vector env, same protocol: 5.8k vs 4.7k frames/s end to end (BENCHMARKS.md)
    "data.backend": "ale_vector",
    # 2 actors x 32 envs: each batch of 32 x 10 is one rollout and a second one waits while the
    # learner steps; 6.6k vs 5.4k frames/s end to end for 2 x 16, policy lag 2.9 vs 2.0 steps,
    # and it learns at least as fast per frame (P7 vs P6, BENCHMARKS.md)
    "data.envs_per_worker": 32,
    "model.network": "shallow",
    # bf16-mixed where the CPU runs bf16 natively (2x the fp32 learner here), else 32-true; the
    # choice is logged as the run's trainer.precision param. The LSTM core itself runs in fp32.
    "trainer.precision": fastest_precision(),
    # the actors' CNN in bf16 where the CPU runs it natively: 5.5 vs 8.3 ms per 32-env call, +10%
    # end to end; replayed checkpoints scored the same with bf16 and fp32 actors (BENCHMARKS.md)
    "data.actor_precision": "bf16-mixed" if cpu_has_native_bf16() else "32-true",
    # unrolls of 10 give twice the updates per frame of the paper's 20 at the same learner cost
    # per frame (-17.3 vs -19.4 at 6M frames, S3 vs S1); unrolls of 5 ran 17% slower (S4)
    "data.unroll_length": 10,
    # torchbeast's and moolib's entropy cost: 0.01 (the paper's) kept the policy near uniform longer
    "model.entropy_cost": 0.0006,
    # a constant rate: the paper's decay to 0 over the budget had halved it before Pong took off,
    # and decays over the budget did not stop the stall after 0 (D1, sessions 14-15)
    "model.lr_decay": False,
    # The paper's recurrent Atari agent: one frame per observation, an LSTM of 256 after the CNN.
    # On 2 of 2 seeds it reached a 100-game mean of 18 within the hour where every feed-forward
    # setting won 1 run in 2-3 (T8 vs A1, F1, D1; BENCHMARKS.md "Pong wins within the hour").
    "data.frame_stack": 1,
    "model.core": "lstm",
    # TensorFlow's RMSProp start (the paper's code): with PyTorch's zero start the first updates
    # killed the dense layer under the core (T3/T4)
    "model.rms_init": 1.0,
    # PyTorch adds eps outside the root, where Pong's gradients (RMS ~0.002 per weight) are far below
    # it: 0.01 collapsed the LSTM agent (T5, T6), 0.1 held but started slowly (T7: 0 at 50 minutes),
    # 0.03 reached 0 at 22 minutes and 18 within the hour (T8)
    "model.rms_eps": 0.03,
    # APPO's clipped surrogate (ratio learner / actors in [0.8, 1.2]), one update per batch, V-trace's
    # raw advantages: without the clip the LSTM agent collapsed after 10 (T5)
    "model.clip_range": 0.2,
    "model.normalize_advantage": False,
    "eval.every_n_steps": 5000,  # evaluation games + GIF in MLflow, every 6.4M frames
    # the run's end: 28M frames, 50-60 minutes at the 8-10k frames/s of the 2-core machines measured
    "model.max_frames": 28_000_000,
}


def main() -> None:
    ImpalaCLI(experiment="pong", defaults=DEFAULTS, learner="impala_lit.APPOModule")


if __name__ == "__main__":  # required: TorchRL starts its actor processes with spawn
    main()
