"""Server-side printing: the columns and cells kube-apiserver sends kubectl, kind by kind."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest

from kubling.api import resources, tables
from kubling.api.printers import common, custom, pods

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def ago(seconds: float) -> str:
    """The RFC 3339 timestamp ``seconds`` before the fixed test clock."""
    moment = NOW - datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(common, "now", lambda: NOW)
    yield


def meta(name: str = "x", age: float = 300, **extra: Any) -> dict[str, Any]:
    return {"name": name, "creationTimestamp": ago(age), **extra}


def row(group: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Cells keyed by column name, after checking there is one cell per column."""
    columns, cells = tables.columns_for(group, kind)
    values = cells(obj)
    assert len(values) == len(columns)
    return {c["name"]: v for c, v in zip(columns, values, strict=True)}


def headers(group: str, kind: str, *, wide: bool = False) -> list[str]:
    columns, _ = tables.columns_for(group, kind)
    return [c["name"].upper() for c in columns if wide or c["priority"] == 0]


# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "<invalid>"), (-1.5, "0s"), (0, "0s"), (45, "45s"), (119, "119s"), (120, "2m"),
        (200, "3m20s"), (599, "9m59s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"),
        (3 * 3600 + 25 * 60, "3h25m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
        (50 * 3600, "2d2h"), (8 * 86400, "8d"), (400 * 86400, "400d"), (730 * 86400, "2y"),
        (731 * 86400, "2y1d"), (8 * 365 * 86400, "8y"),
    ],
)
def test_human_duration_matches_upstream(seconds: float, expected: str) -> None:
    assert common.human_duration(seconds) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(30, "30s"), (90, "1m"), (7200, "2h"), (3 * 86400, "3d"), (800 * 86400, "2y")],
)
def test_short_human_duration(seconds: float, expected: str) -> None:
    assert common.short_human_duration(seconds) == expected


def test_age_is_a_server_rendered_string() -> None:
    columns, _ = tables.columns_for("", "ConfigMap")
    assert [c["type"] for c in columns if c["name"] == "Age"] == ["string"]
    assert row("", "ConfigMap", {"metadata": meta(age=200)})["Age"] == "3m20s"
    assert row("", "ConfigMap", {"metadata": {"name": "x"}})["Age"] == "<unknown>"


# -- registry ------------------------------------------------------------------------------

