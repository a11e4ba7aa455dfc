"""Procgen: the games' specs and level sets, the raw score beside clipped rewards, a short fit ->
resume -> test on unseen levels, and one-line errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from impala_lit.agent.networks import ResNetTorso, make_actor_critic
from impala_lit.envs import ProcgenSpec

from .conftest import ROOT, run_recipe, run_recipe_in_process

pytest.importorskip("procgen", reason="procgen2 has wheels for CPython 3.11 on Linux x86_64 only")


def _level_seeds(spec: ProcgenSpec, games: int) -> set[int]:
    """The level of each of ``games`` games, each started from its own seed."""
    game = spec.make_gym().unwrapped
    try:
        seeds = set()
        for seed in range(games):
            game.reset(seed=seed)
            seeds.add(int(game._env.get_info()[0]["level_seed"]))
        return seeds
    finally:
        game.close()


def test_a_game_has_the_benchmarks_specs_and_level_sets() -> None:
    spec = ProcgenSpec("procgen/coinrun", num_levels=200)
    env = spec.make_batched(4)
    try:
        assert env.batch_size == torch.Size([4])
        assert env.observation_spec["observation"].shape == torch.Size([4, 3, 64, 64])
        assert env.observation_spec["observation"].dtype == torch.uint8
        assert env.action_spec.space.n == 15
        check_env_specs(env, seed=0)
    finally:
        env.close()
    assert spec.frames_per_step == 1  # no frame skip: a frame is an agent step

    assert _level_seeds(dataclasses.replace(spec, num_levels=1, start_level=7), 5) == {7}
    assert _level_seeds(dataclasses.replace(spec, num_levels=3, start_level=10), 12) == {10, 11, 12}
    unseen = _level_seeds(spec.unseen_levels(), 12)
    assert len(unseen) == 12 and all(seed >= 200 for seed in unseen)  # the full distribution, not levels 0-199


def test_the_score_is_raw_while_the_learner_sees_clipped_rewards() -> None:
    """Same seed, same actions: clipping changes the rewards, not the logged game score."""
    actions = torch.as_tensor(np.random.default_rng(0).integers(0, 15, size=(400, 8)))

    def play(clip: bool):
        env = ProcgenSpec("procgen/fruitbot", num_levels=50, clip_rewards=clip).make_batched(8)
        env.set_seed(3)
        td = env.reset()
        rewards, over, scores = [], [], []
        for step in range(len(actions)):
            td["action"] = actions[step]
            td, td_next = env.step_and_maybe_reset(td)
            rewards.append(td["next", "reward"].reshape(-1))
            over.append(td["next", "game_over"].reshape(-1))
            scores.append(td["next", "game_return"].reshape(-1))
            td = td_next
        env.close()
        return torch.stack(rewards), torch.stack(over), torch.stack(scores)

    raw, over, scores = play(clip=False)
    clipped, over_clipped, scores_clipped = play(clip=True)
    assert (raw.abs() > 1).any(), "no reward beyond +-1 in 400 steps of 8 FruitBot games: the test shows nothing"
    assert torch.equal(clipped, raw.sign()) and torch.equal(over, over_clipped)
    assert torch.equal(scores, scores_clipped)  # the score sums the raw rewards either way
    for env in range(raw.shape[1]):  # each game's score: its raw rewards, from its first step to its last
        start = 0
        ends = over[:, env].nonzero().reshape(-1).tolist()
        for t in sorted({*ends, len(raw) - 1}):  # the games that ended, and the one still running
            assert scores[t, env].item() == pytest.approx(raw[start : t + 1, env].sum().item()), (env, t)
            start = t + 1


def test_seeds_pick_the_games() -> None:
    def first_frames(seed: int) -> torch.Tensor:
        env = ProcgenSpec("procgen/starpilot", num_levels=0).make_batched(2)
        env.set_seed(seed)
        frames = env.reset()["observation"].clone()
        env.close()
        return frames

    assert torch.equal(first_frames(1), first_frames(1))
    assert not torch.equal(first_frames(1), first_frames(2))


def test_the_deep_network_is_the_impala_cnn_on_64x64() -> None:
    net = make_actor_critic("deep", (3, 64, 64), 15)
    (torso,) = [m for m in net.modules() if isinstance(m, ResNetTorso)]
    convs = [m for m in torso.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16] * 5 + [32] * 10  # 3 stages: a conv + 2 blocks of 2 convs
    (dense,) = [m for m in torso.head if isinstance(m, torch.nn.Linear)]
    assert (dense.in_features, dense.out_features) == (32 * 8 * 8, 256)  # 64 -> 32 -> 16 -> 8
    out = net(TensorDict(observation=torch.zeros(2, 3, 64, 64, dtype=torch.uint8), batch_size=[2]))
    assert out["logits"].shape == (2, 15) and out["state_value"].shape == (2, 1)


@pytest.mark.slow
def test_procgen_recipe_fits_resumes_and_tests_on_unseen_levels(tmp_path, no_stray_workers) -> None:
    args = ["--data.num_workers=1", "--data.envs_per_worker=8", "--data.batch_size=8", "--data.unroll_length=10",
            "--eval.every_n_steps=2", "--eval.episodes=2", "--eval.max_video_frames=20",
            "--trainer.log_every_n_steps=1"]  # fmt: skip
    first = run_recipe("procgen_games", ["fit", "--trainer.max_steps=2", *args], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run = first.only_run("procgen")
    assert run.data.params["data.env_id"] == "procgen/starpilot" and run.data.params["data.num_levels"] == "200"
    metrics = run.data.metrics
    for name in ("eval/return_mean", "eval_train/return_mean", "eval/generalization_gap"):
        assert name in metrics, sorted(metrics)
    assert metrics["eval/generalization_gap"] == pytest.approx(
        metrics["eval_train/return_mean"] - metrics["eval/return_mean"]
    )
    assert metrics["frames"] == 2 * 8 * 10  # one frame per agent step
    client = first.client()
    assert [a.path for a in client.list_artifacts(run.info.run_id, "videos")] == ["videos/step00000002.gif"]

    resumed = run_recipe("procgen_games", ["fit", "--ckpt_path=last", "--trainer.max_steps=3", *args], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = first.only_run("procgen")  # still one run
    assert again.data.metrics["frames"] == 3 * 8 * 10

    # the report of docs/benchmarks/procgen.md's curves reads the run back: one row per evaluation
    report = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "procgen_curves.py"), "--tracking-uri", first.tracking_uri,
         "--runs", again.info.run_name],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    rows = [line for line in report.stdout.splitlines() if line.startswith("| 0.00 |")]
    assert rows and "(starpilot;" in report.stdout, report.stdout

    # more games than the evaluations during fit, from the checkpoints alone: a row per checkpoint of the
    # run's folder, last.ckpt last with the frames it was saved at, both level sets
    ckpt = first.checkpoints / "last.ckpt"
    scored = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "score_checkpoint.py"), "--games", "3", str(first.checkpoints)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-2000:]
    rows = [line for line in scored.stdout.splitlines() if line.startswith(f"| {first.checkpoints}")]
    assert rows and rows[-1].startswith(f"| {ckpt} | 240 |"), scored.stdout
    assert all(row.count("+-") == 2 for row in rows), scored.stdout

    test_args = ["test", "--ckpt_path=last", "--eval.episodes=3", "--eval.video=false"]
    played = run_recipe("procgen_games", test_args, tmp_path)
    assert played.returncode == 0, played.stderr[-3000:]
    for name in ("eval/return_mean", "eval_train/return_mean", "eval/generalization_gap"):
        assert name in played.stdout, played.stdout[-2000:]
    assert "manual reset ignored" not in played.stdout + first.stdout  # gym3's reset warning is gone


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.env_id=procgen/coinrum"], "unknown Procgen game 'procgen/coinrum'; did you mean procgen/coinrun?"),
        (["--data.distribution_mode=extreme"], "data.distribution_mode: 'extreme' is not one of easy, hard"),
        (["--data.num_levels=-1"], "data.num_levels: must be an integer >= 0, got -1"),
        (["--model.network=mlp"], "model.network: 'mlp' needs vector observations, got shape (3, 64, 64)"),
    ],
)  # fmt: skip
def test_bad_procgen_settings_fail_in_one_line(tmp_path, args: list[str], expected: str, monkeypatch, capsys) -> None:
    run = run_recipe_in_process("procgen_games", ["fit", *args], tmp_path, monkeypatch, capsys)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], run.stderr[-2000:]
    assert not list(run.checkpoints.rglob("*.ckpt"))
