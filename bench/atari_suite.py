"""Atari games from one recipe with one set of settings, scored against the published baselines.

python bench/atari_suite.py run --name defaults --games Breakout Qbert BeamRider --seeds 0 1 --frames 10e6
python bench/atari_suite.py run --name eps01 --games Breakout Qbert BeamRider --frames 10e6 -- --model.rms_eps 0.01
python bench/atari_suite.py report --names defaults eps01 --frames 10e6

``run``: one ``recipes/atari.py fit`` per game and seed, one after another, each named
``<name>-s<seed>`` in the game's experiment (``atari-<game>``); arguments after ``--`` go to every
run; each run's console output goes to ``runs/atari-<game>-<name>-s<seed>.log``.
``report``: per setting and game, the mean return of the last 100 games at the frame budget (the
published baselines' figure: raw full-game score), its human-normalised score (HNS), and the
suite's aggregates: mean and median HNS, and the Atari-5 estimate of the 57-game median where the
five games were run. Protocol of every figure: ``recipes/atari.py`` (no sticky actions, a lost
life ends the episode for learning, FIRE at reset, rewards clipped for learning).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from curves import Curve, load_curve

from impala_lit.app.tracking import default_tracking_uri
from impala_lit.envs import env_name

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Reference:
    """Published scores at 40M frames (10M agent steps), and the random and human scores of HNS."""

    random: float
    human: float
    a2c: float | None  # PPO paper (Schulman et al. 2017), appendix table
    ppo: float | None  # PPO paper
    cleanrl_ppo: float | None  # CleanRL ppo_atari_envpool_xla_jax, 3 seeds
    ppo2: float | None  # openai/baselines ppo2, CleanRL's table
    rllib_impala: float | None  # ray-project/rl-experiments, 32 workers, 10M steps


# sources: PPO paper appendix (via rldb), CleanRL docs/benchmark, ray-project/rl-experiments;
# random/human: google-deepmind/dqn_zoo atari_data.py (= maitchison/Atari-5 Atari-Human.csv)
REFERENCES = {
    "Pong": Reference(-20.7, 14.6, 19.7, 20.7, 20.39, 20.45, None),
    "Breakout": Reference(1.7, 30.5, 303.0, 274.8, 430.09, 405.73, 385.0),
    "BeamRider": Reference(363.9, 16926.5, 3031.7, 1590.0, 2478.44, 2835.71, 2071.0),
    "Qbert": Reference(163.88, 13455.0, 10065.7, 14293.3, 17246.27, 15228.25, 4068.0),
    "BattleZone": Reference(2360.0, 37187.5, 3080.0, 17366.7, 24283.75, 19980.0, None),
    "DoubleDunk": Reference(-18.55, -16.4, -16.2, -14.9, -6.81, -12.96, None),
    "NameThisGame": Reference(2292.35, 8049.0, 5961.2, 6254.9, 5750.0, 6815.63, None),
    "Phoenix": Reference(761.4, 7242.6, None, None, 14474.11, 9517.73, None),
}
BASELINES = {"a2c": "A2C", "ppo": "PPO", "cleanrl_ppo": "CleanRL PPO", "ppo2": "ppo2", "rllib_impala": "RLlib IMPALA"}
# Aitchison, Sweetser, Hutter 2023 (maitchison/Atari-5): log-linear fit of the 57-game median HNS
ATARI5_WEIGHTS = {
    "BattleZone": 0.38198,
    "DoubleDunk": 0.06791,
    "NameThisGame": 0.31080,
    "Phoenix": 0.12413,
    "Qbert": 0.08049,
}


def hns(game: str, score: float) -> float:
    """Human-normalised score in percent: 0 plays like random, 100 like the human tester."""
    ref = REFERENCES[game]
    return 100.0 * (score - ref.random) / (ref.human - ref.random)


def atari5_median(scores: dict[str, float]) -> float:
    """The Atari-5 estimate of the median HNS (percent) over all 57 games, from raw scores of its five games."""
    log_sum = sum(w * math.log10(1.0 + max(hns(game, scores[game]), 0.0)) for game, w in ATARI5_WEIGHTS.items())
    return 10.0**log_sum - 1.0


def score_at(curve: Curve, frames: float) -> tuple[float, float] | None:
    """``(frames, mean return)`` at the last point at or before ``frames``; ``None`` before the first game ended."""
    points = [(f, r) for f, r in zip(curve.frames, curve.returns, strict=True) if f <= frames]
    return points[-1] if points else None


def runs_of(client: mlflow.MlflowClient, game: str, name: str) -> list[Curve]:
    """The curves of runs named ``<name>-s<seed>`` in ``atari-<game>`` (the newest of equal names)."""
    experiment = client.get_experiment_by_name(f"atari-{env_name(game)}")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=5000)
    by_name = {r.info.run_name: r.info.run_id for r in runs if r.info.run_name.startswith(f"{name}-s")}
    return [load_curve(client, run_id) for _, run_id in sorted(by_name.items())]


def report(client: mlflow.MlflowClient, names: list[str], games: list[str], frames: float) -> str:
    """Markdown: per setting and game, the score at ``frames`` (mean over seeds), its HNS and the baselines."""
    head = ["setting", "game", "seeds", "frames (M)", "score", "HNS %", *BASELINES.values()]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary = []
    for name in names:
        scores: dict[str, float] = {}
        for game in games:
            points = [p for p in (score_at(c, frames) for c in runs_of(client, game, name)) if p is not None]
            if not points:
                continue
            score = statistics.fmean(r for _, r in points)
            scores[game] = score
            spread = f" ({', '.join(f'{r:.1f}' for _, r in points)})" if len(points) > 1 else ""
            ref = REFERENCES[game]
            published = [getattr(ref, key) for key in BASELINES]
            rows.append(
                f"| {name} | {game} | {len(points)} | {min(f for f, _ in points) / 1e6:.1f} | {score:.1f}{spread} "
                f"| {hns(game, score):.1f} | " + " | ".join("-" if p is None else f"{p:g}" for p in published) + " |"
            )
        if scores:
            normalised = [hns(g, s) for g, s in scores.items()]
            line = f"{name}: {len(scores)} games, mean HNS {statistics.fmean(normalised):.1f}%, "
            line += f"median {statistics.median(normalised):.1f}%"
            if all(game in scores for game in ATARI5_WEIGHTS):
                line += f", Atari-5 estimate of the 57-game median {atari5_median(scores):.1f}%"
            summary.append(line)
    return "\n".join([*rows, "", *summary])


def run_game(game: str, name: str, seed: int, frames: float, args: list[str], tracking_uri: str) -> int:
    """One ``recipes/atari.py fit`` of ``game``; returns its exit code."""
    run_name = f"{name}-s{seed}"
    log = ROOT / "runs" / f"atari-{env_name(game)}-{run_name}.log"
    log.parent.mkdir(exist_ok=True)
    command = [
        sys.executable, str(ROOT / "recipes" / "atari.py"), "fit",
        f"--data.env_id=ALE/{game}-v5", f"--model.max_frames={int(frames)}",
        f"--seed_everything={seed}", f"--data.seed={seed}",
        f"--trainer.logger.init_args.run_name={run_name}", *args,
    ]  # fmt: skip
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(command, env=dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri), stdout=out, stderr=out)
    status = "ok" if proc.returncode == 0 else f"exit code {proc.returncode}, see {log}"
    print(f"{game} {run_name}: {time.perf_counter() - start:.0f} s, {status}", flush=True)
    return proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("--name", help="run: the setting's name (runs are <name>-s<seed>)")
    parser.add_argument("--names", nargs="+", help="report: settings to compare (default: --name)")
    parser.add_argument("--games", nargs="+", default=list(REFERENCES), choices=list(REFERENCES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--frames", type=float, default=40e6, help="frame budget (default: the published 40M)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri())
    parser.add_argument("recipe_args", nargs="*", help="after --: arguments for every run")
    args = parser.parse_args()
    if args.command == "run":
        if not args.name:
            parser.error("run needs --name")
        for game in args.games:
            for seed in args.seeds:
                run_game(game, args.name, seed, args.frames, args.recipe_args, args.tracking_uri)
    names = args.names or ([args.name] if args.name else None)
    if not names:
        parser.error("report needs --names")
    print(report(mlflow.MlflowClient(args.tracking_uri), names, args.games, args.frames))


if __name__ == "__main__":
    main()
