"""A pod's lifecycle end to end: sidecars, OOM kills, ``activeDeadlineSeconds`` and the
STATUS sequence ``kubectl get pods -w`` shows. A real server with its agent, the real
kubectl, runc and the offline busybox image.

The ``kubectl get pods -w`` watches start first, then every pod is created at once (they run
side by side, so the module lasts about as long as its slowest pod), and each test then
watches its own pod. The server comes from tests/agent_fixture.py.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_node_agent import pod
from tests.server_fixture import KublingServer

IMAGE = {"image": "busybox:latest", "imagePullPolicy": "IfNotPresent"}
FAST = {"periodSeconds": 1, "timeoutSeconds": 1}
#: busybox sh as PID 1 ignores SIGTERM unless it traps it; the sidecars here do.
TRAPPED = "trap 'echo {name}-got-TERM; exit 0' TERM; "


def _container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, **IMAGE, "command": ["sh", "-c", script], **extra}


def _sidecar(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return _container(name, script, restartPolicy="Always", **extra)


def _exec(*argv: str) -> dict[str, Any]:
    return {"exec": {"command": list(argv)}}


SHARED = [{"name": "shared", "emptyDir": {}}]
MOUNT = [{"name": "shared", "mountPath": "/shared"}]

PODS: dict[str, dict[str, Any]] = {
    # Each sidecar is started (its postStart returned, its startup probe passed) before the
    # next init container runs, which reads the hook's file and fetches from the web
    # sidecar over localhost; then the main container runs beside them.
    "sidecar-order": {
        "initContainers": [
            _sidecar("hooked", TRAPPED.format(name="hooked") + "while true; do sleep 0.2; done",
                     lifecycle={"postStart": _exec("sh", "-c",
                                                   "sleep 2; echo hooked > /shared/hook")},
                     volumeMounts=MOUNT),
            _sidecar("web", "mkdir -p /www; echo from-sidecar > /www/index.html; "
                     "sleep 2; httpd -f -p 8080 -h /www",
                     startupProbe={"tcpSocket": {"port": 8080}, **FAST,
                                   "failureThreshold": 30},
                     readinessProbe={"httpGet": {"path": "/", "port": 8080}, **FAST}),
            _container("fetch", "cat /shared/hook && "
                       "wget -q -O /shared/page http://127.0.0.1:8080/", volumeMounts=MOUNT)],
        "containers": [_container("main", "cat /shared/page; sleep 3600", volumeMounts=MOUNT)],
        "volumes": SHARED},
    # A job-like pod: the main container finishes, the pod completes and its sidecars are
    # stopped after it, the last declared first.
    "sidecar-job": {
        "restartPolicy": "Never",
        "initContainers": [
            _sidecar("first", TRAPPED.format(name="first") + "while true; do sleep 0.2; done"),
            _sidecar("second", TRAPPED.format(name="second")
                     + "while true; do sleep 0.2; done")],
        "containers": [_container("main", "sleep 3; echo done")]},
    # A sidecar that keeps exiting is restarted though the pod's policy is Never.
    "sidecar-restart": {
        "restartPolicy": "Never",
        "initContainers": [_sidecar("flaky", "sleep 1; exit 1")],
        "containers": [_container("main", "sleep 3600")]},
    # Over its memory limit the kernel kills it: OOMKilled, exit 137, then back-off.
    "oom": {
        "containers": [_container("main", "x=0123456789abcdef; while true; do x=$x$x; done",
                                  resources={"limits": {"memory": "16Mi"}})]},
    "deadline": {
        "activeDeadlineSeconds": 3,
        "containers": [_container("main", "sleep 3600")]},
    # Watched: Pending, Init:0/1, PodInitializing, Running, Completed.
    "watch-init": {
        "restartPolicy": "Never",
        "initContainers": [_container("setup", "sleep 2")],
        "containers": [_container("main", "sleep 3")]},
    "watch-crash": {"containers": [_container("main", "sleep 1; exit 1")]},
    # Watched: Pending, ContainerCreating (the agent's first status), Running.
    "watch-plain": {"containers": [_container("main", "sleep 3600")]},
}

WATCHED = ("watch-init", "watch-crash", "watch-plain")


def deletion_order_pod(host_dir: Path) -> dict[str, Any]:
    """Deleted while running: the main container takes a second to exit after SIGTERM, and
    the sidecar must get its SIGTERM only after that (each writes to a hostPath file)."""
    mount = [{"name": "host", "mountPath": "/host"}]
    return {
        "terminationGracePeriodSeconds": 10,
        "volumes": [{"name": "host", "hostPath": {"path": str(host_dir), "type": "Directory"}}],
        "initContainers": [_sidecar(
            "proxy", "trap 'echo proxy-TERM >> /host/order; exit 0' TERM; "
            "while true; do sleep 0.2; done", volumeMounts=mount)],
        "containers": [_container(
            "main", "trap 'echo main-TERM >> /host/order; sleep 1; "
            "echo main-exit >> /host/order; exit 0' TERM; echo up; "
            "while true; do sleep 0.2; done", volumeMounts=mount)]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("lifecycle")) as srv:
        yield srv


class Watch:
    """``kubectl get pods -w --output-watch-events`` for one label, its lines collected by a
    thread (the test may read them long after kubectl wrote them)."""

    def __init__(self, srv: KublingServer, app: str) -> None:
        self.proc = subprocess.Popen(
            ["kubectl", "--kubeconfig", str(srv.kubeconfig), "get", "pods", "-w",
             "--output-watch-events", "-l", f"app={app}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def statuses(self) -> list[str]:
        """The STATUS column of each ADDED / MODIFIED line so far."""
        out = []
        for line in list(self.lines):
            fields = line.split()  # EVENT NAME READY STATUS RESTARTS AGE
            if len(fields) >= 4 and fields[0] in ("ADDED", "MODIFIED"):
                out.append(fields[3])
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def watches(server: KublingServer) -> Iterator[dict[str, Watch]]:
    """A watch per watched pod, started before the pods exist."""
    running = {name: Watch(server, name) for name in WATCHED}
    time.sleep(1)  # let each watch begin before the pods are created
    yield running
    for watch in running.values():
        watch.stop()


@pytest.fixture(scope="module")
def host_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lifecycle-host")


@pytest.fixture(scope="module")
def pods(server: KublingServer, watches: dict[str, Watch],
         host_dir: Path) -> Iterator[KublingServer]:
    specs = {**PODS, "sidecar-delete": deletion_order_pod(host_dir)}
    items = [{"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": name, "labels": {"app": name}},
              "spec": {"terminationGracePeriodSeconds": 2, **spec}}
             for name, spec in specs.items()]
    server.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": items}))
    yield server


def statuses(srv: KublingServer, name: str, key: str = "initContainerStatuses") -> dict[
        str, dict[str, Any]]:
    return {s["name"]: s for s in pod(srv, name).get("status", {}).get(key) or []}


def row(srv: KublingServer, name: str) -> list[str]:
    return srv.kubectl("get", "pod", name, "--no-headers", check=False).stdout.split()


def events(srv: KublingServer, name: str) -> list[dict[str, Any]]:
    out = srv.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}",
                      "-o", "json").stdout
    return list(json.loads(out)["items"])


# -- sidecars --------------------------------------------------------------------------


def test_a_sidecar_starts_before_the_next_init_container_and_keeps_running(
        pods: KublingServer) -> None:
    wait_for(lambda: row(pods, "sidecar-order")[1:3] == ["3/3", "Running"], 40,
             "READY 3/3 Running")
    web = statuses(pods, "sidecar-order")["web"]
    assert "running" in web["state"] and web["started"] is True and web["ready"] is True
    assert web["restartCount"] == 0
    fetch = statuses(pods, "sidecar-order")["fetch"]
    assert fetch["state"]["terminated"]["reason"] == "Completed"
    assert (fetch["ready"], fetch["started"], fetch["restartCount"]) == (True, False, 0)
    assert "hooked" in pods.kubectl("logs", "sidecar-order", "-c", "fetch").stdout
    logs = pods.kubectl("logs", "sidecar-order", "-c", "main").stdout
    assert "from-sidecar" in logs
    obj = pod(pods, "sidecar-order")
    conds = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
    assert conds["Initialized"] == conds["Ready"] == "True"


def test_a_finished_pod_stops_its_sidecars_after_its_main_containers(
        pods: KublingServer) -> None:
    wait_for(lambda: pod(pods, "sidecar-job").get("status", {}).get("phase") == "Succeeded",
             40, "the pod to succeed")
    assert row(pods, "sidecar-job")[1:3] == ["0/3", "Completed"]
    init = statuses(pods, "sidecar-job")
    main = statuses(pods, "sidecar-job", "containerStatuses")["main"]
    main_end = main["state"]["terminated"]["finishedAt"]
    first, second = (init[n]["state"]["terminated"] for n in ("first", "second"))
    assert first["exitCode"] == second["exitCode"] == 0  # their TERM traps ran
    assert main_end <= second["finishedAt"] <= first["finishedAt"]
    assert "second-got-TERM" in pods.kubectl("logs", "sidecar-job", "-c", "second").stdout
    killing = [e["message"] for e in events(pods, "sidecar-job") if e["reason"] == "Killing"]
    assert "Stopping container second" in killing and "Stopping container first" in killing


def test_a_deleted_pods_sidecar_stops_after_its_main_container(
        pods: KublingServer, host_dir: Path) -> None:
    wait_for(lambda: row(pods, "sidecar-delete")[1:3] == ["2/2", "Running"], 40,
             "sidecar-delete to run")
    wait_for(lambda: "up" in pods.kubectl("logs", "sidecar-delete", "-c", "main").stdout, 10,
             "the main container's trap")
    pods.kubectl("delete", "pod", "sidecar-delete", "--timeout=60s")
    order = (host_dir / "order").read_text().split()
    assert order == ["main-TERM", "main-exit", "proxy-TERM"], order


def test_a_sidecar_is_restarted_whatever_the_pods_restart_policy(pods: KublingServer) -> None:
    wait_for(lambda: statuses(pods, "sidecar-restart").get("flaky", {}).get(
        "restartCount", 0) >= 1, 30, "a sidecar restart")
    obj = pod(pods, "sidecar-restart")
    assert obj["status"]["phase"] == "Running"
    flaky = statuses(pods, "sidecar-restart")["flaky"]
    assert flaky["lastState"]["terminated"]["exitCode"] == 1
    assert statuses(pods, "sidecar-restart", "containerStatuses")["main"]["restartCount"] == 0


# -- OOM and deadlines -----------------------------------------------------------------


def test_an_oom_killed_container_says_so(pods: KublingServer) -> None:
    def oom_seen() -> dict[str, Any] | None:
        main = statuses(pods, "oom", "containerStatuses").get("main", {})
        for state in (main.get("state", {}), main.get("lastState", {})):
            terminated = state.get("terminated")
            if terminated and terminated.get("reason") == "OOMKilled":
                return dict(terminated)
        return None

    terminated = wait_for(oom_seen, 40, "an OOMKilled termination")
    assert terminated["exitCode"] == 137
    wait_for(lambda: row(pods, "oom")[2:3] == ["CrashLoopBackOff"], 40, "CrashLoopBackOff")
    main = statuses(pods, "oom", "containerStatuses")["main"]
    assert main["lastState"]["terminated"]["reason"] == "OOMKilled"


def test_a_pod_past_its_active_deadline_fails(pods: KublingServer) -> None:
    wait_for(lambda: pod(pods, "deadline").get("status", {}).get("phase") == "Failed", 30,
             "the deadline to fail the pod")
    status = pod(pods, "deadline")["status"]
    assert status["reason"] == "DeadlineExceeded"
    assert status["message"] == "Pod was active on the node longer than the specified deadline"
    # Its containers are killed and say so (as kubelets since 1.27 report a terminal pod's
    # containers); kubectl's STATUS then reads the container's reason.
    assert "terminated" in status["containerStatuses"][0]["state"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"
    found = [e for e in events(pods, "deadline") if e["reason"] == "DeadlineExceeded"]
    assert found and found[0]["type"] == "Normal"
    assert found[0]["message"] == status["message"]


# -- kubectl get pods -w -----------------------------------------------------------------


def _in_order(seen: list[str], wanted: list[str]) -> bool:
    position = 0
    for status in seen:
        if position < len(wanted) and status == wanted[position]:
            position += 1
    return position == len(wanted)


def test_kubectl_get_pods_watch_shows_the_upstream_sequence(
        pods: KublingServer, watches: dict[str, Watch]) -> None:
    wanted = ["Pending", "Init:0/1", "PodInitializing", "Running", "Completed"]
    init = watches["watch-init"]
    wait_for(lambda: "Completed" in init.statuses(), 40, "watch-init to complete")
    assert _in_order(init.statuses(), wanted), init.lines
    crash = watches["watch-crash"]
    wait_for(lambda: "CrashLoopBackOff" in crash.statuses(), 40, "CrashLoopBackOff")
    assert _in_order(crash.statuses(), ["Pending", "Running", "Error", "CrashLoopBackOff"]), (
        crash.lines)


def test_a_plain_pod_shows_container_creating_before_running(
        pods: KublingServer, watches: dict[str, Watch]) -> None:
    """The agent writes its first status (containers waiting ContainerCreating) beside the
    sandbox setup, so the watch sees it between the scheduler's Pending and Running."""
    plain = watches["watch-plain"]
    wait_for(lambda: "Running" in plain.statuses(), 40, "watch-plain to run")
    assert _in_order(plain.statuses(), ["Pending", "ContainerCreating", "Running"]), (
        plain.lines)
