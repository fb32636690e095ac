"""Decoding Kubernetes protobuf bodies into the JSON dicts the API server would produce.

The messages are built with classes generated from the shipped descriptor set, wrapped the
way kubectl wraps them (``k8s\\0`` + ``runtime.Unknown``), decoded, and compared with the
JSON the same Go object serializes to.
"""

from __future__ import annotations

import base64
import json
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


# -- the groups added with the second descriptor batch ---------------------------------------


def test_endpointslice_discovery_v1() -> None:
    es = _new("k8s.io.api.discovery.v1.EndpointSlice")
    es.metadata.name = "web-abc"
    es.addressType = "IPv4"
    ep = es.endpoints.add()
    ep.addresses.append("10.0.0.5")
    ep.conditions.ready = False  # *bool: an explicit false is information
    ep.nodeName = "node1"
    port = es.ports.add()
    port.name = "http"
    port.port = 80
    port.protocol = "TCP"
    got = decode_object(encode_object(es, api_version="discovery.k8s.io/v1",
                                      kind="EndpointSlice"))
    assert got == {
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": "web-abc"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": False},
                       "nodeName": "node1"}],
        "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
    }


def test_storageclass_storage_v1() -> None:
    sc = _new("k8s.io.api.storage.v1.StorageClass")
    sc.metadata.name = "fast"
    sc.provisioner = "kubling.io/local"
    sc.parameters["type"] = "ssd"
    sc.reclaimPolicy = "Retain"
    sc.allowVolumeExpansion = False
    sc.volumeBindingMode = "WaitForFirstConsumer"
    got = decode_object(encode_object(sc, api_version="storage.k8s.io/v1", kind="StorageClass"))
    assert got == {
        "kind": "StorageClass", "apiVersion": "storage.k8s.io/v1", "metadata": {"name": "fast"},
        "provisioner": "kubling.io/local", "parameters": {"type": "ssd"},
        "reclaimPolicy": "Retain", "allowVolumeExpansion": False,
        "volumeBindingMode": "WaitForFirstConsumer",
    }


def test_lease_coordination_v1() -> None:
    lease = _new("k8s.io.api.coordination.v1.Lease")
    lease.metadata.name = "node1"
    lease.metadata.namespace = "kube-node-lease"
    lease.spec.holderIdentity = "node1"
    lease.spec.leaseDurationSeconds = 40
    lease.spec.renewTime.seconds = 1704164645
    lease.spec.renewTime.nanos = 500_000_000
    got = decode_object(encode_object(lease, api_version="coordination.k8s.io/v1", kind="Lease"))
    assert got["spec"] == {"holderIdentity": "node1", "leaseDurationSeconds": 40,
                           "renewTime": "2024-01-02T03:04:05.500000Z"}


def test_event_events_v1() -> None:
    event = _new("k8s.io.api.events.v1.Event")
    event.metadata.name = "web.1"
    event.metadata.namespace = "default"
    event.eventTime.seconds = 1704164645
    event.reportingController = "kubling.io/scheduler"
    event.reportingInstance = "kubling-1"
    event.action = "Binding"
    event.reason = "Scheduled"
    event.regarding.kind = "Pod"
    event.regarding.name = "web"
    event.note = "assigned"
    event.type = "Normal"
    event.series.count = 2
    event.series.lastObservedTime.seconds = 1704164650
    got = decode_object(encode_object(event, api_version="events.k8s.io/v1", kind="Event"))
    assert got["eventTime"] == "2024-01-02T03:04:05.000000Z"
    assert got["regarding"] == {"kind": "Pod", "name": "web"}
    assert got["series"] == {"count": 2, "lastObservedTime": "2024-01-02T03:04:10.000000Z"}
    assert (got["action"], got["reason"], got["type"]) == ("Binding", "Scheduled", "Normal")


def test_runtimeclass_node_v1() -> None:
    rc = _new("k8s.io.api.node.v1.RuntimeClass")
    rc.metadata.name = "gvisor"
    rc.handler = "runsc"
    rc.overhead.podFixed["memory"].string = "64Mi"
    rc.scheduling.nodeSelector["sandbox"] = "true"
    tol = rc.scheduling.tolerations.add()
    tol.key = "sandbox"
    tol.operator = "Exists"
    got = decode_object(encode_object(rc, api_version="node.k8s.io/v1", kind="RuntimeClass"))
    assert got == {
        "kind": "RuntimeClass", "apiVersion": "node.k8s.io/v1", "metadata": {"name": "gvisor"},
        "handler": "runsc", "overhead": {"podFixed": {"memory": "64Mi"}},
        "scheduling": {"nodeSelector": {"sandbox": "true"},
                       "tolerations": [{"key": "sandbox", "operator": "Exists"}]},
    }


