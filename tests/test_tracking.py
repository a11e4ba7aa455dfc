"""A real ``mlflow server`` on 127.0.0.1: params, metrics and the evaluation GIF over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import imageio.v3 as iio
import mlflow
import pytest

from .conftest import ROOT, run_recipe, start_recipe, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _start_server(folder: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port``, its store and artifacts in ``folder`` (kept across restarts)."""
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--backend-store-uri=sqlite:///{folder / 'server.db'}",
            f"--artifacts-destination={folder / 'server-artifacts'}",
            "--workers=1",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health"), 90, "the MLflow server", server)
    return server


def _stop_server(server: subprocess.Popen) -> None:
    # the server and its workers, at once: on SIGTERM it waited ~12 s for the run's open connections
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    server = _start_server(tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_server(server)


@pytest.mark.slow
def test_a_tracking_server_that_goes_away_mid_run_costs_no_metrics(tmp_path, no_stray_workers) -> None:
    """The server is stopped 10 s mid-run, then started again on the same store: training goes on, the
    warning says what happens, the kept metrics arrive (no hole in the curve) and the gap is recorded."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    workdir = tmp_path / "work"
    workdir.mkdir()
    # no step budget: the run is stopped (SIGTERM) once the server has its metrics again, however fast it trains
    args = ["fit", "--model.max_frames=100000000", "--trainer.log_every_n_steps=1", "--eval.every_n_steps=0",
            "--trainer.logger.init_args.retry_s=2"]  # fmt: skip
    proc = start_recipe("cartpole", args, workdir, env={"MLFLOW_TRACKING_URI": uri})
    client = mlflow.MlflowClient(uri)

    def run_id() -> str | None:
        experiment = client.get_experiment_by_name("cartpole")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        return runs[0].info.run_id if runs else None

    def logging() -> bool:
        return run_id() is not None and len(client.get_metric_history(run_id(), "frames")) >= 20

    try:
        wait_for(logging, 240, "metrics on the server", proc)
        _stop_server(server)
        time.sleep(10)
        assert proc.poll() is None, "training stopped with its tracking server"
        server = _start_server(tmp_path, port)
        wait_for(lambda: client.get_metric_history(run_id(), "faults/tracking_outage_s"), 60, "the kept metrics", proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        _stop_server(server)
    assert proc.returncode == 143, stderr[-3000:]  # ended by SIGTERM, cleanly
    assert f"the MLflow tracking server at {uri} does not answer" in stderr, stderr[-3000:]
    assert f"the MLflow tracking server at {uri} answers again after" in stderr
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'server.db'}")  # the server's store, read directly
    (run,) = store.search_runs([store.get_experiment_by_name("cartpole").experiment_id])
    steps = sorted(m.step for m in store.get_metric_history(run.info.run_id, "frames"))
    (outage,) = store.get_metric_history(run.info.run_id, "faults/tracking_outage_s")
    assert steps == list(range(len(steps))) and outage.step > 20  # every step, once, past the outage
    assert outage.value >= 8 and run.info.status == "KILLED"  # the status set after the outage


@pytest.mark.slow
def test_a_run_on_a_remote_tracking_server(tmp_path, mlflow_server) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    run = run_recipe(
        "cartpole",
        [
            "fit",
            "--trainer.max_steps=10",
            "--eval.every_n_steps=5",
            "--eval.episodes=2",
            "--trainer.log_every_n_steps=1",
        ],  # fmt: skip
        workdir,
        env={"MLFLOW_TRACKING_URI": mlflow_server},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (workdir / "mlflow.db").exists() and not (workdir / "artifacts").exists()  # all went to the server

    client = mlflow.MlflowClient(mlflow_server)  # over HTTP
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("cartpole").experiment_id])
    run_id = mlflow_run.info.run_id
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["model.network"] == "mlp" and mlflow_run.data.params["trainer.max_steps"] == "10"
    assert [m.step for m in client.get_metric_history(run_id, "eval/return_mean")] == [5, 10]
    assert len(client.get_metric_history(run_id, "frames")) == 10

    videos = sorted(a.path for a in client.list_artifacts(run_id, "videos"))
    assert videos == ["videos/step00000005.gif", "videos/step00000010.gif"]
    local = client.download_artifacts(run_id, videos[-1], str(tmp_path))
    frames = iio.imread(local, index=None)
    # an animation (a near-random CartPole player can lose in 8 steps, so no longer minimum than that)
    assert frames.ndim == 4 and len(frames) >= 2 and frames.shape[-1] in (3, 4)
    assert "config.yaml" in [a.path for a in client.list_artifacts(run_id)]


def test_an_unreachable_tracking_server_fails_fast(tmp_path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    run = run_recipe("cartpole", ["fit", "--trainer.max_steps=10"], tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert run.returncode == 2 and run.seconds < 60
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith(f"cartpole.py: error: trainer.logger.init_args.tracking_uri: no MLflow server answers at {uri}")
    ), run.stderr[-2000:]


@pytest.mark.slow
def test_a_recipe_run_from_another_folder_keeps_its_runs_and_checkpoints_there(tmp_path) -> None:
    """``./mlflow/`` and ``./checkpoints/`` of where the command runs, as MLflow's and Lightning's defaults."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "IMPALA_LIT_CHECKPOINT_DIR")}
    env["PYTHONPATH"] = str(ROOT)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    fit = [sys.executable, str(ROOT / "recipes" / "cartpole.py"), "fit", "--eval.every_n_steps=0",
           "--trainer.log_every_n_steps=1"]  # fmt: skip
    first = subprocess.run([*fit, "--trainer.max_steps=4"], cwd=workdir, env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    folders = [p.parent for p in (workdir / "checkpoints" / "cartpole").glob("*/last.ckpt")]
    assert len(folders) == 1, list(workdir.rglob("*"))
    assert not (ROOT / "checkpoints" / "cartpole" / folders[0].name).exists()
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cartpole")
    run_id = client.search_runs([experiment.experiment_id])[0].info.run_id
    assert experiment.artifact_location.startswith(str(workdir / "mlflow" / "artifacts"))
    assert "Tip:" not in first.stdout + first.stderr  # the quiet console

    # `--ckpt_path last` looks there too, and the run goes on in the same MLflow run
    second = subprocess.run([*fit, "--trainer.max_steps=6", "--ckpt_path=last", "--verbose"], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    frames = client.get_metric_history(run_id, "frames")
    assert max(m.value for m in frames) == 6 * 32 * 20
    assert f"checkpoint  {folders[0] / 'last.ckpt'}" in second.stdout
    assert "Tip:" in second.stdout + second.stderr  # --verbose: the libraries' lines are back
