"""Plot frames vs mean episode return of an MLflow run and print its summary.

python bench/plot_run.py --experiment pong --run-name pong-60min-bf16 --out docs/pong_60min.png
"""

from __future__ import annotations

import argparse
import json
import time

import mlflow
from matplotlib.figure import Figure  # no pyplot: no GUI backend needed

from impala_lit.cli import default_tracking_uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--run-name", help="default: the newest run of the experiment")
    parser.add_argument("--tracking-uri", default=default_tracking_uri())
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args()

    client = mlflow.MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        parser.error(f"--experiment: no experiment named {args.experiment!r} in {args.tracking_uri}")
    query = f"attributes.run_name = '{args.run_name}'" if args.run_name else ""
    runs = client.search_runs([experiment.experiment_id], query, order_by=["start_time DESC"], max_results=1)
    if not runs:
        parser.error(f"--run-name: no run named {args.run_name!r} in experiment {args.experiment!r}")
    run = runs[0]

    def history(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}

    frames, returns, fps = history("frames"), history("episode/return"), history("fps")
    steps = sorted(set(frames) & set(returns))
    xs, ys = [frames[s] / 1e6 for s in steps], [returns[s] for s in steps]

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    ax.plot(xs, ys)
    ax.set_xlabel("emulator frames (millions)")
    ax.set_ylabel("mean return, last 100 games")
    ax.set_title(f"{args.experiment}: {run.info.run_name}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out)

    wall = (run.info.end_time or int(time.time() * 1000)) - run.info.start_time
    summary = {
        "run": run.info.run_name,
        "status": run.info.status,
        "wall_minutes": round(wall / 60000, 1),
        "frames": int(max(frames.values())) if frames else 0,
        "end_to_end_fps": round(max(frames.values()) / (wall / 1000)) if frames and wall else None,
        "fps_logged_mean": round(sum(fps.values()) / len(fps)) if fps else None,
        "return_first": ys[0] if ys else None,
        "return_last": ys[-1] if ys else None,
        "return_best": max(ys) if ys else None,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
