"""Probes and lifecycle hooks end to end: a real server with its agent, real kubectl, runc and
the offline busybox image. Every pod is created up front (they run side by side, so the module
takes about as long as its slowest pod) and each test then watches its own pod.

The server comes from tests/agent_fixture.py, which takes this host's one agent slot and
removes what the server left behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_node_agent import log_file, pod
from tests.server_fixture import KublingServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("probes")) as srv:
        yield srv


FAST = {"periodSeconds": 1, "timeoutSeconds": 1}


def _exec(*argv: str) -> dict[str, Any]:
    return {"exec": {"command": list(argv)}}


def _container(script: str, **extra: Any) -> dict[str, Any]:
    return {"name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script], **extra}


PODS: dict[str, dict[str, Any]] = {
    # READY 0/1, then 1/1 once the file exists, then 0/1 again once it is gone.
    "ready-file": _container(
        "sleep 3; touch /tmp/ready; sleep 5; rm /tmp/ready; sleep 3600",
        readinessProbe={**_exec("cat", "/tmp/ready"), **FAST, "failureThreshold": 1}),
    # The course's liveness example: healthy for 3 s, then restarted.
    "liveness": _container(
        "touch /tmp/healthy; sleep 3; rm -f /tmp/healthy; sleep 3600",
        livenessProbe={**_exec("cat", "/tmp/healthy"), **FAST, "failureThreshold": 2}),
    # Liveness would kill it at once; the startup probe holds it back until the file exists.
    "startup": _container(
        "sleep 4; touch /tmp/started; sleep 3600",
        startupProbe={**_exec("cat", "/tmp/started"), **FAST, "failureThreshold": 30},
        livenessProbe={**_exec("cat", "/tmp/started"), **FAST, "failureThreshold": 1}),
    "tcp": _container(
        "mkdir -p /www; httpd -f -p 8080 -h /www",
        ports=[{"name": "web", "containerPort": 8080}],
        readinessProbe={"tcpSocket": {"port": "web"}, **FAST}),
    "tcp-bad": _container(
        "sleep 3600", readinessProbe={"tcpSocket": {"port": 9999}, **FAST}),
    "http": _container(
        "mkdir -p /www; echo ok > /www/healthz; httpd -f -p 8080 -h /www",
        readinessProbe={"httpGet": {"path": "/healthz", "port": 8080}, **FAST},
        livenessProbe={"httpGet": {"path": "/healthz", "port": 8080,
                                   "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                       **FAST}),
    "http-bad": _container(
        "mkdir -p /www; httpd -f -p 8080 -h /www",
        readinessProbe={"httpGet": {"path": "/missing", "port": 8080}, **FAST}),
    "exec-timeout": _container(
        "sleep 3600", readinessProbe={**_exec("sleep", "5"), **FAST}),
    "poststart": _container(
        "while [ ! -f /tmp/msg ]; do sleep 0.1; done; cat /tmp/msg; sleep 3600",
        lifecycle={"postStart": _exec("sh", "-c", "echo from-post-start > /tmp/msg")}),
    "poststart-fail": _container(
        "sleep 3600", lifecycle={"postStart": _exec("sh", "-c", "exit 3")}),
    "prestop": _container(
        "echo started; sleep 3600",
        lifecycle={"preStop": _exec("sh", "-c", "echo prestop-ran > /proc/1/fd/1")}),
}


@pytest.fixture(scope="module")
def pods(server: KublingServer) -> Iterator[KublingServer]:
    items = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
              "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]}}
             for name, container in PODS.items()]
    server.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": items}))
    yield server


def status(srv: KublingServer, name: str) -> dict[str, Any]:
    statuses = pod(srv, name).get("status", {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def ready_column(srv: KublingServer, name: str) -> str:
    row = srv.kubectl("get", "pod", name, "--no-headers", check=False).stdout.split()
    return row[1] if len(row) > 1 else ""


def events(srv: KublingServer, name: str) -> str:
    return srv.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}",
                       "-o", "custom-columns=REASON:.reason,MESSAGE:.message").stdout


def condition(srv: KublingServer, name: str, type_: str) -> str:
    for cond in pod(srv, name).get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return ""


def test_readiness_gates_ready_both_ways(pods: KublingServer) -> None:
    wait_for(lambda: status(pods, "ready-file").get("state", {}).get("running"), 20,
             "ready-file to run")
    assert ready_column(pods, "ready-file") == "0/1"
    assert condition(pods, "ready-file", "Ready") == "False"
    wait_for(lambda: ready_column(pods, "ready-file") == "1/1", 15, "READY 1/1")
    assert condition(pods, "ready-file", "ContainersReady") == "True"
    wait_for(lambda: ready_column(pods, "ready-file") == "0/1", 15, "READY back to 0/1")
    assert status(pods, "ready-file")["restartCount"] == 0
    assert "Readiness probe failed: cat: can't open '/tmp/ready'" in events(pods, "ready-file")


def test_liveness_failure_restarts_the_container(pods: KublingServer) -> None:
    wait_for(lambda: status(pods, "liveness").get("restartCount", 0) >= 1, 30,
             "a liveness restart")
    text = events(pods, "liveness")
    assert "Liveness probe failed: cat: can't open '/tmp/healthy'" in text
    assert "Container main failed liveness probe, will be restarted" in text


def test_startup_probe_holds_back_liveness(pods: KublingServer) -> None:
    # The pods started together with the module, so by now the file may already exist: the
    # Startup failures in the events are what show liveness was held back meanwhile.
    wait_for(lambda: status(pods, "startup").get("started"), 15, "the startup probe")
    time.sleep(2)  # liveness (failureThreshold 1) now runs and passes
    final = status(pods, "startup")
    assert final["restartCount"] == 0 and final["ready"]
    assert "Startup probe failed" in events(pods, "startup")


def test_tcp_socket_probes(pods: KublingServer) -> None:
    wait_for(lambda: ready_column(pods, "tcp") == "1/1", 20, "tcp ready")
    wait_for(lambda: "Readiness probe failed: dial tcp" in events(pods, "tcp-bad"), 20,
             "the tcp failure event")
    assert "connect: connection refused" in events(pods, "tcp-bad")
    assert ready_column(pods, "tcp-bad") == "0/1"


def test_http_get_probes(pods: KublingServer) -> None:
    wait_for(lambda: ready_column(pods, "http") == "1/1", 20, "http ready")
    wait_for(lambda: "HTTP probe failed with statuscode: 404" in events(pods, "http-bad"), 20,
             "the http failure event")
    assert ready_column(pods, "http-bad") == "0/1"
    assert status(pods, "http")["restartCount"] == 0


def test_exec_probe_timeout(pods: KublingServer) -> None:
    wait_for(lambda: 'Readiness probe failed: command "sleep 5" timed out'
             in events(pods, "exec-timeout"), 20, "the timeout event")
    assert ready_column(pods, "exec-timeout") == "0/1"


def test_post_start_runs_before_the_container_counts_as_started(pods: KublingServer) -> None:
    wait_for(lambda: ready_column(pods, "poststart") == "1/1", 20, "poststart ready")
    obj = pod(pods, "poststart")
    wait_for(lambda: "from-post-start" in log_file(pods, obj).read_text(), 5, "the log")


def test_a_failing_post_start_kills_the_container(pods: KublingServer) -> None:
    wait_for(lambda: "FailedPostStartHook" in events(pods, "poststart-fail"), 20,
             "FailedPostStartHook")
    wait_for(lambda: status(pods, "poststart-fail").get("restartCount", 0) >= 1, 20,
             "a restart after the failed hook")
    assert ready_column(pods, "poststart-fail") == "0/1"


def test_pre_stop_runs_at_deletion(pods: KublingServer) -> None:
    wait_for(lambda: ready_column(pods, "prestop") == "1/1", 20, "prestop ready")
    path = log_file(pods, pod(pods, "prestop"))
    pods.kubectl("delete", "pod", "prestop", "--wait=false")
    wait_for(lambda: path.exists() and "prestop-ran" in path.read_text(), 5,
             "the preStop hook's line in the log")