DEFAULT_KINDS = {
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("", "LimitRange"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
}


def test_every_builtin_kind_has_a_printer_or_the_default() -> None:
    for rt in resources.BUILTIN:
        columns, _ = tables.columns_for(rt.group, rt.kind)
        if "list" not in rt.verbs:  # create-only reviews are never printed: the default
            assert columns is tables.DEFAULT_COLUMNS, rt.kind
        elif (rt.group, rt.kind) in DEFAULT_KINDS:
            assert columns is tables.DEFAULT_COLUMNS, rt.kind
        else:
            assert (rt.group, rt.kind) in tables.COLUMNS, f"{rt.group}/{rt.kind} has no printer"


@pytest.mark.parametrize("rt", resources.BUILTIN, ids=lambda rt: f"{rt.group}/{rt.kind}")
def test_no_printer_raises_on_a_bare_object(rt: resources.ResourceType) -> None:
    columns, cells = tables.columns_for(rt.group, rt.kind)
    for obj in ({"metadata": {"name": "x"}}, {"metadata": {"name": "x"}, "spec": None,
                                               "status": None}):
        values = cells(obj)
        assert len(values) == len(columns)
        assert values[[c["format"] for c in columns].index("name")] == "x"


@pytest.mark.parametrize("rt", resources.BUILTIN, ids=lambda rt: f"{rt.group}/{rt.kind}")
def test_no_printer_raises_on_wrong_shapes(rt: resources.ResourceType) -> None:
    _, cells = tables.columns_for(rt.group, rt.kind)
    junk: dict[str, Any] = {
        "metadata": {"name": "x", "labels": None, "creationTimestamp": "garbage",
                     "ownerReferences": [None, 3]},
        "spec": {"containers": None, "ports": [None, {"port": "http"}], "rules": "x",
                 "template": {"spec": {"containers": [None]}}, "selector": "bad",
                 "metrics": [{"type": "Resource"}], "replicas": "3", "subjects": [1],
                 "completions": None, "capacity": None, "claimRef": "x"},
        "status": {"conditions": [None, {"type": "Ready"}], "containerStatuses": [{}],
                   "initContainerStatuses": [{"state": None}], "addresses": "x"},
        "subsets": [{"addresses": [{}], "ports": [{}]}], "endpoints": [None], "webhooks": 7,
        "data": ["a"], "subjects": None, "roleRef": None,
    }
    cells(junk)


def test_table_uses_the_registered_columns() -> None:
    body = tables.table("", "ConfigMap", [{"metadata": meta("cm"), "data": {"a": "1"}}])
    assert [c["name"] for c in body["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert body["rows"][0]["cells"] == ["cm", 1, "5m"]


# -- pods ----------------------------------------------------------------------------------


def pod(*statuses: dict[str, Any], phase: str = "Running", init: list[dict[str, Any]] | None = None,
        init_statuses: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    """A one-container pod (or one per status given) in ``phase``."""
    count = max(len(statuses), 1)
    spec: dict[str, Any] = {"containers": [{"name": f"c{i}", "image": "busybox"}
                                           for i in range(count)]}
    if init is not None:
        spec["initContainers"] = init
    body: dict[str, Any] = {"phase": phase, **status}
    if statuses:
        body["containerStatuses"] = list(statuses)
    if init_statuses is not None:
        body["initContainerStatuses"] = init_statuses
    return {"metadata": meta("p"), "spec": spec, "status": body}


def running(ready: bool = True, **extra: Any) -> dict[str, Any]:
    return {"state": {"running": {"startedAt": ago(60)}}, "ready": ready, "restartCount": 0,
            **extra}


def waiting(reason: str, **extra: Any) -> dict[str, Any]:
    return {"state": {"waiting": {"reason": reason}}, "ready": False, "restartCount": 0, **extra}


def terminated(reason: str = "", exit_code: int = 0, signal: int = 0,
               **extra: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": exit_code}
    if signal:
        state["signal"] = signal
    if reason:
        state["reason"] = reason
    return {"state": {"terminated": state}, "ready": False, "restartCount": 0, **extra}


def status_of(obj: dict[str, Any]) -> tuple[str, str, str]:
    return pods.summarize(obj)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pod(phase="Pending"), ("0/1", "Pending", "0")),
        (pod(waiting("ContainerCreating"), phase="Pending"), ("0/1", "ContainerCreating", "0")),
        (pod(running()), ("1/1", "Running", "0")),
        (pod(running(), running(ready=False)), ("1/2", "Running", "0")),
        (pod(terminated("Completed"), phase="Succeeded"), ("0/1", "Completed", "0")),
        (pod(terminated("Error", 1), phase="Failed"), ("0/1", "Error", "0")),
        (pod(terminated("OOMKilled", 137), phase="Failed"), ("0/1", "OOMKilled", "0")),
        (pod(terminated("", 2), phase="Failed"), ("0/1", "ExitCode:2", "0")),
        (pod(terminated(signal=9), phase="Failed"), ("0/1", "Signal:9", "0")),
        (pod(waiting("ImagePullBackOff"), phase="Pending"), ("0/1", "ImagePullBackOff", "0")),
        (pod(waiting("ErrImagePull"), phase="Pending"), ("0/1", "ErrImagePull", "0")),
        (pod(phase="Failed", reason="Evicted"), ("0/1", "Evicted", "0")),
    ],
)
def test_pod_status(obj: dict[str, Any], expected: tuple[str, str, str]) -> None:
    assert status_of(obj) == expected


def test_pod_crash_loop_shows_restarts_with_last_restart_age() -> None:
    crashing = waiting("CrashLoopBackOff", restartCount=3,
                       lastState={"terminated": {"exitCode": 1, "finishedAt": ago(125)}})
    assert status_of(pod(crashing)) == ("0/1", "CrashLoopBackOff", "3 (2m5s ago)")


def test_pod_restarts_take_the_latest_termination_of_all_containers() -> None:
    a = running(restartCount=1, lastState={"terminated": {"finishedAt": ago(3600)}})
    b = running(restartCount=2, lastState={"terminated": {"finishedAt": ago(30)}})
    assert status_of(pod(a, b))[2] == "3 (30s ago)"
    no_time = running(restartCount=2)
    assert status_of(pod(no_time))[2] == "2"


INIT = [{"name": "setup", "image": "busybox"}]


@pytest.mark.parametrize(
    ("init_status", "expected"),
    [
        (running(ready=False), "Init:0/1"),
        (waiting("PodInitializing"), "Init:0/1"),
        (terminated("Error", 1), "Init:Error"),
        (terminated("", 3), "Init:ExitCode:3"),
        (waiting("CrashLoopBackOff"), "Init:CrashLoopBackOff"),
        (waiting("ImagePullBackOff"), "Init:ImagePullBackOff"),
    ],
)
def test_pod_init_container_status(init_status: dict[str, Any], expected: str) -> None:
    obj = pod(waiting("PodInitializing"), phase="Pending", init=INIT,
              init_statuses=[{"name": "setup", **init_status}])
    assert status_of(obj)[1] == expected


def test_pod_second_of_two_init_containers() -> None:
    init = [*INIT, {"name": "migrate", "image": "busybox"}]
    statuses = [{"name": "setup", **terminated("Completed")},
                {"name": "migrate", **running(ready=False)}]
    obj = pod(waiting("PodInitializing"), phase="Pending", init=init, init_statuses=statuses)
    assert status_of(obj)[1] == "Init:1/2"


def test_pod_initializing_after_init_containers_finish() -> None:
    obj = pod(waiting("PodInitializing"), phase="Pending", init=INIT,
              init_statuses=[{"name": "setup", **terminated("Completed")}])
    assert status_of(obj) == ("0/1", "PodInitializing", "0")


def test_pod_init_restarts_count_while_initializing() -> None:
    crashing = waiting("CrashLoopBackOff", restartCount=4,
                       lastState={"terminated": {"finishedAt": ago(10)}})
    obj = pod(waiting("PodInitializing"), phase="Pending", init=INIT,
              init_statuses=[{"name": "setup", **crashing}])
    assert status_of(obj) == ("0/1", "Init:CrashLoopBackOff", "4 (10s ago)")


def test_pod_sidecars_count_in_ready_and_restarts() -> None:
    init = [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]
    sidecar = {"name": "proxy", **running(restartCount=1,
                                          lastState={"terminated": {"finishedAt": ago(90)}}),
               "started": True}
    obj = pod(running(), init=init, init_statuses=[sidecar],
              conditions=[{"type": "Initialized", "status": "True"}])
    assert status_of(obj) == ("2/2", "Running", "1 (90s ago)")
    not_ready = {**sidecar, "ready": False}
    obj = pod(running(), init=init, init_statuses=[not_ready])
    assert status_of(obj)[0] == "1/2"


def test_pod_sidecar_not_started_keeps_pod_initializing() -> None:
    init = [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]
    obj = pod(waiting("PodInitializing"), phase="Pending", init=init,
              init_statuses=[{"name": "proxy", **running(ready=False), "started": False}])
    assert status_of(obj) == ("0/2", "Init:0/1", "0")


def test_pod_terminating_and_node_lost() -> None:
    obj = pod(running())
    obj["metadata"]["deletionTimestamp"] = ago(5)
    assert status_of(obj)[1] == "Terminating"
    obj["status"]["reason"] = "NodeLost"
    assert status_of(obj)[1] == "Unknown"
    done = pod(terminated("Completed"), phase="Succeeded")
    done["metadata"]["deletionTimestamp"] = ago(5)
    assert status_of(done)[1] == "Completed"


def test_pod_completed_container_with_running_sibling() -> None:
    ready = [{"type": "Ready", "status": "True"}]
    assert status_of(pod(terminated("Completed"), running(), conditions=ready))[1] == "Running"
    assert status_of(pod(terminated("Completed"), running()))[1] == "NotReady"


def test_pod_scheduling_gated() -> None:
    gated = [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]
    assert status_of(pod(phase="Pending", conditions=gated))[1] == "SchedulingGated"


def test_pod_row_and_wide_cells() -> None:
    obj = pod(running(), podIPs=[{"ip": "10.42.0.7"}], nominatedNodeName="")
    obj["spec"]["nodeName"] = "node-1"
    obj["spec"]["readinessGates"] = [{"conditionType": "example.com/lb"}]
    obj["status"]["conditions"] = [{"type": "example.com/lb", "status": "True"}]
    assert row("", "Pod", obj) == {
        "Name": "p", "Ready": "1/1", "Status": "Running", "Restarts": "0", "Age": "5m",
        "IP": "10.42.0.7", "Node": "node-1", "Nominated Node": "<none>", "Readiness Gates": "1/1",
    }
    bare = row("", "Pod", {"metadata": {"name": "p"}})
    assert bare["Ready"] == "0/0" and bare["Status"] == "" and bare["IP"] == "<none>"
    assert bare["Readiness Gates"] == "<none>"
    assert headers("", "Pod") == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert headers("", "Pod", wide=True)[5:] == ["IP", "NODE", "NOMINATED NODE",
                                                 "READINESS GATES"]


# -- core ----------------------------------------------------------------------------------


def test_namespace() -> None:
    obj = {"metadata": meta("dev", age=7200), "status": {"phase": "Active"}}
    assert row("", "Namespace", obj) == {"Name": "dev", "Status": "Active", "Age": "120m"}


def node(conditions: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": meta("n1", age=86400 * 3, labels={
            "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "",
            "kubernetes.io/hostname": "n1"}),
        "spec": spec,
        "status": {
            "conditions": conditions,
            "addresses": [{"type": "Hostname", "address": "n1"},
                          {"type": "InternalIP", "address": "192.168.1.10"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0+kubling", "osImage": "Debian 12",
                         "kernelVersion": "6.1.0", "containerRuntimeVersion": "runc://1.1"},
        },
    }


def test_node_row() -> None:
    ready = [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]
    assert row("", "Node", node(ready)) == {
        "Name": "n1", "Status": "Ready", "Roles": "control-plane,master", "Age": "3d",
        "Version": "v1.32.0+kubling", "Internal-IP": "192.168.1.10", "External-IP": "<none>",
        "OS-Image": "Debian 12", "Kernel-Version": "6.1.0", "Container-Runtime": "runc://1.1",
    }


def test_node_status_and_roles() -> None:
    assert row("", "Node", node([{"type": "Ready", "status": "False"}]))["Status"] == "NotReady"
    assert row("", "Node", node([{"type": "Ready", "status": "Unknown"}]))["Status"] == "NotReady"
    cordoned = node([{"type": "Ready", "status": "True"}], unschedulable=True)
    assert row("", "Node", cordoned)["Status"] == "Ready,SchedulingDisabled"
    assert row("", "Node", node([]))["Status"] == "Unknown"
    plain = {"metadata": {"name": "w", "labels": {"kubernetes.io/role": "worker"}}}
    assert row("", "Node", plain)["Roles"] == "worker"
    bare = row("", "Node", {"metadata": {"name": "w"}})
    assert bare["Roles"] == "<none>" and bare["OS-Image"] == "<unknown>"


def service(svc_type: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": meta("web"), "spec": {"type": svc_type, **spec}}


def test_service_rows() -> None:
    cluster = service("ClusterIP", clusterIP="10.43.0.10", clusterIPs=["10.43.0.10"],
                      ports=[{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                      selector={"app": "web", "tier": "fe"})
    assert row("", "Service", cluster) == {
        "Name": "web", "Type": "ClusterIP", "Cluster-IP": "10.43.0.10", "External-IP": "<none>",
        "Port(s)": "80/TCP,53/UDP", "Age": "5m", "Selector": "app=web,tier=fe",
    }
    node_port = service("NodePort", clusterIPs=["10.43.0.11"],
                        ports=[{"port": 80, "nodePort": 30080, "protocol": "TCP"}])
    assert row("", "Service", node_port)["Port(s)"] == "80:30080/TCP"
    assert row("", "Service", node_port)["Selector"] == "<none>"
    headless = service("ClusterIP", clusterIP="None")
    assert row("", "Service", headless)["Cluster-IP"] == "None"
    assert row("", "Service", headless)["Port(s)"] == "<none>"


def test_service_external_ip() -> None:
    lb = service("LoadBalancer", ports=[{"port": 443, "nodePort": 31443, "protocol": "TCP"}])
    assert row("", "Service", lb)["External-IP"] == "<pending>"
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"},
                                                 {"hostname": "lb.example.com"}]}}
    assert row("", "Service", lb)["External-IP"] == "203.0.113.9,lb.example.com"
    with_ext = service("ClusterIP", externalIPs=["198.51.100.1"])
    assert row("", "Service", with_ext)["External-IP"] == "198.51.100.1"
    ext_name = service("ExternalName", externalName="db.example.com")
    assert row("", "Service", ext_name)["External-IP"] == "db.example.com"
    assert row("", "Service", {"metadata": {"name": "x"}})["Cluster-IP"] == "<none>"


def test_endpoints() -> None:
    obj = {"metadata": meta("web"), "subsets": [
        {"addresses": [{"ip": "10.42.0.1"}, {"ip": "10.42.0.2"}, {"ip": "fd00::3"}],
         "ports": [{"port": 8080}]},
        {"addresses": [{"ip": "10.42.0.9"}], "ports": [{"port": 8080}]}]}
    assert row("", "Endpoints", obj)["Endpoints"] == (
        "10.42.0.1:8080,10.42.0.2:8080,[fd00::3]:8080 + 1 more...")
    assert row("", "Endpoints", {"metadata": meta("e")})["Endpoints"] == "<none>"
    headless = {"metadata": meta("h"), "subsets": [{"addresses": [{"ip": "10.42.0.1"}]}]}
    assert row("", "Endpoints", headless)["Endpoints"] == "10.42.0.1"


def test_endpoint_slice() -> None:
    obj = {"metadata": meta("web-abc"), "addressType": "IPv4",
           "ports": [{"port": 80}, {"name": "metrics"}, {}],
           "endpoints": [{"addresses": ["10.42.0.1"]}, {"addresses": ["10.42.0.2"]}]}
    assert row("discovery.k8s.io", "EndpointSlice", obj) == {
        "Name": "web-abc", "AddressType": "IPv4", "Ports": "80,metrics,*",
        "Endpoints": "10.42.0.1,10.42.0.2", "Age": "5m"}
    empty = row("discovery.k8s.io", "EndpointSlice", {"metadata": meta("e")})
    assert empty["Ports"] == "<unset>" and empty["Endpoints"] == "<unset>"


def test_configmap_secret_serviceaccount() -> None:
    cm = {"metadata": meta("cm"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}
    assert row("", "ConfigMap", cm) == {"Name": "cm", "Data": 3, "Age": "5m"}
    secret = {"metadata": meta("s"), "type": "Opaque", "data": {"k": "dg=="}}
    assert row("", "Secret", secret) == {"Name": "s", "Type": "Opaque", "Data": 1, "Age": "5m"}
    sa = {"metadata": meta("default"), "secrets": [{"name": "tok"}]}
    assert row("", "ServiceAccount", sa) == {"Name": "default", "Secrets": 1, "Age": "5m"}
    assert row("", "ServiceAccount", {"metadata": meta("d")})["Secrets"] == 0
    assert headers("", "Secret") == ["NAME", "TYPE", "DATA", "AGE"]


def test_event_row() -> None:
    event = {
        "metadata": meta("web.17a", age=600),
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
        "reason": "Pulled", "message": "  Successfully pulled image  ", "type": "Normal",
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": ago(600), "lastTimestamp": ago(65), "count": 4,
    }
    assert row("", "Event", event) == {
        "Last Seen": "65s", "Type": "Normal", "Reason": "Pulled", "Object": "pod/web",
        "Subobject": "spec.containers{app}", "Source": "kubelet, n1",
        "Message": "Successfully pulled image", "First Seen": "10m", "Count": 4,
        "Name": "web.17a",
    }
    assert headers("", "Event") == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]


def test_event_new_api_shapes() -> None:
    event = {
        "metadata": meta("e"), "eventTime": "2024-05-01T11:58:00.000000Z",
        "regarding": {"kind": "Node", "name": "n1"}, "note": "rebooted",
        "reportingController": "kubelet", "reportingInstance": "n1", "type": "Warning",
        "series": {"count": 7, "lastObservedTime": "2024-05-01T11:59:30.000000Z"},
    }
    cells = row("events.k8s.io", "Event", event)
    assert cells["Last Seen"] == "30s" and cells["First Seen"] == "2m"
    assert cells["Count"] == 7 and cells["Object"] == "node/n1"
    assert cells["Message"] == "rebooted" and cells["Source"] == "kubelet, n1"
    single = row("", "Event", {"metadata": meta("e"), "involvedObject": {"kind": "Node"}})
    assert single["Count"] == 1 and single["Object"] == "node"
    assert single["Last Seen"] == "<unknown>"


def test_persistent_volume_and_claim() -> None:
    pv = {"metadata": meta("pv1"), "spec": {
        "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "local",
        "claimRef": {"namespace": "dev", "name": "data"}, "volumeMode": "Filesystem"},
        "status": {"phase": "Bound"}}
    assert row("", "PersistentVolume", pv) == {
        "Name": "pv1", "Capacity": "10Gi", "Access Modes": "RWO,RWX",
        "Reclaim Policy": "Retain", "Status": "Bound", "Claim": "dev/data",
        "StorageClass": "local", "VolumeAttributesClass": "<unset>", "Reason": "", "Age": "5m",
        "VolumeMode": "Filesystem"}
    pvc = {"metadata": meta("data"), "spec": {"storageClassName": "local",
                                              "resources": {"requests": {"storage": "1Gi"}}},
           "status": {"phase": "Pending"}}
    assert row("", "PersistentVolumeClaim", pvc) == {
        "Name": "data", "Status": "Pending", "Volume": "", "Capacity": "", "Access Modes": "",
        "StorageClass": "local", "VolumeAttributesClass": "<unset>", "Age": "5m",
        "VolumeMode": "<unset>"}
    pvc["spec"]["volumeName"] = "pv1"
    pvc["status"] = {"phase": "Bound", "capacity": {"storage": "10Gi"},
                     "accessModes": ["ReadWriteOnce"]}
    bound = row("", "PersistentVolumeClaim", pvc)
    assert (bound["Capacity"], bound["Access Modes"]) == ("10Gi", "RWO")
    assert headers("", "PersistentVolumeClaim", wide=True) == [
        "NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS",
        "VOLUMEATTRIBUTESCLASS", "AGE", "VOLUMEMODE"]


def test_resource_quota() -> None:
    quota = {"metadata": meta("q"), "status": {
        "hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi"},
        "used": {"pods": "3", "limits.memory": "1Gi"}}}
    assert row("", "ResourceQuota", quota) == {
        "Name": "q", "Request": "pods: 3/10, requests.cpu: 0/2",
        "Limit": "limits.memory: 1Gi/4Gi", "Age": "5m"}


