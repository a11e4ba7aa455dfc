"""Screenshot of the MLflow UI comparing runs, taken with headless Chromium (for the README).

python bench/screenshot_mlflow.py --experiment cartpole --runs RUN_ID RUN_ID --out docs/mlflow_compare.png
python bench/screenshot_mlflow.py --experiment pong --page chart --filter "attributes.run_name LIKE 'F%'" \
    --metric episode/return --x-metric frames --out docs/mlflow_pong_runs.png

Starts ``mlflow ui`` on the store (default: the embedded ``mlflow/mlflow.db``) on 127.0.0.1,
opens the run-comparison page (or, with ``--page chart``, the experiment's chart view: the
runs that match ``--filter``, the charts of ``--metric``, against ``--x-metric``) and writes a
PNG. Needs ``chromium`` on the PATH (Debian: ``apt-get install chromium``).

The chart view's settings travel the way the UI's own "Share" button sends them: a view state
saved as the experiment tag ``mlflow.sharedViewState.<key>`` (plain JSON is accepted) and opened
with ``?viewStateShareKey=<key>``; the tag stays, so the same view opens in any browser.
"""

from __future__ import annotations

import argparse
import hashlib
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


def share_chart_view(client: mlflow.MlflowClient, experiment_id: str, search: str, metric: str, x_metric: str) -> str:
    """Save a chart view (runs matching ``search``, charts of ``metric`` against ``x_metric``) as the
    experiment's shared view state; returns its key."""
    state = {
        "searchFilter": search,
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "runsHiddenMode": "SHOW_ALL",
        "hideEmptyCharts": True,
        "chartsSearchFilter": metric,
        "globalLineChartConfig": {"xAxisKey": "metric", "lineSmoothness": 0, "selectedXAxisMetricKey": x_metric},
        # one section holding one wide chart (the UI's default: three narrow ones per row)
        "compareRunSections": [
            {
                "uuid": "impala-lit-section",
                "name": metric.split("/")[0],
                "display": True,
                "isReordered": False,
                "columns": 1,
                "cardHeight": 520,
            },
        ],
        "compareRunCharts": [
            {
                "uuid": "impala-lit-chart",
                "type": "LINE",
                "metricSectionId": "impala-lit-section",
                "deleted": False,
                "isGenerated": True,
                "runsCountToCompare": 20,
                "metricKey": metric,
                "selectedMetricKeys": [metric],
                "scaleType": "linear",
                "xAxisScaleType": "linear",
                "xAxisKey": "metric",
                "selectedXAxisMetricKey": x_metric,
                "lineSmoothness": 0,
                "useGlobalLineSmoothing": False,
                "useGlobalXaxisKey": False,
            },
        ],
        "isAccordionReordered": False,
    }
    key = "impala-lit-" + hashlib.sha1(json.dumps(state, sort_keys=True).encode()).hexdigest()[:12]
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{key}", json.dumps(state))
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=f"sqlite:///{ROOT / 'mlflow' / 'mlflow.db'}")
    parser.add_argument("--experiment", default="cartpole")
    parser.add_argument("--runs", nargs="*", help="run ids (default: the two newest runs)")
    parser.add_argument("--page", choices=["compare", "chart"], default="compare")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "mlflow_compare.png")
    parser.add_argument("--size", default="1600,1400")
    parser.add_argument("--filter", default="", help="chart page: MLflow search filter choosing the runs")
    parser.add_argument("--metric", default="episode/return", help="chart page: the charts to show")
    parser.add_argument("--x-metric", default="frames", help="chart page: the metric on the x axis")
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
            key = share_chart_view(client, experiment.experiment_id, args.filter, args.metric, args.x_metric)
            query = urllib.parse.urlencode({"compareRunsMode": "CHART", "viewStateShareKey": key})
            url = f"{base}/#/experiments/{experiment.experiment_id}/runs?{query}"
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
