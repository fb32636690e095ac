"""The course's pod examples (chapter 3 of ``shared/seed``: init containers, sidecars,
probes, hooks, multi-container pods) run for real, converted to the offline busybox image.

Each example keeps the course's shape and numbers where busybox allows: the init container
fetches ``config.yaml`` from ``http://config-server`` (a Service in front of a busybox
httpd), the sidecar is the log shipper of the course's table (``tail`` of a log the web
container writes to a shared emptyDir), the probes use the course's paths, ports and
delays. Graceful termination is checked from the host: preStop and the SIGTERM trap write
to a hostPath file, and a process that ignores SIGTERM is SIGKILLed after the grace period.

Every pod is created up front (they run side by side); the server comes from
tests/agent_fixture.py.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_node_agent import pod
from tests.server_fixture import KublingServer

IMAGE = {"image": "busybox:latest", "imagePullPolicy": "IfNotPresent"}


def _container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, **IMAGE, "command": ["sh", "-c", script], **extra}


def _pod(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[
        str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {"course": name}},
            "spec": {"terminationGracePeriodSeconds": 2, **spec}}


def manifests(host_dir: Path) -> list[dict[str, Any]]:
    shared = [{"name": "logs", "emptyDir": {}}]
    host = [{"name": "host", "hostPath": {"path": str(host_dir), "type": "Directory"}}]
    return [
        # What the course's init container downloads from.
        _pod("config-server", {"containers": [_container(
            "server", "mkdir -p /www; printf 'greeting: bonjour\\n' > /www/config.yaml; "
            "exec httpd -f -p 8080 -h /www", ports=[{"containerPort": 8080}])]},
            labels={"app": "config-server"}),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "config-server"},
         "spec": {"selector": {"app": "config-server"},
                  "ports": [{"port": 80, "targetPort": 8080}]}},
        # Init container: "Téléchargement d'un fichier de configuration", retried until the
        # server answers ("Test de connectivité à une ressource externe").
        _pod("init-config", {
            "initContainers": [_container(
                "init-config", "until wget -q http://config-server/config.yaml "
                "-O /app/config.yaml; do sleep 1; done",
                volumeMounts=[{"name": "config-volume", "mountPath": "/app"}])],
            "containers": [_container(
                "app", "cat /app/config.yaml; sleep 3600",
                volumeMounts=[{"name": "config-volume", "mountPath": "/app"}])],
            "volumes": [{"name": "config-volume", "emptyDir": {}}]}),
        # Sidecar (native, restartPolicy Always): "Serveur web / tail + forward des logs".
        _pod("log-shipper", {
            "initContainers": [_container(
                "log-shipper", "touch /var/log/app/access.log; "
                "exec tail -F /var/log/app/access.log", restartPolicy="Always",
                volumeMounts=[{"name": "logs", "mountPath": "/var/log/app"}])],
            "containers": [_container(
                "web", "while true; do echo \"GET /index.html 200\" >> "
                "/var/log/app/access.log; sleep 1; done",
                volumeMounts=[{"name": "logs", "mountPath": "/var/log/app"}])],
            "volumes": shared}),
        # Multi-container pod: one IP (localhost) and one volume shared by two containers.
        _pod("shared-pod", {
            "containers": [
                _container("web", "mkdir -p /data; exec httpd -f -p 8080 -h /data",
                           volumeMounts=[{"name": "logs", "mountPath": "/data"}]),
                _container("writer", "while true; do echo page-from-writer > "
                           "/data/index.html; wget -qO- http://localhost:8080/; sleep 1; "
                           "done", volumeMounts=[{"name": "logs", "mountPath": "/data"}])],
            "volumes": shared}),
        # Probes, with the course's values.
        _pod("probes", {"containers": [_container(
            "app", "mkdir -p /www; echo ok > /www/healthz; touch /tmp/ready; "
            "exec httpd -f -p 8080 -h /www",
            livenessProbe={"httpGet": {"path": "/healthz", "port": 8080},
                           "initialDelaySeconds": 10, "periodSeconds": 5},
            readinessProbe={"exec": {"command": ["cat", "/tmp/ready"]},
                            "initialDelaySeconds": 5, "periodSeconds": 3})]}),
        # Startup probe: a slow starter that liveness would otherwise kill.
        _pod("slow-start", {"containers": [_container(
            "app", "sleep 6; touch /tmp/started; sleep 3600",
            startupProbe={"exec": {"command": ["cat", "/tmp/started"]}, "periodSeconds": 2,
                          "failureThreshold": 10},
            livenessProbe={"exec": {"command": ["cat", "/tmp/started"]}, "periodSeconds": 2,
                           "failureThreshold": 1})]}),
        # Hooks: the course's postStart line, read back by the container itself.
        _pod("poststart", {
            "containers": [_container(
                "app", "while [ ! -s /var/log/status ]; do sleep 0.1; done; "
                "cat /var/log/status; sleep 3600",
                lifecycle={"postStart": {"exec": {"command": [
                    "sh", "-c", "echo 'Started' >> /var/log/status"]}}},
                volumeMounts=[{"name": "logs", "mountPath": "/var/log"}])],
            "volumes": shared}),
        # Graceful termination: preStop, then SIGTERM (trapped: a clean exit).
        _pod("graceful", {
            "terminationGracePeriodSeconds": 10,
            "containers": [_container(
                "app", "trap 'echo TERM >> /host/graceful; exit 0' TERM; echo up; "
                "while true; do sleep 0.2; done",
                lifecycle={"preStop": {"exec": {"command": [
                    "sh", "-c", "echo preStop >> /host/graceful"]}}},
                volumeMounts=[{"name": "host", "mountPath": "/host"}])],
            "volumes": host}),
        # A process that ignores SIGTERM: SIGKILL once the grace period is over.
        _pod("stubborn", {
            "terminationGracePeriodSeconds": 3,
            "containers": [_container(
                "app", "trap 'echo TERM-ignored >> /host/stubborn' TERM; echo up; "
                "while true; do sleep 0.2; done",
                volumeMounts=[{"name": "host", "mountPath": "/host"}])],
            "volumes": host}),
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("course-pods")) as srv:
        yield srv


@pytest.fixture(scope="module")
def host_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("course-host")


@pytest.fixture(scope="module")
def pods(server: KublingServer, host_dir: Path) -> Iterator[KublingServer]:
    server.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": manifests(host_dir)}))
    yield server
    server.kubectl("delete", "service", "config-server", check=False)


def row(srv: KublingServer, name: str) -> list[str]:
    return srv.kubectl("get", "pod", name, "--no-headers", check=False).stdout.split()


def logs(srv: KublingServer, name: str, container: str) -> str:
    return srv.kubectl("logs", name, "-c", container, check=False).stdout


def container_status(srv: KublingServer, name: str) -> dict[str, Any]:
    statuses = pod(srv, name).get("status", {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def _seconds(rfc3339: str) -> float:
    return float(calendar.timegm(time.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ")))


def test_the_init_container_downloads_the_configuration(pods: KublingServer) -> None:
    wait_for(lambda: row(pods, "init-config")[1:3] == ["1/1", "Running"], 60,
             "init-config to run")
    wait_for(lambda: "greeting: bonjour" in logs(pods, "init-config", "app"), 10,
             "the downloaded configuration in the app's log")
    init = pod(pods, "init-config")["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed"


def test_the_log_shipper_sidecar_forwards_the_web_log(pods: KublingServer) -> None:
    wait_for(lambda: row(pods, "log-shipper")[1:3] == ["2/2", "Running"], 40,
             "the web container and its sidecar")
    wait_for(lambda: logs(pods, "log-shipper", "log-shipper").count("GET /index.html 200")
             >= 2, 15, "the shipped log lines")
    sidecar = pod(pods, "log-shipper")["status"]["initContainerStatuses"][0]
    assert "running" in sidecar["state"] and sidecar["started"] is True


def test_containers_share_localhost_and_volumes(pods: KublingServer) -> None:
    wait_for(lambda: row(pods, "shared-pod")[1:3] == ["2/2", "Running"], 40, "shared-pod")
    wait_for(lambda: "page-from-writer" in logs(pods, "shared-pod", "writer"), 15,
             "the page served by the other container over localhost")


def test_the_courses_liveness_and_readiness_probes(pods: KublingServer) -> None:
    status = wait_for(lambda: container_status(pods, "probes").get("state", {})
                      .get("running") and container_status(pods, "probes"), 30,
                      "the probed container to run")
    wait_for(lambda: row(pods, "probes")[1] == "1/1", 20, "readiness after its initial delay")
    started = _seconds(status["state"]["running"]["startedAt"])
    conditions = {c["type"]: c for c in pod(pods, "probes")["status"]["conditions"]}
    ready_at = _seconds(conditions["Ready"]["lastTransitionTime"])
    assert ready_at - started >= 4  # initialDelaySeconds: 5 (second-rounded times)
    # Past liveness' initial delay and a few periods, the healthy container still runs.
    time.sleep(max(0.0, started + 17 - time.time()))
    assert container_status(pods, "probes")["restartCount"] == 0


def test_the_startup_probe_holds_liveness_back(pods: KublingServer) -> None:
    wait_for(lambda: container_status(pods, "slow-start").get("started"), 30,
             "the startup probe to pass")
    assert container_status(pods, "slow-start")["restartCount"] == 0
    wait_for(lambda: row(pods, "slow-start")[1] == "1/1", 10, "slow-start ready")


def test_the_post_start_hook_writes_its_line(pods: KublingServer) -> None:
    wait_for(lambda: "Started" in logs(pods, "poststart", "app"), 30, "the hook's line")


def test_graceful_termination_runs_pre_stop_then_sigterm(pods: KublingServer,
                                                        host_dir: Path) -> None:
    wait_for(lambda: "up" in logs(pods, "graceful", "app"), 30, "graceful to run")
    started = time.monotonic()
    pods.kubectl("delete", "pod", "graceful", "--timeout=60s")
    assert time.monotonic() - started < 8  # the trap exits at once: no waiting out 10 s
    assert (host_dir / "graceful").read_text().split() == ["preStop", "TERM"]


def test_sigkill_follows_an_ignored_sigterm_after_the_grace_period(
        pods: KublingServer, host_dir: Path) -> None:
    wait_for(lambda: "up" in logs(pods, "stubborn", "app"), 30, "stubborn to run")
    started = time.monotonic()
    pods.kubectl("delete", "pod", "stubborn", "--timeout=60s")
    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed < 12, elapsed  # terminationGracePeriodSeconds: 3
    assert (host_dir / "stubborn").read_text().split() == ["TERM-ignored"]
