"""``kubectl port-forward`` end to end: pods, Services and Deployments, over the WebSocket
tunnel kubectl 1.32 uses first (``SPDY/3.1+portforward.k8s.io``) and the raw SPDY upgrade
(``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``), through the API server's byte pipe to the
agent, which connects inside the pod's network namespace. Also the official Python
client's ``stream()`` exec and ``portforward()``, bad input (a port with nothing behind
it, a client that drops, a malformed frame), and no descriptor left behind afterwards.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for

TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}}
FILE_MB = 10
SERVE = (f"mkdir -p /www && dd if=/dev/urandom of=/www/big bs=1M count={FILE_MB} 2>/dev/null"
         " && echo local > /www/local.txt && sha256sum /www/big > /www/sum"
         " && httpd -p 8080 -h /www && httpd -f -p 127.0.0.1:8081 -h /www")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("portforward")) as srv:
        yield srv


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def get(srv: AgentServer, *what: str) -> dict[str, Any]:
    result = srv.kubectl("get", *what, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


@pytest.fixture(scope="module")
def web(server: AgentServer) -> Iterator[str]:
    """A Deployment of one busybox httpd (``/big``: 10 MB of random bytes on :8080, and a
    server on the pod's loopback only, :8081) behind the Service ``web`` (80 → 8080).
    Deleted with its pods before the server stops: a ReplicaSet would otherwise replace
    the pods the fixture's teardown deletes, and leave one running after the server."""
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "httpd", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", SERVE], "ports": [{"containerPort": 8080}]}]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}}
    for manifest in (deployment, service):
        server.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def ready_pod() -> str:
        for pod in get(server, "pods", "-l", "app=web").get("items", []):
            if pod.get("status", {}).get("phase") == "Running":
                name = str(pod["metadata"]["name"])
                probe = server.kubectl("exec", name, "--", "cat", "/www/sum", check=False)
                if probe.returncode == 0 and probe.stdout.strip():
                    return name
        return ""

    yield str(wait_for(ready_pod, 90, "the web pod to serve"))
    server.kubectl("delete", "deployment", "web", "--cascade=foreground", "--wait=true",
                   "--timeout=60s", check=False, timeout=90)
    server.kubectl("delete", "service", "web", check=False)
    wait_for(lambda: not get(server, "pods", "-l", "app=web").get("items"), 60,
             "the web pods to be gone")


def big_sum(srv: AgentServer, pod: str) -> str:
    return srv.kubectl("exec", pod, "--", "cat", "/www/sum").stdout.split()[0]


class Forward:
    """A running ``kubectl port-forward`` and the local port it listens on."""

    def __init__(self, srv: AgentServer, target: str, remote: int, transport: str,
                 *more: int) -> None:
        env = {**os.environ, **TRANSPORTS[transport]}
        self.process = subprocess.Popen(
            ["kubectl", "--kubeconfig", str(srv.kubeconfig), "--cache-dir",
             str(srv.cache_dir), "port-forward", "--address", "127.0.0.1", target,
             *(f":{port}" for port in (remote, *more))], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, text=True)
        assert self.process.stdout is not None
        self.ports: dict[int, int] = {}  # the pod's port (a Service's is resolved) → local
        while len(self.ports) < 1 + len(more):
            line = self.process.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+) -> (\d+)", line)
            if match is None:
                self.close()
                raise AssertionError(f"port-forward did not start: {line!r} {self.errors()}")
            self.ports[int(match.group(2))] = int(match.group(1))
        self.port = next(iter(self.ports.values()))  # kubectl reports them in order

    def errors(self) -> str:
        return self.process.stderr.read() if self.process.stderr else ""

    def close(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return str(err or "")

    def fetch(self, path: str, timeout: float = 60, *, remote: int | None = None) -> bytes:
        port = self.port if remote is None else self.ports[remote]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                    timeout=timeout) as response:
            return bytes(response.read())


def concurrent_downloads(forward: Forward, clients: int) -> list[str]:
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        bodies = pool.map(lambda _: forward.fetch("/big"), range(clients))
        return [hashlib.sha256(body).hexdigest() for body in bodies]


@pytest.mark.parametrize("target", ["pod", "svc/web", "deploy/web"])
def test_twenty_clients_ten_megabytes_each(server: AgentServer, web: str, transport: str,
                                           target: str) -> None:
    remote = 80 if target == "svc/web" else 8080
    forward = Forward(server, f"pod/{web}" if target == "pod" else target, remote, transport)
    try:
        sums = concurrent_downloads(forward, 20)
    finally:
        forward.close()
    assert sums == [big_sum(server, web)] * 20


def test_two_ports_and_a_server_on_the_pods_loopback(server: AgentServer, web: str,
                                                transport: str) -> None:
    forward = Forward(server, f"pod/{web}", 8081, transport, 8080)
    try:
        assert forward.fetch("/local.txt") == b"local\n"
        assert forward.fetch("/local.txt", remote=8080) == b"local\n"
    finally:
        forward.close()


