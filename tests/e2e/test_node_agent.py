"""The node agent end to end: a real server with its agent, the real kubectl, real runc,
conmon and CNI plugins, and the offline busybox image built into the data dir.

One server for the module (pods are cheap, the server is not); the agent-restart test runs
last because it restarts that server. The teardown deletes every pod and waits, then stops
the server, then removes the ``kubling0`` bridge and ``kubling-`` namespaces this module
made. Only processes this module started are ever signalled.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.server_fixture import REPO, KublingServer

POD_CIDR = ipaddress.ip_network("10.42.0.0/24")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("agent")) as srv:
        yield srv


# -- helpers -----------------------------------------------------------------------------


def _node_ready(srv: KublingServer) -> str:
    return srv.kubectl("get", "nodes", "--no-headers", check=False).stdout


def pod(srv: KublingServer, name: str) -> dict[str, Any]:
    result = srv.kubectl("get", "pod", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def create_pod(srv: KublingServer, name: str, script: str, *, policy: str = "Always",
               image: str = "busybox:latest", pull: str | None = "IfNotPresent",
               extra: dict[str, Any] | None = None) -> None:
    container: dict[str, Any] = {"name": "main", "image": image,
                                 "command": ["sh", "-c", script]}
    if pull:
        container["imagePullPolicy"] = pull
    manifest: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                                "metadata": {"name": name},
                                "spec": {"restartPolicy": policy, "containers": [container],
                                         "terminationGracePeriodSeconds": 5}}
    for key, value in (extra or {}).items():
        manifest["spec"][key] = value
    srv.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def phase(srv: KublingServer, name: str) -> str:
    return str(pod(srv, name).get("status", {}).get("phase", ""))


def main_status(srv: KublingServer, name: str) -> dict[str, Any]:
    statuses = pod(srv, name).get("status", {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def wait_running(srv: KublingServer, name: str, timeout: float = 20) -> dict[str, Any]:
    try:
        wait_for(lambda: phase(srv, name) == "Running", timeout, f"pod {name} to run")
    except AssertionError as err:
        raise AssertionError(f"{err}: {json.dumps(pod(srv, name).get('status'))}") from None
    return pod(srv, name)


def log_file(srv: KublingServer, obj: dict[str, Any], container: str = "main",
             attempt: int = 0) -> Path:
    return srv.data_dir / "pods" / obj["metadata"]["uid"] / "logs" / container / f"{attempt}.log"


def log_text(srv: KublingServer, obj: dict[str, Any], container: str = "main") -> str:
    path = log_file(srv, obj, container)
    return path.read_text() if path.exists() else ""


def runc_ids(srv: KublingServer) -> list[str]:
    out = subprocess.run(["runc", "--root", str(srv.data_dir / "runtime" / "runc"), "list",
                          "-q"], capture_output=True, text=True, check=False).stdout
    return out.split()


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as resp:
        body: bytes = resp.read()
        return body.decode()


# -- tests -------------------------------------------------------------------------------


def test_the_node_registers_with_the_hosts_facts(server: KublingServer) -> None:
    wide = server.kubectl("get", "nodes", "-o", "wide").stdout
    assert "Ready" in wide and "control-plane" in wide and "runc://" in wide
    node = json.loads(server.kubectl("get", "nodes", "-o", "json").stdout)["items"][0]
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/hostname"] == node["metadata"]["name"]
    assert labels["node-role.kubernetes.io/control-plane"] == "true"
    capacity = node["status"]["capacity"]
    assert capacity["cpu"] == str(os.cpu_count()) and capacity["pods"] == "110"
    assert capacity["memory"].endswith("Ki") and capacity["ephemeral-storage"].endswith("Ki")
    assert node["spec"]["podCIDR"] == "10.42.0.0/24"
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.")
    lease = server.kubectl("get", "lease", "-n", "kube-node-lease", node["metadata"]["name"])
    assert lease.returncode == 0


def test_a_pod_runs_with_an_address_and_a_log(server: KublingServer) -> None:
    create_pod(server, "hello", "echo hello; sleep 3600")
    obj = wait_running(server, "hello")
    assert ipaddress.ip_address(obj["status"]["podIP"]) in POD_CIDR
    status = obj["status"]["containerStatuses"][0]
    assert status["ready"] and status["containerID"].startswith("runc://")
    assert status["imageID"].startswith("docker.io/library/busybox@sha256:")
    row = server.kubectl("get", "pod", "hello", "--no-headers").stdout.split()
    assert row[1:3] == ["1/1", "Running"]
    wait_for(lambda: "stdout F hello" in log_text(server, obj), 5, "the log line")
    events = server.kubectl("get", "events", "--field-selector",
                            "involvedObject.name=hello").stdout
    assert "Started" in events and "already present on machine" in events


def test_init_containers_fill_an_empty_dir(server: KublingServer) -> None:
    manifest = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "init"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "shared", "emptyDir": {}}],
            "initContainers": [{"name": "fill", "image": "busybox:latest",
                                "imagePullPolicy": "IfNotPresent",
                                "command": ["sh", "-c", "echo from-init > /data/msg"],
                                "volumeMounts": [{"name": "shared", "mountPath": "/data"}]}],
            "containers": [{"name": "main", "image": "busybox:latest",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "cat /data/msg; sleep 3600"],
                            "volumeMounts": [{"name": "shared", "mountPath": "/data"}]}]}}
    server.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    obj = wait_running(server, "init")
    init = obj["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed"
    wait_for(lambda: "from-init" in log_text(server, obj), 5, "the main container's log")


def test_a_failing_pod_with_restart_policy_never_fails(server: KublingServer) -> None:
    create_pod(server, "exit3", "exit 3", policy="Never")
    wait_for(lambda: phase(server, "exit3") == "Failed", 20, "phase Failed")
    terminated = main_status(server, "exit3")["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"


def test_a_crashing_container_backs_off(server: KublingServer) -> None:
    create_pod(server, "crash", "exit 1")

    def backing_off() -> bool:
        status = main_status(server, "crash")
        waiting = status.get("state", {}).get("waiting", {})
        return status.get("restartCount", 0) >= 1 and waiting.get("reason") == "CrashLoopBackOff"

    wait_for(backing_off, 20, "restarts and CrashLoopBackOff")
    status = main_status(server, "crash")
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert "CrashLoopBackOff" in server.kubectl("get", "pod", "crash").stdout
    server.kubectl("delete", "pod", "crash", "--grace-period=1")


def test_image_pull_failures_are_reported(server: KublingServer) -> None:
    create_pod(server, "pull-latest", "true", pull=None)  # :latest defaults to Always

    def reason() -> str:
        waiting = main_status(server, "pull-latest").get("state", {}).get("waiting", {})
        return str(waiting.get("reason", "")) + " " + str(waiting.get("message", ""))

    text = wait_for(lambda: any(r in reason() for r in ("ErrImagePull", "ImagePullBackOff"))
                    and reason(), 40, "ErrImagePull")
    assert "busybox" in text or "docker.io" in text
    failed = [e["message"] for e in events_for(server, "pull-latest") if e["reason"] == "Failed"]
    assert any(m.startswith('Failed to pull image "busybox:latest": ') for m in failed), failed
    assert "Error: ErrImagePull" in failed
    create_pod(server, "never-pull", "true", image="example.invalid/missing:1", pull="Never")
    wait_for(lambda: main_status(server, "never-pull").get("state", {}).get("waiting", {})
             .get("reason") == "ErrImageNeverPull", 20, "ErrImageNeverPull")
    server.kubectl("delete", "pod", "pull-latest", "never-pull", "--grace-period=1")


def test_an_invalid_image_name_is_reported(server: KublingServer) -> None:
    create_pod(server, "bad-name", "true", image="busybox:-bad", pull="IfNotPresent")
    wait_for(lambda: main_status(server, "bad-name").get("state", {}).get("waiting", {})
             .get("reason") == "InvalidImageName", 20, "InvalidImageName")
    message = main_status(server, "bad-name")["state"]["waiting"]["message"]
    assert 'couldn\'t parse image name "busybox:-bad"' in message
    server.kubectl("delete", "pod", "bad-name", "--grace-period=1")


def events_for(srv: KublingServer, name: str) -> list[dict[str, Any]]:
    out = srv.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}",
                      "-o", "json").stdout
    return list(json.loads(out)["items"])


def test_a_pod_pulls_from_the_embedded_registry(server: KublingServer, tmp_path: Path) -> None:
    """Pushed with skopeo to the server's registry, pulled by the agent for a pod under
    another name of that registry: the upstream events, and the image in node status."""
    layout = tmp_path / "layout"
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from kubling.node.images import build; "
                    "build.build_image('busybox', Path(sys.argv[1]))", str(layout)],
                   check=True, cwd=REPO)
    port = server.registry_port
    push = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false",
                           f"oci:{layout}:docker.io/library/busybox:latest",
                           f"docker://127.0.0.1:{port}/team/tool:v1"],
                          capture_output=True, text=True, check=False, timeout=120)
    assert push.returncode == 0, push.stderr
    image = f"127.0.0.1:{port}/team/tool:v1"
    create_pod(server, "pulled", "echo pulled; sleep 3600", image=image, pull="Always")
    wait_running(server, "pulled")
    reasons = {e["reason"]: e["message"] for e in events_for(server, "pulled")}
    assert reasons["Pulling"] == f'Pulling image "{image}"'
    assert reasons["Pulled"].startswith(f'Successfully pulled image "{image}" in ')
    assert "Image size: " in reasons["Pulled"] and reasons["Pulled"].endswith(" bytes.")
    assert main_status(server, "pulled")["imageID"].startswith(f"127.0.0.1:{port}/team/tool@sha256:")

    def listed() -> bool:
        node = json.loads(server.kubectl("get", "nodes", "-o", "json").stdout)["items"][0]
        names = [n for entry in node["status"].get("images", []) for n in entry["names"]]
        return f"127.0.0.1:{port}/team/tool:v1" in names
    wait_for(listed, 20, "the pulled image in node.status.images")
    server.kubectl("delete", "pod", "pulled", "--grace-period=1")


def test_a_missing_executable_is_a_start_error(server: KublingServer) -> None:
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "badcmd"},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
                     "command": ["/no/such/binary"]}]}}
    server.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: phase(server, "badcmd") == "Failed", 20, "phase Failed")
    terminated = main_status(server, "badcmd")["state"]["terminated"]
    assert terminated["reason"] == "StartError" and terminated["exitCode"] == 128
    assert "no such file" in terminated["message"] or "not found" in terminated["message"]


def test_pods_reach_each_other_and_the_host_reaches_them(server: KublingServer) -> None:
    create_pod(server, "web", "mkdir -p /www && echo it-works > /www/index.html && "
               "exec httpd -f -p 8080 -h /www")
    ip = wait_running(server, "web")["status"]["podIP"]
    body = wait_for(lambda: _try_get(f"http://{ip}:8080/"), 10, "httpd from the host")
    assert "it-works" in body
    create_pod(server, "client", f"wget -qO- http://{ip}:8080/; sleep 3600")
    client = wait_running(server, "client")
    wait_for(lambda: "it-works" in log_text(server, client), 10, "wget's output")


def test_services_route_and_resolve(server: KublingServer) -> None:
    """A Service in front of a pod: its ClusterIP and NodePort reach it through the
    nftables proxy, and pods find it by name through the cluster DNS (search path, ndots)."""
    web = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "svc-backend", "labels": {"app": "svc-backend"}},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
               "name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
               "command": ["sh", "-c", "mkdir -p /www && echo via-service > /www/index.html"
                           " && exec httpd -f -p 8080 -h /www"],
               "ports": [{"containerPort": 8080, "name": "http"}]}]}}
    server.kubectl("apply", "-f", "-", input=json.dumps(web))
    server.kubectl("create", "service", "nodeport", "svc-web", "--tcp=80:8080")
    server.kubectl("set", "selector", "service", "svc-web", "app=svc-backend")
    wait_running(server, "svc-backend")
    svc = json.loads(server.kubectl("get", "service", "svc-web", "-o", "json").stdout)
    cluster_ip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network("10.43.0.0/16")
    body = wait_for(lambda: _try_get(f"http://{cluster_ip}/"), 15, "the ClusterIP from the host")
    assert "via-service" in body
    node = json.loads(server.kubectl("get", "nodes", "-o", "json").stdout)["items"][0]
    node_ip = next(a["address"] for a in node["status"]["addresses"]
                   if a["type"] == "InternalIP")
    assert "via-service" in wait_for(lambda: _try_get(f"http://{node_ip}:{node_port}/"), 15,
                                     "the NodePort")
    dns = json.loads(server.kubectl("get", "service", "kube-dns", "-n", "kube-system",
                                    "-o", "json").stdout)
    assert dns["spec"]["clusterIP"] == "10.43.0.10"
    create_pod(server, "svc-client",
               "cat /etc/resolv.conf; nslookup svc-web.default.svc.cluster.local; "
               "wget -qO- http://svc-web/; wget -qO- http://svc-web.default:80/; sleep 3600")
    client = wait_running(server, "svc-client")
    text = wait_for(lambda: log_text(server, client).count("via-service") >= 2
                    and log_text(server, client), 20, "wget through the service name")
    assert "nameserver 10.43.0.10" in text and "ndots:5" in text
    assert cluster_ip in text, text  # nslookup's answer
    server.kubectl("delete", "pod", "svc-backend", "svc-client", "--grace-period=1")
    server.kubectl("delete", "service", "svc-web")


def _try_get(url: str) -> str:
    with contextlib.suppress(OSError):
        return http_get(url)
    return ""


def test_delete_honours_grace_and_cleans_up(server: KublingServer) -> None:
    create_pod(server, "graceful", "trap 'echo bye; exit 0' TERM; echo up; "
               "while true; do sleep 0.2; done")
    obj = wait_running(server, "graceful")
    wait_for(lambda: "up" in log_text(server, obj), 5, "the trap to be set")
    uid = obj["metadata"]["uid"]
    started = time.monotonic()
    server.kubectl("delete", "pod", "graceful", "--timeout=30s")
    assert time.monotonic() - started < 8
    assert not any(cid.startswith(uid) for cid in runc_ids(server))
    assert not os.path.exists(f"/run/netns/kubling-{uid[:12]}")
    pod_dir = server.data_dir / "pods" / uid
    assert not pod_dir.exists()
    assert str(pod_dir) not in Path("/proc/self/mountinfo").read_text()


def test_pod_startup_latency(server: KublingServer) -> None:
    """Created → Running for ten pods applied at once; prints p50 (the report's figure)."""
    from kubernetes import client as k8s

    api = k8s.CoreV1Api(server.api_client())
    names = [f"lat-{i}" for i in range(10)]
    manifests = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n},
                  "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                      {"name": "main", "image": "busybox:latest",
                       "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}}
                 for n in names]
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    for manifest in manifests:
        created[manifest["metadata"]["name"]] = time.monotonic()
        api.create_namespaced_pod("default", manifest)
    deadline = time.monotonic() + 30
    while len(running) < len(names) and time.monotonic() < deadline:
        for item in api.list_namespaced_pod("default").items:
            name = item.metadata.name
            if name in created and name not in running and item.status.phase == "Running":
                running[name] = time.monotonic()
        time.sleep(0.02)
    assert len(running) == len(names)
    latencies = sorted(running[n] - created[n] for n in names)
    print(f"\npod startup latency (created → Running): p50 {statistics.median(latencies):.3f}s "
          f"max {latencies[-1]:.3f}s")
    server.kubectl("delete", "pods", *names, "--grace-period=1", "--wait=false")


