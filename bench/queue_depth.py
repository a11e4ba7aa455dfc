"""How many rollouts may wait for the learner: end-to-end frames/s against policy lag, Pong.

python bench/queue_depth.py --seconds 30

TorchRL's ``MultiAsyncCollector`` keeps one rollout per actor process in flight: a worker
writes its rollout into shared memory, then waits until the learner has taken it before it
collects the next. So the number of rollouts that can wait is the number of actor processes,
and the number of batches that can wait is ``num_workers * envs_per_worker / batch_size``.
The first three rows keep 32 environments and the batch at 32 x 20 and change how they are split:

- 2 x 16: a batch is two rollouts, one batch can wait;
- 4 x 8 and 8 x 4: more, smaller rollouts, more processes for the same cores;
- 2 x 32 (the Pong recipe's default): a batch is one rollout, two batches can
  wait (64 environments).

Each row is a real ``recipes/pong.py fit`` measured like ``bench/throughput.py``'s
``end_to_end_fps``. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import end_to_end_fps, machine  # noqa: E402

LAYOUTS = [(2, 16), (4, 8), (8, 4), (2, 32)]  # (num_workers, envs_per_worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring time per row (after a 20 s warm-up)")
    parser.add_argument("--backend", default="ale_vector", choices=["gymnasium", "ale_vector"])
    cli = parser.parse_args()
    rows = []
    print(f"{'workers x envs':<16}{'batches waiting':>16}{'frames/s':>12}{'policy lag':>12}", flush=True)
    for workers, envs in LAYOUTS:
        args = argparse.Namespace(precision="bf16-mixed", num_workers=workers, envs_per_worker=envs, batch_size=32,
                                  unroll_length=20, network="shallow", backend=cli.backend, device="cpu")  # fmt: skip
        fps, details = end_to_end_fps(args, cli.seconds)
        waiting, lag = workers * envs / 32, details["policy_lag_mean"]
        rows.append({"num_workers": workers, "envs_per_worker": envs, "batches_in_flight": waiting,
                     "end_to_end_fps": round(fps, 1), "policy_lag_mean": round(lag, 2)})  # fmt: skip
        print(f"{f'{workers} x {envs}':<16}{waiting:>16.1f}{fps:>12,.0f}{lag:>12.2f}", flush=True)
    settings = {"seconds": cli.seconds, "backend": cli.backend}
    print(json.dumps({"rows": rows, "machine": machine(), "settings": settings}))


if __name__ == "__main__":
    main()
