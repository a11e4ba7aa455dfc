"""Shared helpers: run a recipe as a real subprocess against a throwaway MLflow store."""

from __future__ import annotations

import atexit
import functools
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch  # noqa: F401 - now: its console handler keeps the stream of import time, not a test's capture
import mlflow
import psutil
import pytest

from bench.curves import load_curve

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ReturnReached:
    """When a run's mean return (``episode/return``: the last 100 games) first reached a threshold."""

    frames: float | None  # frames logged at that step; None: never reached
    best: float  # best mean return of the run
    max_frames: float  # frames at the end of the run
    min_entropy: float | None = None  # lowest logged policy entropy (nats): a collapse shows here
    max_policy_lag: float | None = None  # highest logged policy lag: weights not reaching actors show here


def _rounded(value: float | None) -> str:
    return "not logged" if value is None else f"{value:.3f}"


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

    def return_reached(self, experiment: str, threshold: float, label: str) -> ReturnReached:
        """Read the only run's frames and mean returns from MLflow; prints one line for the CI log."""
        client, run_id = self.client(), self.only_run(experiment).info.run_id
        curve = load_curve(client, run_id)
        reached = curve.first_reached(threshold)
        entropy = [m.value for m in client.get_metric_history(run_id, "policy/entropy")]
        lag = [m.value for m in client.get_metric_history(run_id, "policy_lag")]
        result = ReturnReached(
            frames=reached[0] if reached else None,
            best=curve.best,
            max_frames=curve.frames[-1],
            min_entropy=min(entropy, default=None),
            max_policy_lag=max(lag, default=None),
        )
        at = "never" if result.frames is None else f"{result.frames:.0f} frames"
        print(f"{label}: best 100-game mean {result.best:.1f}; >= {threshold}: {at} (run: {result.max_frames:.0f} "
              f"frames, {self.seconds:.0f} s; lowest policy entropy {_rounded(result.min_entropy)}, "
              f"highest policy lag {_rounded(result.max_policy_lag)})")  # fmt: skip
        return result


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's default): one test per core, 2 to 4. Two even on 2 cores: one test at a time
    kept them 57% busy (docs/testing.md); at most 4, since each test may hold a learner and its actors (~3 GB)."""
    return max(2, min(len(os.sched_getaffinity(0)), 4))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """Longest first, so the parallel workers finish together: the slow groups (Ray clusters, learning runs;
    each on one worker for minutes), then the other slow tests, then the quick ones (each as collected)."""

    def order(item: pytest.Item) -> tuple[bool, bool]:
        return item.get_closest_marker("slow") is None, item.get_closest_marker("xdist_group") is None

    items.sort(key=order)
    for item in items:
        if item.path.name == "test_vtrace.py":  # the stock-VTrace gap there depends on the tests before it
            item.add_marker(pytest.mark.xdist_group("vtrace"))  # on one worker, in file order


@functools.cache
def _empty_store() -> Path:
    """An MLflow SQLite store with its tables made, copied for each recipe run: creating the tables (a chain
    of database migrations) cost ~3 s of every run that started from an empty file."""
    folder = tempfile.mkdtemp(prefix="impala_lit_store_")
    atexit.register(shutil.rmtree, folder, True)
    path = Path(folder) / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def _recipe_command(recipe: str, args: list[str], workdir: Path, env: dict | None) -> tuple[list[str], dict, str, Path]:
    tracking_uri = (env or {}).get("MLFLOW_TRACKING_URI") or f"sqlite:///{workdir / 'mlflow.db'}"
    if tracking_uri == f"sqlite:///{workdir / 'mlflow.db'}" and not (workdir / "mlflow.db").exists():
        shutil.copyfile(_empty_store(), workdir / "mlflow.db")
    checkpoints = workdir / "checkpoints"
    subcommand, *rest = args
    extra = []
    if subcommand in ("fit", "validate", "test"):
        extra = [f"--checkpoint.dirpath={checkpoints}"]
        if tracking_uri.startswith("sqlite:"):  # a server keeps the artifacts itself
            extra.append(f"--trainer.logger.init_args.artifact_location={workdir / 'artifacts'}")
    full_env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "IMPALA_LIT_CHECKPOINT_DIR": str(workdir / "runs"),  # where --ckpt_path last looks without a dirpath
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    command = [sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), subcommand, *extra, *rest]
    return command, full_env, tracking_uri, checkpoints


def run_recipe(recipe: str, args: list[str], workdir: Path, timeout: float = 600, env: dict | None = None) -> RecipeRun:
    """``python recipes/<recipe>.py <args>`` with MLflow and checkpoints under ``workdir``."""
    command, full_env, tracking_uri, checkpoints = _recipe_command(recipe, args, workdir, env)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=workdir, env=full_env, capture_output=True, text=True, timeout=timeout)
    return RecipeRun(proc.returncode, proc.stdout, proc.stderr, tracking_uri, checkpoints, time.perf_counter() - start)


def run_recipe_in_process(recipe: str, args: list[str], workdir: Path, monkeypatch, capsys) -> RecipeRun:
    """``run_recipe`` inside the test process: the same command line, settings and exit code.

    For commands that fail on their settings before any process starts: it skips the ~5 s of
    imports a fresh interpreter pays per command (the bad-settings cases, more than 30, are the
    suite's most numerous). A command that got as far as training would run here too, so tests of
    training, signals or exit paths use ``run_recipe``.
    """
    command, full_env, tracking_uri, checkpoints = _recipe_command(recipe, args, workdir, None)
    for key, value in full_env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "argv", command[1:])
    monkeypatch.syspath_prepend(str(Path(command[1]).parent))  # as for a script: its folder comes first
    recipe_main = runpy.run_path(command[1], run_name="recipe")["main"]
    capsys.readouterr()
    start = time.perf_counter()
    try:
        recipe_main()
        returncode = 0
    except SystemExit as stop:
        returncode = stop.code if isinstance(stop.code, int) else 1
    out = capsys.readouterr()
    return RecipeRun(returncode, out.out, out.err, tracking_uri, checkpoints, time.perf_counter() - start)


def start_recipe(
    recipe: str, args: list[str], workdir: Path, env: dict | None = None, stdout: bool = False
) -> subprocess.Popen:
    """Like ``run_recipe``, but returns the running process (stderr piped; stdout piped only if asked)."""
    command, full_env, _, _ = _recipe_command(recipe, args, workdir, env)
    out = subprocess.PIPE if stdout else subprocess.DEVNULL
    return subprocess.Popen(command, cwd=workdir, env=full_env, stdout=out, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``condition()`` every 0.2 s; fail naming ``what`` (and the process's stderr if it died)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def stray_workers(since: float) -> list[psutil.Process]:
    """Collector worker processes (spawned children) started after ``since`` that are still alive
    and belong to this test: children of the test process, or orphans whose learner is gone.
    (Workers of other trainings running on the machine, with a live learner, are not counted.)"""
    found = []
    for proc in psutil.process_iter(["cmdline", "create_time", "ppid"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["create_time"] >= since - 1 and "multiprocessing" in cmdline and "spawn" in cmdline:
            parent = proc.info["ppid"]
            if parent in (1, os.getpid()) or not psutil.pid_exists(parent) or _is_subreaper(parent):
                found.append(proc)
    return found


def _is_subreaper(pid: int) -> bool:
    """An init-like process that adopted orphans (tini, a container's init)."""
    try:
        return "python" not in psutil.Process(pid).name()
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def no_stray_workers():
    """Fails the test if collector workers outlive it."""
    since = time.time()
    yield
    deadline = time.time() + 10
    while stray_workers(since) and time.time() < deadline:
        time.sleep(0.2)
    assert not stray_workers(since), "collector worker processes were left behind"