def test_replication_controller_and_pod_template() -> None:
    template = {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "a", "image": "nginx"},
                                        {"name": "b", "image": "redis:7"}]}}
    rc = {"metadata": meta("rc"), "spec": {"replicas": 3, "selector": {"app": "web"},
                                           "template": template},
          "status": {"replicas": 3, "readyReplicas": 2}}
    assert row("", "ReplicationController", rc) == {
        "Name": "rc", "Desired": 3, "Current": 3, "Ready": 2, "Age": "5m",
        "Containers": "a,b", "Images": "nginx,redis:7", "Selector": "app=web"}
    pt = {"metadata": meta("pt"), "template": template}
    assert row("", "PodTemplate", pt) == {"Name": "pt", "Containers": "a,b",
                                          "Images": "nginx,redis:7", "Pod Labels": "app=web"}


# -- apps ----------------------------------------------------------------------------------

TEMPLATE = {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}
SELECTOR = {"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]}


def test_deployment() -> None:
    obj = {"metadata": meta("web"), "spec": {"replicas": 3, "selector": SELECTOR,
                                             "template": TEMPLATE},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert row("apps", "Deployment", obj) == {
        "Name": "web", "Ready": "2/3", "Up-to-date": 3, "Available": 2, "Age": "5m",
        "Containers": "web", "Images": "nginx:1.27", "Selector": "app=web,tier in (be,fe)"}
    fresh = row("apps", "Deployment", {"metadata": meta("d"), "spec": {"selector": {}}})
    assert fresh["Ready"] == "0/1" and fresh["Selector"] == ""
    assert headers("apps", "Deployment") == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]


def test_replicaset_statefulset_daemonset() -> None:
    rs = {"metadata": meta("web-1"), "spec": {"replicas": 2, "selector": SELECTOR,
                                              "template": TEMPLATE},
          "status": {"replicas": 2, "readyReplicas": 1}}
    assert row("apps", "ReplicaSet", rs) == {
        "Name": "web-1", "Desired": 2, "Current": 2, "Ready": 1, "Age": "5m",
        "Containers": "web", "Images": "nginx:1.27", "Selector": "app=web,tier in (be,fe)"}
    assert row("apps", "ReplicaSet", {"metadata": meta("r")})["Selector"] == "<none>"
    sts = {"metadata": meta("db"), "spec": {"replicas": 3, "template": TEMPLATE},
           "status": {"readyReplicas": 3}}
    assert row("apps", "StatefulSet", sts) == {"Name": "db", "Ready": "3/3", "Age": "5m",
                                               "Containers": "web", "Images": "nginx:1.27"}
    ds = {"metadata": meta("agent"),
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"spec": {**TEMPLATE["spec"],
                                         "nodeSelector": {"kubernetes.io/os": "linux"}}}},
          "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                     "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}}
    assert row("apps", "DaemonSet", ds) == {
        "Name": "agent", "Desired": 2, "Current": 2, "Ready": 1, "Up-to-date": 2,
        "Available": 1, "Node Selector": "kubernetes.io/os=linux", "Age": "5m",
        "Containers": "web", "Images": "nginx:1.27", "Selector": "app=agent"}
    assert headers("apps", "DaemonSet") == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE",
                                            "AVAILABLE", "NODE SELECTOR", "AGE"]


