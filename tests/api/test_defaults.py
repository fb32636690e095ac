"""Each upstream default, asserted on a minimal object that lacks it."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from kubling.api.defaults import DEFAULTERS, apply_defaults, image_tag

Obj = dict[str, Any]


def pod_spec(**extra: Any) -> Obj:
    return {"containers": [{"name": "c", "image": "nginx:1.25"}], **extra}


def pod(**extra: Any) -> Obj:
    obj: Obj = {"metadata": {"name": "p"}, "spec": pod_spec(**extra)}
    apply_defaults("", "v1", "Pod", obj)
    return obj


def template(**extra: Any) -> Obj:
    return {"metadata": {"labels": {"app": "x"}}, "spec": pod_spec(**extra)}


# -- pod spec --------------------------------------------------------------------------------


def test_pod_spec_defaults() -> None:
    spec = pod()["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["securityContext"] == {}
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["enableServiceLinks"] is True


def test_pod_admission_defaults() -> None:
    spec = pod()["spec"]
    assert spec["priority"] == 0
    assert spec["preemptionPolicy"] == "PreemptLowerPriority"
    assert spec["serviceAccountName"] == "default"
    assert spec["serviceAccount"] == "default"
    assert spec["tolerations"] == [
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ]


def test_existing_toleration_is_respected() -> None:
    mine = {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 5,
    }
    spec = pod(tolerations=[mine])["spec"]
    assert spec["tolerations"][0] == mine
    assert [t["key"] for t in spec["tolerations"]] == [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]


def test_tolerate_everything_adds_nothing() -> None:
    spec = pod(tolerations=[{"operator": "Exists"}])["spec"]
    assert spec["tolerations"] == [{"operator": "Exists"}]


def test_priority_classes() -> None:
    assert pod(priorityClassName="system-node-critical")["spec"]["priority"] == 2000001000
    assert "priority" not in pod(priorityClassName="custom")["spec"]


def test_service_account_kept_and_mirrored() -> None:
    spec = pod(serviceAccountName="robot")["spec"]
    assert spec["serviceAccount"] == "robot"
    assert pod(serviceAccount="legacy")["spec"]["serviceAccountName"] == "legacy"


def test_requests_default_from_limits_on_pods_only() -> None:
    limits = {"cpu": "1", "memory": "1Gi"}
    p: Obj = {
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "resources": {"limits": limits, "requests": {"cpu": "500m"}},
                }
            ]
        }
    }
    apply_defaults("", "v1", "Pod", p)
    assert p["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    rs: Obj = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "c", "image": "x", "resources": {"limits": limits}}]
                }
            }
        }
    }
    apply_defaults("apps", "v1", "ReplicaSet", rs)
    assert "requests" not in rs["spec"]["template"]["spec"]["containers"][0]["resources"]


def test_host_network_host_ports() -> None:
    spec = pod(
        hostNetwork=True, containers=[{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]
    )["spec"]
    assert spec["containers"][0]["ports"][0]["hostPort"] == 80


# -- containers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("localhost:5000/nginx", "Always"),
        ("nginx:1.25", "IfNotPresent"),
        ("localhost:5000/nginx:1.25", "IfNotPresent"),
        ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
        ("nginx:latest@sha256:" + "a" * 64, "Always"),
    ],
)
def test_image_pull_policy(image: str, policy: str) -> None:
    ctr = pod(containers=[{"name": "c", "image": image}])["spec"]["containers"][0]
    assert ctr["imagePullPolicy"] == policy


def test_image_tag() -> None:
    assert image_tag("a/b:c") == "c"
    assert image_tag("host:1/b") == "latest"


def test_container_defaults() -> None:
    ctr: Obj = {
        "name": "c",
        "image": "x:1",
        "ports": [{"containerPort": 80}],
        "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "livenessProbe": {"httpGet": {"port": 80}},
        "readinessProbe": {"grpc": {"port": 9}},
        "lifecycle": {"preStop": {"httpGet": {"port": 80}}},
    }
    spec = pod(containers=[ctr], initContainers=[{"name": "i", "image": "x:1"}])["spec"]
    out = spec["containers"][0]
    assert out["terminationMessagePath"] == "/dev/termination-log"
    assert out["terminationMessagePolicy"] == "File"
    assert out["resources"] == {}
    assert out["ports"][0]["protocol"] == "TCP"
    assert out["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    probe = out["livenessProbe"]
    assert (
        probe["timeoutSeconds"],
        probe["periodSeconds"],
        probe["successThreshold"],
        probe["failureThreshold"],
    ) == (1, 10, 1, 3)
    assert probe["httpGet"] == {"port": 80, "path": "/", "scheme": "HTTP"}
    assert out["readinessProbe"]["grpc"]["service"] == ""
    assert out["lifecycle"]["preStop"]["httpGet"]["scheme"] == "HTTP"
    assert spec["initContainers"][0]["terminationMessagePolicy"] == "File"


# -- volumes ---------------------------------------------------------------------------------


def test_volume_defaults() -> None:
    volumes = [
        {"name": "bare"},
        {"name": "cm", "configMap": {"name": "c"}},
        {"name": "s", "secret": {"secretName": "s"}},
        {
            "name": "d",
            "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]},
        },
        {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
        {"name": "h", "hostPath": {"path": "/x"}},
        {
            "name": "e",
            "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}},
        },
    ]
    out = {v["name"]: v for v in pod(volumes=volumes)["spec"]["volumes"]}
    assert out["bare"]["emptyDir"] == {}
    assert out["cm"]["configMap"]["defaultMode"] == 420
    assert out["s"]["secret"]["defaultMode"] == 420
    assert out["d"]["downwardAPI"]["defaultMode"] == 420
    assert out["d"]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"] == "v1"
    assert out["p"]["projected"]["defaultMode"] == 420
    assert out["p"]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 3600
    assert out["h"]["hostPath"]["type"] == ""
    assert out["e"]["ephemeral"]["volumeClaimTemplate"]["spec"]["volumeMode"] == "Filesystem"


def test_explicit_default_mode_kept() -> None:
    vols = pod(volumes=[{"name": "s", "secret": {"secretName": "s", "defaultMode": 256}}])["spec"][
        "volumes"
    ]
    assert vols[0]["secret"]["defaultMode"] == 256


# -- templates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "kind", "path"),
    [
        ("apps", "Deployment", ["spec", "template"]),
        ("apps", "ReplicaSet", ["spec", "template"]),
        ("apps", "StatefulSet", ["spec", "template"]),
        ("apps", "DaemonSet", ["spec", "template"]),
        ("batch", "Job", ["spec", "template"]),
        ("batch", "CronJob", ["spec", "jobTemplate", "spec", "template"]),
        ("", "ReplicationController", ["spec", "template"]),
        ("", "PodTemplate", ["template"]),
    ],
)
def test_every_pod_template_gets_pod_spec_defaults(group: str, kind: str, path: list[str]) -> None:
    obj: Obj = {}
    cursor = obj
    for key in path[:-1]:
        cursor = cursor.setdefault(key, {})
    cursor[path[-1]] = template()
    apply_defaults(group, "v1", kind, obj)
    for key in path:
        obj = obj[key]
    spec = obj["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["securityContext"] == {}
    assert spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    # Pod-only defaults stay off templates, as upstream.
    assert "enableServiceLinks" not in spec
    assert "tolerations" not in spec


# -- apps ------------------------------------------------------------------------------------


def test_deployment_defaults() -> None:
    d: Obj = {"spec": {"template": template()}}
    apply_defaults("apps", "v1", "Deployment", d)
    spec = d["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert "selector" not in spec


def test_deployment_recreate_gets_no_rolling_update() -> None:
    d: Obj = {"spec": {"strategy": {"type": "Recreate"}, "replicas": 0}}
    apply_defaults("apps", "v1", "Deployment", d)
    assert d["spec"]["strategy"] == {"type": "Recreate"}
    assert d["spec"]["replicas"] == 0


def test_replica_set_defaults() -> None:
    rs: Obj = {"spec": {}}
    apply_defaults("apps", "v1", "ReplicaSet", rs)
    assert rs["spec"]["replicas"] == 1


def test_replication_controller_selector_and_labels_from_template() -> None:
    rc: Obj = {"metadata": {"name": "rc"}, "spec": {"template": template()}}
    apply_defaults("", "v1", "ReplicationController", rc)
    assert rc["spec"]["selector"] == {"app": "x"}
    assert rc["metadata"]["labels"] == {"app": "x"}
    assert rc["spec"]["replicas"] == 1


def test_stateful_set_defaults() -> None:
    sts: Obj = {
        "spec": {
            "template": template(),
            "volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}],
        }
    }
    apply_defaults("apps", "v1", "StatefulSet", sts)
    spec = sts["spec"]
    assert spec["replicas"] == 1
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert spec["volumeClaimTemplates"][0]["spec"]["volumeMode"] == "Filesystem"
    assert spec["volumeClaimTemplates"][0]["status"] == {"phase": "Pending"}


def test_stateful_set_on_delete_has_no_partition() -> None:
    sts: Obj = {"spec": {"updateStrategy": {"type": "OnDelete"}}}
    apply_defaults("apps", "v1", "StatefulSet", sts)
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}


def test_daemon_set_defaults() -> None:
    ds: Obj = {"spec": {"template": template()}}
    apply_defaults("apps", "v1", "DaemonSet", ds)
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert ds["spec"]["revisionHistoryLimit"] == 10


# -- batch -----------------------------------------------------------------------------------


def test_job_defaults() -> None:
    job: Obj = {"metadata": {"name": "j"}, "spec": {"template": template(restartPolicy="Never")}}
    apply_defaults("batch", "v1", "Job", job)
    spec = job["spec"]
    assert (spec["completions"], spec["parallelism"]) == (1, 1)
    assert spec["backoffLimit"] == 6
    assert spec["completionMode"] == "NonIndexed"
    assert spec["suspend"] is False
    assert spec["podReplacementPolicy"] == "TerminatingOrFailed"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["labels"] == {"app": "x"}
    assert "selector" not in spec


def test_job_completions_only_defaults_parallelism() -> None:
    job: Obj = {"spec": {"completions": 5}}
    apply_defaults("batch", "v1", "Job", job)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (5, 1)
    job = {"spec": {"parallelism": 3}}
    apply_defaults("batch", "v1", "Job", job)
    assert "completions" not in job["spec"]


def test_job_pod_failure_policy_changes_replacement_default() -> None:
    job: Obj = {
        "spec": {
            "podFailurePolicy": {
                "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
            }
        }
    }
    apply_defaults("batch", "v1", "Job", job)
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"] == "True"


def test_job_template_without_restart_policy_gets_always_like_upstream() -> None:
    """Upstream defaults it too; validation then rejects "Always" for Jobs."""
    job: Obj = {"spec": {"template": template()}}
    apply_defaults("batch", "v1", "Job", job)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Always"


def test_cron_job_defaults() -> None:
    cj: Obj = {"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template()}}}}
    apply_defaults("batch", "v1", "CronJob", cj)
    spec = cj["spec"]
    assert spec["concurrencyPolicy"] == "Allow"
    assert spec["suspend"] is False
    assert spec["successfulJobsHistoryLimit"] == 3
    assert spec["failedJobsHistoryLimit"] == 1
    assert "backoffLimit" not in spec["jobTemplate"]["spec"]


# -- core ------------------------------------------------------------------------------------


def service(**spec: Any) -> Obj:
    svc: Obj = {"metadata": {"name": "s"}, "spec": spec}
    apply_defaults("", "v1", "Service", svc)
    out: Obj = svc["spec"]
    return out


def test_service_defaults() -> None:
    spec = service(selector={"app": "x"}, ports=[{"port": 80}, {"port": 81, "targetPort": "web"}])
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["ipFamilies"] == ["IPv4"]
    assert spec["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    assert spec["ports"][1]["targetPort"] == "web"
    assert "externalTrafficPolicy" not in spec
    assert "allocateLoadBalancerNodePorts" not in spec


def test_load_balancer_defaults() -> None:
    spec = service(type="LoadBalancer", ports=[{"port": 80}])
    assert spec["externalTrafficPolicy"] == "Cluster"
    assert spec["allocateLoadBalancerNodePorts"] is True
    assert service(type="NodePort", ports=[{"port": 80}])["externalTrafficPolicy"] == "Cluster"


def test_session_affinity_client_ip_timeout() -> None:
    spec = service(sessionAffinity="ClientIP", ports=[{"port": 80}])
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}


def test_headless_without_selector_requires_dual_stack() -> None:
    assert service(clusterIP="None")["ipFamilyPolicy"] == "RequireDualStack"
    assert service(clusterIP="None", selector={"a": "b"})["ipFamilyPolicy"] == "SingleStack"
    assert service(clusterIP="fd00::1", ports=[{"port": 1}])["ipFamilies"] == ["IPv6"]


def test_external_name_service_has_no_traffic_policy() -> None:
    spec = service(type="ExternalName", externalName="example.com")
    assert "internalTrafficPolicy" not in spec
    assert "ipFamilyPolicy" not in spec


def test_pvc_and_pv_defaults() -> None:
    pvc: Obj = {"spec": {}}
    apply_defaults("", "v1", "PersistentVolumeClaim", pvc)
    assert pvc["spec"]["volumeMode"] == "Filesystem"
    assert pvc["status"]["phase"] == "Pending"
    pv: Obj = {"spec": {"hostPath": {"path": "/x"}}}
    apply_defaults("", "v1", "PersistentVolume", pv)
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["volumeMode"] == "Filesystem"
    assert pv["spec"]["hostPath"]["type"] == ""
    assert pv["status"]["phase"] == "Pending"


def test_namespace_defaults() -> None:
    ns: Obj = {"metadata": {"name": "team"}}
    apply_defaults("", "v1", "Namespace", ns)
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team"}
    assert ns["spec"]["finalizers"] == ["kubernetes"]
    assert ns["status"]["phase"] == "Active"


def test_secret_defaults_and_string_data() -> None:
    secret: Obj = {
        "data": {"a": base64.b64encode(b"old").decode()},
        "stringData": {"a": "new", "b": "x"},
    }
    apply_defaults("", "v1", "Secret", secret)
    assert secret["type"] == "Opaque"
    assert "stringData" not in secret
    assert base64.b64decode(secret["data"]["a"]) == b"new"
    assert base64.b64decode(secret["data"]["b"]) == b"x"


def test_endpoint_ports() -> None:
    ep: Obj = {"subsets": [{"ports": [{"port": 80}]}]}
    apply_defaults("", "v1", "Endpoints", ep)
    assert ep["subsets"][0]["ports"][0]["protocol"] == "TCP"
    slice_: Obj = {"ports": [{"port": 80}]}
    apply_defaults("discovery.k8s.io", "v1", "EndpointSlice", slice_)
    assert slice_["ports"][0] == {"port": 80, "name": "", "protocol": "TCP"}


def test_node_allocatable_from_capacity() -> None:
    node: Obj = {"status": {"capacity": {"cpu": "2"}}}
    apply_defaults("", "v1", "Node", node)
    assert node["status"]["allocatable"] == {"cpu": "2"}


def test_limit_range_item_defaults() -> None:
    lr: Obj = {
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}
    }
    apply_defaults("", "v1", "LimitRange", lr)
    item = lr["spec"]["limits"][0]
    assert item["default"] == {"cpu": "2"}
    assert item["defaultRequest"] == {"cpu": "2", "memory": "1Mi"}


# -- other groups ----------------------------------------------------------------------------


def test_network_policy_types() -> None:
    np: Obj = {"spec": {"ingress": [{"ports": [{"port": 80}]}]}}
    apply_defaults("networking.k8s.io", "v1", "NetworkPolicy", np)
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert np["spec"]["ingress"][0]["ports"][0]["protocol"] == "TCP"
    np = {"spec": {"egress": [{}]}}
    apply_defaults("networking.k8s.io", "v1", "NetworkPolicy", np)
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_storage_class() -> None:
    sc: Obj = {"provisioner": "x"}
    apply_defaults("storage.k8s.io", "v1", "StorageClass", sc)
    assert (sc["reclaimPolicy"], sc["volumeBindingMode"]) == ("Delete", "Immediate")


def test_role_binding_subject_api_group() -> None:
    rb: Obj = {
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s"}],
    }
    apply_defaults("rbac.authorization.k8s.io", "v1", "RoleBinding", rb)
    assert rb["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
    assert "apiGroup" not in rb["subjects"][1]
    assert rb["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"


def test_priority_class() -> None:
    pc: Obj = {"value": 5}
    apply_defaults("scheduling.k8s.io", "v1", "PriorityClass", pc)
    assert pc["preemptionPolicy"] == "PreemptLowerPriority"


def test_hpa_versions() -> None:
    v2: Obj = {"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}
    apply_defaults("autoscaling", "v2", "HorizontalPodAutoscaler", v2)
    spec = v2["spec"]
    assert spec["minReplicas"] == 1
    assert spec["metrics"][0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 80},
    }
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 60
    assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert spec["behavior"]["scaleUp"]["selectPolicy"] == "Max"
    assert len(spec["behavior"]["scaleUp"]["policies"]) == 2
    v1: Obj = {"spec": {}}
    apply_defaults("autoscaling", "v1", "HorizontalPodAutoscaler", v1)
    assert v1["spec"] == {"minReplicas": 1}


# -- generic properties ----------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(DEFAULTERS))
def test_defaulting_is_idempotent(key: tuple[str, str]) -> None:
    group, kind = key
    obj: Obj = {
        "metadata": {"name": "x"},
        "spec": {"template": template(), "containers": [{"name": "c", "image": "x"}]},
    }
    apply_defaults(group, "v1", kind, obj)
    once = copy.deepcopy(obj)
    apply_defaults(group, "v1", kind, obj)
    assert obj == once


def test_unknown_kind_untouched() -> None:
    obj: Obj = {"spec": {}}
    apply_defaults("example.com", "v1", "Widget", obj)
    assert obj == {"spec": {}}
