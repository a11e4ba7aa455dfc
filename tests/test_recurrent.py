"""Recurrent cores: the actors carry the state, the learner's replay of an unroll is what the actors did."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from impala_lit import ImpalaModule
from impala_lit.actors import ActorSettings, RolloutStream
from impala_lit.agent.recurrent import carry_state, reset_state
from impala_lit.app.evaluation import play_games
from impala_lit.envs import GymSpec, make_env_spec

from .conftest import ROOT, run_recipe


def _stream(learner: ImpalaModule, env_id: str = "CartPole-v1", **kwargs) -> RolloutStream:
    settings = {"num_workers": 1, "envs_per_worker": 4, "unroll_length": 40, "batch_size": 4, **kwargs}
    return RolloutStream(make_env_spec(env_id), learner.actor, ActorSettings(**settings))


@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_learner_replay_gives_the_actors_log_probs(core, no_stray_workers) -> None:
    """Same weights: replaying each unroll from its stored first state reproduces the actors' log-probs
    (episodes start inside unrolls: a random CartPole policy's games last ~20 steps of 40), and the
    state carried across consecutive unrolls is the one the learner bootstraps with."""
    torch.manual_seed(0)
    learner = ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp", core=core, core_size=32)
    stream = _stream(learner)
    batches = iter(stream)
    first, second = next(batches), next(batches)
    batches.close()
    for batch in (first, second):
        assert batch.batch_size == torch.Size([4, 40])
        is_init = batch["is_init"].squeeze(-1)
        assert is_init[:, 1:].any(), "no episode started inside an unroll"
        assert ("next", "recurrent_state_h") not in batch.keys(True) and ("next", "recurrent_state") not in batch.keys(
            True
        )  # the state after each step stays with the actors
    # the second unroll continues the first one's episodes: a carried, non-zero state where no episode starts
    key = learner.state_keys[0]
    continuing = ~second["is_init"][:, 0].squeeze(-1)
    assert continuing.any() and second[key][continuing, 0].abs().sum() > 0

    with torch.no_grad():
        for batch in (first.clone(), second.clone()):
            out = learner.compute_advantages(batch)
            gap = (out["learner_log_prob"] - batch["action_log_prob"]).abs().max().item()
            assert gap < 1e-5, f"replay differs from acting by {gap}"
        # bootstrap: V at the first unroll's last step's next observation, from the state after that
        # step, is the value the second unroll replays at its first step (same episode continuing)
        out1 = learner.compute_advantages(first.clone())
        out2 = learner.compute_advantages(second.clone())
        boot = out1[("next", "state_value")][:, -1].squeeze(-1)
        start = out2["state_value"][:, 0].squeeze(-1)
        not_done = ~first[("next", "done")][:, -1].squeeze(-1)
        assert (not_done == continuing).all()
        torch.testing.assert_close(boot[not_done], start[not_done], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("network", "shape"), [("shallow", (4, 84, 84)), ("deep", (1, 84, 84)), ("mlp", (3,))])
def test_every_torso_takes_a_core(network, shape) -> None:
    """Acting step by step (the state carried by hand) and the learner's replay agree for each torso."""
    torch.manual_seed(0)
    learner = ImpalaModule(observation_shape=shape, num_actions=3, network=network, core="lstm", core_size=8)
    batch, steps = 2, 3
    if len(shape) == 3:
        observations = torch.randint(0, 256, (batch, steps + 1, *shape), dtype=torch.uint8)
    else:
        observations = torch.randn(batch, steps + 1, *shape)
    state = reset_state(learner.actor, batch)
    acted = []
    with torch.no_grad():
        for t in range(steps):
            step = TensorDict(observation=observations[:, t], batch_size=[batch]).update(state)
            step = learner.actor(step)
            state = carry_state(step, learner.actor)
            acted.append(step.exclude("next"))
        rollout = torch.stack(acted, 1)
        flags = torch.zeros(batch, steps, 1, dtype=torch.bool)
        rollout["next"] = TensorDict(observation=observations[:, 1:], reward=torch.zeros(batch, steps, 1),
                                     done=flags, terminated=flags, batch_size=[batch, steps])  # fmt: skip
        out = learner.compute_advantages(rollout.clone())
    assert (out["learner_log_prob"] - rollout["action_log_prob"]).abs().max() < 1e-5


def _logits(learner: ImpalaModule, observations: torch.Tensor) -> torch.Tensor:
    step = TensorDict(observation=observations, batch_size=observations.shape[:1])
    with torch.no_grad():
        return learner.actor(step.update(reset_state(learner.actor, observations.shape[0])))["logits"]


@pytest.mark.parametrize("core_norm", [True, False])
def test_core_input_normalization_makes_the_policy_blind_to_the_feature_scale(core_norm) -> None:
    """Pong's ReLU features grew 32-fold and saturated the LSTM's gates (docs/benchmarks/pong.md); with
    ``core_norm`` the core sees them layer-normalized, so scaling them changes nothing it outputs."""
    torch.manual_seed(0)
    learner = ImpalaModule(observation_shape=(4, 84, 84), num_actions=6, core="lstm", core_size=32, core_norm=core_norm)
    observations = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    before = _logits(learner, observations)
    dense = learner.actor_critic.module[0].module[0].module.net[-2]
    assert isinstance(dense, torch.nn.Linear) and dense.out_features == 512
    with torch.no_grad():  # ReLU(a z) = a ReLU(z): every feature 50 times larger
        dense.weight.mul_(50.0)
        dense.bias.mul_(50.0)
    after = _logits(learner, observations)
    if core_norm:
        torch.testing.assert_close(after, before, atol=1e-4, rtol=0)
    else:
        assert (after - before).abs().max() > 1e-3


def test_checkpoints_saved_before_core_norm_load_without_it(tmp_path) -> None:
    torch.manual_seed(0)
    old = ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp", core="lstm", core_size=8, core_norm=False)
    hparams = {k: v for k, v in old.hparams.items() if k != "core_norm"}
    path = tmp_path / "old.ckpt"
    saved = {"state_dict": old.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": "2.6.0"}
    torch.save(saved, path)
    loaded = ImpalaModule.load_from_checkpoint(path)
    assert loaded.hparams.core_norm is False
    observations = torch.randn(3, 4)
    torch.testing.assert_close(_logits(loaded, observations), _logits(old, observations))


def test_feed_forward_rollouts_carry_no_state(no_stray_workers) -> None:
    learner = ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp")
    batches = iter(_stream(learner, unroll_length=5))
    batch = next(batches)
    batches.close()
    assert learner.state_keys == []
    assert "is_init" not in batch.keys() and "recurrent_state_h" not in batch.keys()


def test_evaluation_games_carry_the_state() -> None:
    """A recurrent player: the recorded game alone and the others at once, each with its own state."""
    torch.manual_seed(0)
    learner = ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp", core="lstm", core_size=16)
    results = play_games(GymSpec("CartPole-v1"), learner.actor, 3, record=True, max_video_frames=5)
    assert len(results.returns) == 3 and all(r >= 8 for r in results.returns)
    assert len(results.frames) == 5
    # the recorded game is for the GIF only: the scores are those of the games played without it
    torch.manual_seed(1)
    unrecorded = play_games(GymSpec("CartPole-v1"), learner.actor, 3, greedy=True)
    torch.manual_seed(1)
    recorded = play_games(GymSpec("CartPole-v1"), learner.actor, 3, greedy=True, record=True, max_video_frames=5)
    assert recorded.returns == unrecorded.returns and recorded.lengths == unrecorded.lengths


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"core": "transformer"}, "model.core: 'transformer' is not one of none, lstm, gru"),
        ({"core": "lstm", "core_size": 0}, "model.core_size: must be a positive integer, got 0"),
    ],
)
def test_bad_core_settings_fail_in_one_line(settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp", **settings)


@pytest.mark.slow
def test_pong_with_an_lstm_fits_resumes_and_plays_without_flags(tmp_path, no_stray_workers) -> None:
    """The paper's recurrent Atari setting end to end: ``ale_vector`` actors carry the state under bf16,
    a resume continues the same MLflow run, ``test`` adopts the checkpoint's core and frame stack."""
    args = [f"--config={ROOT / 'recipes' / 'configs' / 'pong_lstm.yaml'}", "--data.num_workers=2",
            "--data.envs_per_worker=4", "--data.batch_size=8", "--trainer.precision=bf16-mixed",
            "--data.actor_precision=bf16-mixed", "--trainer.log_every_n_steps=1", "--eval.every_n_steps=0"]  # fmt: skip
    first = run_recipe("pong", ["fit", "--trainer.max_steps=3", *args], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    mlflow_run = first.only_run("pong")
    assert mlflow_run.data.params["model.core"] == "lstm" and mlflow_run.data.params["data.frame_stack"] == "1"
    client = first.client()
    rho = [m.value for m in client.get_metric_history(mlflow_run.info.run_id, "vtrace/rho_mean")]
    assert len(rho) == 3 and all(0.95 < r < 1.05 for r in rho), rho  # the replay agrees with the actors

    resumed = run_recipe("pong", ["fit", "--ckpt_path=last", "--trainer.max_steps=5", *args], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    same = first.only_run("pong")  # still one run
    frames = client.get_metric_history(same.info.run_id, "frames")
    assert max(m.value for m in frames) == 5 * 8 * 10 * 4  # batches x rollouts x the config's unrolls x skip

    played = run_recipe("pong", ["test", "--ckpt_path=last", "--eval.episodes=2", "--eval.video=false"], tmp_path)
    assert played.returncode == 0, played.stderr[-3000:]
    assert "eval/return_mean" in played.stdout

    other = run_recipe("pong", ["test", "--ckpt_path=last", "--model.core=gru"], tmp_path)
    assert other.returncode == 2
    errors = [line for line in other.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "model.core: is 'gru' but" in errors[0] and "trained with 'lstm'" in errors[0]


@pytest.mark.xdist_group("ray")
@pytest.mark.slow
def test_ray_actors_carry_the_state(tmp_path, no_stray_workers) -> None:
    """Ray actors (TorchRL's ``RayCollector``) with an LSTM core: the learner's replay agrees with them."""
    args = ["fit", "--data.actors=ray", "--data.num_workers=2", "--model.core=lstm", "--model.core_size=16",
            "--trainer.max_steps=4", "--trainer.log_every_n_steps=1", "--eval.every_n_steps=0"]  # fmt: skip
    run = run_recipe("cartpole", args, tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    mlflow_run = run.only_run("cartpole")
    rho = [m.value for m in run.client().get_metric_history(mlflow_run.info.run_id, "vtrace/rho_mean")]
    # the first batch was acted by the weights the learner still has: ratios exactly 1
    assert len(rho) == 4 and abs(rho[0] - 1.0) < 1e-4, rho
