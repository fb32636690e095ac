"""``pods/proxy``, ``services/proxy``, ``nodes/proxy`` and ``kubectl proxy`` end to end: a real
server with its agent, busybox httpd pods, the real kubectl. WebSockets go through the same
paths to a small echo server in a pod of the offline python image.

The server comes from tests/agent_fixture.py (this host's one agent slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_node_agent import wait_running
from tests.server_fixture import REPO, KublingServer


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


@contextlib.contextmanager
def kubectl_proxy(server: KublingServer) -> Iterator[str]:
    """``kubectl proxy --port=0`` running; yields its ``127.0.0.1:port``."""
    proc = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(server.kubeconfig), "--cache-dir",
         str(server.cache_dir), "proxy", "--port=0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"Starting to serve on (127\.0\.0\.1:\d+)", line)
        assert match, line
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def test_kubectl_proxy_serves_a_service(server: KublingServer) -> None:
    with kubectl_proxy(server) as address:
        url = f"http://{address}/api/v1/namespaces/default/services/web:80/proxy/"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read().decode().strip() == "hello-proxy"
        try:
            urllib.request.urlopen(url.replace("web:80", "web:81"), timeout=10)
            raise AssertionError("expected a 503")
        except urllib.error.HTTPError as err:
            assert err.code == 503
            status: Any = json.loads(err.read())
            assert status["reason"] == "ServiceUnavailable"


#: A WebSocket echo server (RFC 6455, text and binary frames up to 64 KiB, close answered)
#: with the Python standard library only; it replies to each message with the path it was
#: reached on, so the test sees what the proxy forwarded.
WS_ECHO = r"""
import base64, hashlib, socketserver, struct
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        request = self.rfile.readline().decode().split()
        headers = {}
        while (line := self.rfile.readline().decode().strip()):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        accept = base64.b64encode(hashlib.sha1(
            (headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                          "\r\n\r\n").encode())
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                return
            reply = (request[1] + " " if opcode == 1 else "").encode() + data
            size = len(reply)
            frame = bytes([0x80 | opcode]) + (bytes([size]) if size < 126
                                              else b"\x7e" + struct.pack(">H", size))
            self.wfile.write(frame + reply)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("", 8765), Echo).serve_forever()
"""


@pytest.fixture(scope="module")
def ws_echo(server: AgentServer) -> str:
    subprocess.run([sys.executable, "-m", "kubling.cli.main", "image", "build", "python",
                    "--data-dir", str(server.data_dir)], check=True, capture_output=True,
                   cwd=REPO)
    manifest = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "ws", "labels": {"app": "ws"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "main", "image": "python:3.11", "imagePullPolicy": "Never",
                    "command": ["python3", "-u", "-c", WS_ECHO],
                    "ports": [{"containerPort": 8765, "name": "ws"}]}]}}
    server.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    server.kubectl("create", "service", "clusterip", "ws", "--tcp=80:8765")
    wait_running(server, "ws")
    return "ws"


async def _echo(url: str, ssl_context: Any) -> list[Any]:
    """Open a WebSocket, send a text and a 40 KiB binary message, read both answers."""
    payload = bytes(range(256)) * 160
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url, ssl=ssl_context if ssl_context is not None else True, timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
        await ws.send_str("hello")
        text = await asyncio.wait_for(ws.receive(), 10)
        await ws.send_bytes(payload)
        binary = await asyncio.wait_for(ws.receive(), 10)
        return [text.data, binary.data == payload]


def test_websockets_through_pod_and_service_proxy(server: AgentServer, ws_echo: str) -> None:
    base = server.url.replace("https://", "wss://")
    pod_url = f"{base}/api/v1/namespaces/default/pods/ws:8765/proxy/chat?room=1"
    assert asyncio.run(_echo(pod_url, server.ssl_context())) == ["/chat?room=1 hello", True]
    svc_url = f"{base}/api/v1/namespaces/default/services/ws:80/proxy/svc"
    assert asyncio.run(_echo(svc_url, server.ssl_context())) == ["/svc hello", True]


def test_websocket_refused_by_the_target_is_relayed(server: AgentServer, ws_echo: str) -> None:
    """The httpd pod does not speak WebSocket: its answer comes back, no hang, no 101."""
    base = server.url.replace("https://", "wss://")

    async def handshake_status(path: str) -> int:
        try:
            await _echo(f"{base}/api/v1/namespaces/default/pods/{path}", server.ssl_context())
        except aiohttp.WSServerHandshakeError as err:
            return err.status
        return 101

    assert asyncio.run(asyncio.wait_for(handshake_status("web:8080/proxy/"), 20)) != 101
    assert asyncio.run(asyncio.wait_for(handshake_status("ws:9/proxy/"), 20)) == 503


def test_kubectl_proxy_carries_websockets(server: AgentServer, ws_echo: str) -> None:
    with kubectl_proxy(server) as address:
        url = f"ws://{address}/api/v1/namespaces/default/services/ws:80/proxy/via-kubectl"
        assert asyncio.run(_echo(url, None)) == ["/via-kubectl hello", True]
