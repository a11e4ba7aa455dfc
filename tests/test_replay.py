"""Experience replay: rollouts from a TorchRL replay buffer mixed into the learner's batches."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from impala_lit import ImpalaModule
from impala_lit.learning.replay import RolloutReplay

from .conftest import run_recipe_in_process
from .test_vtrace import off_policy_batch


def rollouts(batch: int, unroll: int, version: int) -> TensorDict:
    """``[batch, unroll]`` stand-in rollouts whose frames all carry ``version``."""
    return TensorDict(
        observation=torch.randn(batch, unroll, 4),
        policy_version=torch.full((batch, unroll), version),
        next=TensorDict(reward=torch.zeros(batch, unroll, 1), batch_size=[batch, unroll]),
        batch_size=[batch, unroll],
    )


@pytest.mark.parametrize(("ratio", "fresh", "replayed"), [(0.5, 8, 8), (0.25, 6, 2), (0.75, 4, 12)])
@pytest.mark.parametrize("prioritized", [False, True])
def test_the_replayed_share_of_each_batch_is_the_setting(ratio, fresh, replayed, prioritized) -> None:
    replay = RolloutReplay(ratio, capacity=64, prioritized=prioritized)
    first = replay.mix(rollouts(fresh, 5, version=0))
    assert not first["replayed"].any()  # nothing to replay yet
    for version in range(1, 12):
        batch = replay.mix(rollouts(fresh, 5, version))
        if version * fresh < replayed:  # the buffer does not hold enough yet: all it has
            assert batch.shape == (fresh + version * fresh, 5)
            continue
        assert batch.shape == (fresh + replayed, 5)
        assert batch["replayed"][:, 0].tolist() == [False] * fresh + [True] * replayed
        assert batch["replayed"].float().mean() == pytest.approx(ratio)
        assert (batch["policy_version"][:fresh] == version).all()  # the fresh rollouts come first, whole
        old = batch["policy_version"][fresh:]
        assert (old < version).all() and (old == old[:, :1]).all()  # replayed: older, and whole rollouts
    assert len(replay) == min(64, 12 * fresh)
    assert replay.fresh(batch).sum() * 5 == fresh * 5  # the frame counter counts the actors' steps only


def test_priorities_follow_the_v_trace_errors_and_weight_the_loss() -> None:
    torch.manual_seed(0)
    replay = RolloutReplay(0.5, capacity=32, prioritized=True, alpha=1.0, beta=1.0)
    batch = replay.mix(rollouts(16, 5, version=0))
    error = torch.full((16, 5, 1), 0.01)
    error[3] = 1.0  # one rollout the critic gets badly wrong
    batch.set("state_value", torch.zeros(16, 5, 1))
    batch.set("value_target", error)
    metrics = replay.feedback(batch, policy_version=1)
    assert metrics["replay/share"] == 0.0 and metrics["replay/policy_lag"] == 0.0  # nothing replayed yet
    priority = replay.buffer.sampler.priority[:16]
    assert priority[3] == pytest.approx(1.0, rel=1e-4) and priority[0] == pytest.approx(0.01, rel=1e-3)
    mixed = replay.mix(rollouts(16, 5, version=1))
    old = mixed[16:]
    drawn = old["index"][:, 0]
    assert (drawn == 3).float().mean() > 0.5  # p = 1 / (1 + 15 * 0.01) = 0.87
    # importance weights (N P(i))^-beta / max: the often-drawn rollout counts least in the loss
    weight = old["sample_weight"][:, 0]
    assert weight[drawn == 3].max() < weight[drawn != 3].min() == pytest.approx(1.0)
    assert (mixed["sample_weight"][:16] == 1).all()


def test_sample_weights_scale_each_steps_loss_terms() -> None:
    torch.manual_seed(0)
    module = ImpalaModule(observation_shape=(5,), num_actions=3, network="mlp")
    batch = module.compute_advantages(off_policy_batch())
    plain = module.loss(batch)
    batch.set("sample_weight", torch.full(batch.shape, 0.5))
    halved = module.loss(batch)
    for term in ("policy", "baseline", "entropy", "loss"):
        assert halved[term].item() == pytest.approx(0.5 * plain[term].item(), rel=1e-5)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.replay_ratio=1.0"], "data.replay_ratio: must be a number in [0, 1), got 1.0"),
        (["--data.replay_ratio=0.5", "--data.replay_capacity=8"], "data.replay_capacity: must be >= data.batch_size"),
        (["--data.replay_beta=2"], "data.replay_beta: must be a number in [0, 1], got 2"),
        (["--data.replay_alpha=-1"], "data.replay_alpha: must be a number >= 0, got -1"),
    ],
)
def test_bad_replay_settings_fail_in_one_line(tmp_path, args, expected, monkeypatch, capsys) -> None:
    run = run_recipe_in_process("cartpole", ["fit", *args], tmp_path, monkeypatch, capsys)
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], run.stderr[-2000:]
