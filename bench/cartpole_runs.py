"""Run ``recipes/cartpole.py fit`` for several seeds and report frames to a mean return of 450.

python bench/cartpole_runs.py --name impala --seeds 1 2 3 -- --model.lr 0.003
python bench/cartpole_runs.py --name appo --seeds 1 2 3 -- --model impala_lit.APPOModule --model.num_epochs 4

Arguments after ``--`` go to the recipe. Runs go one after the other into a throwaway
MLflow store; one line of JSON per run, then a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parent.parent
TARGET = 450.0


def run_once(args: list[str], seed: int, workdir: Path) -> dict:
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    command = [
        sys.executable, str(ROOT / "recipes" / "cartpole.py"), "fit",
        f"--seed_everything={seed}", f"--data.seed={seed}", "--eval.every_n_steps=0",
        f"--checkpoint.dirpath={workdir / f'ckpt-{seed}'}",
        f"--trainer.logger.init_args.artifact_location={workdir / 'artifacts'}",
        "--trainer.enable_progress_bar=false", *args,
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(command, env=dict(os.environ, MLFLOW_TRACKING_URI=uri), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"seed": seed, "error": proc.stderr.strip().splitlines()[-1]}
    client = mlflow.MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("cartpole").experiment_id], order_by=["start_time DESC"])[0]
    returns = sorted(client.get_metric_history(run.info.run_id, "episode/return"), key=lambda m: m.step)
    frames = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "frames")}
    reached = next((m for m in returns if m.value >= TARGET), None)
    return {
        "seed": seed,
        "best": round(max(m.value for m in returns), 1),
        "final": round(returns[-1].value, 1),
        "frames_to_450": frames.get(reached.step) if reached else None,
        "frames": max(frames.values()),
        "wall_s": round(wall),
    }


def main() -> None:
    argv = sys.argv[1:]
    recipe_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(own)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            result = run_once(recipe_args, seed, Path(tmp))
            results.append(result)
            print(json.dumps({"name": args.name, **result}), flush=True)
    ok = [r for r in results if "best" in r]
    reached = [r for r in ok if r["frames_to_450"] is not None]
    print(f"\n{args.name}: {' '.join(recipe_args) or '(recipe defaults)'}")
    print(f"  best mean return per seed: {', '.join(str(r['best']) for r in ok)}")
    to_target = ", ".join(f"{r['frames_to_450']:,.0f}" for r in reached) or "-"
    print(f"  reached {TARGET:.0f}: {len(reached)}/{len(results)} seeds; frames to {TARGET:.0f}: {to_target}")


if __name__ == "__main__":
    main()
