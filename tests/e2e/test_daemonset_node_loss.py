"""A DaemonSet follows its nodes (real kubectl, three simulated nodes): a cordoned node
keeps its daemon pod, a deleted node's pod is collected by the pod GC and the DaemonSet
wants one pod fewer, and a node that joins gets one."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.server_fixture import KublingServer, running_server, wait_for

DAEMONSET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: ds-nodes}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: busybox, command: [sleep, 1d]}]
"""
#: The pod GC waits out upstream's 40 s quarantine (and its 20 s period) before it
#: deletes the pods of a node that is gone.
POD_GC_WAIT = 75.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    data = tmp_path_factory.mktemp("ds-nodes") / "data"
    with running_server(data, extra_args=["--simulated-nodes", "3"]) as server:
        wait_for(lambda: server.kubectl("get", "nodes", "--no-headers").stdout.count(
            " Ready ") == 3, 40, "three simulated nodes Ready")
        yield server


def _pods_by_node(server: KublingServer) -> dict[str, dict[str, Any]]:
    pods = server.kubectl_yaml("get", "pods", "-n", "ds-nodes", "-l", "app=agent")["items"]
    return {p["spec"].get("nodeName", ""): p for p in pods
            if not p["metadata"].get("deletionTimestamp")}


def _status(server: KublingServer) -> dict[str, Any]:
    status: dict[str, Any] = server.kubectl_yaml(
        "get", "daemonset", "agent", "-n", "ds-nodes").get("status") or {}
    return status


def _covers(server: KublingServer, nodes: set[str]) -> bool:
    pods = _pods_by_node(server)
    status = _status(server)
    return (set(pods) == nodes
            and all(p["status"].get("phase") == "Running" for p in pods.values())
            and status.get("desiredNumberScheduled") == len(nodes)
            and status.get("currentNumberScheduled") == len(nodes)
            and status.get("numberReady") == len(nodes))


def test_daemonset_follows_cordon_delete_and_join(cluster: KublingServer) -> None:
    sims = {f"kubling-sim-{i}" for i in range(3)}
    cluster.kubectl("create", "namespace", "ds-nodes")
    cluster.kubectl("apply", "-f", "-", input=DAEMONSET)
    wait_for(lambda: _covers(cluster, sims), 40, "a daemon pod Running on every node")

    # Cordoned: the daemon pod stays (daemon pods tolerate node.kubernetes.io/unschedulable).
    victim = "kubling-sim-1"
    uid = _pods_by_node(cluster)[victim]["metadata"]["uid"]
    cluster.kubectl("cordon", victim)
    tolerations = _pods_by_node(cluster)[victim]["spec"]["tolerations"]
    assert {"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
            "effect": "NoSchedule"} in tolerations
    wait_for(lambda: _status(cluster).get("observedGeneration") == 1, 10, "status observed")
    assert _covers(cluster, sims)
    assert _pods_by_node(cluster)[victim]["metadata"]["uid"] == uid

    # Deleted: one pod fewer wanted at once; the pod GC removes the orphan after quarantine.
    cluster.kubectl("delete", "node", victim)
    wait_for(lambda: _status(cluster).get("desiredNumberScheduled") == 2, 20,
             "desiredNumberScheduled 2")
    wait_for(lambda: victim not in _pods_by_node(cluster), POD_GC_WAIT,
             "the deleted node's daemon pod gone")
    assert _covers(cluster, sims - {victim})

    # Joined: a new simulated node gets its daemon pod.
    joiner = subprocess.Popen(
        [sys.executable, "-m", "kubling.cli.main", "simulate", "--nodes", "1",
         "--prefix", "kubling-join", "--kubeconfig", str(cluster.kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _covers(cluster, sims - {victim} | {"kubling-join-0"}), 40,
                 "a daemon pod on the node that joined")
    finally:
        joiner.send_signal(signal.SIGINT)
        _, err = joiner.communicate(timeout=15)
    assert "Traceback" not in err