def test_csr_certificates_v1() -> None:
    csr = _new("k8s.io.api.certificates.v1.CertificateSigningRequest")
    csr.metadata.name = "alice"
    csr.spec.request = b"-----BEGIN CERTIFICATE REQUEST-----\n"
    csr.spec.signerName = "kubernetes.io/kube-apiserver-client"
    csr.spec.expirationSeconds = 3600
    csr.spec.usages.append("client auth")
    csr.spec.extra["scopes"].items.extend(["a", "b"])
    got = decode_object(encode_object(csr, api_version="certificates.k8s.io/v1",
                                      kind="CertificateSigningRequest"))
    assert got["spec"] == {
        "request": base64.b64encode(b"-----BEGIN CERTIFICATE REQUEST-----\n").decode(),
        "signerName": "kubernetes.io/kube-apiserver-client", "expirationSeconds": 3600,
        "usages": ["client auth"], "extra": {"scopes": ["a", "b"]},
    }


def test_webhook_configuration_admissionregistration_v1() -> None:
    """``Webhooks`` is declared with its Go name, and ``RuleWithOperations`` inlines ``Rule``."""
    cfg = _new("k8s.io.api.admissionregistration.v1.ValidatingWebhookConfiguration")
    cfg.metadata.name = "policy"
    hook = cfg.Webhooks.add()
    hook.name = "check.kubling.io"
    hook.clientConfig.service.namespace = "default"
    hook.clientConfig.service.name = "checker"
    hook.clientConfig.service.port = 443
    rule = hook.rules.add()
    rule.operations.append("CREATE")
    rule.rule.apiGroups.append("")
    rule.rule.apiVersions.append("v1")
    rule.rule.resources.append("pods")
    hook.sideEffects = "None"
    hook.timeoutSeconds = 5
    hook.admissionReviewVersions.append("v1")
    got = decode_object(encode_object(cfg, api_version="admissionregistration.k8s.io/v1",
                                      kind="ValidatingWebhookConfiguration"))
    assert got["webhooks"] == [{
        "name": "check.kubling.io",
        "clientConfig": {"service": {"namespace": "default", "name": "checker", "port": 443}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["pods"]}],
        "sideEffects": "None", "timeoutSeconds": 5, "admissionReviewVersions": ["v1"],
    }]


def test_crd_apiextensions_v1() -> None:
    crd = _new("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition")
    crd.metadata.name = "crontabs.stable.example.com"
    crd.spec.group = "stable.example.com"
    crd.spec.names.plural = "crontabs"
    crd.spec.names.kind = "CronTab"
    crd.spec.scope = "Namespaced"
    version = crd.spec.versions.add()
    version.name = "v1"
    version.served = True
    version.storage = True
    version.subresources.status.SetInParent()
    schema = version.schema.openAPIV3Schema
    schema.type = "object"
    spec = schema.properties["spec"]
    spec.type = "object"
    spec.properties["replicas"].type = "integer"
    spec.properties["replicas"].minimum = 0
    spec.properties["tags"].type = "array"
    spec.properties["tags"].items.schema.type = "string"
    spec.properties["tags"].xKubernetesListType = "set"
    spec.properties["extra"].xKubernetesPreserveUnknownFields = True
    rule = spec.xKubernetesValidations.add()
    rule.rule = "self.replicas < 10"
    got = decode_object(encode_object(crd, api_version="apiextensions.k8s.io/v1",
                                      kind="CustomResourceDefinition"))
    assert got["spec"]["versions"] == [{
        "name": "v1", "served": True, "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
            "type": "object",
            "properties": {
                "replicas": {"type": "integer", "minimum": 0.0},
                "tags": {"type": "array", "items": {"type": "string"},
                         "x-kubernetes-list-type": "set"},
                "extra": {"x-kubernetes-preserve-unknown-fields": True},
            },
            "x-kubernetes-validations": [{"rule": "self.replicas < 10"}],
        }}}},
        "subresources": {"status": {}},
    }]


# -- /openapi/v2 as gnostic protobuf ---------------------------------------------------------

_GNOSTIC_PRIMITIVES = {"string", "number", "integer", "boolean"}


