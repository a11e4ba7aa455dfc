"""Exact resume after SIGKILL, into the same MLflow run; safe checkpoint loading; a branch into a new run."""

from __future__ import annotations

import signal
import subprocess
import sys

import mlflow
import pytest
import torch

from .conftest import ROOT, run_recipe, start_recipe, stray_workers, wait_for

pytestmark = pytest.mark.slow  # killed and resumed runs

PROBE = "--model=tests.probes.RecordsResume"
ARGS = ["--trainer.max_steps=40", "--checkpoint.every_n_train_steps=8", "--trainer.log_every_n_steps=1", PROBE]


def _saved_step(path) -> int:
    try:
        return torch.load(path, weights_only=True)["global_step"]
    except Exception:
        return -1


def test_sigkill_then_resume_continues_exactly_in_the_same_mlflow_run(tmp_path, no_stray_workers) -> None:
    first = start_recipe("cartpole", ["fit", *ARGS], tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    wait_for(lambda: last.exists() and _saved_step(last) >= 16, 300, "a checkpoint at step >= 16", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    wait_for(lambda: not stray_workers(0), 30, "the actors to die with the killed learner")

    saved = torch.load(last, weights_only=True)
    assert 16 <= saved["global_step"] < 40
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cartpole").experiment_id])
    assert saved["mlflow"]["run_id"] == run.info.run_id
    before = {m.step for m in client.get_metric_history(run.info.run_id, "frames")}

    resumed = run_recipe("cartpole", ["fit", "--ckpt_path=last", *ARGS], tmp_path,
                         env={"IMPALA_LIT_PROBE": str(tmp_path / "probe.pt")})  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    probe = torch.load(tmp_path / "probe.pt", weights_only=True)
    assert probe["global_step"] == saved["global_step"]
    assert probe["frames"] == saved["impala"]["frames"] == saved["global_step"] * 32 * 20
    assert probe["policy_version"] == saved["impala"]["policy_version"] == saved["global_step"]
    # the 100-game window goes on, so the resumed run's first means are not over its first 1-2 games
    assert len(saved["impala"]["recent_games"]) > 0
    assert probe["recent_games"] == [tuple(game) for game in saved["impala"]["recent_games"].tolist()]
    # training time goes on from the saved one; the pause between the two processes does not count
    assert saved["impala"]["train_seconds"] <= probe["train_seconds"] < saved["impala"]["train_seconds"] + 60
    scheduler = saved["lr_schedulers"][0]
    assert probe["lr"] == pytest.approx(scheduler["_last_lr"][0])
    assert scheduler["last_epoch"] == saved["global_step"]  # the schedule continues, not restarts
    optimizer = saved["optimizer_states"][0]
    assert probe["optimizer"]["state"].keys() == optimizer["state"].keys()
    for key, state in optimizer["state"].items():
        for name, value in state.items():
            assert torch.equal(probe["optimizer"]["state"][key][name], value), (key, name)
    assert probe["actors_have_learner_weights"]  # the actors started from the restored weights
    assert probe["batch_min_version"] >= saved["impala"]["policy_version"]

    assert torch.load(last, weights_only=True)["global_step"] == 40  # ran to the requested max_steps
    (run,) = client.search_runs([client.get_experiment_by_name("cartpole").experiment_id])  # still one run
    assert run.info.status == "FINISHED"
    frames = client.get_metric_history(run.info.run_id, "frames")
    steps = {m.step for m in frames}
    # Lightning writes a step's checkpoint (a callback's on_train_batch_end) before that step's metrics: a
    # SIGKILL landing in between loses that one row (step saved - 1), which the resumed run cannot replay
    lost = {saved["global_step"] - 1} if max(before) == saved["global_step"] - 2 else set()
    assert before < steps and max(before) >= saved["global_step"] - 2  # the history runs up to the kill point
    assert steps == set(range(40)) - lost  # one x-axis (Lightning logs step i for the i-th update), no other gap
    # no reset: the frame counter continued (steps between the checkpoint and the kill were replayed)
    assert all(m.value == (m.step + 1) * 32 * 20 for m in frames)
    minutes = client.get_metric_history(run.info.run_id, "time/train_min")  # read by bench/curves.py
    assert {m.step for m in minutes} == steps and all(m.value > 0 for m in minutes)


def test_a_branch_of_a_checkpoint_trains_on_in_a_new_run_with_the_changed_setting(tmp_path, no_stray_workers) -> None:
    # bench/branch_checkpoint.py: late-phase screens (docs/benchmarks/pong.md) start from one checkpoint
    steps = ["--trainer.log_every_n_steps=1", "--eval.every_n_steps=0"]
    trunk = run_recipe("cartpole", ["fit", "--trainer.max_steps=8", *steps], tmp_path)
    assert trunk.returncode == 0, trunk.stderr[-3000:]
    source, target = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "branch.ckpt"
    script = ROOT / "bench" / "branch_checkpoint.py"
    settings = ["lr=0.001", "max_frames=9000", "rms_eps=0.001"]
    made = subprocess.run([sys.executable, script, source, target, "--set", *settings],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    (group,) = torch.load(target, weights_only=False)["optimizer_states"][0]["param_groups"]
    assert group["eps"] == 0.001  # Lightning restores the saved param groups: the setting must be in them
    branch = run_recipe("cartpole", ["fit", f"--ckpt_path={target}", "--trainer.logger.init_args.run_name=branch",
                                     *steps], tmp_path)  # fmt: skip
    assert branch.returncode == 0, branch.stderr[-3000:]

    client = trunk.client()
    runs = client.search_runs([client.get_experiment_by_name("cartpole").experiment_id])
    by_name = {run.info.run_name: run for run in runs}
    assert len(runs) == 2 and "branch" in by_name, [run.info.run_name for run in runs]
    (trunk_run,) = [run for run in runs if run.info.run_name != "branch"]
    history = {key: client.get_metric_history(trunk_run.info.run_id, key) for key in ("frames", "lr")}
    assert {m.step for m in history["frames"]} == set(range(8))  # the trunk's run got nothing of the branch
    branch_id = by_name["branch"].info.run_id
    assert by_name["branch"].data.params["model.lr"] == "0.001"
    frames = [m.value for m in sorted(client.get_metric_history(branch_id, "frames"), key=lambda m: m.step)]
    assert frames[0] == 9 * 32 * 20 and frames[-1] >= 9000  # went on from the trunk's frames to the new budget
    assert len(frames) == 7  # 8 * 640 + 7 * 640 >= 9000: stopped by the branch's max_frames, not the trunk's
    lr = sorted(client.get_metric_history(branch_id, "lr"), key=lambda m: m.step)[0].value
    last_trunk_lr = max(history["lr"], key=lambda m: m.step).value
    assert lr == pytest.approx(last_trunk_lr * 0.1, rel=0.05)  # the decay goes on, from a tenth of the old rate