def test_port_with_nothing_listening(server: AgentServer, web: str, transport: str) -> None:
    forward = Forward(server, f"pod/{web}", 9, transport)
    try:
        with socket.create_connection(("127.0.0.1", forward.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert sock.recv(100) == b""  # closed: nothing was there
    finally:
        err = forward.close()
    assert "error forwarding port 9 to pod" in err
    assert "connect: connection refused" in err


def test_client_dropping_mid_stream(server: AgentServer, web: str, transport: str) -> None:
    forward = Forward(server, f"pod/{web}", 8080, transport)
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", forward.port), timeout=10) as sock:
                sock.sendall(b"GET /big HTTP/1.0\r\n\r\n")
                assert sock.recv(65536)
        assert hashlib.sha256(forward.fetch("/big")).hexdigest() == big_sum(server, web)
    finally:
        forward.close()


# -- the official Python client ----------------------------------------------------------


def test_python_client_exec_and_port_forward(server: AgentServer, web: str) -> None:
    from kubernetes import client
    from kubernetes.stream import portforward, stream

    api = client.CoreV1Api(server.api_client())
    out = stream(api.connect_get_namespaced_pod_exec, web, "default",
                 command=["sh", "-c", "echo hello; echo oops >&2"], stderr=True, stdin=False,
                 stdout=True, tty=False)
    assert "hello" in out
    session = stream(api.connect_get_namespaced_pod_exec, web, "default",
                     command=["sh", "-c", "exit 4"], stderr=True, stdin=False, stdout=True,
                     tty=False, _preload_content=False)
    session.run_forever(timeout=20)
    assert session.returncode == 4
    forwarded = portforward(api.connect_get_namespaced_pod_portforward, web, "default",
                            ports="8080")
    sock = forwarded.socket(8080)
    sock.setblocking(True)
    sock.sendall(b"GET /local.txt HTTP/1.0\r\n\r\n")
    reply = b""
    while chunk := sock.recv(4096):
        reply += chunk
    sock.close()
    assert reply.endswith(b"local\n")
    assert forwarded.error(8080) is None


# -- malformed input and leaks -----------------------------------------------------------


def spdy_upgrade(server: AgentServer, pod: str) -> ssl.SSLSocket:
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    sock = server.ssl_context().wrap_socket(raw, server_hostname=host)
    sock.sendall((f"POST /api/v1/namespaces/default/pods/{pod}/portforward HTTP/1.1\r\n"
                  f"Host: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                  "X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
                  ).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_until_closed(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except (ConnectionError, ssl.SSLError):
            return data
        if not chunk:
            return data
        data += chunk


def test_malformed_frame_ends_the_session(server: AgentServer, web: str) -> None:
    sock = spdy_upgrade(server, web)
    try:
        # A SYN_STREAM too short to hold its stream ids.
        sock.sendall(struct.pack(">HHI", 0x8003, 1, 3) + b"bad")
        answer = read_until_closed(sock)
    finally:
        sock.close()
    control, frame_type = struct.unpack(">HH", answer[:4])
    assert (control, frame_type) == (0x8003, 7)  # GOAWAY
    assert struct.unpack(">I", answer[12:16])[0] == 1  # PROTOCOL_ERROR


def test_not_an_upgrade_is_refused(server: AgentServer, web: str) -> None:
    result = server.kubectl("get", "--raw",
                            f"/api/v1/namespaces/default/pods/{web}/portforward", check=False)
    assert result.returncode == 1
    assert "Upgrade request required" in result.stderr


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_no_descriptor_or_process_left_after_200_sessions(server: AgentServer,
                                                          web: str) -> None:
    assert server.process is not None
    pid = server.process.pid
    concurrent_downloads(Forward(server, f"pod/{web}", 8080, "websocket"), 1)  # warm up
    time.sleep(1)
    before, kids_before, threads_before = open_fds(pid), children(pid), threads(pid)
    forwards = [Forward(server, f"pod/{web}", 8080, transport)
                for transport in ("websocket", "spdy")]
    try:
        for index in range(40):
            concurrent_downloads(forwards[index % 2], 2)
            if index % 10 == 0:  # kubectl gives up after a refused connection: one each
                refused = Forward(server, f"pod/{web}", 9, ("websocket", "spdy")[index % 2])
                with socket.create_connection(("127.0.0.1", refused.port), timeout=10) as sock:
                    assert sock.recv(10) == b""
                refused.close()
            with socket.create_connection(("127.0.0.1", forwards[index % 2].port),
                                          timeout=10) as sock:
                sock.sendall(b"GET /big HTTP/1.0\r\n\r\n")
                sock.recv(1000)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda i: server.kubectl(
                "exec", web, "--", "sh", "-c", f"exit {i % 3}", check=False).returncode,
                range(60)))
        assert codes == [i % 3 for i in range(60)]
        for _ in range(20):
            sock = spdy_upgrade(server, web)
            sock.sendall(b"\x80\x03\x00\x63\x00\x00\x00\x00")  # an unknown control frame
            read_until_closed(sock)
            sock.close()
    finally:
        for forward in forwards:
            forward.close()
    wait_for(lambda: open_fds(pid) <= before + 2, 20,
             f"descriptors to be released (before {before}, now {open_fds(pid)})")
    wait_for(lambda: set(children(pid)) <= set(kids_before), 20,
             f"exec processes to be reaped: {children(pid)} vs {kids_before}")
    wait_for(lambda: threads(pid) <= threads_before + 2, 20,
             f"threads to end (before {threads_before}, now {threads(pid)})")
