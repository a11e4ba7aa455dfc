"""A real multi-node Ray cluster on 127.0.0.1, to try the Ray-actor path on one machine (tests, benchmarks).

Each node is a separate ``ray start --block`` process tree, as on a real cluster, started in a process
session of its own. The cluster keeps everything to itself: its Ray temp dir, and an authentication token
of its own (Ray 2.60 turns token authentication on whenever ``~/.ray/auth_token`` exists, so a cluster
that relied on that file worked or failed depending on what ran before it). On exit it stops exactly its
own processes, found by their session, never with ``ray stop``, which stops every Ray process of the user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_RAY = str(Path(sys.executable).with_name("ray"))


@dataclass(frozen=True)
class LocalRayCluster:
    """What a process needs to join the cluster, and the sessions its processes run in."""

    address: str
    env: dict[str, str]  # RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH: for `ray.init(address)` and `ray status`
    sessions: tuple[int, ...]  # one per node: the session id of its `ray start --block` process tree

    def processes(self) -> list[int]:
        """The pids of every process of this cluster still alive."""
        return _in_sessions(self.sessions)


def _in_sessions(sessions: tuple[int, ...]) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) in sessions and _state(int(entry)) != "Z":
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError, FileNotFoundError):
                pass
    return pids


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(address: str, env: dict[str, str]) -> str:
    done = subprocess.run([_RAY, "status", f"--address={address}"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)  # fmt: skip
    return done.stdout


def _stop(sessions: tuple[int, ...], grace_s: float = 10.0) -> None:
    """SIGTERM each node's process group, then SIGKILL whatever of those sessions is left."""
    for session in sessions:
        try:
            os.killpg(session, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while _in_sessions(sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _in_sessions(sessions):  # a raylet waits on its GCS for long after SIGTERM: measured > 15 s
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while _in_sessions(sessions) and time.monotonic() < deadline:
        time.sleep(0.1)


@contextmanager
def local_ray_cluster(nodes: int = 2, cpus_per_node: int = 1, port: int | None = None,
                      wait_s: float = 90.0) -> Iterator[LocalRayCluster]:  # fmt: skip
    """Start a head and ``nodes - 1`` worker nodes; yield the cluster once every node has registered."""
    port = port or _free_port()
    address = f"127.0.0.1:{port}"
    # short: Ray's unix sockets live under it and their paths must stay under 108 characters
    temp_dir = Path(tempfile.mkdtemp(prefix="ilray_"))
    token = temp_dir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", "--disable-usage-stats"]
    node_args = [["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp_dir}"]]
    node_args += [[f"--address={address}"]] * (nodes - 1)
    started: list[subprocess.Popen] = []
    try:
        for number, args in enumerate(node_args):
            log = open(temp_dir / f"node{number}.log", "w")  # noqa: SIM115 (the node outlives this block)
            started.append(subprocess.Popen([_RAY, "start", *args, *common], stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **env}, start_new_session=True))  # fmt: skip
            if number == 0:  # the workers need the head's GCS
                _wait_for(lambda: _status(address, env) != "", started, temp_dir, wait_s, "the head to answer")
        # `ray start` is up before the head's monitor reports the nodes ("No cluster status..."): poll
        expected = f"/{float(nodes * cpus_per_node)} CPU"
        _wait_for(lambda: expected in _status(address, env), started, temp_dir, wait_s, f"{nodes} nodes")
        yield LocalRayCluster(address, env, tuple(p.pid for p in started))
    finally:
        _stop(tuple(p.pid for p in started))
        for process in started:
            process.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for(ready, started: list[subprocess.Popen], temp_dir: Path, wait_s: float, what: str) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        dead = [number for number, process in enumerate(started) if process.poll() is not None]
        if dead:
            log = (temp_dir / f"node{dead[0]}.log").read_text()[-2000:]
            raise RuntimeError(f"`ray start` of local node {dead[0]} exited while waiting for {what}: {log}")
        if ready():
            return
        time.sleep(1.0)
    raise RuntimeError(f"the local Ray cluster at 127.0.0.1 did not show {what} within {wait_s:.0f} s")
