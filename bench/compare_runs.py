"""Run a recipe with several settings and seeds, one after another, and compare the runs from MLflow.

python bench/compare_runs.py run --recipe pong --name adam --seeds 0 1 -- --model.optimizer adam
python bench/compare_runs.py run --recipe cartpole --name appo -- --config recipes/configs/cartpole_appo.yaml
python bench/compare_runs.py report --experiment pong --runs adam-s0 adam-s1 P6 --plot docs/pong_compare.png

``run``: arguments after ``--`` go to ``recipes/<recipe>.py fit``; each run is named
``<name>-s<seed>`` and seeded with ``--seed_everything N --data.seed N``, its console output goes
to ``runs/<name>-s<seed>.log``. Then, as ``report`` does for any runs already in the store: a
markdown table of frames and minutes to each score threshold, the best and last 100-game mean,
and (``--plot``) one figure of every run's curve against frames and against minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from curves import Curve, find_runs, load_curve
from matplotlib.figure import Figure  # no pyplot: no GUI backend needed

from impala_lit.app.tracking import default_tracking_uri

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = {"pong": [-10.0, 0.0, 10.0, 18.0, 20.0], "cartpole": [450.0]}
EXPERIMENTS = {"procgen_games": "procgen"}  # a recipe's MLflow experiment, where it is not the file's name


def run_recipe(recipe: str, name: str, seed: int, args: list[str], tracking_uri: str, log_prefix: str = "") -> str:
    """One ``fit`` of the recipe; returns the run's name. Its output goes to ``runs/<log_prefix><run name>.log``."""
    run_name = f"{name}-s{seed}"
    log = ROOT / "runs" / f"{log_prefix}{run_name}.log"
    log.parent.mkdir(exist_ok=True)
    command = [
        sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), "fit",
        f"--seed_everything={seed}", f"--data.seed={seed}",
        f"--trainer.logger.init_args.run_name={run_name}", *args,
    ]  # fmt: skip
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(command, env=dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri), stdout=out, stderr=out)
    status = "ok" if proc.returncode == 0 else f"exit code {proc.returncode}, see {log}"
    print(f"{run_name}: {time.perf_counter() - start:.0f} s, {status}", flush=True)
    return run_name


def table(curves: list[Curve], thresholds: list[float]) -> str:
    """Markdown: per run, frames (millions) and minutes to each threshold, best and last mean."""
    head = ["run", "frames (M)", "minutes", *[f"to {t:g}: M frames / min" for t in thresholds], "best", "last"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in curves:
        if not c.frames:
            rows.append(f"| {c.run_name} | no games finished yet |")
            continue
        cells = [c.run_name, f"{c.frames[-1] / 1e6:.2f}", f"{c.minutes[-1]:.1f}"]
        for t in thresholds:
            hit = c.first_reached(t)
            cells.append(f"{hit[0] / 1e6:.2f} / {hit[1]:.1f}" if hit else "-")
        cells += [f"{c.best:.2f}", f"{c.last:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(curves: list[Curve], title: str, path: str, ylabel: str = "mean return, last 100 games") -> None:
    """Every run's 100-game mean against frames (left) and minutes of training (right)."""
    fig = Figure(figsize=(11, 4), dpi=100)
    by_frames, by_minutes = fig.subplots(1, 2, sharey=True)
    for c in curves:
        points = [p for p, ok in zip(zip(c.frames, c.minutes, c.returns, strict=True), c.settled(), strict=True) if ok]
        frames, minutes, returns = zip(*points, strict=True) if points else ((), (), ())
        by_frames.plot([f / 1e6 for f in frames], returns, label=c.run_name)
        by_minutes.plot(minutes, returns, label=c.run_name)
    by_frames.set_xlabel("emulator frames (millions)")
    by_minutes.set_xlabel("minutes of training")
    by_frames.set_ylabel(ylabel)
    for ax in (by_frames, by_minutes):
        ax.grid(alpha=0.3)
    by_minutes.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    argv = sys.argv[1:]
    recipe_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri())
    common.add_argument("--thresholds", type=float, nargs="+", help="default: the experiment's (Pong -10 0 10 18 20)")
    common.add_argument("--plot", help="PNG file: every run against frames and against minutes")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", parents=[common], help="train, one run per seed, then report")
    run.add_argument("--recipe", required=True, choices=sorted(p.stem for p in (ROOT / "recipes").glob("*.py")))
    run.add_argument("--name", required=True)
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    report = commands.add_parser("report", parents=[common], help="table (and plot) of runs already in the store")
    report.add_argument("--experiment", required=True)
    report.add_argument("--runs", nargs="+", help="run names (default: every run of the experiment)")
    args = parser.parse_args(own)

    client = mlflow.MlflowClient(args.tracking_uri)
    if args.command == "run":
        experiment = EXPERIMENTS.get(args.recipe, args.recipe)
        names = [run_recipe(args.recipe, args.name, seed, recipe_args, args.tracking_uri) for seed in args.seeds]
    else:
        experiment, names = args.experiment, args.runs
    try:
        curves = [load_curve(client, run_id) for run_id in find_runs(client, experiment, names)]
    except ValueError as err:
        parser.error(str(err))
    thresholds = args.thresholds or THRESHOLDS.get(experiment, [])
    if args.command == "run":
        print(f"\n{args.name}: {' '.join(recipe_args) or '(recipe defaults)'}")
    print(table(curves, thresholds))
    if args.plot:
        plot(curves, f"{experiment}: mean return of the last 100 games", args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