def test_controller_revision() -> None:
    obj = {"metadata": meta("agent-5d8f", ownerReferences=[
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": True}]),
        "revision": 2}
    assert row("apps", "ControllerRevision", obj) == {
        "Name": "agent-5d8f", "Controller": "daemonset.apps/agent", "Revision": 2, "Age": "5m"}
    assert row("apps", "ControllerRevision", {"metadata": meta("c")})["Controller"] == "<none>"


# -- batch ---------------------------------------------------------------------------------


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": meta("pi"), "spec": {"completions": 1, "parallelism": 1,
                                             "template": TEMPLATE,
                                             "selector": {"matchLabels": {"job": "pi"}}},
            "status": status}


def test_job_complete() -> None:
    done = job(succeeded=1, startTime=ago(300), completionTime=ago(262),
               conditions=[{"type": "SuccessCriteriaMet", "status": "True"},
                           {"type": "Complete", "status": "True"}])
    assert row("batch", "Job", done) == {
        "Name": "pi", "Status": "Complete", "Completions": "1/1", "Duration": "38s",
        "Age": "5m", "Containers": "web", "Images": "nginx:1.27", "Selector": "job=pi"}


def test_job_status_and_duration() -> None:
    assert row("batch", "Job", job(startTime=ago(200)))["Duration"] == "3m20s"
    assert row("batch", "Job", job())["Duration"] == ""
    assert row("batch", "Job", job())["Status"] == "Running"
    failed = job(conditions=[{"type": "Failed", "status": "True"}])
    assert row("batch", "Job", failed)["Status"] == "Failed"
    suspended = job(conditions=[{"type": "Suspended", "status": "True"}])
    assert row("batch", "Job", suspended)["Status"] == "Suspended"
    target = job(conditions=[{"type": "FailureTarget", "status": "True"}])
    assert row("batch", "Job", target)["Status"] == "FailureTarget"
    deleting = job()
    deleting["metadata"]["deletionTimestamp"] = ago(1)
    assert row("batch", "Job", deleting)["Status"] == "Terminating"
    resumed = job(conditions=[{"type": "Suspended", "status": "False"}])
    assert row("batch", "Job", resumed)["Status"] == "Running"