@pytest.fixture(scope="module")
def openapi_v2() -> tuple[dict[str, Any], Any]:
    """kubling's Swagger 2.0 JSON and its encoding parsed back through the gnostic classes."""
    import orjson

    from kubling.api.resources import Catalogue
    from kubling.apiserver.openapi import OpenAPIDocuments

    raw = OpenAPIDocuments(Catalogue()).v2()
    doc = message_class("openapi.v2.Document").FromString(protobuf.openapi_v2_protobuf(raw))
    return orjson.loads(raw), doc


def _ext(msg: Any) -> dict[str, Any]:
    """Vendor extensions decoded the way kube-openapi does (YAML-decoding ``Any.yaml``)."""
    import yaml

    return {e.name: yaml.safe_load(e.value.yaml) for e in msg.vendor_extension}


def _definition(doc: Any, name: str) -> Any:
    return next(d.value for d in doc.definitions.additional_properties if d.name == name)


def _prop(schema: Any, name: str) -> Any:
    return next(p.value for p in schema.properties.additional_properties if p.name == name)


def test_openapi_v2_document_round_trip(openapi_v2: tuple[dict[str, Any], Any]) -> None:
    source, doc = openapi_v2
    assert doc.swagger == "2.0"
    assert doc.info.title == "Kubernetes" and doc.info.version == source["info"]["version"]
    names = [d.name for d in doc.definitions.additional_properties]
    assert names == list(source["definitions"])
    assert [p.name for p in doc.paths.path] == list(source["paths"])
    deployment = _definition(doc, "io.k8s.api.apps.v1.Deployment")
    assert list(deployment.type.value) == ["object"]
    assert _ext(deployment)["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}]
    pod = _definition(doc, "io.k8s.api.core.v1.Pod")  # core group: "" must stay a string
    assert _ext(pod)["x-kubernetes-group-version-kind"][0]["group"] == ""
    spec = _prop(deployment, "spec")
    assert spec._ref == "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    security = doc.security_definitions.additional_properties[0]
    assert security.name == "BearerToken"
    assert security.value.api_key_security.type == "apiKey"


def test_openapi_v2_containers_carry_patch_extensions(
        openapi_v2: tuple[dict[str, Any], Any]) -> None:
    _, doc = openapi_v2
    pod_spec = _definition(doc, "io.k8s.api.core.v1.PodSpec")
    containers = _prop(pod_spec, "containers")
    assert list(containers.type.value) == ["array"]
    assert [s._ref for s in containers.items.schema] == ["#/definitions/io.k8s.api.core.v1.Container"]
    ext = _ext(containers)
    assert ext["x-kubernetes-patch-merge-key"] == "name"
    assert ext["x-kubernetes-patch-strategy"] == "merge"
    assert ext["x-kubernetes-list-type"] == "map"
    assert ext["x-kubernetes-list-map-keys"] == ["name"]
    # reached from the Deployment schema the way apply's patch-meta lookup walks it
    template = _prop(_definition(doc, "io.k8s.api.apps.v1.DeploymentSpec"), "template")
    assert template._ref == "#/definitions/io.k8s.api.core.v1.PodTemplateSpec"
    labels = _prop(_definition(doc, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"), "labels")
    assert list(labels.type.value) == ["object"]
    assert list(labels.additional_properties.schema.type.value) == ["string"]


def test_openapi_v2_patch_operations_declare_field_validation(
        openapi_v2: tuple[dict[str, Any], Any]) -> None:
    """client-go's ``supportsQueryParam``: a PATCH tagged with the GVK, ``fieldValidation``."""
    import yaml

    _, doc = openapi_v2
    kinds = set()
    for named in doc.paths.path:
        op = named.value.patch
        gvk = [e for e in op.vendor_extension if e.name == "x-kubernetes-group-version-kind"]
        if not gvk:
            continue
        value = yaml.safe_load(gvk[0].value.yaml)
        assert all(isinstance(v, str) for v in value.values())
        params = [p.parameter.non_body_parameter.query_parameter_sub_schema.name
                  for p in op.parameters]
        assert "fieldValidation" in params, named.name
        kinds.add((value["group"], value["version"], value["kind"]))
        body = op.parameters[0].parameter.body_parameter
        assert body.name == "body" and body.required and body.schema._ref
        assert [r.name for r in op.responses.response_code][:1] == ["200"]
    assert {("apps", "v1", "Deployment"), ("", "v1", "ConfigMap")} <= kinds


def _gnostic_parse(schema: Any, names: set[str], path: str, problems: list[str]) -> None:
    """kube-openapi ``proto.Definitions.ParseSchema``'s rules; breaking one fails kubectl."""
    types = list(schema.type.value)
    if schema._ref:
        if types or schema.properties.additional_properties:
            problems.append(f"{path}: $ref with a type or properties")
        if schema._ref.removeprefix("#/definitions/") not in names:
            problems.append(f"{path}: dangling {schema._ref}")
        return
    if len(types) > 1:
        problems.append(f"{path}: several types")
    elif types == ["array"]:
        if len(schema.items.schema) != 1:
            problems.append(f"{path}: array without exactly one items schema")
        else:
            _gnostic_parse(schema.items.schema[0], names, path + "[]", problems)
    elif types == ["object"] or (not types and schema.HasField("properties")):
        if schema.HasField("properties"):
            for prop in schema.properties.additional_properties:
                _gnostic_parse(prop.value, names, f"{path}.{prop.name}", problems)
        elif schema.additional_properties.HasField("schema"):
            _gnostic_parse(schema.additional_properties.schema, names, path + "{}", problems)
    elif types and types[0] not in _GNOSTIC_PRIMITIVES:
        problems.append(f"{path}: unknown primitive {types[0]!r}")


def test_openapi_v2_definitions_parse_like_kube_openapi(
        openapi_v2: tuple[dict[str, Any], Any]) -> None:
    _, doc = openapi_v2
    names = {d.name for d in doc.definitions.additional_properties}
    problems: list[str] = []
    for named in doc.definitions.additional_properties:
        _gnostic_parse(named.value, names, named.name, problems)
    assert problems == []


def test_openapi_v2_encoding_is_cached_per_document() -> None:
    doc = {"swagger": "2.0", "info": {"title": "t", "version": "1"}, "paths": {},
           "definitions": {"x": {"type": "object", "properties": {}}}}
    raw = json.dumps(doc).encode()
    first = protobuf.openapi_v2_protobuf(raw)
    assert protobuf.openapi_v2_protobuf(raw) is first
    assert protobuf.openapi_v2_protobuf(bytes(raw)) is first  # equal bytes, same encoding
    other = protobuf.openapi_v2_protobuf(raw.replace(b'"t"', b'"u"'))
    assert other != first
    parsed = message_class("openapi.v2.Document").FromString(first)
    empty = parsed.definitions.additional_properties[0].value
    assert empty.HasField("properties")  # an empty "properties" still marks a kind


def test_openapi_v2_parameters_and_schema_members() -> None:
    doc = {
        "swagger": "2.0",
        "paths": {"/x/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True, "type": "string"}],
            "get": {"parameters": [
                {"name": "limit", "in": "query", "type": "integer", "minimum": 1},
                {"name": "ids", "in": "query", "type": "array", "items": {"type": "string"},
                 "collectionFormat": "csv"},
                {"$ref": "#/parameters/pretty"},
            ], "responses": {"200": {"description": "OK", "schema": {"type": "string"}}}},
        }},
        "parameters": {"pretty": {"name": "pretty", "in": "query", "type": "string"}},
        "definitions": {"s": {"type": "object", "additionalProperties": False,
                              "enum": [{"a": 1}], "default": {"a": 1}, "x-y": None}},
    }
    parsed = message_class("openapi.v2.Document").FromString(protobuf.encode_openapi_v2(doc))
    item = parsed.paths.path[0].value
    path_param = item.parameters[0].parameter.non_body_parameter.path_parameter_sub_schema
    assert (path_param.name, path_param.required, path_param.type) == ("name", True, "string")
    limit, ids, ref = item.get.parameters
    query = limit.parameter.non_body_parameter.query_parameter_sub_schema
    assert (query.name, query.type, query.minimum) == ("limit", "integer", 1.0)
    ids_q = ids.parameter.non_body_parameter.query_parameter_sub_schema
    assert (ids_q.items.type, ids_q.collection_format) == ("string", "csv")
    assert ref.json_reference._ref == "#/parameters/pretty"
    assert parsed.parameters.additional_properties[0].name == "pretty"
    schema = parsed.definitions.additional_properties[0].value
    assert schema.additional_properties.HasField("boolean")
    assert not schema.additional_properties.boolean
    assert [json.loads(e.yaml) for e in schema.enum] == [{"a": 1}]
    assert json.loads(schema.default.yaml) == {"a": 1}
    assert _ext(schema) == {"x-y": None}
