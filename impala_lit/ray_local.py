"""A real multi-node Ray cluster on 127.0.0.1, to try the Ray-actor path on one machine (tests, benchmarks).

Each node is a separate ``ray start`` process tree, as on a real cluster. Ray 2.60's head turns token
authentication on and writes ``~/.ray/auth_token``; whoever joins (nodes, the learner) needs
``RAY_AUTH_MODE=token`` (:data:`RAY_ENV`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RAY_ENV = {"RAY_AUTH_MODE": "token"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    ray = str(Path(sys.executable).with_name("ray"))
    return subprocess.run([ray, *args], capture_output=True, text=True, env={**os.environ, **RAY_ENV}, timeout=timeout)


def _checked(*args: str) -> None:
    done = _ray(*args)
    if done.returncode != 0:
        raise RuntimeError(f"`ray {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


@contextmanager
def local_ray_cluster(nodes: int = 2, cpus_per_node: int = 1, port: int | None = None,
                      wait_s: float = 90.0) -> Iterator[str]:  # fmt: skip
    """Start a head and ``nodes - 1`` worker nodes; yield the address once every node has registered.

    ``ray stop --force`` on exit stops every Ray process of this user on the machine."""
    port = port or _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", "--disable-usage-stats"]
    try:
        _checked("start", "--head", f"--port={port}", "--include-dashboard=false", *common)
        for _ in range(nodes - 1):
            _checked("start", f"--address={address}", *common)
        # `ray start` returns before the head's monitor reports the nodes ("No cluster status..."): poll
        deadline, status = time.monotonic() + wait_s, ""
        while time.monotonic() < deadline:
            status = _ray("status", f"--address={address}", timeout=60).stdout
            if status.count(" node_") == nodes and f"/{float(nodes * cpus_per_node)} CPU" in status:
                break
            time.sleep(1.0)
        else:
            raise RuntimeError(f"the local Ray cluster did not show {nodes} nodes within {wait_s:.0f} s: {status}")
        yield address
    finally:
        _ray("stop", "--force")