def test_job_completions_without_completions() -> None:
    queue = {"metadata": meta("q"), "spec": {"parallelism": 3}, "status": {"succeeded": 1}}
    assert row("batch", "Job", queue)["Completions"] == "1/1 of 3"
    assert row("batch", "Job", {"metadata": meta("q")})["Completions"] == "0/1"


def test_cronjob() -> None:
    cron = {"metadata": meta("backup"), "spec": {
        "schedule": "*/5 * * * *", "suspend": False,
        "jobTemplate": {"spec": {"template": TEMPLATE}}}}
    assert row("batch", "CronJob", cron) == {
        "Name": "backup", "Schedule": "*/5 * * * *", "Timezone": "<none>", "Suspend": "False",
        "Active": 0, "Last Schedule": "<none>", "Age": "5m", "Containers": "web",
        "Images": "nginx:1.27", "Selector": "<none>"}
    cron["spec"]["timeZone"] = "Etc/UTC"
    cron["status"] = {"active": [{"name": "backup-1"}], "lastScheduleTime": ago(65)}
    cells = row("batch", "CronJob", cron)
    assert (cells["Timezone"], cells["Active"], cells["Last Schedule"]) == ("Etc/UTC", 1, "65s")
    assert row("batch", "CronJob", {"metadata": meta("c")})["Suspend"] == "<unset>"


