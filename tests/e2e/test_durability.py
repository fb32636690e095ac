"""Nothing acknowledged is lost: SIGKILL the server mid-stream of writes, restart, look."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

from tests.server_fixture import KublingServer


def _writer(server: KublingServer, prefix: str, acknowledged: list[str],
            stop: threading.Event) -> None:
    context = server.ssl_context()
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=5)
    i = 0
    try:
        while not stop.is_set():
            name = f"{prefix}-{i}"
            body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": name}, "data": {"i": str(i)}})
            conn.request("POST", "/api/v1/namespaces/default/configmaps", body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 201:
                acknowledged.append(name)
            i += 1
    except (OSError, http.client.HTTPException):
        return  # the server died under us: that is the point
    finally:
        conn.close()


def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    server = KublingServer(tmp_path / "data")
    server.start()
    acknowledged: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(server, f"w{n}", acknowledged, stop))
               for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    server.kill()
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acknowledged) > 50, "the writers should have made progress before the kill"
    ca_before = (tmp_path / "data" / "tls" / "ca.crt").read_bytes()

    server.start()
    try:
        core = server.api_client()
        from kubernetes import client

        names = {cm.metadata.name for cm in
                 client.CoreV1Api(core).list_namespaced_config_map("default").items}
        missing = [n for n in acknowledged if n not in names]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        # the restart reused the cluster's identity
        assert (tmp_path / "data" / "tls" / "ca.crt").read_bytes() == ca_before
        server.kubectl("get", "ns", "default")
    finally:
        server.stop()


def test_sigterm_exits_cleanly_and_restart_keeps_data(tmp_path: Path) -> None:
    server = KublingServer(tmp_path / "data")
    server.start()
    server.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep",
                                                             "namespace": "default"}}))
    assert server.stop() == 0
    log = server.read_log()
    assert "kubling is ready in" in log and "Traceback" not in log
    for mode in (tmp_path / "data" / "kubeconfig.yaml", tmp_path / "data" / "tls" / "ca.key"):
        assert mode.stat().st_mode & 0o777 == 0o600
    server.start()
    try:
        out = server.kubectl("get", "cm", "keep", "-n", "default", "-o", "name").stdout
        assert out.strip() == "configmap/keep"
    finally:
        server.stop()


def test_port_in_use_is_reported(tmp_path: Path, kubling: KublingServer) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "kubling.cli.main", "server", "--data-dir",
         str(tmp_path / "d"), "--https-port", str(kubling.port)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 1
    assert f"port {kubling.port} is in use by pid" in result.stderr
    assert "pass --https-port" in result.stderr
