"""Screenshot of the MLflow UI comparing runs, taken with headless Chromium (for the README).

python bench/screenshot_mlflow.py --experiment cartpole --runs RUN_ID RUN_ID --out docs/mlflow_compare.png

Starts ``mlflow ui`` on the store (default: the embedded ``mlflow/mlflow.db``) on 127.0.0.1,
opens the run-comparison page (or, with ``--page chart``, the experiment's chart view) and
writes a PNG. Needs ``chromium`` on the PATH (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=f"sqlite:///{ROOT / 'mlflow' / 'mlflow.db'}")
    parser.add_argument("--experiment", default="cartpole")
    parser.add_argument("--runs", nargs="*", help="run ids (default: the two newest runs)")
    parser.add_argument("--page", choices=["compare", "chart"], default="compare")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "mlflow_compare.png")
    parser.add_argument("--size", default="1600,1400")
    args = parser.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        sys.exit("screenshot_mlflow.py: error: no chromium on the PATH (apt-get install chromium)")
    client = mlflow.MlflowClient(args.store)
    experiment = client.get_experiment_by_name(args.experiment)
    runs = args.runs or [r.info.run_id for r in client.search_runs([experiment.experiment_id], max_results=2)]
    port = free_port()
    ui = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", args.store,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        if args.page == "compare":
            query = urllib.parse.urlencode(
                {"runs": json.dumps(runs), "experiments": json.dumps([experiment.experiment_id])}
            )
            url = f"{base}/#/compare-runs?{query}"
        else:
            url = f"{base}/#/experiments/{experiment.experiment_id}?compareRunsMode=CHART"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={args.size}", "--virtual-time-budget=20000", f"--screenshot={args.out}", url],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        print(f"{args.out} <- {url}")
    finally:
        ui.terminate()
        ui.wait(timeout=30)


if __name__ == "__main__":
    main()
