"""The scheduler and simulated nodes, end to end with the real kubectl."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.server_fixture import KublingServer, running_server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    data = tmp_path_factory.mktemp("sched") / "data"
    with running_server(data, extra_args=["--simulated-nodes", "3"]) as server:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            nodes = server.kubectl("get", "nodes", "-o", "name").stdout.split()
            if len(nodes) == 3:
                break
            time.sleep(0.2)
        yield server


def _wait_for(server: KublingServer, args: list[str], want: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = server.kubectl(*args, check=False).stdout
        if want in out:
            return out
        time.sleep(0.2)
    raise AssertionError(f"{want!r} not seen in kubectl {' '.join(args)}: {out}")


def test_simulated_nodes_register_ready(cluster: KublingServer) -> None:
    out = cluster.kubectl("get", "nodes").stdout
    assert out.count(" Ready ") == 3
    node = cluster.kubectl_yaml("get", "node", "kubling-sim-0")
    assert node["status"]["allocatable"]["pods"] == "110"
    lease = cluster.kubectl_yaml("get", "lease", "kubling-sim-0", "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == "kubling-sim-0"


def test_pods_are_scheduled_and_run(cluster: KublingServer) -> None:
    cluster.kubectl("run", "web", "--image=nginx")
    _wait_for(cluster, ["get", "pod", "web"], "Running")
    pod = cluster.kubectl_yaml("get", "pod", "web")
    assert pod["spec"]["nodeName"].startswith("kubling-sim-")
    assert pod["status"]["podIP"].startswith("10.42.")
    events = cluster.kubectl("get", "events", "--field-selector",
                             "involvedObject.name=web,reason=Scheduled").stdout
    assert f"Successfully assigned default/web to {pod['spec']['nodeName']}" in events
    cluster.kubectl("delete", "pod", "web", "--timeout=20s")  # the node confirms the stop
    assert "NotFound" in cluster.kubectl("get", "pod", "web", check=False).stderr


def test_run_to_completion_pods_complete(cluster: KublingServer) -> None:
    cluster.kubectl("run", "once", "--image=busybox", "--restart=Never")
    _wait_for(cluster, ["get", "pod", "once"], "Completed")


def test_unschedulable_pod_waits_for_a_matching_node(cluster: KublingServer) -> None:
    cluster.kubectl("run", "picky", "--image=nginx", "--overrides",
                    '{"spec":{"nodeSelector":{"disk":"ssd"}}}')
    out = _wait_for(cluster, ["get", "events", "--field-selector",
                              "involvedObject.name=picky,reason=FailedScheduling"],
                    "FailedScheduling")
    assert ("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. "
            "preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
            "scheduling.") in " ".join(out.split())
    conditions = cluster.kubectl_yaml("get", "pod", "picky")["status"]["conditions"]
    condition = next(c for c in conditions if c["type"] == "PodScheduled")
    assert condition["status"] == "False" and condition["reason"] == "Unschedulable"
    cluster.kubectl("label", "node", "kubling-sim-2", "disk=ssd")  # a node event requeues it
    _wait_for(cluster, ["get", "pod", "picky", "-o", "wide"], "kubling-sim-2")


def test_scheduler_spreads_by_least_allocated(cluster: KublingServer) -> None:
    for i in range(6):
        overrides = json.dumps({"spec": {"containers": [{
            "name": f"spread-{i}", "image": "nginx", "resources": {"requests": {"cpu": "1"}}}]}})
        cluster.kubectl("run", f"spread-{i}", "--image=nginx", "--overrides", overrides)
    deadline = time.monotonic() + 20
    nodes: list[str] = []
    while time.monotonic() < deadline:
        out = cluster.kubectl("get", "pods", "-o",
                              "custom-columns=NAME:.metadata.name,NODE:.spec.nodeName",
                              "--no-headers").stdout
        nodes = [line.split()[1] for line in out.splitlines()
                 if line.startswith("spread-") and line.split()[1] != "<none>"]
        if len(nodes) == 6:
            break
        time.sleep(0.2)
    assert sorted(nodes.count(n) for n in set(nodes)) == [2, 2, 2]


def test_extended_resources_are_scheduled_by_capacity(cluster: KublingServer) -> None:
    """An administrator advertises an extended resource on one node (a JSON patch of its
    status, as the Kubernetes docs show); pods asking for it land there until it runs out."""
    patch = json.dumps([
        {"op": "add", "path": f"/status/{part}/example.com~1dongle", "value": "2"}
        for part in ("capacity", "allocatable")])
    cluster.kubectl("patch", "node", "kubling-sim-1", "--subresource=status", "--type=json",
                    "-p", patch)
    for i in range(3):
        overrides = json.dumps({"spec": {"containers": [{
            "name": "c", "image": "nginx",
            "resources": {"limits": {"example.com/dongle": "1"},
                          "requests": {"example.com/dongle": "1"}}}]}})
        cluster.kubectl("run", f"dongle-{i}", "--image=nginx", "--overrides", overrides)
    for i in range(2):
        _wait_for(cluster, ["get", "pod", f"dongle-{i}", "-o", "wide"], "kubling-sim-1")
    out = _wait_for(cluster, ["get", "events", "--field-selector",
                              "involvedObject.name=dongle-2,reason=FailedScheduling"],
                    "FailedScheduling")
    assert "0/3 nodes are available: 3 Insufficient example.com/dongle." in " ".join(out.split())
    cluster.kubectl("delete", "pod", "dongle-0", "--wait=false")
    _wait_for(cluster, ["get", "pod", "dongle-2", "-o", "wide"], "kubling-sim-1")
