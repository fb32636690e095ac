"""Decoding Kubernetes protobuf bodies into the JSON dicts the API server would produce.

The messages are built with classes generated from the shipped descriptor set, wrapped the
way kubectl wraps them (``k8s\\0`` + ``runtime.Unknown``), decoded, and compared with the
JSON the same Go object serializes to.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kubling.api import protobuf
from kubling.api.protobuf import ProtobufError, decode_object, encode_object, message_class


def _new(name: str) -> Any:
    return message_class(name)()


def test_configmap_data_and_binary_data() -> None:
    cm = _new("k8s.io.api.core.v1.ConfigMap")
    cm.metadata.name = "cfg"
    cm.metadata.namespace = "ns1"
    cm.metadata.creationTimestamp.SetInParent()  # gogo always writes the zero Time
    cm.data["a"] = "b"
    cm.binaryData["blob"] = b"\x00\xffbin"
    got = decode_object(encode_object(cm, api_version="v1", kind="ConfigMap"))
    assert got == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cfg", "namespace": "ns1", "creationTimestamp": None},
        "data": {"a": "b"},
        "binaryData": {"blob": base64.b64encode(b"\x00\xffbin").decode()},
    }


def test_secret_bytes_are_base64_and_empty_scalars_dropped() -> None:
    secret = _new("k8s.io.api.core.v1.Secret")
    secret.metadata.name = "sec"
    secret.metadata.generateName = ""  # Go writes unset strings too: omitted like omitempty
    secret.metadata.generation = 0
    secret.data["pw"] = b"s3cret"
    secret.type = "Opaque"
    secret.immutable = False  # a pointer field: explicit false is kept
    got = decode_object(encode_object(secret, api_version="v1", kind="Secret"))
    assert got == {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "sec"},
        "immutable": False,
        "data": {"pw": "czNjcmV0"},
        "type": "Opaque",
    }


def test_deployment_intorstring_quantity_and_zero_replicas() -> None:
    dep = _new("k8s.io.api.apps.v1.Deployment")
    dep.metadata.name = "web"
    dep.metadata.labels["app"] = "web"
    dep.spec.replicas = 0  # explicit zero must survive (pointer field)
    dep.spec.selector.matchLabels["app"] = "web"
    dep.spec.template.metadata.labels["app"] = "web"
    dep.spec.template.metadata.creationTimestamp.SetInParent()
    container = dep.spec.template.spec.containers.add()
    container.name = "nginx"
    container.image = "nginx:1.27"
    container.resources.limits["cpu"].string = "500m"
    container.resources.requests["memory"].string = "64Mi"
    port = container.ports.add()
    port.containerPort = 80
    port.hostPort = 0
    port.protocol = "TCP"
    dep.spec.strategy.type = "RollingUpdate"
    surge = dep.spec.strategy.rollingUpdate.maxSurge
    surge.type = 1
    surge.strVal = "25%"
    dep.spec.strategy.rollingUpdate.maxUnavailable.intVal = 1
    dep.status.SetInParent()
    got = decode_object(encode_object(dep, api_version="apps/v1", kind="Deployment"))
    assert got == {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "nginx:1.27",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                    }],
                },
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"},
            },
        },
        "status": {},
    }


def test_namespace_with_times() -> None:
    ns = _new("k8s.io.api.core.v1.Namespace")
    ns.metadata.name = "team"
    ns.metadata.creationTimestamp.seconds = 1704164645  # 2024-01-02T03:04:05Z
    ns.metadata.creationTimestamp.nanos = 999
    ns.spec.finalizers.append("kubernetes")
    ns.status.phase = "Active"
    cond = ns.status.conditions.add()
    cond.type = "NamespaceDeletionContentFailure"
    cond.status = "False"
    cond.lastTransitionTime.seconds = 1704164645
    got = decode_object(encode_object(ns, api_version="v1", kind="Namespace"))
    assert got == {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "team", "creationTimestamp": "2024-01-02T03:04:05Z"},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {
            "phase": "Active",
            "conditions": [{
                "type": "NamespaceDeletionContentFailure",
                "status": "False",
                "lastTransitionTime": "2024-01-02T03:04:05Z",
            }],
        },
    }


def test_service_with_int_target_port() -> None:
    svc = _new("k8s.io.api.core.v1.Service")
    svc.metadata.name = "x"
    svc.spec.type = "ClusterIP"
    svc.spec.selector["app"] = "x"
    port = svc.spec.ports.add()
    port.name = "80-8080"
    port.port = 80
    port.protocol = "TCP"
    port.targetPort.type = 0
    port.targetPort.intVal = 8080
    port.nodePort = 0
    named = svc.spec.ports.add()
    named.port = 443
    named.targetPort.type = 1
    named.targetPort.strVal = "https"
    svc.status.loadBalancer.SetInParent()
    got = decode_object(encode_object(svc, api_version="v1", kind="Service"))
    assert got["spec"] == {
        "ports": [
            {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
            {"port": 443, "targetPort": "https"},
        ],
        "selector": {"app": "x"},
        "type": "ClusterIP",
    }
    assert got["status"] == {"loadBalancer": {}}


def test_inline_fields_and_micro_time() -> None:
    pod = _new("k8s.io.api.core.v1.Pod")
    pod.metadata.name = "p"
    c = pod.spec.containers.add()
    c.name = "app"
    env = c.env.add()
    env.name = "COLOR"
    env.valueFrom.configMapKeyRef.localObjectReference.name = "cfg"
    env.valueFrom.configMapKeyRef.key = "color"
    env.valueFrom.configMapKeyRef.optional = False
    c.readinessProbe.handler.httpGet.path = "/healthz"
    c.readinessProbe.handler.httpGet.port.type = 1
    c.readinessProbe.handler.httpGet.port.strVal = "http"
    vol = pod.spec.volumes.add()
    vol.name = "data"
    vol.volumeSource.emptyDir.sizeLimit.string = "1Gi"
    got = decode_object(encode_object(pod, api_version="v1", kind="Pod"))
    container = got["spec"]["containers"][0]
    assert container["env"] == [{"name": "COLOR", "valueFrom": {
        "configMapKeyRef": {"name": "cfg", "key": "color", "optional": False}}}]
    assert container["readinessProbe"] == {"httpGet": {"path": "/healthz", "port": "http"}}
    assert got["spec"]["volumes"] == [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}]

    event = _new("k8s.io.api.core.v1.Event")
    event.metadata.name = "e"
    event.eventTime.seconds = 1704164645
    event.eventTime.nanos = 123456789
    got = decode_object(encode_object(event, api_version="v1", kind="Event"))
    assert got["eventTime"] == "2024-01-02T03:04:05.123456Z"


def test_managed_fields_raw_extension_and_rbac() -> None:
    role = _new("k8s.io.api.rbac.v1.Role")
    role.metadata.name = "reader"
    entry = role.metadata.managedFields.add()
    entry.manager = "kubectl"
    entry.operation = "Update"
    entry.fieldsType = "FieldsV1"
    entry.fieldsV1.Raw = b'{"f:rules":{}}'
    rule = role.rules.add()
    rule.verbs.extend(["get", "list"])
    rule.apiGroups.append("")
    rule.resources.append("pods")
    got = decode_object(encode_object(role, api_version="rbac.authorization.k8s.io/v1",
                                      kind="Role"))
    assert got["metadata"]["managedFields"] == [{
        "manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:rules": {}},
    }]
    assert got["rules"] == [{"verbs": ["get", "list"], "apiGroups": [""],
                             "resources": ["pods"]}]

    rev = _new("k8s.io.api.apps.v1.ControllerRevision")
    rev.metadata.name = "r1"
    rev.data.raw = b'{"spec":{"replicas":3}}'
    rev.revision = 2
    got = decode_object(encode_object(rev, api_version="apps/v1", kind="ControllerRevision"))
    assert got["data"] == {"spec": {"replicas": 3}}
    assert got["revision"] == 2


def test_self_subject_access_review() -> None:
    review = _new("k8s.io.api.authorization.v1.SelfSubjectAccessReview")
    review.metadata.creationTimestamp.SetInParent()
    attrs = review.spec.resourceAttributes
    attrs.namespace = "default"
    attrs.verb = "create"
    attrs.resource = "pods"
    review.status.allowed = False
    got = decode_object(encode_object(review, api_version="authorization.k8s.io/v1",
                                      kind="SelfSubjectAccessReview"))
    assert got == {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "create",
                                        "resource": "pods"}},
        "status": {"allowed": False},
    }


def test_go_duration_format() -> None:
    assert protobuf.go_duration(0) == "0s"
    assert protobuf.go_duration(90 * 10**9) == "1m30s"
    assert protobuf.go_duration(3_600_500_000_000) == "1h0m0.5s"
    assert protobuf.go_duration(1_500_000) == "1.5ms"


def test_bad_magic() -> None:
    with pytest.raises(ProtobufError, match="magic"):
        decode_object(b'{"kind": "ConfigMap"}')


def test_truncated_bytes() -> None:
    cm = _new("k8s.io.api.core.v1.ConfigMap")
    cm.metadata.name = "cfg"
    cm.data["key"] = "value" * 10
    body = encode_object(cm, api_version="v1", kind="ConfigMap")
    with pytest.raises(ProtobufError, match="malformed"):
        decode_object(body[:-7])


def test_unknown_kind_is_named() -> None:
    cm = _new("k8s.io.api.core.v1.ConfigMap")
    with pytest.raises(ProtobufError, match="Gizmo"):
        decode_object(encode_object(cm, api_version="v1", kind="Gizmo"))
    with pytest.raises(ProtobufError, match="Widget"):
        decode_object(encode_object(cm, api_version="example.com/v1", kind="Widget"))


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(ProtobufError, ValueError)
