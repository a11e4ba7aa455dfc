"""New objectives by subclassing ImpalaModule and overriding ``loss`` only."""

from __future__ import annotations

import math

import pytest
import torch

from impala_lit import APPOModule, ImpalaModule

from .conftest import run_recipe
from .test_vtrace import off_policy_batch


class ClippedAdvantageImpala(ImpalaModule):
    """IMPALA whose policy gradient uses V-trace advantages clipped to [-1, 1]."""

    def loss(self, batch):
        terms = super().loss(batch)
        advantage = batch["advantage"].squeeze(-1).clamp(-1.0, 1.0)
        policy = -self.reduce_term(advantage * batch["learner_log_prob"], batch)
        terms["loss"] = terms["loss"] - terms["policy"] + policy
        terms["policy"] = policy
        terms["advantage_std"] = batch["advantage"].std()
        return terms


@pytest.mark.slow
def test_a_loss_subclass_trains_through_the_cli_with_adam_a_decayed_rate_and_prioritized_replay(
    tmp_path, no_stray_workers
) -> None:
    """One fit for three settings that do not interact: a subclass overriding only ``loss()``, Adam with a
    learning rate decayed over its own horizon, and prioritized replay (its share, lag and frame count)."""
    steps, batch, unroll, horizon_steps = 12, 32, 20, 100
    args = ["fit", "--model=tests.test_losses.ClippedAdvantageImpala", f"--trainer.max_steps={steps}",
            "--trainer.log_every_n_steps=1", "--eval.every_n_steps=0",
            "--model.optimizer=adam", "--model.adam_eps=1e-5", "--model.loss_reduction=mean", "--model.lr=0.001",
            f"--model.lr_decay_frames={horizon_steps * batch * unroll}", "--model.max_frames=1000000",
            "--data.replay_ratio=0.5", "--data.replay_prioritized=true", "--data.replay_capacity=128"]  # fmt: skip
    run = run_recipe("cartpole", args, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    client, run_id = run.client(), run.only_run("cartpole").info.run_id

    def curve(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]

    # the subclass's own term is logged, and its class is what the checkpoint names
    advantage_std = curve("loss/advantage_std")
    assert len(advantage_std) == steps and all(math.isfinite(v) and v > 0 for v in advantage_std)
    ckpt = torch.load(run.checkpoints / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["_class_path"] == "tests.test_losses.ClippedAdvantageImpala"
    # Adam, and a linear decay over its horizon rather than over the budget
    assert curve("lr") == pytest.approx([0.001 * (1 - k / horizon_steps) for k in range(steps)])
    (state,) = ckpt["optimizer_states"]
    assert state["param_groups"][0]["eps"] == 1e-5 and "exp_avg_sq" in next(iter(state["state"].values()))
    # replay: half of every batch after the first, older than the fresh half, not counted as frames
    assert curve("replay/share") == [0.0] + [0.5] * (steps - 1)
    assert max(curve("replay/policy_lag")) > max(curve("policy_lag")) > 0
    assert max(curve("frames")) == steps * batch * unroll
    params = client.get_run(run_id).data.params
    assert params["model.optimizer"] == "adam" and params["model.loss_reduction"] == "mean"
    assert params["data.replay_ratio"] == "0.5" and params["data.replay_prioritized"] == "True"


def test_appo_clips_the_ratio_of_learner_to_behaviour_policy() -> None:
    torch.manual_seed(0)
    module = APPOModule(observation_shape=(5,), num_actions=3, network="mlp", clip_range=0.1, normalize_advantage=False)
    batch = module.compute_advantages(off_policy_batch())
    terms = module.loss(batch)
    log_pi = batch["learner_log_prob"]
    ratio = (log_pi - batch["action_log_prob"]).exp().detach()
    assert terms["clip_fraction"] == ((ratio - 1).abs() > 0.1).float().mean()
    (grad,) = torch.autograd.grad(terms["policy"], log_pi)
    advantage = batch["advantage"].squeeze(-1) / ratio.clamp_max(1.0)  # V-trace's, rho divided out
    clipped = ((ratio > 1.1) & (advantage > 0)) | ((ratio < 0.9) & (advantage < 0))
    assert clipped.any() and (~clipped).any()
    assert (grad[clipped] == 0).all()  # PPO: no push beyond the trust region
    torch.testing.assert_close(grad[~clipped], -(ratio * advantage)[~clipped])


@pytest.mark.slow
def test_appo_makes_epochs_x_minibatches_updates_per_batch(tmp_path) -> None:
    args = ["fit", "--model=impala_lit.APPOModule", "--model.num_epochs=2", "--model.num_minibatches=4",
            "--trainer.max_steps=3", "--trainer.log_every_n_steps=1"]  # fmt: skip
    run = run_recipe("cartpole", args, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = torch.load(run.checkpoints / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3  # Lightning counts batches
    assert ckpt["impala"]["frames"] == 3 * 32 * 20 and ckpt["impala"]["policy_version"] == 3  # weights sent per batch
    steps = {int(state["step"]) for state in ckpt["optimizer_states"][0]["state"].values()}
    assert steps == {3 * 2 * 4}  # RMSProp stepped once per minibatch update
    run_id = run.only_run("cartpole").info.run_id
    client = run.client()
    assert len(client.get_metric_history(run_id, "loss/total")) == 3  # metrics once per batch, not per update
    assert len(client.get_metric_history(run_id, "grad_norm")) == 3
    metrics = run.only_run("cartpole").data.metrics  # each game counted once, not once per epoch:
    assert metrics["episode/games"] * metrics["episode/length"] <= 3 * 32 * 20  # its steps fit in the frames seen


def test_mean_reduction_divides_every_term_by_the_steps_in_the_batch() -> None:
    torch.manual_seed(0)
    summed = ImpalaModule(observation_shape=(5,), num_actions=3, network="mlp")
    averaged = ImpalaModule(observation_shape=(5,), num_actions=3, network="mlp", loss_reduction="mean")
    averaged.load_state_dict(summed.state_dict())
    batch = off_policy_batch()
    by_sum = summed.loss(summed.compute_advantages(batch.clone()))
    by_mean = averaged.loss(averaged.compute_advantages(batch.clone()))
    for term in ("policy", "baseline", "entropy", "loss"):
        assert by_mean[term].item() == pytest.approx(by_sum[term].item() / batch.numel(), rel=1e-5)


def test_normalized_advantages_give_the_policy_gradient_one_scale_whatever_the_rewards() -> None:
    torch.manual_seed(0)
    module = ImpalaModule(observation_shape=(5,), num_actions=3, network="mlp", normalize_advantage=True)
    grads, raw_std = [], []
    for scale in (1.0, 100.0):  # rewards x 100: V-trace's advantages grow ~100x
        batch = off_policy_batch()
        batch.set(("next", "reward"), batch.get(("next", "reward")) * scale)
        batch = module.compute_advantages(batch)
        log_pi = batch["learner_log_prob"]
        (grad,) = torch.autograd.grad(module.loss(batch)["policy"], log_pi)
        advantage = batch["advantage"].squeeze(-1)
        torch.testing.assert_close(grad, -(advantage - advantage.mean()) / advantage.std())
        grads.append(grad)
        raw_std.append(advantage.std().item())
    assert raw_std[1] > 30 * raw_std[0]
    for grad in grads:  # the policy gradient's scale does not follow them
        assert grad.std().item() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize(("rms_init", "first_step"), [(0.0, 9.09), (1.0, 0.99)])
def test_rmsprop_first_step_follows_its_initial_mean_square(rms_init, first_step) -> None:
    """PyTorch's RMSProp starts its mean of squared gradients at 0: a first step of ~10 x lr for every
    weight, whatever its gradient; TensorFlow's (the paper's code) at 1: a step of ~lr x gradient."""
    learner = ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp", lr=1e-3, rms_init=rms_init)
    optimizer = learner.configure_optimizers()
    before = [p.detach().clone() for p in learner.parameters()]
    for p in learner.parameters():
        p.grad = torch.full_like(p, 1.0)
    optimizer.step()
    steps = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, learner.parameters(), strict=True)])
    expected = 1e-3 * 1.0 / (math.sqrt((1 - 0.99) * 1.0 + 0.99 * rms_init) + 0.01)
    torch.testing.assert_close(steps, torch.full_like(steps, expected), rtol=1e-3, atol=0)
    assert expected / 1e-3 == pytest.approx(first_step, rel=0.01)