def test_an_agent_restart_adopts_running_containers(server: KublingServer) -> None:
    create_pod(server, "survivor", "sleep 3600")
    before = wait_running(server, "survivor")
    uid = before["metadata"]["uid"]
    state_before = subprocess.run(
        ["runc", "--root", str(server.data_dir / "runtime" / "runc"), "state",
         f"{uid}_main_0"], capture_output=True, text=True, check=True).stdout
    def transitions() -> dict[str, str]:
        node = json.loads(server.kubectl("get", "nodes", "-o", "json").stdout)["items"][0]
        return {c["type"]: c["lastTransitionTime"] for c in node["status"]["conditions"]}

    conditions_before = transitions()
    server.stop()
    server.start()
    time.sleep(3)  # the agent re-syncs the pod
    # Conditions that did not change keep their transition times, as the kubelet's do.
    assert transitions() == conditions_before
    after = wait_running(server, "survivor")
    status = after["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0
    assert status["state"]["running"]["startedAt"] == (
        before["status"]["containerStatuses"][0]["state"]["running"]["startedAt"])
    state_after = subprocess.run(
        ["runc", "--root", str(server.data_dir / "runtime" / "runc"), "state",
         f"{uid}_main_0"], capture_output=True, text=True, check=True).stdout
    assert json.loads(state_after)["pid"] == json.loads(state_before)["pid"]
