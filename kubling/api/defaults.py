"""Server-side defaulting for built-in kinds, as kube-apiserver applies it on decode.

Clients (and conformance tests) read objects back and expect the fields upstream fills in:
``SetDefaults_*`` in ``pkg/apis/*/v1/defaults.go`` plus ``+default`` markers.  A few
defaults that upstream applies in *admission* are included here too, because every real
cluster shows them on Pods and kubling has no separate admission chain for them:

* ``DefaultTolerationSeconds``: not-ready / unreachable ``NoExecute`` tolerations (300s);
* ``Priority``: ``priority: 0`` and ``preemptionPolicy`` when no ``priorityClassName``
  (and the two built-in ``system-*`` classes); other classes need a PriorityClass lookup
  and are left to the caller;
* ``ServiceAccount``: ``serviceAccountName: default`` (+ the deprecated ``serviceAccount``
  mirror).  Checking that the account exists and mounting the ``kube-api-access-*`` token
  volume need the cluster: the API server's admission chain does that
  (``kubling.apiserver.admission.serviceaccount``).

Everything mutates in place and only fills fields that are absent (``None`` counts as
absent), so defaulting an already-defaulted object is a no-op.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Defaulter = Callable[[Obj], None]

DEFAULT_MODE = 0o644  # 420: configMap/secret/downwardAPI/projected volumes
TERMINATION_GRACE_PERIOD = 30
TOLERATION_SECONDS = 300
SYSTEM_PRIORITY_CLASSES = {
    "system-node-critical": 2000001000,
    "system-cluster-critical": 2000000000,
}


# -- tiny helpers --------------------------------------------------------------------------


def _default(obj: Obj, key: str, value: Any) -> None:
    """Set ``obj[key]`` when absent or null (Go: nil pointer / zero value)."""
    if obj.get(key) is None:
        obj[key] = copy.deepcopy(value)


def _default_str(obj: Obj, key: str, value: str) -> None:
    """For Go non-pointer strings, where ``""`` is indistinguishable from unset."""
    if obj.get(key) in (None, ""):
        obj[key] = value


def _child(obj: Obj, key: str) -> Obj:
    """``obj[key]`` as a dict, created when missing (Go: a non-pointer struct field)."""
    value = obj.get(key)
    if not isinstance(value, dict):
        value = {}
        obj[key] = value
    return value


def _dicts(obj: Obj | None, key: str) -> list[Obj]:
    """The dict items of list ``obj[key]``, tolerating absence and junk (validation reports)."""
    if not isinstance(obj, dict):
        return []
    items = obj.get(key)
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _sub(obj: Obj | None, *keys: str) -> Obj | None:
    """A nested dict that must already exist (pointer fields: absent means no defaults)."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj if isinstance(obj, dict) else None


# -- containers ------------------------------------------------------------------------------


