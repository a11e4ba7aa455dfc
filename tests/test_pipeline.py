"""The pipeline with real parts: subprocess collectors, Lightning's loop, MLflow, checkpoints."""

from __future__ import annotations

import math
import os
import pty
import re
import subprocess

import pytest
import torch
from tensordict import TensorDict

from impala_lit import ImpalaModule
from impala_lit.actors import ActorSettings, RolloutStream
from impala_lit.envs import GymSpec

from .conftest import _recipe_command, run_recipe, start_recipe

TRAINING_METRICS = [
    "frames",
    "time/data_wait_frac",
    "time/step_s",
    "time/train_min",
    "fps",
    "episode/return",
    "episode/length",
    "episode/games",
    "loss/total",
    "loss/policy",
    "loss/baseline",
    "loss/entropy",
    "grad_norm",
    "lr",
    "policy_lag",
    "vtrace/rho_mean",
    "vtrace/rho_clipped_frac",
    "vtrace/approx_kl",
    "vtrace/log_rho_abs",
    "vtrace/advantage_std",
    "policy/entropy",
]


def test_actors_stream_batches_and_receive_weights(no_stray_workers) -> None:
    torch.manual_seed(0)
    learner = ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp")
    settings = ActorSettings(num_workers=2, envs_per_worker=4, unroll_length=10, batch_size=8, learner_threads=3)
    stream = RolloutStream(GymSpec("CartPole-v1"), learner.actor, settings, policy_version=7)
    threads = torch.get_num_threads()
    batches = iter(stream)
    batch = next(batches)
    assert torch.get_num_threads() == 3  # data.learner_threads reached the learner process (TorchRL's num_threads)
    torch.set_num_threads(threads)
    assert batch.batch_size == torch.Size([8, 10])
    for key in ["observation", "action", "action_log_prob", ("next", "reward"), ("next", "done"),
                ("next", "terminated"), ("next", "truncated"), ("next", "observation"), "policy_version"]:  # fmt: skip
        assert key in batch.keys(include_nested=True), key
    assert "logits" not in batch.keys() and "hidden" not in batch.keys()  # actors ship only what V-trace needs
    assert (batch["policy_version"] == 7).all()  # counted from the learner's version when the actors started

    # a policy that always pushes left: once the workers have it, every action is 0
    with torch.no_grad():
        head = learner.actor_critic.get_policy_head().module[0].module
        head.weight.zero_()
        head.bias.copy_(torch.tensor([20.0, -20.0]))
    stream.update_weights(TensorDict.from_module(learner.actor).data)
    for _ in range(6):
        batch = next(batches)
        fresh = batch["policy_version"] == 8
        if fresh.any():
            assert (batch["action"][fresh] == 0).all()
            assert batch["action_log_prob"][fresh].abs().max() < 1e-6
            break
    else:
        pytest.fail("no frame was collected with the updated weights")
    batches.close()  # Lightning drops the iterator the same way on exit
    assert stream.collector is None


