"""The local test cluster is self-contained: its own token and temp dir, and it stops only its own processes."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from impala_lit.testing import _status, local_ray_cluster

pytestmark = pytest.mark.slow  # two real Ray clusters


@pytest.mark.xdist_group("ray")
def test_a_test_cluster_stops_only_what_it_started() -> None:
    home_token = Path.home() / ".ray" / "auth_token"
    had_home_token = home_token.exists()
    with local_ray_cluster(nodes=1) as unrelated:  # stands for a Ray node the user runs on this machine
        unrelated_pids = unrelated.processes()
        with local_ray_cluster(nodes=2) as cluster:
            mine = cluster.processes()
            assert len(mine) >= 6  # per node at least `ray start`, a raylet, a log monitor; the head's GCS
            names = {psutil.Process(pid).name() for pid in mine}
            assert {"gcs_server", "raylet"} <= names, names
            assert not set(mine) & set(unrelated_pids)
            assert cluster.env["RAY_AUTH_MODE"] == "token"
            token = Path(cluster.env["RAY_AUTH_TOKEN_PATH"])
            assert token.exists() and token.stat().st_mode & 0o077 == 0
        assert cluster.processes() == []
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in mine)
        assert not token.parent.exists()  # its temp dir (logs, sockets, token) is gone with it
        # the unrelated cluster lives on, whole, and still answers
        assert all(psutil.pid_exists(pid) for pid in unrelated_pids)
        assert "1.0 CPU" in _status(unrelated.address, unrelated.env)
    assert unrelated.processes() == []
    assert home_token.exists() == had_home_token  # nothing written to the user's ~/.ray
    assert os.environ.get("RAY_AUTH_TOKEN_PATH") != str(token)
