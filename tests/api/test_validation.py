"""Per-kind validation: each rule, with upstream's message for the common ones.

Objects are built minimal, run through ``apply_defaults`` (as the Store does) and then
broken in exactly one way.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from kubling.api.defaults import apply_defaults
from kubling.api.validation import validate, validate_update
from kubling.api.validation.batch import CronError, parse_schedule
from kubling.api.validation.pods import POD_UPDATE_MSG

Obj = dict[str, Any]
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def errors(group: str, kind: str, obj: Obj) -> list[str]:
    return [str(e) for e in validate(group, kind, obj)]


def update_errors(group: str, kind: str, new: Obj, old: Obj) -> list[str]:
    return [str(e) for e in validate_update(group, kind, new, old)]


def defaulted(group: str, kind: str, obj: Obj) -> Obj:
    apply_defaults(group, "v1", kind, obj)
    return obj


def make_pod(**spec: Any) -> Obj:
    base: Obj = {"containers": [{"name": "c", "image": "nginx:1"}]}
    base.update(spec)
    return defaulted("", "Pod", {"metadata": {"name": "p", "namespace": "d"}, "spec": base})


def pod_errors(**spec: Any) -> list[str]:
    return errors("", "Pod", make_pod(**spec))


def ctr(**fields: Any) -> Obj:
    return {"name": "c", "image": "nginx:1", **fields}


def template(labels: Obj | None = None, **spec: Any) -> Obj:
    return {
        "metadata": {"labels": {"app": "x"} if labels is None else labels},
        "spec": {"containers": [ctr()], **spec},
    }


# -- pods: containers ------------------------------------------------------------------------


def test_valid_pod() -> None:
    assert pod_errors() == []


def test_containers_required() -> None:
    assert pod_errors(containers=[]) == ["spec.containers: Required value"]


def test_image_required() -> None:
    assert pod_errors(containers=[{"name": "c"}]) == ["spec.containers[0].image: Required value"]


def test_image_whitespace() -> None:
    assert pod_errors(containers=[ctr(image=" nginx")]) == [
        'spec.containers[0].image: Invalid value: " nginx": must not have leading or trailing whitespace'
    ]


def test_container_name_required_and_label() -> None:
    assert pod_errors(containers=[{"image": "x:1"}]) == ["spec.containers[0].name: Required value"]
    assert pod_errors(containers=[ctr(name="Web")]) == [
        f'spec.containers[0].name: Invalid value: "Web": {LABEL_MSG}'
    ]


def test_container_names_unique_across_init_and_regular() -> None:
    assert pod_errors(initContainers=[ctr()]) == ['spec.containers[0].name: Duplicate value: "c"']
    assert pod_errors(containers=[ctr(), ctr()]) == [
        'spec.containers[1].name: Duplicate value: "c"'
    ]


def test_container_ports() -> None:
    assert pod_errors(containers=[ctr(ports=[{"containerPort": 80, "name": "http"}])]) == []
    assert pod_errors(containers=[ctr(ports=[{"containerPort": 70000}])]) == [
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
    ]
    assert pod_errors(containers=[ctr(ports=[{"name": "x"}])]) == [
        "spec.containers[0].ports[0].containerPort: Required value"
    ]
    assert pod_errors(containers=[ctr(ports=[{"containerPort": 1, "protocol": "HTTP"}])]) == [
        'spec.containers[0].ports[0].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"'
    ]
    assert pod_errors(
        containers=[
            ctr(ports=[{"containerPort": 1, "hostPort": 0}, {"containerPort": 2, "hostPort": -1}])
        ]
    ) == [
        "spec.containers[0].ports[1].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive"
    ]


def test_port_names() -> None:
    ports = [{"containerPort": 1, "name": "web"}, {"containerPort": 2, "name": "web"}]
    assert pod_errors(containers=[ctr(ports=ports)]) == [
        'spec.containers[0].ports[1].name: Duplicate value: "web"'
    ]
    bad = pod_errors(containers=[ctr(ports=[{"containerPort": 1, "name": "123"}])])
    assert bad == [
        'spec.containers[0].ports[0].name: Invalid value: "123": must contain at least one letter (a-z)'
    ]


def test_host_network_host_port_must_match() -> None:
    errs = pod_errors(
        hostNetwork=True, containers=[ctr(ports=[{"containerPort": 80, "hostPort": 81}])]
    )
    assert errs == [
        "spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when `hostNetwork` is true"
    ]


def test_image_pull_policy_supported() -> None:
    assert pod_errors(containers=[ctr(imagePullPolicy="Sometimes")]) == [
        'spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never"'
    ]


def test_env() -> None:
    assert pod_errors(containers=[ctr(env=[{"name": "A.b-c", "value": "1"}])]) == []
    assert pod_errors(containers=[ctr(env=[{"value": "1"}])]) == [
        "spec.containers[0].env[0].name: Required value"
    ]
    assert pod_errors(containers=[ctr(env=[{"name": "A=B"}])]) == [
        'spec.containers[0].env[0].name: Invalid value: "A=B": a valid environment variable name must '
        "consist only of printable ASCII characters other than '='"
    ]
    assert pod_errors(containers=[ctr(env=[{"name": "A", "valueFrom": {}}])]) == [
        'spec.containers[0].env[0].valueFrom: Invalid value: "": must specify one of: `fieldRef`, '
        "`resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"
    ]
    ref = {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm"}}}
    assert pod_errors(containers=[ctr(env=[ref])]) == [
        "spec.containers[0].env[0].valueFrom.configMapKeyRef.key: Required value"
    ]


def test_volume_mounts_refer_to_volumes() -> None:
    vols = [{"name": "data", "emptyDir": {}}]
    ok = ctr(volumeMounts=[{"name": "data", "mountPath": "/d"}])
    assert pod_errors(volumes=vols, containers=[ok]) == []
    missing = ctr(volumeMounts=[{"name": "nope", "mountPath": "/d"}])
    assert pod_errors(volumes=vols, containers=[missing]) == [
        'spec.containers[0].volumeMounts[0].name: Not found: "nope"'
    ]
    twice = ctr(
        volumeMounts=[{"name": "data", "mountPath": "/d"}, {"name": "data", "mountPath": "/d"}]
    )
    assert pod_errors(volumes=vols, containers=[twice]) == [
        'spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/d": must be unique'
    ]
    no_path = ctr(volumeMounts=[{"name": "data"}])
    assert pod_errors(volumes=vols, containers=[no_path]) == [
        "spec.containers[0].volumeMounts[0].mountPath: Required value"
    ]


def test_resources() -> None:
    good = ctr(
        resources={
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        }
    )
    assert pod_errors(containers=[good]) == []
    over = ctr(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})
    assert pod_errors(containers=[over]) == [
        'spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 1'
    ]
    negative = ctr(resources={"requests": {"memory": "-1"}})
    assert pod_errors(containers=[negative]) == [
        'spec.containers[0].resources.requests[memory]: Invalid value: "-1": must be greater than or equal to 0'
    ]
    junk = pod_errors(containers=[ctr(resources={"limits": {"cpu": "lots"}})])
    assert junk[0].startswith(
        'spec.containers[0].resources.limits[cpu]: Invalid value: "lots": quantities must match'
    )
    odd = pod_errors(containers=[ctr(resources={"limits": {"gpu": "1"}})])
    assert (
        odd[0]
        == 'spec.containers[0].resources.limits[gpu]: Invalid value: "gpu": must be a standard resource for containers'
    )


def test_extended_resources_must_be_integers_and_equal() -> None:
    fractional = ctr(resources={"limits": {"example.com/gpu": "500m"}})
    assert "must be an integer" in pod_errors(containers=[fractional])[0]
    no_limit = make_pod(containers=[ctr(resources={"requests": {"example.com/gpu": "1"}})])
    no_limit["spec"]["containers"][0]["resources"].pop("limits", None)
    assert errors("", "Pod", no_limit) == [
        "spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources"
    ]


def test_probes() -> None:
    assert pod_errors(containers=[ctr(livenessProbe={"httpGet": {"port": 8080}})]) == []
    assert pod_errors(containers=[ctr(livenessProbe={})]) == [
        "spec.containers[0].livenessProbe: Required value: must specify a handler type"
    ]
    both = ctr(readinessProbe={"httpGet": {"port": 80}, "tcpSocket": {"port": 80}})
    assert pod_errors(containers=[both]) == [
        "spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"
    ]
    success = ctr(livenessProbe={"tcpSocket": {"port": 80}, "successThreshold": 2})
    assert pod_errors(containers=[success]) == [
        "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"
    ]
    negative = ctr(readinessProbe={"exec": {"command": ["true"]}, "initialDelaySeconds": -1})
    assert pod_errors(containers=[negative]) == [
        "spec.containers[0].readinessProbe.initialDelaySeconds: Invalid value: -1: must be greater than or equal to 0"
    ]


def test_init_container_probes_and_sidecars() -> None:
    init = ctr(name="i", readinessProbe={"exec": {"command": ["true"]}})
    assert pod_errors(initContainers=[init]) == [
        "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always"
    ]
    assert pod_errors(initContainers=[{**init, "restartPolicy": "Always"}]) == []
    assert pod_errors(containers=[ctr(restartPolicy="Always")]) == [
        "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"
    ]


# -- pods: spec ------------------------------------------------------------------------------


def test_restart_policy_supported() -> None:
    assert pod_errors(restartPolicy="Sometimes") == [
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'
    ]


def test_validation_requires_defaulted_fields() -> None:
    raw: Obj = {"spec": {"containers": [ctr()]}}
    assert "spec.restartPolicy: Required value" in errors("", "Pod", raw)


def test_dns_policy_supported() -> None:
    assert pod_errors(dnsPolicy="Google") == [
        'spec.dnsPolicy: Unsupported value: "Google": supported values: "ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"'
    ]


def test_volumes() -> None:
    assert pod_errors(volumes=[{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]) == [
        'spec.volumes[1].name: Duplicate value: "a"'
    ]
    assert pod_errors(volumes=[{"emptyDir": {}}]) == ["spec.volumes[0].name: Required value"]
    assert pod_errors(volumes=[{"name": "a", "emptyDir": {}, "hostPath": {"path": "/x"}}]) == [
        "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type"
    ]
    assert pod_errors(volumes=[{"name": "s", "secret": {}}]) == [
        "spec.volumes[0].secret.secretName: Required value"
    ]
    bad_mode = pod_errors(volumes=[{"name": "c", "configMap": {"name": "c", "defaultMode": 4096}}])
    assert bad_mode == [
        "spec.volumes[0].configMap.defaultMode: Invalid value: 4096: must be a number between 0 and 0777 (octal), both inclusive"
    ]


def test_active_deadline_and_names() -> None:
    assert pod_errors(activeDeadlineSeconds=0) == [
        "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"
    ]
    assert pod_errors(nodeName="Node_1")[0].startswith(
        'spec.nodeName: Invalid value: "Node_1": a lowercase RFC 1123 subdomain'
    )
    assert pod_errors(nodeSelector={"k": "v v"})[0].startswith(
        'spec.nodeSelector: Invalid value: "v v"'
    )


def test_tolerations() -> None:
    assert pod_errors(tolerations=[{"key": "k", "operator": "Bogus"}]) == [
        'spec.tolerations[0].operator: Unsupported value: "Bogus": supported values: "Equal", "Exists"'
    ]
    no_key = pod_errors(tolerations=[{"operator": "Equal", "value": "v"}])
    assert no_key[0].startswith(
        'spec.tolerations[0].operator: Invalid value: "Equal": operator must be Exists when `key` is empty'
    )
    secs = pod_errors(
        tolerations=[
            {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 1}
        ]
    )
    assert secs == [
        "spec.tolerations[0].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"
    ]


# -- pod updates -----------------------------------------------------------------------------


def test_pod_update_image_allowed() -> None:
    old = make_pod()
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:2"
    assert update_errors("", "Pod", new, old) == []


def test_pod_update_other_fields_forbidden() -> None:
    old = make_pod()
    new = copy.deepcopy(old)
    new["spec"]["restartPolicy"] = "Never"
    (msg,) = update_errors("", "Pod", new, old)
    assert msg.startswith("spec: Forbidden: " + POD_UPDATE_MSG + "\n")
    assert POD_UPDATE_MSG.endswith("(allow it to be set to 1 if it was previously negative)")
    assert '+  "restartPolicy": "Never"' in msg


def test_pod_update_containers_count() -> None:
    old = make_pod()
    new = copy.deepcopy(old)
    new["spec"]["containers"].append(ctr(name="d"))
    assert update_errors("", "Pod", defaulted("", "Pod", new), old) == [
        "spec.containers: Forbidden: pod updates may not add or remove containers"
    ]


def test_pod_update_image_cannot_be_cleared() -> None:
    old = make_pod()
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = ""
    assert "spec.containers[0].image: Required value" in update_errors("", "Pod", new, old)


def test_pod_update_tolerations_only_added() -> None:
    old = make_pod()
    added = copy.deepcopy(old)
    added["spec"]["tolerations"].append({"key": "k", "operator": "Exists"})
    assert update_errors("", "Pod", added, old) == []
    seconds = copy.deepcopy(old)
    seconds["spec"]["tolerations"][0]["tolerationSeconds"] = 10
    assert update_errors("", "Pod", seconds, old) == []
    removed = copy.deepcopy(old)
    removed["spec"]["tolerations"].pop()
    assert update_errors("", "Pod", removed, old) == [
        "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
    ]


def test_pod_update_deadline_may_only_shrink() -> None:
    old = make_pod(activeDeadlineSeconds=100)
    shorter = copy.deepcopy(old)
    shorter["spec"]["activeDeadlineSeconds"] = 50
    assert update_errors("", "Pod", shorter, old) == []
    longer = copy.deepcopy(old)
    longer["spec"]["activeDeadlineSeconds"] = 200
    assert update_errors("", "Pod", longer, old) == [
        "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"
    ]
    cleared = copy.deepcopy(old)
    del cleared["spec"]["activeDeadlineSeconds"]
    assert update_errors("", "Pod", cleared, old) == [
        "spec.activeDeadlineSeconds: Invalid value: null: must not update from a positive integer to nil value"
    ]


def test_pod_update_negative_grace_may_become_one() -> None:
    old = make_pod(terminationGracePeriodSeconds=-5)
    new = copy.deepcopy(old)
    new["spec"]["terminationGracePeriodSeconds"] = 1
    assert update_errors("", "Pod", new, old) == []


# -- services --------------------------------------------------------------------------------


def svc(**spec: Any) -> Obj:
    return defaulted("", "Service", {"metadata": {"name": "s", "namespace": "d"}, "spec": spec})


def svc_errors(**spec: Any) -> list[str]:
    return errors("", "Service", svc(**spec))


def test_valid_services() -> None:
    assert svc_errors(selector={"app": "x"}, ports=[{"port": 80}]) == []
    assert svc_errors(clusterIP="None") == []
    assert svc_errors(type="ExternalName", externalName="example.com.") == []


def test_service_ports_required() -> None:
    assert svc_errors() == ["spec.ports: Required value"]


def test_service_port_range_and_protocol() -> None:
    assert svc_errors(ports=[{"port": 0, "targetPort": 1}]) == [
        "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
    ]
    assert svc_errors(ports=[{"port": 80, "protocol": "ICMP"}]) == [
        'spec.ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'
    ]


def test_service_port_names() -> None:
    assert svc_errors(ports=[{"port": 80}, {"port": 81, "name": "b"}]) == [
        "spec.ports[0].name: Required value"
    ]
    assert svc_errors(ports=[{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]) == [
        'spec.ports[1].name: Duplicate value: "a"'
    ]
    dup = svc_errors(ports=[{"port": 80, "name": "a"}, {"port": 80, "name": "b"}])
    assert dup == ['spec.ports[1]: Duplicate value: {"port":80,"protocol":"TCP"}']


def test_service_type_supported() -> None:
    assert svc_errors(type="Magic", ports=[{"port": 1}]) == [
        'spec.type: Unsupported value: "Magic": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'
    ]


def test_service_cluster_ip_rules() -> None:
    assert svc_errors(type="NodePort", clusterIP="None", ports=[{"port": 1}]) == [
        "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"
    ]
    assert svc_errors(clusterIP="10.0.0.300", ports=[{"port": 1}]) == [
        'spec.clusterIPs[0]: Invalid value: "10.0.0.300": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)'
    ]
    assert svc_errors(ports=[{"port": 1, "nodePort": 30000}]) == [
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
    ]


def test_external_name_required() -> None:
    assert svc_errors(type="ExternalName") == ["spec.externalName: Required value"]


def test_service_cluster_ip_immutable() -> None:
    old = svc(clusterIP="10.0.0.5", ports=[{"port": 80}])
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.0.0.6"
    assert update_errors("", "Service", new, old) == [
        'spec.clusterIPs[0]: Invalid value: []string{"10.0.0.6"}: may not change once set'
    ]
    new["spec"]["type"] = "ExternalName"
    new["spec"]["externalName"] = "x.io"
    del new["spec"]["clusterIP"]
    assert update_errors("", "Service", new, old) == []


# -- configmaps & secrets --------------------------------------------------------------------


def test_config_map_keys() -> None:
    assert errors("", "ConfigMap", {"data": {"a.b-c_D": "1"}}) == []
    (msg,) = errors("", "ConfigMap", {"data": {"a/b": "1"}})
    assert msg == (
        'data[a/b]: Invalid value: "a/b": a valid config key must consist of alphanumeric characters, '
        "'-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation "
        "is '[-._a-zA-Z0-9]+')"
    )
    assert errors("", "ConfigMap", {"data": {"..x": "1"}}) == [
        "data[..x]: Invalid value: \"..x\": must not start with '..'"
    ]


def test_config_map_size() -> None:
    assert errors("", "ConfigMap", {"data": {"a": "x" * (1024 * 1024)}}) == []
    assert errors("", "ConfigMap", {"data": {"a": "x" * (1024 * 1024 + 1)}}) == [
        "Too long: may not be more than 1048576 bytes"
    ]


def test_config_map_binary_duplicate() -> None:
    cm = {"data": {"a": "1"}, "binaryData": {"a": base64.b64encode(b"1").decode()}}
    assert errors("", "ConfigMap", cm) == [
        'data[a]: Invalid value: "a": duplicate of key present in binaryData'
    ]


def test_immutable_config_map() -> None:
    old = {"data": {"a": "1"}, "immutable": True}
    assert update_errors("", "ConfigMap", copy.deepcopy(old), old) == []
    changed = {"data": {"a": "2"}, "immutable": True}
    assert update_errors("", "ConfigMap", changed, old) == [
        "data: Forbidden: field is immutable when `immutable` is set"
    ]
    unset = {"data": {"a": "1"}, "immutable": False}
    assert update_errors("", "ConfigMap", unset, old) == [
        "immutable: Forbidden: field is immutable when `immutable` is set"
    ]
    mutable = {"data": {"a": "1"}}
    assert update_errors("", "ConfigMap", {"data": {"a": "2"}, "immutable": True}, mutable) == []


def secret(**fields: Any) -> Obj:
    return defaulted("", "Secret", {"metadata": {"name": "s"}, **fields})


def test_secret_data() -> None:
    assert errors("", "Secret", secret(stringData={"k": "v"})) == []
    assert errors("", "Secret", secret(data={"bad key": "dg=="}))[0].startswith(
        'data[bad key]: Invalid value: "bad key"'
    )
    big = base64.b64encode(b"x" * (1024 * 1024 + 1)).decode()
    assert errors("", "Secret", secret(data={"a": big})) == [
        "data: Too long: may not be more than 1048576 bytes"
    ]


def test_typed_secrets_need_their_keys() -> None:
    assert errors("", "Secret", secret(type="kubernetes.io/tls", data={"tls.crt": "eA=="})) == [
        "data[tls.key]: Required value"
    ]
    assert errors("", "Secret", secret(type="kubernetes.io/service-account-token")) == [
        "metadata.annotations[kubernetes.io/service-account.name]: Required value"
    ]


def test_immutable_secret_and_type() -> None:
    old = secret(data={"a": "eA=="}, immutable=True)
    new = secret(data={"a": "eQ=="}, immutable=True)
    assert update_errors("", "Secret", new, old) == [
        "data: Forbidden: field is immutable when `immutable` is set"
    ]
    retyped = secret(data={"a": "eA=="}, immutable=True, type="x.io/custom")
    assert update_errors("", "Secret", retyped, old) == [
        'type: Invalid value: "x.io/custom": field is immutable'
    ]


# -- namespaces, nodes, volumes --------------------------------------------------------------


def test_namespace_finalizers() -> None:
    ns = defaulted("", "Namespace", {"metadata": {"name": "n"}})
    assert errors("", "Namespace", ns) == []
    ns["spec"]["finalizers"] = ["nope"]
    assert errors("", "Namespace", ns) == [
        'spec.finalizers: Invalid value: "nope": name is neither a standard finalizer name nor is it fully qualified'
    ]


def test_node_taints_and_cidrs() -> None:
    node = {
        "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "podCIDRs": ["10.244.0.0/24"]}
    }
    assert errors("", "Node", node) == []
    bad = {"spec": {"taints": [{"key": "k", "effect": "Maybe"}], "podCIDRs": ["x"]}}
    assert errors("", "Node", bad) == [
        'spec.taints[0].effect: Unsupported value: "Maybe": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"',
        'spec.podCIDRs[0]: Invalid value: "x": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)',
    ]
    dup = {
        "spec": {
            "taints": [
                {"key": "k", "effect": "NoSchedule"},
                {"key": "k", "effect": "NoSchedule", "value": "v"},
            ]
        }
    }
    assert "taints must be unique by key and effect pair" in errors("", "Node", dup)[0]
    moved = {"spec": {"podCIDRs": ["10.244.1.0/24"]}}
    assert update_errors("", "Node", moved, node) == [
        'spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid'
    ]


def pvc(**spec: Any) -> Obj:
    return defaulted("", "PersistentVolumeClaim", {"metadata": {"name": "c"}, "spec": spec})


def test_pvc() -> None:
    good = pvc(accessModes=["ReadWriteOnce"], resources={"requests": {"storage": "1Gi"}})
    assert errors("", "PersistentVolumeClaim", good) == []
    assert errors("", "PersistentVolumeClaim", pvc()) == [
        "spec.accessModes: Required value: at least 1 access mode is required",
        "spec.resources[storage]: Required value",
    ]
    bad_mode = pvc(accessModes=["ReadWriteSometimes"], resources={"requests": {"storage": "0"}})
    assert errors("", "PersistentVolumeClaim", bad_mode) == [
        'spec.accessModes: Unsupported value: "ReadWriteSometimes": supported values: "ReadOnlyMany", '
        '"ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"',
        'spec.resources[storage]: Invalid value: "0": must be greater than zero',
    ]


def test_pvc_update() -> None:
    old = pvc(accessModes=["ReadWriteOnce"], resources={"requests": {"storage": "1Gi"}})
    bind = copy.deepcopy(old)
    bind["spec"]["volumeName"] = "pv-1"
    assert update_errors("", "PersistentVolumeClaim", bind, old) == []
    modes = copy.deepcopy(old)
    modes["spec"]["accessModes"] = ["ReadWriteMany"]
    (msg,) = update_errors("", "PersistentVolumeClaim", modes, old)
    assert msg.startswith(
        "spec: Forbidden: spec is immutable after creation except resources.requests"
    )
    bound = copy.deepcopy(bind)
    bound["status"]["phase"] = "Bound"
    grown = copy.deepcopy(bound)
    grown["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert update_errors("", "PersistentVolumeClaim", grown, bound) == []
    shrunk = copy.deepcopy(bound)
    shrunk["spec"]["resources"]["requests"]["storage"] = "500Mi"
    assert update_errors("", "PersistentVolumeClaim", shrunk, bound) == [
        "spec.resources.requests.storage: Forbidden: field can not be less than previous value"
    ]


def test_pv() -> None:
    pv = defaulted(
        "",
        "PersistentVolume",
        {
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/x"},
            }
        },
    )
    assert errors("", "PersistentVolume", pv) == []
    del pv["spec"]["hostPath"]
    assert errors("", "PersistentVolume", pv) == [
        "spec: Required value: must specify a volume type"
    ]


# -- apps ------------------------------------------------------------------------------------


def workload(group: str, kind: str, **spec: Any) -> Obj:
    base: Obj = {"selector": {"matchLabels": {"app": "x"}}, "template": template()}
    base.update(spec)
    return defaulted(group, kind, {"metadata": {"name": "w", "namespace": "d"}, "spec": base})


APPS_KINDS = ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"]


@pytest.mark.parametrize("kind", APPS_KINDS)
def test_valid_workloads(kind: str) -> None:
    assert errors("apps", kind, workload("apps", kind)) == []


@pytest.mark.parametrize("kind", APPS_KINDS)
def test_selector_required(kind: str) -> None:
    obj = workload("apps", kind)
    del obj["spec"]["selector"]
    assert errors("apps", kind, obj) == ["spec.selector: Required value"]


@pytest.mark.parametrize("kind", APPS_KINDS)
def test_selector_must_match_template(kind: str) -> None:
    obj = workload("apps", kind, template=template(labels={"app": "y"}))
    assert errors("apps", kind, obj) == [
        'spec.template.metadata.labels: Invalid value: {"app":"y"}: `selector` does not match template `labels`'
    ]


def test_selector_match_expressions() -> None:
    sel = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x", "z"]}]}
    assert errors("apps", "Deployment", workload("apps", "Deployment", selector=sel)) == []
    bad = {"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}
    assert errors("apps", "Deployment", workload("apps", "Deployment", selector=bad)) == [
        "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
    ]
    not_in = {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]}
    assert (
        "does not match"
        in errors("apps", "Deployment", workload("apps", "Deployment", selector=not_in))[0]
    )


def test_empty_selector_invalid() -> None:
    assert errors("apps", "Deployment", workload("apps", "Deployment", selector={})) == [
        "spec.selector: Invalid value: {}: empty selector is invalid for deployment"
    ]


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "StatefulSet"])
def test_replicas_non_negative(kind: str) -> None:
    assert errors("apps", kind, workload("apps", kind, replicas=-1)) == [
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    ]


@pytest.mark.parametrize("kind", APPS_KINDS)
def test_workload_pods_restart_always(kind: str) -> None:
    obj = workload("apps", kind, template=template(restartPolicy="Never"))
    assert (
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"'
        in errors("apps", kind, obj)
    )


def test_workload_template_pod_spec_validated() -> None:
    obj = workload(
        "apps",
        "Deployment",
        template={"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}},
    )
    assert errors("apps", "Deployment", obj) == [
        "spec.template.spec.containers[0].image: Required value"
    ]


def test_deployment_strategy() -> None:
    bad = workload("apps", "Deployment", strategy={"type": "BlueGreen"})
    assert errors("apps", "Deployment", bad) == [
        'spec.strategy: Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate"'
    ]
    recreate = workload("apps", "Deployment", strategy={"type": "Recreate", "rollingUpdate": {}})
    assert errors("apps", "Deployment", recreate) == [
        "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
    ]
    zeros = workload(
        "apps",
        "Deployment",
        strategy={
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"},
        },
    )
    assert errors("apps", "Deployment", zeros) == [
        'spec.strategy.rollingUpdate.maxUnavailable: Invalid value: "0%": may not be 0 when `maxSurge` is 0'
    ]
    pct = workload(
        "apps",
        "Deployment",
        strategy={
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "20pc", "maxUnavailable": "120%"},
        },
    )
    assert errors("apps", "Deployment", pct) == [
        'spec.strategy.rollingUpdate.maxSurge: Invalid value: "20pc": a valid percent string must be a numeric string '
        "followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
        'spec.strategy.rollingUpdate.maxUnavailable: Invalid value: "120%": must not be greater than 100%',
    ]


def test_progress_deadline_exceeds_min_ready() -> None:
    obj = workload("apps", "Deployment", minReadySeconds=600)
    assert errors("apps", "Deployment", obj) == [
        "spec.progressDeadlineSeconds: Invalid value: 600: must be greater than minReadySeconds"
    ]


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet"])
def test_selector_immutable(kind: str) -> None:
    old = workload("apps", kind)
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "x", "tier": "web"}}
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
    assert update_errors("apps", kind, new, old) == [
        'spec.selector: Invalid value: {"matchLabels":{"app":"x","tier":"web"}}: field is immutable'
    ]
    scaled = copy.deepcopy(old)
    scaled["spec"].setdefault("replicas", 1)
    scaled["spec"]["replicas"] = 5 if kind != "DaemonSet" else None
    assert update_errors("apps", kind, scaled, old) == []


def test_stateful_set_rules() -> None:
    assert errors(
        "apps", "StatefulSet", workload("apps", "StatefulSet", podManagementPolicy="Random")
    ) == [
        "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'"
    ]
    on_delete = workload(
        "apps",
        "StatefulSet",
        updateStrategy={"type": "OnDelete", "rollingUpdate": {"partition": 1}},
    )
    assert errors("apps", "StatefulSet", on_delete) == [
        "spec.updateStrategy.rollingUpdate: Invalid value: {\"partition\":1}: only allowed for updateStrategy 'RollingUpdate'"
    ]


def test_stateful_set_mounts_may_use_claim_templates() -> None:
    tpl = template()
    tpl["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/d"}]
    claims = [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]
    assert (
        errors(
            "apps",
            "StatefulSet",
            workload("apps", "StatefulSet", template=tpl, volumeClaimTemplates=claims),
        )
        == []
    )
    assert errors("apps", "StatefulSet", workload("apps", "StatefulSet", template=tpl)) == [
        'spec.template.spec.containers[0].volumeMounts[0].name: Not found: "data"'
    ]


def test_stateful_set_update() -> None:
    old = workload("apps", "StatefulSet", serviceName="web")
    ok = copy.deepcopy(old)
    ok["spec"]["replicas"] = 3
    ok["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    assert update_errors("apps", "StatefulSet", ok, old) == []
    renamed = copy.deepcopy(old)
    renamed["spec"]["serviceName"] = "other"
    assert update_errors("apps", "StatefulSet", renamed, old) == [
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
        "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
    ]


def test_daemon_set_rolling_update() -> None:
    both = workload(
        "apps",
        "DaemonSet",
        updateStrategy={
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1},
        },
    )
    assert errors("apps", "DaemonSet", both) == [
        "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"
    ]
    none = workload(
        "apps",
        "DaemonSet",
        updateStrategy={
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0},
        },
    )
    assert errors("apps", "DaemonSet", none) == [
        "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"
    ]


def test_replication_controller() -> None:
    rc = defaulted(
        "", "ReplicationController", {"metadata": {"name": "r"}, "spec": {"template": template()}}
    )
    assert errors("", "ReplicationController", rc) == []
    rc["spec"]["selector"] = {"app": "other"}
    assert errors("", "ReplicationController", rc) == [
        'spec.template.metadata.labels: Invalid value: {"app":"x"}: `selector` does not match template `labels`'
    ]


# -- batch -----------------------------------------------------------------------------------


def job(**spec: Any) -> Obj:
    base: Obj = {
        "selector": {"matchLabels": {"app": "x"}},
        "template": template(restartPolicy="Never"),
    }
    base.update(spec)
    return defaulted("batch", "Job", {"metadata": {"name": "j", "namespace": "d"}, "spec": base})


def test_valid_job() -> None:
    assert errors("batch", "Job", job()) == []


def test_job_restart_policy_always_rejected() -> None:
    obj = job(template=template())
    assert errors("batch", "Job", obj) == [
        'spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never"'
    ]


def test_job_counts() -> None:
    assert errors("batch", "Job", job(completions=-1, parallelism=-2, backoffLimit=-3)) == [
        "spec.parallelism: Invalid value: -2: must be greater than or equal to 0",
        "spec.completions: Invalid value: -1: must be greater than or equal to 0",
        "spec.backoffLimit: Invalid value: -3: must be greater than or equal to 0",
    ]


def test_job_selector_and_modes() -> None:
    obj = job()
    del obj["spec"]["selector"]
    assert errors("batch", "Job", obj) == ["spec.selector: Required value"]
    indexed = job(completionMode="Indexed", parallelism=2)
    assert errors("batch", "Job", indexed) == [
        "spec.completions: Required value: when completion mode is Indexed"
    ]
    assert errors("batch", "Job", job(completionMode="Sparse"))[0] == (
        'spec.completionMode: Unsupported value: "Sparse": supported values: "NonIndexed", "Indexed"'
    )


def test_job_template_immutable() -> None:
    old = job()
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    (msg,) = update_errors("batch", "Job", new, old)
    assert msg.startswith('spec.template: Invalid value: {"metadata"') and msg.endswith(
        ": field is immutable"
    )
    scaled = copy.deepcopy(old)
    scaled["spec"]["parallelism"] = 4
    assert update_errors("batch", "Job", scaled, old) == []
    completions = copy.deepcopy(old)
    completions["spec"]["completions"] = 3
    assert update_errors("batch", "Job", completions, old) == [
        "spec.completions: Invalid value: 3: field is immutable"
    ]


def test_suspended_job_may_change_scheduling_directives() -> None:
    old = job(suspend=True)
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["nodeSelector"] = {"zone": "a"}
    assert update_errors("batch", "Job", new, old) == []
    started = copy.deepcopy(old)
    started["status"] = {"startTime": "2024-01-01T00:00:00Z"}
    assert update_errors("batch", "Job", new, started)[0].startswith("spec.template: Invalid value")


def test_elastic_indexed_job_completions() -> None:
    old = job(completionMode="Indexed", completions=2, parallelism=2)
    new = copy.deepcopy(old)
    new["spec"]["completions"] = new["spec"]["parallelism"] = 4
    assert update_errors("batch", "Job", new, old) == []


def cron(**spec: Any) -> Obj:
    base: Obj = {
        "schedule": "*/5 * * * *",
        "jobTemplate": {"spec": {"template": template(restartPolicy="OnFailure")}},
    }
    base.update(spec)
    return defaulted(
        "batch", "CronJob", {"metadata": {"name": "c", "namespace": "d"}, "spec": base}
    )


def test_valid_cron_job() -> None:
    assert errors("batch", "CronJob", cron()) == []


def test_cron_schedule_required_and_parsed() -> None:
    assert errors("batch", "CronJob", cron(schedule="")) == ["spec.schedule: Required value"]
    assert errors("batch", "CronJob", cron(schedule="* * *")) == [
        'spec.schedule: Invalid value: "* * *": expected exactly 5 fields, found 3: [* * *]'
    ]
    assert errors("batch", "CronJob", cron(schedule="61 * * * *")) == [
        'spec.schedule: Invalid value: "61 * * * *": end of range (61) above maximum (59): 61'
    ]
    assert errors("batch", "CronJob", cron(schedule="TZ=UTC 0 * * * *")) == [
        'spec.schedule: Invalid value: "TZ=UTC 0 * * * *": cannot use TZ or CRON_TZ in schedule, use timeZone field instead'
    ]


@pytest.mark.parametrize(
    "schedule",
    [
        "@hourly",
        "@every 1h30m",
        "0 0 * * 0",
        "0 0 1 jan,JUL *",
        "0 9-17/2 * * mon-fri",
        "0 0 ? * *",
        "5,10 * * * *",
    ],
)
def test_cron_accepts(schedule: str) -> None:
    parse_schedule(schedule)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("@often", "unrecognized descriptor: @often"),
        ("x * * * *", 'failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax'),
        ("0 0 0 * *", "beginning of range (0) below minimum (1): 0"),
        ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
        ("*/0 * * * *", "step of range should be a positive number: */0"),
        ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
        ("0 0 * * 7", "end of range (7) above maximum (6): 7"),
    ],
)
def test_cron_rejects(schedule: str, message: str) -> None:
    with pytest.raises(CronError) as err:
        parse_schedule(schedule)
    assert str(err.value) == message


def test_cron_job_rules() -> None:
    assert errors("batch", "CronJob", cron(concurrencyPolicy="Sometimes")) == [
        'spec.concurrencyPolicy: Unsupported value: "Sometimes": supported values: "Allow", "Forbid", "Replace"'
    ]
    always = cron(jobTemplate={"spec": {"template": template()}})
    assert errors("batch", "CronJob", always) == [
        'spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never"'
    ]
    selector = cron(
        jobTemplate={
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": template(restartPolicy="Never"),
            }
        }
    )
    assert errors("batch", "CronJob", selector) == [
        'spec.jobTemplate.spec.selector: Invalid value: {"matchLabels":{"a":"b"}}: `selector` will be auto-generated'
    ]
    long_name = cron()
    long_name["metadata"]["name"] = "c" * 53
    assert errors("batch", "CronJob", long_name) == [
        f'metadata.name: Invalid value: "{"c" * 53}": must be no more than 52 characters'
    ]


# -- dispatch --------------------------------------------------------------------------------


def test_unknown_kind_is_accepted() -> None:
    assert validate("example.com", "Widget", {"spec": {"anything": True}}) == []
    assert validate_update("example.com", "Widget", {}, {}) == []
