"""Delayed volume binding end to end: a ``WaitForFirstConsumer`` claim stays Pending until
a pod uses it; the scheduler then puts the pod where a local volume pinned by nodeAffinity
lives and binds the claim to that volume (real kubectl, three simulated nodes)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.server_fixture import KublingServer, running_server, wait_for

NODE = "kubling-sim-2"
MANIFESTS = f"""
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: kubling-local}}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: kubling-local-pv}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: kubling-local
  local: {{path: /mnt/kubling-disk}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: kubernetes.io/hostname, operator: In, values: [{NODE}]}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: wffc}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: kubling-local
  resources: {{requests: {{storage: 1Gi}}}}
"""


def pod(name: str, claim: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "wffc"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1d"],
                                 "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    data = tmp_path_factory.mktemp("wffc") / "data"
    with running_server(data, extra_args=["--simulated-nodes", "3"]) as server:
        wait_for(lambda: server.kubectl("get", "nodes", "--no-headers").stdout.count(
            " Ready ") == 3, 40, "three simulated nodes Ready")
        yield server


def _events(server: KublingServer, name: str) -> list[tuple[str, str]]:
    items = server.kubectl_yaml("get", "events", "-n", "wffc", "--field-selector",
                                f"involvedObject.name={name}")["items"]
    return [(e["reason"], e["message"]) for e in items]


def test_pod_lands_where_its_local_volume_is(cluster: KublingServer) -> None:
    cluster.kubectl("create", "namespace", "wffc")
    cluster.kubectl("apply", "-f", "-", input=MANIFESTS)
    wait_for(lambda: ("WaitForFirstConsumer",
                      "waiting for first consumer to be created before binding")
             in _events(cluster, "data"), 20, "the claim's WaitForFirstConsumer event")
    assert cluster.kubectl("get", "pvc", "data", "-n", "wffc", "-o",
                           "jsonpath={.status.phase}").stdout == "Pending"

    cluster.kubectl("apply", "-f", "-", input=pod("user", "data"))
    wait_for(lambda: cluster.kubectl("get", "pvc", "data", "-n", "wffc", "-o",
                                     "jsonpath={.status.phase}").stdout == "Bound",
             30, "the claim Bound")
    pvc = cluster.kubectl_yaml("get", "pvc", "data", "-n", "wffc")
    assert pvc["spec"]["volumeName"] == "kubling-local-pv"
    assert pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    assert pvc["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    pv = cluster.kubectl_yaml("get", "pv", "kubling-local-pv")
    assert pv["spec"]["claimRef"]["name"] == "data"
    assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    assert pv["status"]["phase"] == "Bound"
    wait_for(lambda: cluster.kubectl("get", "pod", "user", "-n", "wffc", "-o",
                                     "jsonpath={.status.phase}").stdout == "Running",
             30, "the pod Running")
    assert cluster.kubectl("get", "pod", "user", "-n", "wffc", "-o",
                           "jsonpath={.spec.nodeName}").stdout == NODE


def test_no_volume_left_says_so(cluster: KublingServer) -> None:
    cluster.kubectl("create", "namespace", "wffc", check=False)
    cluster.kubectl("apply", "-f", "-", input=MANIFESTS.replace("name: data,", "name: more,"))
    cluster.kubectl("apply", "-f", "-", input=pod("starved", "more"))
    want = ("FailedScheduling",
            "0/3 nodes are available: 3 node(s) didn't find available persistent volumes "
            "to bind. preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
            "scheduling.")
    wait_for(lambda: want in _events(cluster, "starved"), 20, "the FailedScheduling event")
    assert cluster.kubectl("get", "pvc", "more", "-n", "wffc", "-o",
                           "jsonpath={.status.phase}").stdout == "Pending"


def test_a_bound_local_volume_pins_its_users(cluster: KublingServer) -> None:
    """A second user of the bound claim, asked onto another node, cannot reach the volume."""
    body = json.loads(pod("elsewhere", "data"))
    body["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "kubling-sim-0"}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    want = ("FailedScheduling",
            "0/3 nodes are available: 1 node(s) had volume node affinity conflict, 2 node(s) "
            "didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: "
            "3 Preemption is not helpful for scheduling.")
    wait_for(lambda: want in _events(cluster, "elsewhere"), 20, "the FailedScheduling event")


def test_claims_waiting_for_a_provisioner_do_not_stall_scheduling(
        cluster: KublingServer) -> None:
    """Seventeen pods wait in PreBind for claims no provisioner will ever bind (more than
    the scheduler's sixteen concurrent bindings): a plain pod is still scheduled at once,
    and a waiting claim that is deleted fails its pod's PreBind with upstream's event."""
    cluster.kubectl("create", "namespace", "wffc", check=False)
    objects: list[dict[str, object]] = [{
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "kubling-never"}, "provisioner": "example.com/nowhere",
        "volumeBindingMode": "WaitForFirstConsumer"}]
    for i in range(17):
        objects.append({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"never-{i}", "namespace": "wffc"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "kubling-never",
                     "resources": {"requests": {"storage": "1Gi"}}}})
        objects.append(json.loads(pod(f"stuck-{i}", f"never-{i}")))
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": objects}))
    wait_for(lambda: all(
        "volume.kubernetes.io/selected-node" in (c["metadata"].get("annotations") or {})
        for c in cluster.kubectl_yaml("get", "pvc", "-n", "wffc", "-l", "!x")["items"]
        if c["metadata"]["name"].startswith("never-")), 40, "every claim to wait in PreBind")
    cluster.kubectl("run", "plain", "-n", "wffc", "--image=busybox", "--restart=Never",
                    "--", "sleep", "1d")
    wait_for(lambda: cluster.kubectl("get", "pod", "plain", "-n", "wffc", "-o",
                                     "jsonpath={.spec.nodeName}").stdout, 15,
             "the plain pod to be scheduled")
    cluster.kubectl("delete", "pvc", "never-0", "-n", "wffc", "--wait=false")
    message = ('running PreBind plugin "VolumeBinding": binding volumes: '
               'persistentvolumeclaim "never-0" not found')
    wait_for(lambda: ("FailedScheduling", message) in _events(cluster, "stuck-0"), 20,
             "the PreBind failure event")
    condition = [c for c in cluster.kubectl_yaml("get", "pod", "stuck-0", "-n", "wffc")[
        "status"].get("conditions") or [] if c["type"] == "PodScheduled"]
    assert condition and condition[0]["reason"] == "SchedulerError"
    cluster.kubectl("delete", "pods,pvc", "--all", "-n", "wffc", "--wait=false")
