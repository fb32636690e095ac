"""``pods/proxy``, ``services/proxy``, ``nodes/proxy`` and ``kubectl proxy`` end to end: a real
server with its agent, busybox httpd pods, the real kubectl.

The server comes from tests/agent_fixture.py (this host's one agent slot).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_node_agent import wait_running
from tests.server_fixture import KublingServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("proxy")) as srv:
        backend = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "web", "labels": {"app": "web"}},
                   "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                       "name": "main", "image": "busybox:latest",
                       "imagePullPolicy": "IfNotPresent",
                       "command": ["sh", "-c", "mkdir -p /www/sub && echo hello-proxy > "
                                   "/www/index.html && echo deeper > /www/sub/page.txt"
                                   " && exec httpd -f -p 8080 -h /www"],
                       "ports": [{"containerPort": 8080, "name": "http"}]}]}}
        srv.kubectl("apply", "-f", "-", input=json.dumps(backend))
        srv.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080")
        wait_running(srv, "web")
        yield srv


def raw(server: KublingServer, path: str) -> subprocess.CompletedProcess[str]:
    return server.kubectl("get", "--raw", path, check=False)


def status_of(result: subprocess.CompletedProcess[str]) -> str:
    """kubectl prints a failed raw GET's Status as ``Error from server (Reason): message``."""
    return result.stderr.strip()


def test_pod_proxy_reaches_the_pod(server: KublingServer) -> None:
    base = "/api/v1/namespaces/default/pods"
    # Without a port the first declared container port is used.
    assert raw(server, f"{base}/web/proxy/").stdout.strip() == "hello-proxy"
    assert raw(server, f"{base}/web:8080/proxy/sub/page.txt").stdout.strip() == "deeper"
    assert raw(server, f"{base}/http:web:8080/proxy/index.html").stdout.strip() == \
        "hello-proxy"
    missing = raw(server, f"{base}/web:8080/proxy/nope.html")
    # httpd's 404 comes back as it is; kubectl words any 404 this way
    assert missing.returncode == 1 and "(NotFound)" in missing.stderr


def test_service_proxy_picks_a_ready_endpoint(server: KublingServer) -> None:
    base = "/api/v1/namespaces/default/services"
    wait_for(lambda: raw(server, f"{base}/web:80/proxy/").stdout.strip() == "hello-proxy",
             15, "the service proxy to answer")
    assert raw(server, f"{base}/web:80-8080/proxy/sub/page.txt").stdout.strip() == "deeper"


def test_proxy_errors_are_statuses(server: KublingServer) -> None:
    pods, svcs = "/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/services"
    refused = raw(server, f"{pods}/web:9/proxy/")
    assert refused.returncode == 1
    assert "error trying to reach service: dial tcp" in status_of(refused)
    assert ":9: connect: connection refused" in status_of(refused)
    assert "ServiceUnavailable" in status_of(refused)
    bad = raw(server, f"{pods}/ftp:web:80/proxy/")
    assert 'invalid pod request "ftp:web:80"' in status_of(bad)
    assert "BadRequest" in status_of(bad)
    server.kubectl("create", "service", "clusterip", "lonely", "--tcp=80:8080")
    empty = raw(server, f"{svcs}/lonely:80/proxy/")
    assert 'no endpoints available for service "lonely"' in status_of(empty)
    wrong_port = raw(server, f"{svcs}/web:81/proxy/")
    assert 'no service port 81 found for service "web"' in status_of(wrong_port)
    gone = raw(server, f"{pods}/nobody/proxy/")
    assert 'pods "nobody" not found' in status_of(gone)
    server.kubectl("delete", "service", "lonely")


def test_node_proxy_reaches_the_agent(server: KublingServer) -> None:
    node = server.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout
    assert raw(server, f"/api/v1/nodes/{node}/proxy/healthz").stdout.strip() == "ok"
    listed = json.loads(raw(server, f"/api/v1/nodes/{node}/proxy/pods").stdout)
    assert "web" in {p["metadata"]["name"] for p in listed["items"]}


def test_kubectl_proxy_serves_a_service(server: KublingServer) -> None:
    proc = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(server.kubeconfig), "--cache-dir",
         str(server.cache_dir), "proxy", "--port=0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"Starting to serve on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        url = (f"http://127.0.0.1:{match.group(1)}/api/v1/namespaces/default/services/"
               "web:80/proxy/")
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read().decode().strip() == "hello-proxy"
        try:
            urllib.request.urlopen(url.replace("web:80", "web:81"), timeout=10)
            raise AssertionError("expected a 503")
        except urllib.error.HTTPError as err:
            assert err.code == 503
            status: Any = json.loads(err.read())
            assert status["reason"] == "ServiceUnavailable"
    finally:
        proc.terminate()
        proc.wait(10)