# the tests of the shared fit run on one xdist worker, so the fit runs once
shares_the_fit = pytest.mark.xdist_group("cartpole_run")


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cartpole")
    run = run_recipe(
        "cartpole",
        ["fit", "--trainer.max_steps=12", "--checkpoint.every_n_train_steps=5", "--trainer.log_every_n_steps=2",
         "--progress.every_s=0"],  # a status line after every step (stdout is not a terminal here)
        workdir,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return run, workdir


@shares_the_fit
def test_fit_logs_the_training_metrics_to_mlflow(cartpole_run) -> None:
    run, _ = cartpole_run
    mlflow_run = run.only_run("cartpole")
    assert mlflow_run.info.status == "FINISHED"
    client = run.client()
    for key in TRAINING_METRICS:
        history = client.get_metric_history(mlflow_run.info.run_id, key)
        assert history, f"metric {key} was not logged"
        assert all(math.isfinite(m.value) for m in history), key
    frames = client.get_metric_history(mlflow_run.info.run_id, "frames")
    assert frames[-1].value == 12 * 32 * 20  # CartPole: one frame per agent step
    lag = client.get_metric_history(mlflow_run.info.run_id, "policy_lag")
    assert all(0 <= m.value <= 6 for m in lag)
    lr = [m.value for m in client.get_metric_history(mlflow_run.info.run_id, "lr")]
    assert lr == sorted(lr, reverse=True) and lr[0] <= 0.01  # linear decay over the frame budget
    artifacts = [a.path for a in client.list_artifacts(mlflow_run.info.run_id)]
    assert "config.yaml" in artifacts
    params, tags = mlflow_run.data.params, mlflow_run.data.tags
    assert params["model.network"] == "mlp" and params["data.env_id"] == "CartPole-v1"
    assert params["model.observation_shape"] == "(4,)" and params["model.lr"] == "0.01"
    assert params["trainer.max_steps"] == "12" and params["model.class"] == "impala_lit.ImpalaModule"
    assert "lr" not in params  # one readable name per setting
    assert tags["learner"] == "impala_lit.ImpalaModule" and tags["env_id"] == "CartPole-v1"
    assert len(tags["mlflow.source.git.commit"].split("-")[0]) == 40
    assert mlflow_run.info.run_name.startswith("ImpalaModule-mlp-CartPole-v1-")


@shares_the_fit
def test_fit_writes_checkpoints_that_load_without_arguments(cartpole_run) -> None:
    run, _ = cartpole_run
    names = sorted(p.name for p in run.checkpoints.iterdir())
    assert "last.ckpt" in names and any(n.startswith("step5-") for n in names), names
    last = torch.load(run.checkpoints / "last.ckpt", weights_only=True)  # tensors and primitives only
    assert last["global_step"] == 12  # the steps after the last interval are saved too
    assert last["impala"]["frames"] == 12 * 32 * 20 and last["impala"]["policy_version"] == 12
    assert last["impala"]["skipped_updates"] == 0 and set(last["impala"]["rng"]) == {"torch", "python", "numpy"}
    module = ImpalaModule.load_from_checkpoint(run.checkpoints / "last.ckpt")
    assert module.frames == 12 * 32 * 20 and module.hparams.network == "mlp"
    td = module.actor(TensorDict(observation=torch.zeros(3, 4), batch_size=[3]))
    assert td["action"].shape == (3,)


@shares_the_fit
def test_the_console_shows_frames_of_the_budget_eta_and_return_then_a_summary(cartpole_run) -> None:
    run, _ = cartpole_run
    lines = run.stdout.splitlines()
    status = [line for line in lines if line.startswith("frames ")]
    assert len(status) >= 10, run.stdout[-3000:]
    # the budget: 12 steps of 32 x 20 frames (CartPole: one frame per agent step)
    expected = (r"frames [\d,.M]+/7,680 \(\d+%\) · \d+:\d\d elapsed · ETA (\d+:\d\d|-) · [\d,]+ frames/s · "
                r"return (-?[\d.]+ \(best -?[\d.]+\)|- \(no game over yet\)) · policy lag [\d.]+")  # fmt: skip
    assert re.fullmatch(expected, status[-1]), status[-1]
    assert "frames 7,680/7,680 (100%)" in status[-1] and " · return " in status[-1]
    assert not any("v_num" in line or "Epoch" in line for line in lines)
    end = next(i for i, line in enumerate(lines) if line.startswith("training ended by"))
    summary = "\n".join(lines[end:])
    assert "training ended by the step budget (trainer.max_steps=12)" in summary
    mlflow_run = run.only_run("cartpole")
    assert f"checkpoint  {run.checkpoints / 'last.ckpt'}" in summary
    assert f"MLflow run  {mlflow_run.info.run_id}" in summary and "mlflow ui --backend-store-uri" in summary
    assert re.search(r"return      last -?[\d.]+, best -?[\d.]+", summary)
    assert f"--ckpt_path {run.checkpoints / 'last.ckpt'}" in summary.splitlines()[-1]
    # the libraries' chatter went to the log file, and the log file to the MLflow run
    console = run.stdout + run.stderr
    assert "Tip:" not in console and "GPU available" not in console and "[torchrl][INFO]" not in console
    log = (run.checkpoints / "console.log").read_text()
    assert "Tip:" in log and "GPU available" in log
    assert "console.log" in [a.path for a in run.client().list_artifacts(mlflow_run.info.run_id)]


@pytest.mark.slow
def test_on_a_terminal_the_status_line_is_redrawn_in_place(tmp_path) -> None:
    """Through a pseudo-terminal (one that reports no size, as a bare pty does)."""
    args = ["fit", "--trainer.max_steps=20", "--eval.every_n_steps=0", "--progress.refresh_s=0"]
    command, env, _, _ = _recipe_command("cartpole", args, tmp_path, None)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=subprocess.PIPE)  # fmt: skip
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    text = output.decode(errors="replace")
    redraws = re.findall(r"\rframes [^\r\n]*", text)
    assert len(redraws) >= 5, text[-3000:]
    assert "frames 12,800/12,800 (100%)" in redraws[-1] and "ETA" in redraws[-1] and "return" in redraws[-1]
    assert "Epoch" not in text and "v_num" not in text
    assert "training ended by the step budget" in text


