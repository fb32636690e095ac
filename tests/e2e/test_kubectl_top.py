"""``kubectl top`` against the metrics API the server computes from its agents'
``/metrics/resource`` (``--metric-resolution 2s`` so two scrapes take seconds): a pod
burning CPU under a 200m limit, one holding memory in /dev/shm, the node, selectors,
sorting, the answers before metrics exist, a deleted pod, and the Python client."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_kubectl_old_versions import _binary as old_kubectl
from tests.e2e.test_node_agent import create_pod, wait_running
from tests.server_fixture import running_server

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("top"),
                      extra_args=("--metric-resolution", "2s")) as srv:
        create_pod(srv, "busy", "while :; do :; done", extra={"containers": [{
            "name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "while :; do :; done"],
            "resources": {"limits": {"cpu": "200m"}}}]})
        create_pod(srv, "hog", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 "
                   "2>/dev/null; sleep 3600")
        srv.kubectl("label", "pod", "busy", "app=busy")
        srv.kubectl("label", "pod", "hog", "app=hog")
        wait_running(srv, "busy")
        wait_running(srv, "hog")
        yield srv


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def _millicores(cell: str) -> float:
    return float(cell[:-1]) if cell.endswith("m") else float(cell) * 1000


def _mebibytes(cell: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(cell[:-2]) * units[cell[-2:]] if cell[-2:] in units else float(cell) / MIB


def _top_pods(srv: AgentServer, *args: str) -> dict[str, list[str]]:
    result = srv.kubectl("top", "pods", *args, check=False)
    if result.returncode != 0:
        return {}
    return {row[0]: row for row in _rows(result.stdout)[1:]}


def _settled(srv: AgentServer) -> dict[str, list[str]]:
    """Once both pods show, busy near its limit and hog holding its 40 MiB."""
    rows = _top_pods(srv)
    busy, hog = rows.get("busy"), rows.get("hog")
    if busy is None or hog is None:
        return {}
    if not 150 <= _millicores(busy[1]) <= 250 or _mebibytes(hog[2]) < 40:
        return {}
    return rows


def test_top_pods_show_cpu_near_the_limit_and_the_memory_held(server: AgentServer) -> None:
    started = time.monotonic()
    rows = wait_for(lambda: _settled(server), 60, "busy at ~200m and hog at >= 40Mi")
    print(f"top pods settled after {time.monotonic() - started:.1f}s: {rows}")
    header = _rows(server.kubectl("top", "pods").stdout)[0]
    assert header == ["NAME", "CPU(cores)", "MEMORY(bytes)"]


@pytest.mark.parametrize("version", ["1.27", "1.28"])
def test_older_kubectl_top(server: AgentServer, version: str) -> None:
    """kubectl 1.27/1.28 discover the group through aggregated discovery v2beta1."""
    binary = old_kubectl(version)
    assert binary is not None, f"kubectl.{version} is not installed"
    wait_for(lambda: _settled(server), 60, "both pods to have metrics")
    rows = _rows(server.kubectl("top", "pods", "--no-headers", binary=binary).stdout)
    assert {"busy", "hog"} <= {row[0] for row in rows}
    assert len(_rows(server.kubectl("top", "nodes", "--no-headers", binary=binary).stdout)) == 1


def test_top_nodes_show_usage_and_percentages(server: AgentServer) -> None:
    node = server.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout
    result = wait_for(lambda: server.kubectl("top", "nodes", check=False).returncode == 0
                      and server.kubectl("top", "nodes").stdout, 30, "kubectl top nodes")
    header, *rows = _rows(result)
    assert header == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    (row,) = rows
    assert row[0] == node
    assert _millicores(row[1]) >= 150  # busy alone burns 200m
    assert re.fullmatch(r"\d+%", row[2]) and re.fullmatch(r"\d+%", row[4])
    assert _mebibytes(row[3]) > 40
    named = _rows(server.kubectl("top", "node", node, "--no-headers").stdout)
    assert named[0][0] == node


def test_containers_all_namespaces_selectors_and_sorting(server: AgentServer) -> None:
    wait_for(lambda: _settled(server), 60, "both pods to have metrics")
    containers = _rows(server.kubectl("top", "pod", "busy", "--containers").stdout)
    assert containers[0] == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert containers[1][:2] == ["busy", "main"] and 150 <= _millicores(containers[1][2]) <= 250
    everywhere = _rows(server.kubectl("top", "pods", "-A").stdout)
    assert everywhere[0][:2] == ["NAMESPACE", "NAME"]
    assert ["default", "busy"] in [row[:2] for row in everywhere[1:]]
    selected = _top_pods(server, "-l", "app=hog")
    assert list(selected) == ["hog"]
    by_cpu = _rows(server.kubectl("top", "pods", "--sort-by=cpu", "--no-headers").stdout)
    assert by_cpu[0][0] == "busy"
    by_memory = _rows(server.kubectl("top", "pods", "--sort-by=memory", "--no-headers").stdout)
    assert by_memory[0][0] == "hog"


def test_the_raw_api_python_client_and_discovery(server: AgentServer) -> None:
    wait_for(lambda: _settled(server), 60, "both pods to have metrics")
    listed = json.loads(server.kubectl("get", "--raw",
                                       "/apis/metrics.k8s.io/v1beta1/nodes").stdout)
    assert listed["kind"] == "NodeMetricsList" and listed["apiVersion"] == "metrics.k8s.io/v1beta1"
    item = listed["items"][0]
    assert re.fullmatch(r"\d+(\.\d+)?m?s", item["window"]), item["window"]
    assert re.fullmatch(r"\d+[num]?", item["usage"]["cpu"]), item["usage"]
    assert re.fullmatch(r"\d+(Ki|Mi|Gi)?", item["usage"]["memory"]), item["usage"]
    pod = json.loads(server.kubectl(
        "get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy").stdout)
    assert pod["kind"] == "PodMetrics" and pod["metadata"]["labels"] == {"app": "busy"}
    assert [c["name"] for c in pod["containers"]] == ["main"]
    by_field = json.loads(server.kubectl(
        "get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=metadata.name%3Dhog"
    ).stdout)
    assert [i["metadata"]["name"] for i in by_field["items"]] == ["hog"]

    watch = server.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes?watch=true",
                           check=False)
    assert watch.returncode != 0 and "MethodNotAllowed" in watch.stderr

    printed = _rows(server.kubectl("get", "pods.metrics.k8s.io", "hog").stdout)
    assert printed[0] == ["NAME", "CPU", "MEMORY", "WINDOW"] and printed[1][0] == "hog"
    assert _mebibytes(printed[1][2]) >= 40
    node_rows = _rows(server.kubectl("get", "nodes.metrics.k8s.io").stdout)
    assert node_rows[0] == ["NAME", "CPU", "MEMORY", "WINDOW"] and len(node_rows) == 2

    resources = _rows(server.kubectl("api-resources", "--api-group=metrics.k8s.io").stdout)
    kinds = {(row[0], row[-1]) for row in resources[1:]}
    assert kinds == {("nodes", "NodeMetrics"), ("pods", "PodMetrics")}

    from kubernetes import client

    with server.api_client() as api:
        custom = client.CustomObjectsApi(api)
        nodes = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
        assert nodes["kind"] == "NodeMetricsList" and nodes["items"][0]["usage"]["cpu"]
        pods = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", "default",
                                                    "pods", label_selector="app=busy")
        assert [p["metadata"]["name"] for p in pods["items"]] == ["busy"]


def test_metrics_not_available_yet_for_a_new_pod(server: AgentServer) -> None:
    create_pod(server, "fresh", "sleep 3600")
    server.kubectl("label", "pod", "fresh", "app=fresh")
    named = server.kubectl("top", "pod", "fresh", check=False)
    assert named.returncode != 0
    assert 'podmetrics.metrics.k8s.io "default/fresh" not found' in named.stderr
    listed = server.kubectl("top", "pods", "-l", "app=fresh", check=False)
    assert listed.returncode != 0 and "error: metrics not available yet" in listed.stderr
    missing = server.kubectl("top", "pod", "nosuchpod", check=False)
    assert 'pods "nosuchpod" not found' in missing.stderr
    wait_running(server, "fresh")
    wait_for(lambda: "fresh" in _top_pods(server, "-l", "app=fresh"), 30, "fresh's metrics")
    server.kubectl("delete", "pod", "fresh", "--wait=false")
    wait_for(lambda: "fresh" not in _top_pods(server), 15, "fresh to leave kubectl top")


def test_a_deleted_pod_leaves_the_list(server: AgentServer) -> None:
    wait_for(lambda: _settled(server), 60, "both pods to have metrics")
    server.kubectl("delete", "pod", "busy", "--grace-period=1")
    rows = _top_pods(server)
    assert "busy" not in rows and "hog" in rows
    gone = server.kubectl("top", "pod", "busy", check=False)
    assert 'pods "busy" not found' in gone.stderr


def test_a_node_without_reachable_agent_is_skipped_and_logged_once(server: AgentServer) -> None:
    """A Ready node whose agent address refuses connections costs nothing but a log line;
    the real node's metrics keep coming."""
    ghost = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "kubling-ghost"}}
    server.kubectl("apply", "-f", "-", input=json.dumps(ghost))
    try:
        status = {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "test", "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now()}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}}}}
        server.kubectl("patch", "node", "kubling-ghost", "--subresource=status",
                       "--type=merge", "-p", json.dumps(status))
        line = "metrics: cannot scrape node kubling-ghost"
        wait_for(lambda: line in server.read_log(), 15, "the failed scrape to be logged")
        time.sleep(5)  # two more rounds at 2 s
        assert server.read_log().count(line) == 1
        rows = {row[0]: row for row in
                _rows(server.kubectl("top", "nodes", "--no-headers").stdout)}
        # kubectl lists a node without metrics as unknown, after the measured ones.
        assert list(rows)[-1] == "kubling-ghost"
        assert rows["kubling-ghost"][1:] == ["<unknown>"] * 4
        (real,) = (row for name, row in rows.items() if name != "kubling-ghost")
        assert real[1].endswith("m")
        ghost_top = server.kubectl("top", "node", "kubling-ghost", check=False)
        assert 'nodemetrics.metrics.k8s.io "kubling-ghost" not found' in ghost_top.stderr
    finally:
        server.kubectl("delete", "node", "kubling-ghost", "--wait=false", check=False)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def test_top_nodes_before_any_metrics(tmp_path: Path) -> None:
    """A control plane with no agent has no node metrics: kubectl says so as upstream."""
    with running_server(tmp_path / "data") as srv:
        result = srv.kubectl("top", "nodes", check=False)
        assert result.returncode != 0
        assert result.stderr.strip() == "error: metrics not available yet"
        api = srv.kubectl("api-versions").stdout.split()
        assert "metrics.k8s.io/v1beta1" in api