# -- networking ----------------------------------------------------------------------------


def test_ingress() -> None:
    ing = {"metadata": meta("web"), "spec": {
        "ingressClassName": "kubling",
        "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {},
                  {"host": "c.example.com"}, {"host": "d.example.com"}],
        "tls": [{"hosts": ["a.example.com"]}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}}
    assert row("networking.k8s.io", "Ingress", ing) == {
        "Name": "web", "Class": "kubling",
        "Hosts": "a.example.com,b.example.com,c.example.com + 2 more...",
        "Address": "192.168.1.10", "Ports": "80, 443", "Age": "5m"}
    bare = row("networking.k8s.io", "Ingress", {"metadata": meta("i")})
    assert (bare["Class"], bare["Hosts"], bare["Address"], bare["Ports"]) == (
        "<none>", "*", "", "80")


def test_ingress_class_and_network_policy() -> None:
    ic = {"metadata": meta("nginx"), "spec": {"controller": "k8s.io/ingress-nginx",
                                              "parameters": {"apiGroup": "k8s.example.com",
                                                             "kind": "Params", "name": "p"}}}
    assert row("networking.k8s.io", "IngressClass", ic) == {
        "Name": "nginx", "Controller": "k8s.io/ingress-nginx",
        "Parameters": "Params.k8s.example.com/p", "Age": "5m"}
    np = {"metadata": meta("deny"), "spec": {"podSelector": {"matchLabels": {"app": "db"}}}}
    assert row("networking.k8s.io", "NetworkPolicy", np)["Pod-Selector"] == "app=db"
    all_pods = {"metadata": meta("deny"), "spec": {"podSelector": {}}}
    assert row("networking.k8s.io", "NetworkPolicy", all_pods)["Pod-Selector"] == "<none>"


# -- rbac, storage, other ------------------------------------------------------------------


def test_role_bindings() -> None:
    rb = {"metadata": meta("read"), "roleRef": {"kind": "ClusterRole", "name": "view"},
          "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                       {"kind": "ServiceAccount", "name": "bot", "namespace": "ci"},
                       {"kind": "User", "name": "bob"}]}
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        assert row("rbac.authorization.k8s.io", kind, rb) == {
            "Name": "read", "Role": "ClusterRole/view", "Age": "5m", "Users": "alice, bob",
            "Groups": "devs", "ServiceAccounts": "ci/bot"}
    assert headers("rbac.authorization.k8s.io", "Role") == ["NAME", "CREATED AT"]


