"""Atari games from one recipe with one set of settings, scored against the published baselines.

python bench/atari_suite.py run --name defaults --games Breakout Qbert BeamRider --seeds 0 1 --frames 10e6
python bench/atari_suite.py run --name eps01 --games Breakout Qbert --frames 10e6 -- --model.rms_eps 0.01
python bench/atari_suite.py report --names defaults eps01 --frames 10e6 --plot atari.png

``run``: ``bench/compare_runs.py``'s runner over games x seeds, one ``recipes/atari.py fit`` after
another, each named ``<name>-s<seed>`` in the game's experiment (``atari-<game>``), its output in
``runs/atari-<game>-<name>-s<seed>.log``; arguments after ``--`` go to every run. An interrupted
suite picks up where it stopped: finished runs are skipped, an unfinished one resumes from its
``last.ckpt`` into the same MLflow run.
``report``: per setting and game, the mean raw score of the last 100 games at 10M, 25M and 40M
frames and at 60 minutes, its human-normalised score (HNS) at ``--frames``, the published
baselines beside it, and the suite's mean and median HNS and the Atari-5 estimate of the 57-game
median where the five games were run; ``--plot``: every game's HNS against frames and minutes.
Protocol of every figure: ``recipes/atari.py`` (no sticky actions, a lost life ends the episode for
learning, FIRE at reset, rewards clipped for learning; the raw full-game score is reported).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
from compare_runs import plot as draw
from compare_runs import run_recipe
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
    return [load_curve(client, run.info.run_id) for run in named_runs(client, game, name).values()]


def named_runs(client: mlflow.MlflowClient, game: str, name: str) -> dict[str, mlflow.entities.Run]:
    """``<name>-s<seed>`` -> the newest run of that name in ``atari-<game>``."""
    experiment = client.get_experiment_by_name(f"atari-{env_name(game)}")
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=5000)
    return dict(sorted((r.info.run_name, r) for r in runs if r.info.run_name.startswith(f"{name}-s")))


def score_at_minutes(curve: Curve, minutes: float) -> float | None:
    """The mean return at the last point within ``minutes`` of the start."""
    points = [r for m, r in zip(curve.minutes, curve.returns, strict=True) if m <= minutes]
    return points[-1] if points else None


def report(client: mlflow.MlflowClient, names: list[str], games: list[str], frames: float) -> str:
    """Markdown: per setting and game, the score at 10M/25M/40M frames and at 60 minutes (means over
    seeds), the HNS at ``frames`` and the published baselines; then the suite's aggregates."""
    marks = [10e6, 25e6, 40e6]
    head = ["setting", "game", "seeds", "frames (M)", *[f"at {m / 1e6:.0f}M" for m in marks], "at 60 min",
            f"score at {frames / 1e6:g}M", "HNS %", *BASELINES.values()]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary = []
    for name in names:
        scores: dict[str, float] = {}
        for game in games:
            curves = runs_of(client, game, name)
            points = [p for p in (score_at(c, frames) for c in curves) if p is not None]
            if not points:
                continue
            score = statistics.fmean(r for _, r in points)
            scores[game] = score
            spread = f" ({', '.join(f'{r:.1f}' for _, r in points)})" if len(points) > 1 else ""
            at_marks = []
            for mark in marks:  # only runs that got that far
                reached = [score_at(c, mark)[1] for c in curves if c.frames and c.frames[-1] >= mark]
                at_marks.append(f"{statistics.fmean(reached):.1f}" if reached else "-")
            hour = [score_at_minutes(c, 60.0) for c in curves if c.minutes and c.minutes[-1] >= 60]
            at_marks.append(f"{statistics.fmean(hour):.1f}" if hour else "-")
            published = ["-" if p is None else f"{p:g}" for p in (getattr(REFERENCES[game], k) for k in BASELINES)]
            cells = [name, game, str(len(points)), f"{max(c.frames[-1] for c in curves if c.frames) / 1e6:.1f}",
                     *at_marks, f"{score:.1f}{spread}", f"{hns(game, score):.1f}", *published]  # fmt: skip
            rows.append("| " + " | ".join(cells) + " |")
        if scores:
            normalised = [hns(g, s) for g, s in scores.items()]
            line = f"{name}: {len(scores)} games, mean HNS {statistics.fmean(normalised):.1f}%, "
            line += f"median {statistics.median(normalised):.1f}%"
            if all(game in scores for game in ATARI5_WEIGHTS):
                line += f", Atari-5 estimate of the 57-game median {atari5_median(scores):.1f}%"
            summary.append(line)
    return "\n".join([*rows, "", *summary])


def plot(client: mlflow.MlflowClient, names: list[str], games: list[str], path: str) -> None:
    """Every run's human-normalised 100-game mean against frames and minutes (``compare_runs.plot``)."""
    curves = [
        dataclasses.replace(curve, run_name=f"{game} {curve.run_name}", returns=[hns(game, r) for r in curve.returns])
        for name in names
        for game in games
        for curve in runs_of(client, game, name)
    ]
    draw(curves, "Atari games, one set of settings", path, ylabel="human-normalised score (%), last 100 games")


def run_suite(client: mlflow.MlflowClient, name: str, games: list[str], seeds: list[int], frames: float,
              args: list[str], tracking_uri: str) -> None:  # fmt: skip
    """Each game x seed through ``compare_runs.run_recipe``; finished runs are skipped, unfinished ones resumed."""
    for game in games:
        for seed in seeds:
            existing = named_runs(client, game, name).get(f"{name}-s{seed}")
            if existing is not None and existing.info.status == "FINISHED":
                print(f"{game} {name}-s{seed}: finished already, skipped", flush=True)
                continue
            resume = ["--ckpt_path=last"] if existing is not None else []  # the game's newest run: this one
            run_args = [f"--data.env_id=ALE/{game}-v5", f"--model.max_frames={int(frames)}", *resume, *args]
            run_recipe("atari", name, seed, run_args, tracking_uri, log_prefix=f"atari-{env_name(game)}-")


def main() -> None:
    argv = sys.argv[1:]
    recipe_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("--name", help="run: the setting's name (runs are <name>-s<seed>)")
    parser.add_argument("--names", nargs="+", help="report: settings to compare (default: --name)")
    parser.add_argument("--games", nargs="+", default=list(REFERENCES), choices=list(REFERENCES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--frames", type=float, default=40e6, help="frame budget (default: the published 40M)")
    parser.add_argument("--plot", help="PNG file: every game's HNS against frames and against minutes")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri())
    args = parser.parse_args(own)
    client = mlflow.MlflowClient(args.tracking_uri)
    if args.command == "run":
        if not args.name:
            parser.error("run needs --name")
        run_suite(client, args.name, args.games, args.seeds, args.frames, recipe_args, args.tracking_uri)
    names = args.names or ([args.name] if args.name else None)
    if not names:
        parser.error("report needs --names")
    print(report(client, names, args.games, args.frames))
    if args.plot:
        plot(client, names, args.games, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
