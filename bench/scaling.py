"""End-to-end frames/s on Pong with more actor nodes (Ray) or more learners (DDP).

python bench/scaling.py --seconds 40

Each row is a real ``recipes/pong.py fit`` (defaults: ale_vector, bf16-mixed learner, batch
32 x 20 per learner), measured like ``bench/throughput.py``'s ``end_to_end_fps``:

- local actors, 1 learner (the baseline);
- Ray actors on a 1-node cluster (2 CPUs) and on a 2-node cluster (1 CPU each), both on this machine;
- 2 DDP learners (gloo on CPU, or one GPU each), local actors split between them.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from throughput import end_to_end_fps, machine  # noqa: E402

from impala_lit.testing import local_ray_cluster  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40.0, help="measuring time per row (after a 20 s warm-up)")
    parser.add_argument("--num-workers", dest="num_workers", type=int, default=2, help="actors, in all")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the learners run")
    cli = parser.parse_args()
    args = argparse.Namespace(precision="bf16-mixed", num_workers=cli.num_workers, envs_per_worker=16, batch_size=32,
                              unroll_length=20, network="shallow", backend="ale_vector", device=cli.device)  # fmt: skip
    rows: dict[str, dict] = {}

    def measure(name: str, extra: list[str] = (), env: dict | None = None) -> None:
        fps, details = end_to_end_fps(args, cli.seconds, extra=list(extra), env=env)
        rows[name] = {"end_to_end_fps": round(fps, 1), "policy_lag_mean": round(details["policy_lag_mean"], 2)}
        print(f"{name:<40}{fps:>10,.0f} frames/s", flush=True)

    measure("local actors, 1 learner")
    for nodes in (1, 2):
        cpus = max(1, (os.cpu_count() or 2) // nodes)  # the nodes share this machine's cores
        with local_ray_cluster(nodes, cpus) as cluster:
            ray_args = ["--data.actors=ray", f"--data.ray_address={cluster.address}"]
            measure(f"Ray actors, {nodes}-node cluster", ray_args, cluster.env)
    measure("local actors, 2 DDP learners", ["--trainer.devices=2", "--trainer.strategy=ddp"])
    print(json.dumps({"rows": rows, "machine": machine(), "settings": vars(args) | {"seconds": cli.seconds}}))


if __name__ == "__main__":
    main()