def image_tag(image: str) -> str:
    """The tag docker would pull: ``latest`` when neither tag nor digest is given."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return last.rsplit(":", 1)[1]
    return "" if digest else "latest"


def _default_handler(handler: Obj | None) -> None:
    """Probe and lifecycle handlers share ``HTTPGetAction`` defaults."""
    http = _sub(handler, "httpGet")
    if http is not None:
        _default_str(http, "path", "/")
        _default_str(http, "scheme", "HTTP")
    grpc = _sub(handler, "grpc")
    if grpc is not None:
        _default(grpc, "service", "")


def _default_probe(probe: Obj | None) -> None:
    if probe is None:
        return
    for key, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        if not probe.get(key):
            probe[key] = value
    _default_handler(probe)


def _default_field_ref(holder: Obj | None) -> None:
    """``ObjectFieldSelector.apiVersion`` defaults to ``v1`` wherever it appears."""
    ref = _sub(holder, "fieldRef")
    if ref is not None:
        _default_str(ref, "apiVersion", "v1")


def _default_container(ctr: Obj) -> None:
    image = ctr.get("image")
    if ctr.get("imagePullPolicy") in (None, ""):
        # An unparsable (e.g. missing) image has no tag upstream: IfNotPresent.
        latest = isinstance(image, str) and bool(image) and image_tag(image) == "latest"
        ctr["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    _default_str(ctr, "terminationMessagePath", "/dev/termination-log")
    _default_str(ctr, "terminationMessagePolicy", "File")
    _child(ctr, "resources")
    for port in _dicts(ctr, "ports"):
        _default_str(port, "protocol", "TCP")
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(_sub(ctr, key))
    for key in ("postStart", "preStop"):
        _default_handler(_sub(ctr, "lifecycle", key))
    for env in _dicts(ctr, "env"):
        _default_field_ref(_sub(env, "valueFrom"))


# -- volumes ---------------------------------------------------------------------------------


def _default_pvc_spec(spec: Obj) -> None:
    _default(spec, "volumeMode", "Filesystem")


def _default_projected(projected: Obj) -> None:
    _default(projected, "defaultMode", DEFAULT_MODE)
    for source in _dicts(projected, "sources"):
        token = _sub(source, "serviceAccountToken")
        if token is not None:
            _default(token, "expirationSeconds", 3600)
        for item in _dicts(_sub(source, "downwardAPI"), "items"):
            _default_field_ref(item)


def _default_volume(vol: Obj) -> None:
    """A volume with no source becomes ``emptyDir: {}``; sources get their own defaults."""
    if not any(key != "name" and value is not None for key, value in vol.items()):
        vol["emptyDir"] = {}
    for key in ("configMap", "secret"):
        source = _sub(vol, key)
        if source is not None:
            _default(source, "defaultMode", DEFAULT_MODE)
    downward = _sub(vol, "downwardAPI")
    if downward is not None:
        _default(downward, "defaultMode", DEFAULT_MODE)
        for item in _dicts(downward, "items"):
            _default_field_ref(item)
    projected = _sub(vol, "projected")
    if projected is not None:
        _default_projected(projected)
    host_path = _sub(vol, "hostPath")
    if host_path is not None:
        _default(host_path, "type", "")
    claim_spec = _sub(vol, "ephemeral", "volumeClaimTemplate", "spec")
    if claim_spec is not None:
        _default_pvc_spec(claim_spec)


# -- pod specs -------------------------------------------------------------------------------


def _default_pod_spec(spec: Obj) -> None:
    """``SetDefaults_PodSpec``: applies to Pods *and* every pod template.

    This includes ``restartPolicy: Always`` for Job templates: upstream defaults it there
    too, which is why a Job without one fails validation with ``Unsupported value:
    "Always"``.
    """
    _default_str(spec, "dnsPolicy", "ClusterFirst")
    _default_str(spec, "restartPolicy", "Always")
    _default(spec, "securityContext", {})
    _default(spec, "terminationGracePeriodSeconds", TERMINATION_GRACE_PERIOD)
    _default_str(spec, "schedulerName", "default-scheduler")
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for ctr in _dicts(spec, key):
            _default_container(ctr)
    for vol in _dicts(spec, "volumes"):
        _default_volume(vol)


def _default_template(template: Obj | None) -> None:
    if template is not None:
        _default_pod_spec(_child(template, "spec"))


def _requests_from_limits(ctr: Obj) -> None:
    """Pod-only: a limit without a request means the request equals the limit."""
    resources = _sub(ctr, "resources")
    limits = _sub(resources, "limits")
    if resources is None or limits is None:
        return
    requests = _child(resources, "requests")
    for name, quantity in limits.items():
        requests.setdefault(name, quantity)


def _host_network_ports(spec: Obj) -> None:
    """With ``hostNetwork`` the container port *is* the host port."""
    for key in ("initContainers", "containers"):
        for ctr in _dicts(spec, key):
            for port in _dicts(ctr, "ports"):
                if not port.get("hostPort"):
                    port["hostPort"] = port.get("containerPort")


def _default_tolerations(spec: Obj) -> None:
    """DefaultTolerationSeconds admission: ride out short node outages for 5 minutes."""
    tolerations = spec.get("tolerations")
    if not isinstance(tolerations, list):
        tolerations = []
    for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if any(
            isinstance(t, dict)
            and t.get("key") in (None, "", taint)
            and t.get("effect") in (None, "", "NoExecute")
            for t in tolerations
        ):
            continue
        tolerations.append(
            {
                "key": taint,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": TOLERATION_SECONDS,
            }
        )
    spec["tolerations"] = tolerations


def _default_priority(spec: Obj) -> None:
    """Priority admission for the cases that need no PriorityClass lookup."""
    class_name = spec.get("priorityClassName") or ""
    if class_name and class_name not in SYSTEM_PRIORITY_CLASSES:
        return
    _default(spec, "priority", SYSTEM_PRIORITY_CLASSES.get(class_name, 0))
    _default_str(spec, "preemptionPolicy", "PreemptLowerPriority")


def _default_service_account(spec: Obj) -> None:
    """ServiceAccount admission + the v1 conversion that mirrors the deprecated field."""
    name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = name
    spec["serviceAccount"] = name


def default_pod(pod: Obj) -> None:
    """``SetDefaults_Pod`` on top of the pod-spec defaults, plus the admission defaults."""
    spec = _child(pod, "spec")
    _default_pod_spec(spec)
    for key in ("initContainers", "containers"):
        for ctr in _dicts(spec, key):
            _requests_from_limits(ctr)
    _default(spec, "enableServiceLinks", True)
    if spec.get("hostNetwork") is True:
        _host_network_ports(spec)
    _default_tolerations(spec)
    _default_priority(spec)
    _default_service_account(spec)


def default_pod_template(obj: Obj) -> None:
    _default_template(_sub(obj, "template"))


def default_replication_controller(obj: Obj) -> None:
    """RCs predate explicit selectors: selector and labels come from the template."""
    spec = _child(obj, "spec")
    template = _sub(spec, "template")
    labels = _sub(template, "metadata", "labels")
    if labels:
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        meta = _child(obj, "metadata")
        if not meta.get("labels"):
            meta["labels"] = dict(labels)
    _default(spec, "replicas", 1)
    _default_template(template)


# -- core: services, storage, misc -----------------------------------------------------------


def _default_service_ports(spec: Obj) -> None:
    for port in _dicts(spec, "ports"):
        _default_str(port, "protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")


def _default_ip_families(spec: Obj) -> None:
    """What the Service registry fills in on a single-stack cluster.

    Upstream does this at allocation time (it depends on the cluster's families); headless
    services without a selector default to ``RequireDualStack``, everything else to
    ``SingleStack``.  The family follows an explicit ``clusterIP``, else IPv4.
    """
    if spec.get("type") == "ExternalName":
        return
    cluster_ip = spec.get("clusterIP") or ""
    headless = cluster_ip == "None"
    if spec.get("ipFamilyPolicy") is None:
        selectorless = not spec.get("selector")
        spec["ipFamilyPolicy"] = "RequireDualStack" if headless and selectorless else "SingleStack"
    if not spec.get("ipFamilies"):
        family = "IPv4"
        try:
            if not headless and cluster_ip and ipaddress.ip_address(cluster_ip).version == 6:
                family = "IPv6"
        except ValueError:
            pass
        spec["ipFamilies"] = [family]


def default_service(svc: Obj) -> None:
    spec = _child(svc, "spec")
    _default_str(spec, "sessionAffinity", "None")
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        client_ip = _child(_child(spec, "sessionAffinityConfig"), "clientIP")
        _default(client_ip, "timeoutSeconds", 10800)
    _default_str(spec, "type", "ClusterIP")
    _default_service_ports(spec)
    svc_type = spec["type"]
    if svc_type in ("NodePort", "LoadBalancer"):
        _default_str(spec, "externalTrafficPolicy", "Cluster")
    if svc_type in ("NodePort", "LoadBalancer", "ClusterIP"):
        _default(spec, "internalTrafficPolicy", "Cluster")
    if svc_type == "LoadBalancer":
        _default(spec, "allocateLoadBalancerNodePorts", True)
    _default_ip_families(spec)


def default_pvc(pvc: Obj) -> None:
    _default_pvc_spec(_child(pvc, "spec"))
    _default_str(_child(pvc, "status"), "phase", "Pending")


def default_pv(pv: Obj) -> None:
    spec = _child(pv, "spec")
    _default_str(spec, "persistentVolumeReclaimPolicy", "Retain")
    _default(spec, "volumeMode", "Filesystem")
    host_path = _sub(spec, "hostPath")
    if host_path is not None:
        _default(host_path, "type", "")
    _default_str(_child(pv, "status"), "phase", "Pending")


def default_namespace(ns: Obj) -> None:
    """The name label lets selectors pick namespaces by name; ``kubernetes`` finalizer."""
    meta = _child(ns, "metadata")
    name = meta.get("name")
    if name:
        _child(meta, "labels")["kubernetes.io/metadata.name"] = name
    spec = _child(ns, "spec")
    if not spec.get("finalizers"):
        spec["finalizers"] = ["kubernetes"]
    _default_str(_child(ns, "status"), "phase", "Active")


def default_secret(secret: Obj) -> None:
    """``type: Opaque``; also folds write-only ``stringData`` into ``data``.

    The fold is v1→internal *conversion* upstream, which kubling does not have, so it
    lives here: ``stringData`` wins over ``data`` and is never stored.
    """
    _default_str(secret, "type", "Opaque")
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = _child(secret, "data")
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def default_endpoints(obj: Obj) -> None:
    for subset in _dicts(obj, "subsets"):
        for port in _dicts(subset, "ports"):
            _default_str(port, "protocol", "TCP")


def default_endpoint_slice(obj: Obj) -> None:
    for port in _dicts(obj, "ports"):
        _default(port, "name", "")
        _default(port, "protocol", "TCP")


def default_node(node: Obj) -> None:
    """Allocatable defaults to capacity until the kubelet reports reservations."""
    status = _sub(node, "status")
    capacity = _sub(status, "capacity")
    if status is not None and capacity is not None and status.get("allocatable") is None:
        status["allocatable"] = dict(capacity)


def default_limit_range(obj: Obj) -> None:
    """Container limits default to max, requests to the default limit (or min)."""
    for item in _dicts(_sub(obj, "spec"), "limits"):
        if item.get("type") != "Container":
            continue
        default = _child(item, "default")
        request = _child(item, "defaultRequest")
        for name, value in (_sub(item, "max") or {}).items():
            default.setdefault(name, value)
        for name, value in default.items():
            request.setdefault(name, value)
        for name, value in (_sub(item, "min") or {}).items():
            request.setdefault(name, value)


# -- apps ------------------------------------------------------------------------------------


def default_deployment(obj: Obj) -> None:
    spec = _child(obj, "spec")
    _default(spec, "replicas", 1)
    strategy = _child(spec, "strategy")
    _default_str(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        _default(rolling, "maxUnavailable", "25%")
        _default(rolling, "maxSurge", "25%")
    _default(spec, "revisionHistoryLimit", 10)
    _default(spec, "progressDeadlineSeconds", 600)
    _default_template(_sub(spec, "template"))


def default_replica_set(obj: Obj) -> None:
    spec = _child(obj, "spec")
    _default(spec, "replicas", 1)
    _default_template(_sub(spec, "template"))


def default_stateful_set(obj: Obj) -> None:
    spec = _child(obj, "spec")
    _default_str(spec, "podManagementPolicy", "OrderedReady")
    strategy = _child(spec, "updateStrategy")
    if strategy.get("type") in (None, ""):
        strategy["type"] = "RollingUpdate"
        _child(strategy, "rollingUpdate")
    rolling = _sub(strategy, "rollingUpdate")
    if strategy["type"] == "RollingUpdate" and rolling is not None:
        _default(rolling, "partition", 0)
    retention = _child(spec, "persistentVolumeClaimRetentionPolicy")
    _default_str(retention, "whenDeleted", "Retain")
    _default_str(retention, "whenScaled", "Retain")
    _default(spec, "replicas", 1)
    _default(spec, "revisionHistoryLimit", 10)
    _default_template(_sub(spec, "template"))
    for claim in _dicts(spec, "volumeClaimTemplates"):
        default_pvc(claim)


def default_daemon_set(obj: Obj) -> None:
    spec = _child(obj, "spec")
    strategy = _child(spec, "updateStrategy")
    _default_str(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        _default(rolling, "maxUnavailable", 1)
        _default(rolling, "maxSurge", 0)
    _default(spec, "revisionHistoryLimit", 10)
    _default_template(_sub(spec, "template"))


# -- batch -----------------------------------------------------------------------------------


def default_job(obj: Obj) -> None:
    """``SetDefaults_Job``.  The generated ``controller-uid`` selector is the strategy's job."""
    spec = _child(obj, "spec")
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    _default(spec, "parallelism", 1)
    per_index = spec.get("backoffLimitPerIndex") is not None
    _default(spec, "backoffLimit", 2**31 - 1 if per_index else 6)
    labels = _sub(spec, "template", "metadata", "labels")
    meta = _child(obj, "metadata")
    if labels and not meta.get("labels"):
        meta["labels"] = dict(labels)
    _default(spec, "completionMode", "NonIndexed")
    _default(spec, "suspend", False)
    failure_policy = _sub(spec, "podFailurePolicy")
    for rule in _dicts(failure_policy, "rules"):
        for pattern in _dicts(rule, "onPodConditions"):
            _default_str(pattern, "status", "True")
    replacement = "Failed" if failure_policy is not None else "TerminatingOrFailed"
    _default(spec, "podReplacementPolicy", replacement)
    _default_template(_sub(spec, "template"))


def default_cron_job(obj: Obj) -> None:
    """``SetDefaults_CronJob``; the job template's spec gets only nested (pod) defaults."""
    spec = _child(obj, "spec")
    _default_str(spec, "concurrencyPolicy", "Allow")
    _default(spec, "suspend", False)
    _default(spec, "successfulJobsHistoryLimit", 3)
    _default(spec, "failedJobsHistoryLimit", 1)
    _default_template(_sub(spec, "jobTemplate", "spec", "template"))


# -- other groups ----------------------------------------------------------------------------


def default_network_policy(obj: Obj) -> None:
    """No ``policyTypes`` means Ingress, plus Egress when egress rules are present."""
    spec = _child(obj, "spec")
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for direction in ("ingress", "egress"):
        for rule in _dicts(spec, direction):
            for port in _dicts(rule, "ports"):
                _default(port, "protocol", "TCP")


def default_storage_class(obj: Obj) -> None:
    _default(obj, "reclaimPolicy", "Delete")
    _default(obj, "volumeBindingMode", "Immediate")


def default_role_binding(obj: Obj) -> None:
    """Users and groups live in the RBAC API group; ServiceAccounts in core."""
    for subject in _dicts(obj, "subjects"):
        if subject.get("apiGroup") in (None, "") and subject.get("kind") in ("User", "Group"):
            subject["apiGroup"] = "rbac.authorization.k8s.io"
    role_ref = _sub(obj, "roleRef")
    if role_ref is not None:
        _default_str(role_ref, "apiGroup", "rbac.authorization.k8s.io")


def default_priority_class(obj: Obj) -> None:
    _default(obj, "preemptionPolicy", "PreemptLowerPriority")


def default_hpa_v1(obj: Obj) -> None:
    _default(_child(obj, "spec"), "minReplicas", 1)


def _default_scaling_rules(rules: Obj, window: int, policies: list[Obj]) -> None:
    _default(rules, "stabilizationWindowSeconds", window)
    _default_str(rules, "selectPolicy", "Max")
    if not rules.get("policies"):
        rules["policies"] = policies


def default_hpa_v2(obj: Obj) -> None:
    """Min 1 replica, 80% CPU when no metrics, and filled-in ``behavior`` when given."""
    spec = _child(obj, "spec")
    _default(spec, "minReplicas", 1)
    if not spec.get("metrics"):
        target = {"type": "Utilization", "averageUtilization": 80}
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": target}}]
    behavior = _sub(spec, "behavior")
    if behavior is None:
        return
    up = [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ]
    _default_scaling_rules(_child(behavior, "scaleUp"), 0, up)
    down = [{"type": "Percent", "value": 100, "periodSeconds": 15}]
    _default_scaling_rules(_child(behavior, "scaleDown"), 300, down)


_RBAC = "rbac.authorization.k8s.io"

#: ``(group, kind) -> defaulter``: a new kind is one line.
DEFAULTERS: dict[tuple[str, str], Defaulter] = {
    ("", "Pod"): default_pod,
    ("", "PodTemplate"): default_pod_template,
    ("", "ReplicationController"): default_replication_controller,
    ("", "Service"): default_service,
    ("", "PersistentVolumeClaim"): default_pvc,
    ("", "PersistentVolume"): default_pv,
    ("", "Namespace"): default_namespace,
    ("", "Secret"): default_secret,
    ("", "Endpoints"): default_endpoints,
    ("", "Node"): default_node,
    ("", "LimitRange"): default_limit_range,
    ("apps", "Deployment"): default_deployment,
    ("apps", "ReplicaSet"): default_replica_set,
    ("apps", "StatefulSet"): default_stateful_set,
    ("apps", "DaemonSet"): default_daemon_set,
    ("batch", "Job"): default_job,
    ("batch", "CronJob"): default_cron_job,
    ("discovery.k8s.io", "EndpointSlice"): default_endpoint_slice,
    ("networking.k8s.io", "NetworkPolicy"): default_network_policy,
    ("storage.k8s.io", "StorageClass"): default_storage_class,
    (_RBAC, "RoleBinding"): default_role_binding,
    (_RBAC, "ClusterRoleBinding"): default_role_binding,
    ("scheduling.k8s.io", "PriorityClass"): default_priority_class,
    ("autoscaling", "HorizontalPodAutoscaler"): default_hpa_v2,
}

#: Where defaults differ between served versions: ``(group, version, kind)`` wins.
VERSIONED_DEFAULTERS: dict[tuple[str, str, str], Defaulter] = {
    ("autoscaling", "v1", "HorizontalPodAutoscaler"): default_hpa_v1,
}


def apply_defaults(group: str, version: str, kind: str, obj: Obj) -> None:
    """Fill in upstream defaults for ``obj`` (a ``group/version`` ``kind``) in place."""
    defaulter = VERSIONED_DEFAULTERS.get((group, version, kind)) or DEFAULTERS.get((group, kind))
    if defaulter is not None:
        defaulter(obj)
