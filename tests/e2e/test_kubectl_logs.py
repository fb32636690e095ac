"""``kubectl logs`` end to end: the real kubectl and the official Python client, through the
API server's ``pods/log`` to the node agent's HTTPS server, reading what conmon wrote.

One agent-enabled server for the module, built as ``test_node_agent.py`` builds its own
(busybox built into the data dir, a private CNI conf dir, the agent's server on a free
port); only one agent-enabled server may run on this host at a time, so this module never
runs alongside that one. The teardown deletes every pod, stops the server and removes the
``kubling0`` bridge, the ``kubling`` nft table and the ``kubling-`` namespaces it made.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.server_fixture import KublingServer, free_port

TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) (.*)$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("logs")) as srv:
        yield srv


# -- helpers -----------------------------------------------------------------------------


def get_pod(srv: KublingServer, name: str) -> dict[str, Any]:
    result = srv.kubectl("get", "pod", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script], **extra}


def apply_pod(srv: KublingServer, name: str, containers: list[dict[str, Any]], *,
              policy: str = "Always", labels: dict[str, str] | None = None,
              **spec: Any) -> None:
    manifest = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels or {}},
                "spec": {"restartPolicy": policy, "containers": containers,
                         "terminationGracePeriodSeconds": 1, **spec}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def wait_phase(srv: KublingServer, name: str, *phases: str, timeout: float = 30) -> None:
    try:
        wait_for(lambda: get_pod(srv, name).get("status", {}).get("phase") in phases,
                 timeout, f"pod {name} to be {'/'.join(phases)}")
    except AssertionError as err:
        raise AssertionError(f"{err}: {json.dumps(get_pod(srv, name).get('status'))}") from None


def logs(srv: KublingServer, *args: str, check: bool = True,
         timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return srv.kubectl("logs", *args, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def hello(server: AgentServer) -> str:
    """A running pod that wrote five lines to stdout and one to stderr."""
    apply_pod(server, "hello", [container(
        "main", "for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2; sleep 3600")])
    wait_phase(server, "hello", "Running")
    wait_for(lambda: "oops" in logs(server, "hello", check=False).stdout, 10, "the output")
    return "hello"


# -- kubectl logs ------------------------------------------------------------------------


def test_logs_of_a_pod(server: AgentServer, hello: str) -> None:
    out = logs(server, hello).stdout
    assert out == "line 1\nline 2\nline 3\nline 4\nline 5\noops\n"
    assert logs(server, hello, "-c", "main").stdout == out


def test_tail(server: AgentServer, hello: str) -> None:
    assert logs(server, hello, "--tail=2").stdout == "line 5\noops\n"
    assert logs(server, hello, "--tail=0").stdout == ""


def test_timestamps(server: AgentServer, hello: str) -> None:
    lines = logs(server, hello, "--timestamps").stdout.splitlines()
    assert len(lines) == 6
    matches = [TIMESTAMPED.match(line) for line in lines]
    assert all(matches), lines
    assert [m.group(2) for m in matches if m] == ["line 1", "line 2", "line 3", "line 4",
                                                  "line 5", "oops"]


def test_since(server: AgentServer, hello: str) -> None:
    assert logs(server, hello, "--since=1h").stdout.count("\n") == 6
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert logs(server, hello, f"--since-time={future}").stdout == ""


def test_limit_bytes(server: AgentServer, hello: str) -> None:
    assert logs(server, hello, "--limit-bytes=9").stdout == "line 1\nli"


def test_follow_ends_when_the_container_exits(server: AgentServer) -> None:
    apply_pod(server, "ticker", [container(
        "main", "for i in $(seq 1 10); do echo tick $i; sleep 0.2; done")], policy="Never")
    wait_phase(server, "ticker", "Running", "Succeeded")
    started = time.monotonic()
    result = logs(server, "-f", "ticker", timeout=30)
    assert result.stdout == "".join(f"tick {i}\n" for i in range(1, 11))
    assert time.monotonic() - started < 15


def _agent_connections(port: int) -> int:
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=False).stdout
    return len(out.splitlines())


def test_a_client_going_away_ends_the_follow_on_the_agent(server: AgentServer,
                                                         hello: str) -> None:
    follower = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(server.kubeconfig), "--cache-dir",
         str(server.cache_dir), "logs", "-f", hello], stdout=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "line 1\n"
        assert _agent_connections(server.kubelet_port) >= 1
    finally:
        follower.terminate()
        follower.wait(10)
    wait_for(lambda: _agent_connections(server.kubelet_port) == 0, 10,
             "the API server to close its connection to the agent")


def test_previous_after_a_restart(server: AgentServer, hello: str) -> None:
    script = "read up _ < /proc/uptime; echo attempt $up; exit 1"
    apply_pod(server, "crasher", [container("main", script)])
    wait_for(lambda: (get_pod(server, "crasher").get("status", {})
                      .get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 1,
             60, "the container to restart")
    previous = logs(server, "crasher", "--previous").stdout
    assert re.fullmatch(r"attempt [0-9.]+\n", previous), previous
    result = logs(server, hello, "--previous", check=False)
    assert result.returncode != 0
    assert ('Error from server (BadRequest): previous terminated container "main" in pod '
            '"hello" not found') in result.stderr


def test_several_containers(server: AgentServer) -> None:
    apply_pod(server, "multi", [container("a", "echo from a; sleep 3600"),
                                container("b", "echo from b; sleep 3600")],
              initContainers=[container("setup", "echo from setup")])
    wait_phase(server, "multi", "Running")
    wait_for(lambda: logs(server, "multi", "-c", "b", check=False).stdout == "from b\n", 10,
             "b's output")
    result = logs(server, "multi")  # kubectl picks the first container and says so
    assert result.stdout == "from a\n"
    assert 'Defaulted container "a" out of: a, b, setup (init)' in result.stderr
    everything = logs(server, "multi", "--all-containers").stdout
    assert sorted(everything.splitlines()) == ["from a", "from b", "from setup"]
    assert logs(server, "multi", "-c", "setup").stdout == "from setup\n"


def test_by_label(server: AgentServer) -> None:
    for name in ("lab-1", "lab-2"):
        apply_pod(server, name, [container("main", f"echo I am {name}; sleep 3600")],
                  labels={"app": "x"})
    for name in ("lab-1", "lab-2"):
        wait_phase(server, name, "Running")
    wait_for(lambda: sorted(logs(server, "-l", "app=x", check=False).stdout.splitlines())
             == ["I am lab-1", "I am lab-2"], 10, "both pods' logs")
    prefixed = logs(server, "-l", "app=x", "--prefix").stdout
    assert "[pod/lab-1/main] I am lab-1" in prefixed


def test_errors(server: AgentServer, hello: str) -> None:
    result = logs(server, "nope", check=False)  # kubectl reads the pod itself first
    assert result.returncode == 1
    assert result.stderr.strip() == ('error: error from server (NotFound): pods "nope" not '
                                     'found in namespace "default"')
    result = logs(server, hello, "-c", "nope", check=False)
    assert result.returncode == 1
    assert "container nope is not valid for pod hello" in result.stderr
    result = logs(server, hello, "--tail=-5", "--limit-bytes=-1", check=False)
    assert result.returncode == 1


def test_a_container_waiting_to_start(server: AgentServer) -> None:
    apply_pod(server, "noimage", [{"name": "main", "image": "not-here:1",
                                   "imagePullPolicy": "Never"}])
    wait_for(lambda: ((get_pod(server, "noimage").get("status", {})
                       .get("containerStatuses") or [{}])[0].get("state", {})
                      .get("waiting", {}).get("reason")) == "ErrImageNeverPull",
             20, "ErrImageNeverPull")
    result = logs(server, "noimage", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == ('Error from server (BadRequest): container "main" in pod '
                                     '"noimage" is waiting to start: ErrImageNeverPull')


def test_an_unreachable_agent(server: AgentServer) -> None:
    port = free_port()
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ghost"}}
    server.kubectl("apply", "-f", "-", input=json.dumps(node))
    status = {"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                         "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}
    server.kubectl("patch", "node", "ghost", "--subresource=status", "--type=merge",
                   "-p", json.dumps(status))
    apply_pod(server, "ghostly", [container("main", "true")], nodeName="ghost")
    try:
        started = time.monotonic()
        result = logs(server, "ghostly", check=False)
        assert result.returncode == 1
        assert (f'Get "https://127.0.0.1:{port}/containerLogs/default/ghostly/main": '
                f"dial tcp 127.0.0.1:{port}: connect: connection refused") in result.stderr
        assert time.monotonic() - started < 10
    finally:
        server.kubectl("delete", "pod", "ghostly", "--force", "--grace-period=0", check=False)
        server.kubectl("delete", "node", "ghost", check=False)


# -- the official Python client ------------------------------------------------------------


def test_python_client(server: AgentServer, hello: str) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    with server.api_client() as api_client:
        core = client.CoreV1Api(api_client)
        assert core.read_namespaced_pod_log(hello, "default", tail_lines=1) == "oops\n"
        assert core.read_namespaced_pod_log(hello, "default", container="main",
                                            limit_bytes=4) == "line"
        with pytest.raises(ApiException) as caught:
            core.read_namespaced_pod_log("nope", "default")
        assert caught.value.status == 404
        assert json.loads(caught.value.body)["message"] == 'pods "nope" not found'
        with pytest.raises(ApiException) as caught:
            core.read_namespaced_pod_log(hello, "default", container="nope")
        assert caught.value.status == 400
        assert json.loads(caught.value.body)["message"] == \
            "container nope is not valid for pod hello"
        with pytest.raises(ApiException) as caught:
            core.read_namespaced_pod_log("multi", "default")
        assert caught.value.status == 400
        assert json.loads(caught.value.body)["message"] == (
            "a container name must be specified for pod multi, choose one of: [a b] or one "
            "of the init containers: [setup]")
        with pytest.raises(ApiException) as caught:
            core.read_namespaced_pod_log(hello, "default", tail_lines=-1)
        assert caught.value.status == 422
        assert json.loads(caught.value.body)["message"] == (
            'PodLogOptions "hello" is invalid: tailLines: Invalid value: -1: must be greater '
            "than or equal to 0")

        apply_pod(server, "streamer", [container(
            "main", "for i in $(seq 1 5); do echo beat $i; sleep 0.2; done")], policy="Never")
        wait_phase(server, "streamer", "Running", "Succeeded")
        response = core.read_namespaced_pod_log("streamer", "default", follow=True,
                                                _preload_content=False)
        received = b"".join(response.stream(64))
        response.release_conn()
        assert received.decode() == "".join(f"beat {i}\n" for i in range(1, 6))


# -- the agent's server directly -----------------------------------------------------------


def _kubelet_get(server: AgentServer, path: str, *,
                 cert: tuple[bytes, bytes] | None) -> tuple[int, str]:
    import http.client
    import tempfile

    context = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "ca.crt"))
    with tempfile.TemporaryDirectory() as directory:
        if cert is not None:
            cert_path, key_path = f"{directory}/c.crt", f"{directory}/c.key"
            with open(cert_path, "wb") as f:
                f.write(cert[0])
            with open(key_path, "wb") as f:
                f.write(cert[1])
            context.load_cert_chain(cert_path, key_path)
        conn = http.client.HTTPSConnection("127.0.0.1", server.kubelet_port, context=context,
                                           timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()


def test_the_agent_server_requires_a_cluster_client_certificate(server: AgentServer,
                                                                hello: str) -> None:
    from kubling.apiserver import pki

    cluster = pki.ClusterPKI.at(server.data_dir / "tls")
    with pytest.raises((ssl.SSLError, ConnectionError, socket.error)):
        _kubelet_get(server, "/healthz", cert=None)
    jane = pki.issue_client_cert(cluster, common_name="jane", organizations=["dev"])
    code, body = _kubelet_get(server, "/containerLogs/default/hello/main", cert=jane)
    assert (code, body) == (403, "Forbidden (user=jane, verb=get, resource=nodes, "
                                 "subresource=proxy)")
    admin = (cluster.admin_cert.read_bytes(), cluster.admin_key.read_bytes())
    assert _kubelet_get(server, "/healthz", cert=admin) == (200, "ok")
    code, body = _kubelet_get(server, "/pods", cert=admin)
    assert code == 200
    assert "hello" in {p["metadata"]["name"] for p in json.loads(body)["items"]}
    code, body = _kubelet_get(server, "/containerLogs/default/hello/main?tailLines=1",
                              cert=admin)
    assert (code, body) == (200, "oops\n")
    node = server.kubectl_yaml("get", "nodes")["items"][0]
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == server.kubelet_port
