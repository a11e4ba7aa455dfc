"""Soak test: a recipe trains for a long time while an actor process is killed every few minutes.

python bench/soak.py --recipe pong --minutes 31 --kill-every 180 --workdir /tmp/soak
python bench/soak.py --recipe pong --minutes 31 --workdir /tmp/soak_ray -- --data.actors ray

Arguments after ``--`` go to the recipe's ``fit``. Prints one line per sample (minute, memory of
the learner and of its actors, kills) and a JSON summary last: restarts logged, frames/s before
the first kill and after the last one, memory at start and end. The run must keep going after
every kill, and memory must stay flat.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil

ROOT = Path(__file__).resolve().parent.parent


def actors(proc: psutil.Process) -> list[psutil.Process]:
    """The learner's actor processes: TorchRL's spawned workers, or Ray's collector actors."""
    found = []
    for child in proc.children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "spawn_main" in cmdline or (cmdline.startswith("ray::") and "Collector" in cmdline):
            found.append(child)
    return found


def start_end_medians(samples: list[dict], key: str) -> list[float] | None:
    """Median of the 2nd-6th samples and of the last 5: memory at the start (after start-up) and at the end."""
    if len(samples) < 11:
        return None
    return [statistics.median(s[key] for s in samples[1:6]), statistics.median(s[key] for s in samples[-5:])]


def frames_per_second(history: list, start_ms: float, end_ms: float) -> float | None:
    """Frames/s between two wall-clock times, from the ``frames`` metric logged in between."""
    inside = [m for m in history if start_ms <= m.timestamp <= end_ms]
    if len(inside) < 2:
        return None
    first, last = inside[0], inside[-1]
    return round((last.value - first.value) / ((last.timestamp - first.timestamp) / 1000))


def rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=31.0)
    parser.add_argument("--kill-every", type=float, default=180.0, help="seconds between actor kills")
    parser.add_argument("--sample-every", type=float, default=60.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/impala_lit_soak"))
    parser.add_argument("--recipe", default="cartpole", help="a recipe in recipes/ (its experiment is read back)")
    parser.add_argument("recipe_args", nargs="*", help="after --: arguments for the recipe's fit")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{args.workdir / 'mlflow.db'}"
    command = [
        sys.executable, str(ROOT / "recipes" / f"{args.recipe}.py"), "fit",
        "--model.max_frames=1000000000", "--trainer.log_every_n_steps=20",
        f"--checkpoint.dirpath={args.workdir / 'checkpoints'}",
        f"--trainer.logger.init_args.artifact_location={args.workdir / 'artifacts'}",
        *args.recipe_args,
    ]  # fmt: skip
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    log = open(args.workdir / "stderr.txt", "w")
    trainer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=args.workdir)
    learner = psutil.Process(trainer.pid)
    start = time.time()
    next_kill = start + args.kill_every
    next_sample = start + 30
    kills, samples, kill_times = 0, [], []
    rng = random.Random(0)
    while time.time() - start < args.minutes * 60 and trainer.poll() is None:
        time.sleep(1)
        now = time.time()
        if now >= next_kill:
            victims = actors(learner)
            if victims:
                rng.choice(victims).kill()
                kills += 1
                kill_times.append(now)
            next_kill = now + args.kill_every
        if now >= next_sample:
            sample = {
                "minute": round((now - start) / 60, 1),
                "learner_rss_mb": round(rss_mb([learner]), 1),
                "actors_rss_mb": round(rss_mb(actors(learner)), 1),
                "kills": kills,
                "processes": len(learner.children(recursive=True)),  # restarts must not leave any behind
                "learner_threads": learner.num_threads(),  # nor threads (Ray's, gloo's) in the learner
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)
            next_sample = now + args.sample_every
    alive = trainer.poll() is None
    stopped = time.time()
    if alive:
        trainer.send_signal(signal.SIGTERM)
    code = trainer.wait(timeout=300)
    client = mlflow.MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    (run,) = client.search_runs([experiment.experiment_id])
    history = {
        key: client.get_metric_history(run.info.run_id, key)
        for key in ("frames", "faults/actor_restarts", "episode/return")
    }
    every = args.kill_every
    summary = {
        "minutes": round((time.time() - start) / 60, 1),
        "alive_until_stopped": alive,
        "exit_code": code,
        "mlflow_status": client.get_run(run.info.run_id).info.status,
        "kills": kills,
        "restarts_logged": max((m.value for m in history["faults/actor_restarts"]), default=0),
        "frames": max((m.value for m in history["frames"]), default=0),
        "last_step": max((m.step for m in history["frames"]), default=0),
        # from 30 s after the start (set-up done) to the first kill, and from 30 s after the last kill to the end
        "frames_per_s_before_first_kill": frames_per_second(
            history["frames"], (start + 30) * 1000, (kill_times[0] if kill_times else stopped) * 1000
        ),
        "frames_per_s_after_last_kill": frames_per_second(
            history["frames"], (kill_times[-1] + 30) * 1000, stopped * 1000
        )
        if kill_times
        else None,
        # each window holds one kill and its restart
        "frames_per_s_every_kill_interval": [
            frames_per_second(history["frames"], (start + k * every) * 1000, (start + (k + 1) * every) * 1000)
            for k in range(int((stopped - start) // every) + 1)
        ],
        "episode_return_last": history["episode/return"][-1].value if history["episode/return"] else None,
        "learner_rss_mb_first_last": [samples[0]["learner_rss_mb"], samples[-1]["learner_rss_mb"]] if samples else None,
        "actors_rss_mb_first_last": [samples[0]["actors_rss_mb"], samples[-1]["actors_rss_mb"]] if samples else None,
        # RSS moves by ~10% from sample to sample (batches in flight): medians of 5 samples, start-up skipped
        "learner_rss_mb_start_end_median5": start_end_medians(samples, "learner_rss_mb"),
        "actors_rss_mb_start_end_median5": start_end_medians(samples, "actors_rss_mb"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