def test_storage_class() -> None:
    sc = {"metadata": meta("local-path", annotations={
        "storageclass.kubernetes.io/is-default-class": "true"}),
        "provisioner": "kubling.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}
    assert row("storage.k8s.io", "StorageClass", sc) == {
        "Name": "local-path (default)", "Provisioner": "kubling.io/local-path",
        "ReclaimPolicy": "Delete", "VolumeBindingMode": "WaitForFirstConsumer",
        "AllowVolumeExpansion": False, "Age": "5m"}
    plain = row("storage.k8s.io", "StorageClass", {"metadata": meta("slow")})
    assert plain["Name"] == "slow" and plain["VolumeBindingMode"] == "Immediate"


def test_csi_kinds_and_volume_attachment() -> None:
    driver = {"metadata": meta("csi.example.com"), "spec": {
        "attachRequired": False, "volumeLifecycleModes": ["Persistent", "Ephemeral"],
        "tokenRequests": [{"audience": "vault"}]}}
    assert row("storage.k8s.io", "CSIDriver", driver) == {
        "Name": "csi.example.com", "AttachRequired": False, "PodInfoOnMount": False,
        "StorageCapacity": False, "TokenRequests": "vault", "RequiresRepublish": False,
        "Modes": "Persistent,Ephemeral", "Age": "5m"}
    bare = row("storage.k8s.io", "CSIDriver", {"metadata": meta("d")})
    assert bare["AttachRequired"] is True and bare["TokenRequests"] == "<unset>"
    assert bare["Modes"] == "<none>"
    node_obj = {"metadata": meta("n1"), "spec": {"drivers": [{"name": "a"}]}}
    assert row("storage.k8s.io", "CSINode", node_obj)["Drivers"] == 1
    va = {"metadata": meta("csi-123"), "spec": {"attacher": "csi.example.com", "nodeName": "n1",
                                                "source": {"persistentVolumeName": "pv1"}},
          "status": {"attached": True}}
    assert row("storage.k8s.io", "VolumeAttachment", va) == {
        "Name": "csi-123", "Attacher": "csi.example.com", "PV": "pv1", "Node": "n1",
        "Attached": True, "Age": "5m"}


def test_lease_pdb_priority_class_runtime_class() -> None:
    lease = {"metadata": meta("n1"), "spec": {"holderIdentity": "n1"}}
    assert row("coordination.k8s.io", "Lease", lease) == {"Name": "n1", "Holder": "n1",
                                                          "Age": "5m"}
    pdb = {"metadata": meta("web"), "spec": {"minAvailable": "50%"},
           "status": {"disruptionsAllowed": 1}}
    assert row("policy", "PodDisruptionBudget", pdb) == {
        "Name": "web", "Min Available": "50%", "Max Unavailable": "N/A",
        "Allowed Disruptions": 1, "Age": "5m"}
    pdb["spec"] = {"maxUnavailable": 1}
    assert row("policy", "PodDisruptionBudget", pdb)["Max Unavailable"] == "1"
    pc = {"metadata": meta("high"), "value": 1000, "globalDefault": False,
          "preemptionPolicy": "PreemptLowerPriority"}
    assert row("scheduling.k8s.io", "PriorityClass", pc) == {
        "Name": "high", "Value": 1000, "Global-Default": False, "Age": "5m",
        "PreemptionPolicy": "PreemptLowerPriority"}
    assert headers("scheduling.k8s.io", "PriorityClass") == [
        "NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    rc = {"metadata": meta("gvisor"), "handler": "runsc"}
    assert row("node.k8s.io", "RuntimeClass", rc) == {"Name": "gvisor", "Handler": "runsc",
                                                      "Age": "5m"}


def test_horizontal_pod_autoscaler() -> None:
    hpa = {"metadata": meta("web"), "spec": {
        "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
        "maxReplicas": 10,
        "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 80}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {
                "type": "AverageValue", "averageValue": "500Mi"}}},
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {
                "type": "AverageValue", "averageValue": "10"}}}]},
        "status": {"currentReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {
                "averageUtilization": 40, "averageValue": "100m"}}}]}}
    assert row("autoscaling", "HorizontalPodAutoscaler", hpa) == {
        "Name": "web", "Reference": "Deployment/web",
        "Targets": "cpu: 40%/80%, memory: <unknown>/500Mi + 1 more...", "MinPods": "1",
        "MaxPods": 10, "Replicas": 2, "Age": "5m"}
    v1 = {"metadata": meta("old"), "spec": {"scaleTargetRef": {"kind": "Deployment",
                                                               "name": "old"},
                                            "maxReplicas": 3,
                                            "targetCPUUtilizationPercentage": 50}}
    cells = row("autoscaling", "HorizontalPodAutoscaler", v1)
    assert cells["Targets"] == "cpu: <unknown>/50%" and cells["MinPods"] == "<unset>"
    bare = row("autoscaling", "HorizontalPodAutoscaler", {"metadata": meta("h")})
    assert bare["Targets"] == "<none>" and bare["Reference"] == "/"


def test_certificate_signing_request() -> None:
    csr = {"metadata": meta("node-csr"), "spec": {
        "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
        "username": "system:node:n1", "expirationSeconds": 86400},
        "status": {"conditions": [{"type": "Approved", "status": "True"}],
                   "certificate": "LS0t"}}
    assert row("certificates.k8s.io", "CertificateSigningRequest", csr) == {
        "Name": "node-csr", "Age": "5m",
        "SignerName": "kubernetes.io/kube-apiserver-client-kubelet",
        "Requestor": "system:node:n1", "RequestedDuration": "24h",
        "Condition": "Approved,Issued"}
    pending = row("certificates.k8s.io", "CertificateSigningRequest", {"metadata": meta("c")})
    assert (pending["Condition"], pending["SignerName"], pending["RequestedDuration"]) == (
        "Pending", "<none>", "<none>")
    denied = {"metadata": meta("d"), "status": {"conditions": [
        {"type": "Approved"}, {"type": "Denied"}, {"type": "Failed"}]}}
    assert row("certificates.k8s.io", "CertificateSigningRequest",
               denied)["Condition"] == "Denied,Failed"


