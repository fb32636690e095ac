"""Nodes going away: kubectl drain honours a PodDisruptionBudget, and the pods of a node
that stops heartbeating are replaced elsewhere — on simulated nodes, with the real kubectl."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.server_fixture import KublingServer, running_server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    data = tmp_path_factory.mktemp("nodefail") / "data"
    with running_server(data, extra_args=["--simulated-nodes", "3"]) as server:
        _eventually(lambda: server.kubectl("get", "nodes", "--no-headers").stdout.count(
            " Ready ") == 3)
        yield server


def _eventually(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError("condition not reached in time")


def _pods(server: KublingServer, ns: str) -> list[tuple[str, str, bool]]:
    items = server.kubectl_yaml("get", "pods", "-n", ns)["items"]
    return [(p["metadata"]["name"], p["spec"].get("nodeName", ""),
             p["status"].get("phase") == "Running" and not p["metadata"].get(
                 "deletionTimestamp")) for p in items]


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute,
         tolerationSeconds: 1}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute,
         tolerationSeconds: 1}}
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            preference:
              matchExpressions: [{{key: kubernetes.io/hostname, operator: In,
                                  values: [{preferred}]}}]
      containers: [{{name: c, image: nginx}}]
"""


def test_drain_respects_the_disruption_budget(cluster: KublingServer) -> None:
    ns = "drain"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=DEPLOYMENT.format(
        name="web", replicas=3, preferred="kubling-sim-0"))
    cluster.kubectl("create", "pdb", "web", "-n", ns, "--selector=app=web",
                    "--min-available=3")
    _eventually(lambda: sum(r for _, _, r in _pods(cluster, ns)) == 3)
    _eventually(lambda: cluster.kubectl_yaml("get", "pdb", "web", "-n", ns).get(
        "status", {}).get("currentHealthy") == 3)
    # every pod is needed: the drain cordons the node but may evict nothing
    blocked = cluster.kubectl("drain", "kubling-sim-0", "--ignore-daemonsets",
                              "--timeout=4s", check=False)
    assert blocked.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget" in (
        blocked.stderr)
    node = cluster.kubectl_yaml("get", "node", "kubling-sim-0")
    assert node["spec"]["unschedulable"] is True
    # one disruption allowed: the drain evicts, the Deployment replaces pods elsewhere
    cluster.kubectl("patch", "pdb", "web", "-n", ns, "--type=merge",
                    "-p", '{"spec":{"minAvailable":2}}')
    out = cluster.kubectl("drain", "kubling-sim-0", "--ignore-daemonsets",
                          "--timeout=90s").stdout
    assert "node/kubling-sim-0 drained" in out
    _eventually(lambda: [(n != "kubling-sim-0") for _, n, r in _pods(cluster, ns) if r]
                == [True, True, True])
    cluster.kubectl("uncordon", "kubling-sim-0")


def test_pods_of_a_silent_node_are_replaced(cluster: KublingServer) -> None:
    ns = "silent"
    cluster.kubectl("create", "namespace", ns)
    agent = subprocess.Popen(
        [sys.executable, "-m", "kubling.cli.main", "simulate", "--nodes", "1",
         "--prefix", "flaky", "--kubeconfig", str(cluster.kubeconfig)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _eventually(lambda: " Ready " in cluster.kubectl(
            "get", "node", "flaky-0", "--no-headers", check=False).stdout)
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=DEPLOYMENT.format(
            name="victim", replicas=1, preferred="flaky-0"))
        _eventually(lambda: [n for _, n, r in _pods(cluster, ns) if r] == ["flaky-0"])
    finally:
        agent.send_signal(signal.SIGKILL)  # the node's "kubelet" dies: no more heartbeats
        agent.wait(10)
    # after the 40 s grace the node is Unknown and tainted; the pod is evicted and replaced
    _eventually(lambda: "NotReady" in cluster.kubectl(
        "get", "node", "flaky-0", "--no-headers").stdout, timeout=90)
    taints = cluster.kubectl_yaml("get", "node", "flaky-0")["spec"].get("taints", [])
    assert {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"} in [
        {"key": t["key"], "effect": t["effect"]} for t in taints]
    _eventually(lambda: any(r and n.startswith("kubling-sim-")
                            for _, n, r in _pods(cluster, ns)), timeout=60)