@shares_the_fit
def test_test_subcommand_plays_evaluation_games(cartpole_run) -> None:
    run, workdir = cartpole_run
    ckpt = run.checkpoints / "last.ckpt"
    evaluation = run_recipe("cartpole", ["test", f"--ckpt_path={ckpt}", "--eval.episodes=3"], workdir)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert "eval/return_mean" in evaluation.stdout and "eval/return_std" in evaluation.stdout  # the score table
    client = evaluation.client()
    exp = client.get_experiment_by_name("cartpole")
    runs = client.search_runs([exp.experiment_id], order_by=["start_time DESC"])
    assert runs[0].data.tags["subcommand"] == "test" and runs[0].data.tags["checkpoint"] == str(ckpt)
    games = client.get_metric_history(runs[0].info.run_id, "eval/games")
    assert games and games[-1].value == 3
    assert client.get_metric_history(runs[0].info.run_id, "eval/return_mean")[-1].value >= 8  # CartPole's minimum
    videos = [a.path for a in client.list_artifacts(runs[0].info.run_id, "videos")]
    assert len(videos) == 1 and videos[0].endswith(".gif")


@pytest.mark.slow
def test_pong_fits_on_two_workers_in_bf16(tmp_path, no_stray_workers) -> None:
    run = run_recipe(
        "pong",
        [
            "fit",
            "--trainer.max_steps=6",
            "--data.num_workers=2",
            "--data.envs_per_worker=4",
            "--data.batch_size=8",
            "--trainer.precision=bf16-mixed",
            "--data.actor_precision=bf16-mixed",
            "--trainer.log_every_n_steps=2",
        ],  # fmt: skip
        tmp_path,
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'new.db'}"},  # an empty file: MLflow makes its tables
    )
    assert run.returncode == 0, run.stderr[-3000:]
    mlflow_run = run.only_run("pong")
    client = run.client()
    frames = client.get_metric_history(mlflow_run.info.run_id, "frames")
    assert frames[-1].value == 6 * 8 * 40 * 4  # Atari frames: agent steps (the recipe's unrolls of 40) x frame skip 4
    loss = client.get_metric_history(mlflow_run.info.run_id, "loss/total")
    assert all(math.isfinite(m.value) for m in loss)
    assert mlflow_run.data.params["data.actor_precision"] == "bf16-mixed"
    # the actors' bf16 log-probabilities agree with the learner's: importance ratios near 1
    rho = [m.value for m in client.get_metric_history(mlflow_run.info.run_id, "vtrace/rho_mean")]
    assert all(0.95 < r < 1.05 for r in rho), rho
    # the KL estimate is never negative (rho - 1 - log rho >= 0) and stays small: 0.02 in the first
    # updates of a uniform policy (CI, 2 cores), 0.005-0.05 late in a Pong run (docs/benchmarks/pong.md)
    kl = [m.value for m in client.get_metric_history(mlflow_run.info.run_id, "vtrace/approx_kl")]
    assert kl and all(0.0 <= k < 0.2 for k in kl), kl
    # the policy's entropy per step, in nats: a fresh policy is near uniform over Pong's 6 actions
    entropy = [m.value for m in client.get_metric_history(mlflow_run.info.run_id, "policy/entropy")]
    assert entropy and all(0.0 < h <= math.log(6) + 1e-3 for h in entropy), entropy
    assert entropy[0] > 0.9 * math.log(6), entropy
    assert (run.checkpoints / "last.ckpt").exists()
    # a quiet console: no TorchRL INFO line (the actors' included), no Lightning tip, no deprecation
    # warning of a dependency, no emulator banner; the run's log file holds them
    console = run.stdout + run.stderr
    # (a new store: MLflow creates its tables and Lightning the experiment, which they both announce)
    for chatter in ("[torchrl][INFO]", "info_dict_reader", "Tip:", "deprecated", "A.L.E: Arcade",
                    "Creating initial MLflow database tables", "not found. Creating it"):  # fmt: skip
        assert chatter not in console, f"{chatter!r} reached the console: {console[-3000:]}"
    log = (run.checkpoints / "console.log").read_text()
    assert "info_dict_reader does not have specs" in log and "Tip:" in log
    assert "Creating initial MLflow database tables" in log and "not found. Creating it" in log
    assert "training ended by the step budget" in run.stdout


def _fit_cartpole(workdir, *args: str) -> subprocess.Popen:
    return start_recipe("cartpole", ["fit", *args], workdir)


@pytest.mark.slow
def test_an_exception_in_the_learner_shuts_the_actors_down(tmp_path, no_stray_workers) -> None:
    proc = _fit_cartpole(tmp_path, "--model=tests.faulty.RaisesAtStep3")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "injected failure at step 3" in stderr
