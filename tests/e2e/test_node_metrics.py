"""The agent's usage endpoints on :10250, reached as admins do, through the API server's
``nodes/proxy``: ``/metrics/resource`` (what metrics-server scrapes) and ``/stats/summary``,
with a real pod burning CPU and holding memory under runc."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_node_agent import create_pod, wait_running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("metrics")) as srv:
        yield srv


def _node(srv: AgentServer) -> str:
    return str(srv.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout)


def _sample(text: str, family: str, **labels: str) -> float | None:
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(\{.*\})? (\S+)( \d+)?", line)
        if match is None or match[1] != family:
            continue
        if all(f'{k}="{v}"' in (match[2] or "") for k, v in labels.items()):
            return float(match[3])
    return None


def test_metrics_resource_and_stats_summary(server: AgentServer) -> None:
    # A busy loop for two seconds, then 20 MiB written to the container's /dev/shm (shared
    # memory is charged to the writer's cgroup and is not reclaimable cache).
    create_pod(server, "busy", "i=0; end=$(($(date +%s)+2)); "
               "while [ $(date +%s) -lt $end ]; do i=$((i+1)); done; "
               "dd if=/dev/zero of=/dev/shm/fill bs=1M count=20 2>/dev/null; sleep 3600")
    wait_running(server, "busy")
    node = _node(server)
    path = f"/api/v1/nodes/{node}/proxy/metrics/resource"

    def busy_cpu() -> float | None:
        text = server.kubectl("get", "--raw", path).stdout
        value = _sample(text, "container_cpu_usage_seconds_total", container="main",
                        namespace="default", pod="busy")
        return value if value is not None and value > 0.5 else None

    wait_for(busy_cpu, 20, "the busy container's cpu time to pass 0.5 s")

    def filled() -> str | None:
        text = str(server.kubectl("get", "--raw", path).stdout)
        working = _sample(text, "container_memory_working_set_bytes", pod="busy")
        return text if working is not None and working >= 20 * 1024 * 1024 else None

    text = wait_for(filled, 20, "the busy container's working set to pass 20 MiB")
    assert "# TYPE container_cpu_usage_seconds_total counter" in text
    assert "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node" in text
    pod_cpu = _sample(text, "pod_cpu_usage_seconds_total", pod="busy")
    assert pod_cpu is not None and pod_cpu >= (busy_cpu() or 0)
    started = _sample(text, "container_start_time_seconds", pod="busy")
    assert started is not None and abs(started - time.time()) < 120
    assert (_sample(text, "node_cpu_usage_seconds_total") or 0) > 0
    assert (_sample(text, "node_memory_working_set_bytes") or 0) > 0
    assert _sample(text, "resource_scrape_error") == 0

    summary_path = f"/api/v1/nodes/{node}/proxy/stats/summary"
    json.loads(server.kubectl("get", "--raw", summary_path).stdout)
    time.sleep(1)
    summary = json.loads(server.kubectl("get", "--raw", summary_path).stdout)
    assert summary["node"]["nodeName"] == node
    assert summary["node"]["cpu"]["usageNanoCores"] > 0
    assert summary["node"]["memory"]["workingSetBytes"] > 0
    pods = {p["podRef"]["name"]: p for p in summary["pods"]}
    busy = pods["busy"]
    assert busy["podRef"]["namespace"] == "default"
    (main,) = busy["containers"]
    assert main["name"] == "main" and "usageNanoCores" in main["cpu"]
    assert main["memory"]["workingSetBytes"] >= 20 * 1024 * 1024
    assert main["cpu"]["usageCoreNanoSeconds"] > 500_000_000



def test_pods_sit_below_their_qos_class_cgroup(server: AgentServer) -> None:
    """The kubelet's cgroupfs layout: Guaranteed pods directly below the root (here
    /kubling), Burstable and BestEffort ones below their class's cgroup; the container's
    own /proc/self/cgroup says where it is."""
    cases = {  # name: (resources, QoS class, parent cgroup)
        "qos-guaranteed": ({"limits": {"cpu": "100m", "memory": "64Mi"}}, "Guaranteed",
                           "/kubling"),
        "qos-burstable": ({"requests": {"cpu": "50m"}}, "Burstable", "/kubling/burstable"),
        "qos-besteffort": ({}, "BestEffort", "/kubling/besteffort"),
    }
    for name, (resources, _qos, _parent) in cases.items():
        server.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "cat /proc/self/cgroup; sleep 3600"],
                "resources": resources}]}}))
    for name, (_resources, qos, parent) in cases.items():
        obj = wait_running(server, name)
        assert obj["status"]["qosClass"] == qos
        wait_for(lambda n=name: ":memory:" in server.kubectl("logs", n).stdout, 10,
                 f"{name}'s cgroups")
        memory = next(line for line in server.kubectl("logs", name).stdout.splitlines()
                      if ":memory:" in line)
        assert memory.split(":", 2)[2] == f"{parent}/pod{obj['metadata']['uid']}/main", memory