def test_admission_configurations() -> None:
    group = "admissionregistration.k8s.io"
    hooks = {"metadata": meta("hooks"), "webhooks": [{"name": "a"}, {"name": "b"}]}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        assert row(group, kind, hooks) == {"Name": "hooks", "Webhooks": 2, "Age": "5m"}
    policy = {"metadata": meta("p"), "spec": {"validations": [{"expression": "true"}],
                                              "paramKind": {"apiVersion": "v1",
                                                            "kind": "ConfigMap"}}}
    assert row(group, "ValidatingAdmissionPolicy", policy) == {
        "Name": "p", "Validations": 1, "ParamKind": "v1/ConfigMap", "Age": "5m"}
    binding = {"metadata": meta("b"), "spec": {"policyName": "p",
                                               "paramRef": {"name": "limits"}}}
    assert row(group, "ValidatingAdmissionPolicyBinding", binding) == {
        "Name": "b", "PolicyName": "p", "ParamRef": "*/limits", "Age": "5m"}
    binding["spec"]["paramRef"] = {"selector": {"matchLabels": {"env": "prod"}}}
    assert row(group, "ValidatingAdmissionPolicyBinding", binding)["ParamRef"] == "env=prod"


# -- custom resources ----------------------------------------------------------------------

WIDGET = {
    "metadata": {"name": "w1", "creationTimestamp": "2024-05-01T11:00:00Z"},
    "spec": {"replicas": 3, "size": 1.5, "enabled": True, "tags": ["a", "b"],
             "nested": {"k": "v", "n": 1}, "ports": [{"name": "http", "port": 80},
                                                     {"name": "https", "port": 443}]},
    "status": {"conditions": [{"type": "Synced", "status": "False"},
                              {"type": "Ready", "status": "True"}],
               "lastSync": "2024-05-01T11:59:00.123456Z"},
}


def test_custom_columns_types_and_paths() -> None:
    specs = [
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Size", "type": "number", "jsonPath": ".spec.size"},
        {"name": "Enabled", "type": "boolean", "jsonPath": "{.spec.enabled}"},
        {"name": "First-Tag", "type": "string", "jsonPath": ".spec.tags[0]"},
        {"name": "Ports", "type": "string", "jsonPath": ".spec.ports[*].port"},
        {"name": "Nested", "type": "string", "jsonPath": ".spec.nested", "priority": 1},
        {"name": "Ready", "type": "string",
         "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Synced", "type": "string",
         "jsonPath": ".status.conditions[?(@.type == 'Synced')].status"},
        {"name": "Last-Sync", "type": "date", "jsonPath": ".status.lastSync"},
        {"name": "Missing", "type": "string", "jsonPath": ".status.nothing.here"},
        {"name": "Wrong-Type", "type": "integer", "jsonPath": ".spec.tags"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    columns, cells = custom.custom_columns(specs, WIDGET)
    assert columns[0]["name"] == "Name" and columns[0]["format"] == "name"
    assert columns[6]["priority"] == 1 and columns[6]["type"] == "string"
    assert columns[1]["description"] == (
        "Custom resource definition column (in JSONPath format): .spec.replicas")
    assert cells == ["w1", 3, 1.5, True, "a", "80", '{"k":"v","n":1}', "True", "False",
                     "59s", None, None, "60m"]  # date columns as human ages, as upstream


def test_custom_columns_default_to_age() -> None:
    columns, cells = custom.custom_columns([], WIDGET)
    assert [(c["name"], c["type"]) for c in columns] == [("Name", "string"), ("Age", "date")]
    assert cells == ["w1", "60m"]


def test_custom_columns_tolerate_bad_paths_and_objects() -> None:
    specs = [{"name": "Bad", "type": "string", "jsonPath": ".spec..x"},
             {"name": "Escaped", "type": "string",
              "jsonPath": ".metadata.labels.app\\.kubernetes\\.io/name"},
             {"name": "Quoted", "type": "string",
              "jsonPath": ".metadata.labels['app.kubernetes.io/name']"},
             {"name": "Last", "type": "integer", "jsonPath": ".spec.ports[-1].port"},
             {"name": "Date", "type": "date", "jsonPath": ".spec.when"}]
    obj = {"metadata": {"name": "w", "labels": {"app.kubernetes.io/name": "demo"}},
           "spec": {"ports": [{"port": 1}, {"port": 2}], "when": "yesterday"}}
    assert custom.custom_columns(specs, obj)[1] == ["w", None, "demo", "demo", 2, "<invalid>"]
    assert custom.custom_columns(specs, {"metadata": {"name": "x"}})[1] == [
        "x", None, None, None, None, None]


def test_json_path_parse_errors() -> None:
    with pytest.raises(custom.JSONPathError):
        custom.parse_json_path(".a..b")
    with pytest.raises(custom.JSONPathError):
        custom.parse_json_path(".a[1:2]")
    assert custom.evaluate({"a": {"b": [1, 2]}}, custom.parse_json_path("$.a.b[*]")) == [1, 2]
