"""``kubling simulate`` joins simulated nodes to a running cluster and leaves on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.server_fixture import running_server


def test_simulate_joins_nodes_and_stops_cleanly(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubling.cli.main", "simulate", "--nodes", "2",
             "--prefix", "extra", "--kubeconfig", str(server.kubeconfig)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            out = ""
            while time.monotonic() < deadline:
                out = server.kubectl("get", "nodes", "--no-headers").stdout
                if out.count(" Ready ") == 2:
                    break
                time.sleep(0.2)
            assert "extra-0" in out and "extra-1" in out and out.count(" Ready ") == 2
            server.kubectl("run", "p", "--image=nginx")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if "Running" in server.kubectl("get", "pod", "p").stdout:
                    break
                time.sleep(0.2)
            assert "Running" in server.kubectl("get", "pod", "p").stdout
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "Traceback" not in err


def test_simulate_without_a_cluster_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubling.cli.main", "simulate", "--kubeconfig",
         str(tmp_path / "missing.yaml")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "pass --kubeconfig" in result.stderr
