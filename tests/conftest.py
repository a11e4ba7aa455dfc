"""Shared helpers: run a recipe as a real subprocess against a throwaway MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RecipeRun:
    returncode: int
    stdout: str
    stderr: str
    tracking_uri: str
    checkpoints: Path
    seconds: float

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(self.tracking_uri)

    def only_run(self, experiment: str):
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 1, f"expected one MLflow run, found {len(runs)}"
        return runs[0]


def run_recipe(recipe: str, args: list[str], workdir: Path, timeout: float = 600) -> RecipeRun:
    """``python recipes/<recipe>.py <args>`` with MLflow and checkpoints under ``workdir``."""
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    checkpoints = workdir / "checkpoints"
    subcommand, *rest = args
    extra = []
    if subcommand in ("fit", "validate", "test"):
        extra = [
            f"--trainer.logger.init_args.artifact_location={workdir / 'artifacts'}",
            f"--checkpoint.dirpath={checkpoints}",
        ]
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=tracking_uri,
        IMPALA_LIT_CHECKPOINT_DIR=str(workdir / "runs"),  # where --ckpt_path last looks without a dirpath
        PYTHONPATH=str(ROOT),
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), subcommand, *extra, *rest],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return RecipeRun(proc.returncode, proc.stdout, proc.stderr, tracking_uri, checkpoints, time.perf_counter() - start)


def stray_workers(since: float) -> list[psutil.Process]:
    """Collector worker processes (spawned children) started after ``since`` that are still alive."""
    found = []
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["create_time"] >= since - 1 and "multiprocessing" in cmdline and "spawn" in cmdline:
            found.append(proc)
    return found


@pytest.fixture
def no_stray_workers():
    """Fails the test if collector workers outlive it."""
    since = time.time()
    yield
    deadline = time.time() + 10
    while stray_workers(since) and time.time() < deadline:
        time.sleep(0.2)
    assert not stray_workers(since), "collector worker processes were left behind"
