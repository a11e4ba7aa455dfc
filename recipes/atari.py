"""Any Atari game with IMPALA's actors and V-trace, under the published baselines' protocol.

The protocol of the PPO paper, CleanRL and RLlib (no sticky actions, 4-frame skip with max-pool,
84x84 grey, up to 30 no-op starts, clipped rewards for learning; a lost life ends the episode for
learning; FIRE at the start of a game that waits for it); ``episode/return`` is the raw score of
the whole game. One set of settings for every game (docs: benchmarks/atari.md).

python recipes/atari.py fit --data.env_id ALE/Breakout-v5          # train one game
python recipes/atari.py fit --data.env_id ALE/Breakout-v5 --ckpt_path last   # resume it
python recipes/atari.py test --data.env_id ALE/Breakout-v5 --ckpt_path last  # play evaluation games
"""

from impala_lit.agent.networks import cpu_has_native_bf16, fastest_precision

# Each setting's reason in one line; measured on Pong and the suite (docs/benchmarks/pong.md, atari.md).
DEFAULTS = {
    "data.env_id": "ALE/Breakout-v5",
    "data.backend": "ale_vector",  # ale-py's C++ vector env, the same protocol: ~25% more frames/s end to end
    "data.episodic_life": True,  # the published baselines' protocol (the logged score is still the whole game's)
    "data.fire_reset": True,  # the published baselines' protocol: Breakout and others wait for FIRE
    "data.envs_per_worker": 32,  # one 32 x 40 rollout per batch while a second waits: faster, same learning per frame
    "model.network": "shallow",
    "trainer.precision": fastest_precision(),  # bf16-mixed where the CPU runs bf16 natively (2x the learner)
    "data.actor_precision": "bf16-mixed" if cpu_has_native_bf16() else "32-true",  # +10% end to end, same scores
    # V-trace targets 40 steps ahead, in 4 updates of 8 rollouts per batch (the updates per frame of unrolls
    # of 10): BattleZone learns where unrolls of 10 stayed at random play, Breakout +77% at 10M frames
    "data.unroll_length": 40,
    "model.num_minibatches": 4,
    "model.entropy_cost": 0.0006,  # torchbeast's and moolib's: 0.01 kept the policy near uniform longer
    "model.lr_decay": False,  # decaying to 0 over the budget halved the rate before Pong took off
    # the paper's recurrent agent: one frame per observation, an LSTM of 256 after the CNN (18 within the
    # hour on 2 of 2 seeds, where every feed-forward setting won 1 run in 2-3)
    "data.frame_stack": 1,
    "model.core": "lstm",
    "model.rms_init": 1.0,  # TensorFlow's RMSProp start: PyTorch's zero start killed the layer under the core
    "model.rms_eps": 0.03,  # 0.01 collapsed the LSTM agent, 0.1 started slowly
    "model.clip_range": 0.2,  # APPO's clipped surrogate: without it the LSTM agent collapsed after reaching 10
    "model.normalize_advantage": False,
    "eval.every_n_steps": 1250,  # evaluation games + GIF in MLflow every 6.4M frames (a step: a batch, 5,120 frames)
    "model.max_frames": 40_000_000,  # the published baselines' budget (10M agent steps)
}

# Pong as the defaults were measured on it: no end-of-life or FIRE (Pong has no lives), a shorter budget
PONG = {
    **DEFAULTS,
    "data.env_id": "ALE/Pong-v5",
    "data.episodic_life": False,
    "data.fire_reset": False,
    "model.max_frames": 28_000_000,  # 47-49 minutes on the 2-core machine measured (docs/benchmarks/pong.md)
}


def main(defaults: dict = DEFAULTS, experiment: str = "atari-{game}") -> None:
    from impala_lit.app.cli import ImpalaCLI  # not at the top: the actors would import Lightning too

    ImpalaCLI(experiment=experiment, defaults=defaults, learner="impala_lit.APPOModule")


if __name__ == "__main__":  # required: TorchRL starts its actor processes with spawn
    from impala_lit.app.process import run_and_exit

    run_and_exit(main)
