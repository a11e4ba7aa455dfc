"""Procgen runs read back from MLflow: the training score and the score on unseen levels, side by side.

python bench/procgen_curves.py --runs P1-starpilot-s0 P2-coinrun-s0 --plot docs/procgen_curves.png

For each run, a markdown row per evaluation: agent steps, wall minutes, the actors' 100-game mean
on the training levels (``episode/return``), the evaluation games on unseen levels (``eval/``)
and on training levels (``eval_train/``), and the gap; each score also as the benchmark's
normalised score, (R - R_min) / (R_max - R_min) with the easy-mode constants of Cobbe et al.
2020 (their Table 2 / the procgen repository). ``--plot``: one panel per run, scores against steps.
"""

from __future__ import annotations

import argparse
import bisect
import os
from dataclasses import dataclass

import mlflow
from curves import find_runs
from matplotlib.figure import Figure

from impala_lit.app.tracking import default_tracking_uri
from impala_lit.envs.procgen import game_name

# (R_min, R_max) in easy mode: Cobbe et al. 2020, "Leveraging Procedural Generation to Benchmark RL"
NORMALISATION_EASY = {
    "coinrun": (5, 10), "starpilot": (2.5, 64), "caveflyer": (3.5, 12), "dodgeball": (1.5, 19),
    "fruitbot": (-1.5, 32.4), "chaser": (0.5, 13), "miner": (1.5, 13), "jumper": (3, 10),
    "leaper": (3, 10), "maze": (5, 10), "bigfish": (1, 40), "heist": (3.5, 10),
    "climber": (2, 12.6), "plunder": (4.5, 30), "ninja": (3.5, 10), "bossfight": (0.5, 13),
}  # fmt: skip


@dataclass
class ProcgenRun:
    name: str
    game: str
    steps: list[float]  # agent steps at each evaluation
    minutes: list[float]
    train_mean: list[float | None]  # the actors' 100-game mean at that step
    unseen: list[float]
    train_levels: list[float]
    curve_steps: list[float]  # the actors' 100-game mean at every logged step
    curve: list[float]

    def normalised(self, score: float | None) -> str:
        if score is None:
            return "-"
        low, high = NORMALISATION_EASY[self.game]
        return f"{score:.2f} ({(score - low) / (high - low):.2f})"


def load(client: mlflow.MlflowClient, run_id: str) -> ProcgenRun:
    run = client.get_run(run_id)
    start = run.info.start_time

    def history(key: str) -> list:
        return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)

    frames = history("frames")
    frame_steps = [m.step for m in frames]

    def steps_at(step: int) -> float:  # the frame count logged at or before this learner step
        i = max(bisect.bisect_right(frame_steps, step) - 1, 0)
        return frames[i].value if frames else float("nan")

    episodes = history("episode/return")
    curve_steps = [steps_at(m.step) for m in episodes]

    def train_mean_at(step: int) -> float | None:
        before = [m.value for m in episodes if m.step <= step]
        return before[-1] if before else None

    unseen, train_levels = history("eval/return_mean"), history("eval_train/return_mean")
    by_step = {m.step: m.value for m in train_levels}
    points = [m for m in unseen if m.step in by_step]
    env_id = run.data.params.get("data.env_id", "procgen/?")
    return ProcgenRun(
        name=run.info.run_name,
        game=game_name(env_id),
        steps=[steps_at(m.step) for m in points],
        minutes=[(m.timestamp - start) / 60_000 for m in points],
        train_mean=[train_mean_at(m.step) for m in points],
        unseen=[m.value for m in points],
        train_levels=[by_step[m.step] for m in points],
        curve_steps=curve_steps,
        curve=[m.value for m in episodes],
    )


def table(run: ProcgenRun) -> str:
    head = ["steps (M)", "minutes", "training levels, last 100 games", "eval: unseen levels",
            "eval: training levels", "gap (training - unseen)"]  # fmt: skip
    rows = [f"**{run.name}** ({run.game}; normalised score in brackets)", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for i in range(len(run.steps)):
        cells = [f"{run.steps[i] / 1e6:.2f}", f"{run.minutes[i]:.1f}", run.normalised(run.train_mean[i]),
                 run.normalised(run.unseen[i]), run.normalised(run.train_levels[i]),
                 f"{run.train_levels[i] - run.unseen[i]:+.1f}"]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(runs: list[ProcgenRun], path: str) -> None:
    fig = Figure(figsize=(5.5 * len(runs), 4), dpi=100)
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, run in zip(axes, runs, strict=True):
        ax.plot([s / 1e6 for s in run.curve_steps], run.curve, color="tab:blue", alpha=0.6,
                label="training levels: actors' last 100 games")  # fmt: skip
        ax.plot([s / 1e6 for s in run.steps], run.train_levels, "o-", color="tab:blue", label="eval: training levels")
        ax.plot([s / 1e6 for s in run.steps], run.unseen, "s-", color="tab:orange", label="eval: unseen levels")
        ax.set_title(f"{run.name} ({run.game}, easy)")
        ax.set_xlabel("agent steps (millions)")
        ax.set_ylabel("score (raw)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri())
    parser.add_argument("--experiment", default="procgen")
    parser.add_argument("--runs", nargs="+", required=True, help="run names")
    parser.add_argument("--plot", help="PNG file: one panel per run")
    args = parser.parse_args()
    client = mlflow.MlflowClient(args.tracking_uri)
    try:
        runs = [load(client, run_id) for run_id in find_runs(client, args.experiment, args.runs)]
    except ValueError as err:
        parser.error(str(err))
    for run in runs:
        print(table(run), end="\n\n")
    if args.plot:
        plot(runs, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
