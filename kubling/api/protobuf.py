"""Kubernetes protobuf request bodies, decoded into the JSON objects the rest of kubling uses.

kubectl's typed commands (``create configmap|deployment|secret|service|job|...``, ``auth
can-i``, ``create token``) POST ``application/vnd.kubernetes.protobuf`` and do not retry as
JSON on a 415, so the apiserver must read them. The wire form is the 4-byte magic ``k8s\\0``
followed by a ``runtime.Unknown`` whose ``raw`` holds the object's own message. Messages are
described by Kubernetes' published ``generated.proto`` files, compiled once (by
``tools/gen_k8s_protos.py``) into the ``k8s_descriptors.binpb`` set shipped next to this
module and loaded lazily on first use, so servers that never see protobuf pay nothing.

The conversion reproduces what the API server's JSON would say for the same Go object:

* the proto field names are the JSON names, except the few Go fields embedded ``,inline``
  (``LocalObjectReference`` in key selectors, ``VolumeSource`` in ``Volume``, ...) whose
  fields are lifted into the parent, and a few odd names (``uID``, ``jSONPath``, ``$ref``);
* ``IntOrString``, ``Quantity``, ``Time``/``MicroTime``, ``Duration``, ``RawExtension``,
  ``FieldsV1`` and apiextensions' ``JSON``/``...Or...`` wrappers have custom JSON forms;
* bytes become base64 strings; repeated and map fields are left out when empty;
* Go's gogo marshaller always writes non-pointer scalars, so a present ``""``/``0``/``false``
  usually means "unset" and is dropped as ``omitempty`` would, except for the pointer fields
  in ``_KEEP_ZERO`` whose explicit zero means something (``replicas: 0``, ``runAsUser: 0``,
  ``optional: false``, ...). Embedded messages are kept even when empty (``status: {}``), as
  Go's JSON keeps non-pointer structs; an empty ``Time`` is ``null`` as in Go.

The same descriptor set carries gnostic's ``OpenAPIv2.proto``: kubectl 1.27/1.28 read
``/openapi/v2`` only as an ``openapi.v2.Document``, which :func:`encode_openapi_v2` builds
from the Swagger 2.0 JSON (see the section at the end of this module).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

#: The prefix of every Kubernetes protobuf body ("k8s" and a NUL).
MAGIC = b"k8s\x00"
#: Where the compiled descriptor set lives (package data).
DESCRIPTOR_SET = "k8s_descriptors.binpb"

_META = "k8s.io.apimachinery.pkg.apis.meta.v1"
_INTSTR = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_RAW_EXTENSION = "k8s.io.apimachinery.pkg.runtime.RawExtension"
_UNKNOWN = "k8s.io.apimachinery.pkg.runtime.Unknown"
_APIEXT = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1"

#: API group -> the Go package (proto package segment) that defines its types.
_GROUP_PACKAGES: dict[str, str] = {
    "": "k8s.io.api.core",
    "apps": "k8s.io.api.apps",
    "batch": "k8s.io.api.batch",
    "autoscaling": "k8s.io.api.autoscaling",
    "policy": "k8s.io.api.policy",
    "rbac.authorization.k8s.io": "k8s.io.api.rbac",
    "authorization.k8s.io": "k8s.io.api.authorization",
    "authentication.k8s.io": "k8s.io.api.authentication",
    "networking.k8s.io": "k8s.io.api.networking",
    "discovery.k8s.io": "k8s.io.api.discovery",
    "storage.k8s.io": "k8s.io.api.storage",
    "coordination.k8s.io": "k8s.io.api.coordination",
    "events.k8s.io": "k8s.io.api.events",
    "scheduling.k8s.io": "k8s.io.api.scheduling",
    "node.k8s.io": "k8s.io.api.node",
    "certificates.k8s.io": "k8s.io.api.certificates",
    "admissionregistration.k8s.io": "k8s.io.api.admissionregistration",
    "flowcontrol.apiserver.k8s.io": "k8s.io.api.flowcontrol",
    "apiextensions.k8s.io": "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions",
    "meta.k8s.io": "k8s.io.apimachinery.pkg.apis.meta",
}

#: Go fields declared ``json:",inline"``: their message's fields belong to the parent object.
_INLINE: frozenset[tuple[str, str]] = frozenset({
    ("k8s.io.api.core.v1.EphemeralContainer", "ephemeralContainerCommon"),
    ("k8s.io.api.core.v1.ConfigMapEnvSource", "localObjectReference"),
    ("k8s.io.api.core.v1.ConfigMapKeySelector", "localObjectReference"),
    ("k8s.io.api.core.v1.ConfigMapProjection", "localObjectReference"),
    ("k8s.io.api.core.v1.ConfigMapVolumeSource", "localObjectReference"),
    ("k8s.io.api.core.v1.SecretEnvSource", "localObjectReference"),
    ("k8s.io.api.core.v1.SecretKeySelector", "localObjectReference"),
    ("k8s.io.api.core.v1.SecretProjection", "localObjectReference"),
    ("k8s.io.api.core.v1.Probe", "handler"),
    ("k8s.io.api.core.v1.Volume", "volumeSource"),
    ("k8s.io.api.core.v1.PersistentVolumeSpec", "persistentVolumeSource"),
    ("k8s.io.api.networking.v1.IngressRule", "ingressRuleValue"),
    ("k8s.io.api.admissionregistration.v1.RuleWithOperations", "rule"),
    ("k8s.io.api.admissionregistration.v1.NamedRuleWithOperations", "ruleWithOperations"),
})

#: Proto field names that differ from the Go JSON name.
_RENAMES: dict[str, str] = {
    "uID": "uid",
    "aPIGroup": "apiGroup",
    "jSONPath": "jsonPath",
    "jSONSchemas": "JSONSchemas",
    # admissionregistration/v1 declares these with the Go field name.
    "Webhooks": "webhooks",
    "Expression": "expression",
    "Name": "name",
}
#: apiextensions' JSONSchemaProps spells a few keys the JSON-Schema way.
_SCHEMA_RENAMES: dict[str, str] = {
    "ref": "$ref",
    "schema": "$schema",
    "xKubernetesPreserveUnknownFields": "x-kubernetes-preserve-unknown-fields",
    "xKubernetesEmbeddedResource": "x-kubernetes-embedded-resource",
    "xKubernetesIntOrString": "x-kubernetes-int-or-string",
    "xKubernetesListMapKeys": "x-kubernetes-list-map-keys",
    "xKubernetesListType": "x-kubernetes-list-type",
    "xKubernetesMapType": "x-kubernetes-map-type",
    "xKubernetesValidations": "x-kubernetes-validations",
}

#: Pointer (or non-``omitempty``) scalar fields whose explicit ``0``/``false``/``""`` is
#: meaningful, so it is kept although Go's non-pointer scalars are written even when unset.
#: Keyed by ``Message.field`` (message short name): the names are unique enough across groups.
_KEEP_ZERO: frozenset[str] = frozenset({
    # workloads
    "DeploymentSpec.replicas", "DeploymentSpec.revisionHistoryLimit",
    "DeploymentSpec.progressDeadlineSeconds", "ReplicaSetSpec.replicas",
    "StatefulSetSpec.replicas", "StatefulSetSpec.revisionHistoryLimit",
    "ReplicationControllerSpec.replicas", "DaemonSetSpec.revisionHistoryLimit",
    "RollingUpdateStatefulSetStrategy.partition", "StatefulSetOrdinals.start",
    "JobSpec.parallelism", "JobSpec.completions", "JobSpec.activeDeadlineSeconds",
    "JobSpec.backoffLimit", "JobSpec.backoffLimitPerIndex", "JobSpec.maxFailedIndexes",
    "JobSpec.manualSelector", "JobSpec.ttlSecondsAfterFinished", "JobSpec.suspend",
    "CronJobSpec.startingDeadlineSeconds", "CronJobSpec.suspend",
    "CronJobSpec.successfulJobsHistoryLimit", "CronJobSpec.failedJobsHistoryLimit",
    "SuccessPolicyRule.succeededCount",
    # pods
    "PodSpec.terminationGracePeriodSeconds", "PodSpec.activeDeadlineSeconds",
    "PodSpec.automountServiceAccountToken", "PodSpec.shareProcessNamespace",
    "PodSpec.priority", "PodSpec.enableServiceLinks", "PodSpec.setHostnameAsFQDN",
    "PodSpec.hostUsers", "Probe.terminationGracePeriodSeconds",
    "SecurityContext.privileged", "SecurityContext.runAsUser", "SecurityContext.runAsGroup",
    "SecurityContext.runAsNonRoot", "SecurityContext.readOnlyRootFilesystem",
    "SecurityContext.allowPrivilegeEscalation", "PodSecurityContext.runAsUser",
    "PodSecurityContext.runAsGroup", "PodSecurityContext.runAsNonRoot",
    "PodSecurityContext.fsGroup", "WindowsSecurityContextOptions.hostProcess",
    "ConfigMapEnvSource.optional", "ConfigMapKeySelector.optional",
    "ConfigMapProjection.optional", "ConfigMapVolumeSource.optional",
    "ConfigMapVolumeSource.defaultMode", "SecretEnvSource.optional",
    "SecretKeySelector.optional", "SecretProjection.optional", "SecretVolumeSource.optional",
    "SecretVolumeSource.defaultMode", "ProjectedVolumeSource.defaultMode",
    "DownwardAPIVolumeSource.defaultMode", "DownwardAPIVolumeFile.mode", "KeyToPath.mode",
    "CSIVolumeSource.readOnly", "ClusterTrustBundleProjection.optional",
    "ServiceAccountTokenProjection.expirationSeconds",
    # core objects
    "ConfigMap.immutable", "Secret.immutable", "ServiceAccount.automountServiceAccountToken",
    "ServiceSpec.allocateLoadBalancerNodePorts", "ClientIPConfig.timeoutSeconds",
    "ContainerPort.containerPort", "ServicePort.port", "EndpointPort.port",
    "PersistentVolumeClaimSpec.storageClassName", "ResourceQuotaSpec.scopeSelector",
    # others
    "PriorityClass.value", "PriorityClass.globalDefault", "TokenRequestSpec.expirationSeconds",
    "SubjectAccessReviewStatus.allowed", "TokenReviewStatus.authenticated",
    "HorizontalPodAutoscalerSpec.minReplicas", "Lease.spec", "LeaseSpec.leaseDurationSeconds",
    "LeaseSpec.leaseTransitions", "EndpointConditions.ready", "EndpointConditions.serving",
    "EndpointConditions.terminating", "IngressServiceBackend.port",
    "ServiceBackendPort.number", "CSIDriverSpec.attachRequired", "CSIDriverSpec.podInfoOnMount",
    "StorageClass.allowVolumeExpansion", "CustomResourceDefinitionVersion.served",
    "CustomResourceDefinitionVersion.storage", "JSONSchemaProps.nullable",
    "WebhookClientConfig.port", "ServiceReference.port", "ValidatingWebhook.timeoutSeconds",
    "MutatingWebhook.timeoutSeconds",
    # storage, certificates, events, apiextensions (pointers, or written without omitempty)
    "CSIDriverSpec.storageCapacity", "CSIDriverSpec.requiresRepublish",
    "CSIDriverSpec.seLinuxMount", "CSIDriverSpec.serviceAccountTokenInSecrets",
    "VolumeAttachmentStatus.attached", "VolumeError.errorCode", "VolumeNodeResources.count",
    "TokenRequest.expirationSeconds", "CertificateSigningRequestSpec.expirationSeconds",
    "EventSeries.count", "JSONSchemaProps.maximum", "JSONSchemaProps.minimum",
    "JSONSchemaProps.maxLength", "JSONSchemaProps.minLength", "JSONSchemaProps.maxItems",
    "JSONSchemaProps.minItems", "JSONSchemaProps.maxProperties", "JSONSchemaProps.minProperties",
    "JSONSchemaProps.multipleOf", "JSONSchemaProps.xKubernetesPreserveUnknownFields",
    "ValidationRule.optionalOldSelf",
})


class ProtobufError(ValueError):
    """A protobuf body that is not well formed or names a type kubling has no message for."""


# -- descriptor set -------------------------------------------------------------------------

_lock = threading.Lock()
_pool: descriptor_pool.DescriptorPool | None = None


def _get_pool() -> descriptor_pool.DescriptorPool:
    """Load the shipped descriptor set once; later calls reuse the pool."""
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                data = resources.files("kubling.api").joinpath(DESCRIPTOR_SET).read_bytes()
                fds = descriptor_pb2.FileDescriptorSet.FromString(data)
                pool = descriptor_pool.DescriptorPool()
                for file_proto in fds.file:
                    pool.Add(file_proto)
                _pool = pool
    return _pool


def message_class(full_name: str) -> type[Message]:
    """The generated message class for a fully qualified proto name (for tests and encoders)."""
    try:
        desc = _get_pool().FindMessageTypeByName(full_name)
    except KeyError:
        raise ProtobufError(f"no protobuf message {full_name}") from None
    cls: type[Message] = message_factory.GetMessageClass(desc)
    return cls


def proto_name(api_version: str, kind: str) -> str:
    """``apps/v1`` + ``Deployment`` -> ``k8s.io.api.apps.v1.Deployment``."""
    group, _, version = api_version.rpartition("/")
    package = _GROUP_PACKAGES.get(group)
    if package is None or not version:
        raise ProtobufError(
            f"no protobuf type for kind {kind!r} in version {api_version!r}: "
            "the API group is not served as protobuf"
        )
    return f"{package}.{version}.{kind}"


# -- decoding -------------------------------------------------------------------------------


def decode_object(body: bytes) -> dict[str, Any]:
    """Decode a ``k8s\\0`` + ``runtime.Unknown`` body into the object's JSON dict."""
    if not body.startswith(MAGIC):
        raise ProtobufError(
            "protobuf body does not start with the Kubernetes magic prefix 'k8s\\x00'"
        )
    unknown = message_class(_UNKNOWN)()
    try:
        unknown.ParseFromString(body[len(MAGIC):])
    except DecodeError as err:
        raise ProtobufError(f"malformed protobuf envelope: {err}") from None
    type_meta = unknown.typeMeta
    api_version: str = type_meta.apiVersion
    kind: str = type_meta.kind
    raw: bytes = unknown.raw
    if unknown.contentEncoding:
        raise ProtobufError(
            f"unsupported protobuf content encoding {unknown.contentEncoding!r}"
        )
    content_type: str = unknown.contentType
    if not kind or not api_version:
        raise ProtobufError("protobuf body has no apiVersion/kind in its type metadata")
    if content_type.startswith("application/json"):
        obj = _json_value(raw)
        if not isinstance(obj, dict):
            raise ProtobufError("embedded JSON object is not an object")
        return obj
    cls = message_class(proto_name(api_version, kind))
    msg = cls()
    try:
        msg.ParseFromString(raw)
    except DecodeError as err:
        raise ProtobufError(f"malformed protobuf {kind}: {err}") from None
    out: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
    out.update(message_to_dict(msg))
    return out


def message_to_dict(msg: Message) -> dict[str, Any]:
    """Convert one message to its Go-JSON dict (no ``kind``/``apiVersion`` added)."""
    value = _convert_message(msg)
    if not isinstance(value, dict):  # a wrapper type at top level; callers pass objects
        raise ProtobufError(f"{msg.DESCRIPTOR.full_name} does not convert to an object")
    return value


def _json_value(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtobufError(f"embedded JSON is not valid: {err}") from None


def _convert_message(msg: Message) -> Any:
    special = _SPECIAL.get(msg.DESCRIPTOR.full_name)
    if special is not None:
        return special(msg)
    return _convert_struct(msg)


def _convert_struct(msg: Message) -> dict[str, Any]:
    desc = msg.DESCRIPTOR
    order = _field_order(desc)
    out: dict[str, Any] = {}
    fields = msg.ListFields()
    fields.sort(key=lambda item: order[item[0].name])
    parent = desc.name
    parent_full = desc.full_name
    for field, value in fields:
        name = field.name
        if (parent_full, name) in _INLINE:
            out.update(_convert_struct(value))
            continue
        key = _json_key(parent, name)
        converted = _convert_field(field, value, f"{parent}.{name}")
        if converted is not _OMIT:
            out[key] = converted
    return out


_OMIT = object()


def _convert_field(field: FieldDescriptor, value: Any, where: str) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if not value:
            return _OMIT
        value_field = field.message_type.fields_by_name["value"]
        return {k: _convert_single(value_field, v) for k, v in value.items()}
    if _is_repeated(field):
        if not value:
            return _OMIT
        return [_convert_single(field, v) for v in value]
    if field.type != FieldDescriptor.TYPE_MESSAGE and not value and where not in _KEEP_ZERO:
        return _OMIT  # a non-pointer Go scalar written at its zero value: omitempty
    return _convert_single(field, value)


def _is_repeated(field: FieldDescriptor) -> bool:
    """``is_repeated`` on current protobuf releases; ``label`` on older ones."""
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _convert_single(field: FieldDescriptor, value: Any) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return _convert_message(value)
    if kind == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    return value


def _json_key(parent: str, name: str) -> str:
    if parent == "JSONSchemaProps":
        renamed = _SCHEMA_RENAMES.get(name)
        if renamed is not None:
            return renamed
    return _RENAMES.get(name, name)


_ORDERS: dict[str, dict[str, int]] = {}


def _field_order(desc: Descriptor) -> dict[str, int]:
    """Declaration order of a message's fields (Go's struct order, hence its JSON order)."""
    order = _ORDERS.get(desc.full_name)
    if order is None:
        order = {f.name: i for i, f in enumerate(desc.fields)}
        _ORDERS[desc.full_name] = order
    return order


# -- types with their own JSON form ---------------------------------------------------------


def _int_or_string(msg: Any) -> int | str:
    return str(msg.strVal) if msg.type == 1 else int(msg.intVal)


def _quantity(msg: Any) -> str:
    return str(msg.string)


def _time(msg: Any) -> str | None:
    """``metav1.Time``: RFC 3339 in UTC with whole seconds; the zero time is ``null``."""
    if not msg.ListFields():
        return None
    return _format_time(int(msg.seconds), 0)


def _micro_time(msg: Any) -> str | None:
    """``metav1.MicroTime``: RFC 3339 with exactly six fraction digits."""
    if not msg.ListFields():
        return None
    return _format_time(int(msg.seconds), int(msg.nanos) // 1000, micro=True)


def _format_time(seconds: int, micros: int, *, micro: bool = False) -> str:
    import datetime

    try:
        moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
            seconds=seconds, microseconds=micros
        )
    except OverflowError:
        raise ProtobufError(f"timestamp {seconds} is out of range") from None
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(msg: Any) -> str:
    return go_duration(int(msg.duration))


def go_duration(nanos: int) -> str:
    """Format nanoseconds the way Go's ``time.Duration.String`` does (``1h2m3.5s``)."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    n = abs(nanos)
    if n < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if n >= size or unit == "ns":
                return sign + _trim_fraction(n, size) + unit
    hours, rest = divmod(n, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _trim_fraction(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _trim_fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{str(frac).rjust(digits, '0').rstrip('0')}"


def _raw_extension(msg: Any) -> Any:
    raw: bytes = msg.raw
    if not raw:
        return None
    if raw.startswith(MAGIC):
        return decode_object(raw)
    return _json_value(raw)


def _fields_v1(msg: Any) -> Any:
    raw: bytes = msg.Raw
    return _json_value(raw) if raw else {}


def _items_list(msg: Any) -> list[str]:
    """``ExtraValue`` and ``Verbs`` are Go ``[]string`` types wrapped for protobuf."""
    return list(msg.items)


def _apiext_json(msg: Any) -> Any:
    return _json_value(msg.raw) if msg.raw else None


def _props_or_bool(msg: Any) -> Any:
    if msg.HasField("schema"):
        return _convert_struct(msg.schema)
    return bool(msg.allows)


def _props_or_array(msg: Any) -> Any:
    if msg.HasField("schema"):
        return _convert_struct(msg.schema)
    return [_convert_struct(item) for item in msg.jSONSchemas]


def _props_or_string_array(msg: Any) -> Any:
    if msg.HasField("schema"):
        return _convert_struct(msg.schema)
    return list(msg.property)


_SPECIAL: dict[str, Callable[[Any], Any]] = {
    _INTSTR: _int_or_string,
    _QUANTITY: _quantity,
    f"{_META}.Time": _time,
    f"{_META}.MicroTime": _micro_time,
    f"{_META}.Duration": _duration,
    f"{_META}.FieldsV1": _fields_v1,
    f"{_META}.Verbs": _items_list,
    _RAW_EXTENSION: _raw_extension,
    "k8s.io.api.authorization.v1.ExtraValue": _items_list,
    "k8s.io.api.authentication.v1.ExtraValue": _items_list,
    "k8s.io.api.certificates.v1.ExtraValue": _items_list,
    f"{_APIEXT}.JSON": _apiext_json,
    f"{_APIEXT}.JSONSchemaPropsOrBool": _props_or_bool,
    f"{_APIEXT}.JSONSchemaPropsOrArray": _props_or_array,
    f"{_APIEXT}.JSONSchemaPropsOrStringArray": _props_or_string_array,
}


def encode_object(obj: Any, *, api_version: str, kind: str) -> bytes:
    """Wrap an already-serialized message of ``kind`` in ``k8s\\0`` + ``runtime.Unknown``.

    ``obj`` is a message instance; used by tests and by clients that need to build the same
    bytes kubectl sends.
    """
    unknown = message_class(_UNKNOWN)()
    unknown.typeMeta.apiVersion = api_version
    unknown.typeMeta.kind = kind
    unknown.raw = obj.SerializeToString()
    unknown.contentType = ""
    unknown.contentEncoding = ""
    envelope: bytes = unknown.SerializeToString()
    return MAGIC + envelope


# -- OpenAPI v2 as gnostic protobuf ----------------------------------------------------------
#
# kubectl 1.27/1.28 (client-go's ``OpenAPISchema``) ask for ``/openapi/v2`` only as gnostic's
# ``openapi.v2.Document`` protobuf and read it through kube-openapi's ``proto`` models: every
# definition is parsed up front (a dangling ``$ref``, an array without exactly one ``items``
# schema or an unknown primitive type fails *every* command that needs the schema), vendor
# extensions are read back by YAML-decoding ``Any.yaml``, and the field-validation probe looks
# for the PATCH operation whose ``x-kubernetes-group-version-kind`` names the object's kind and
# a ``fieldValidation`` query parameter among its parameters. The JSON Swagger 2.0 document
# kubling serves is converted member by member the way gnostic's compiler reads JSON: JSON
# Schema keys to ``Schema`` fields, ``in`` choosing the parameter message, ``x-*`` keys to
# ``NamedAny`` vendor extensions; keys gnostic's v2 model has no field for are dropped, as
# gnostic would not carry them either.

#: The Content-Type of the answer. client-go asks with the ``...spec.v2@v1.0+protobuf``
#: spelling, but ``@`` is not allowed in a media type, so Go's ``mime.ParseMediaType`` (which
#: client-go runs on every response) rejects it: the answer must use the dotted form.
OPENAPI_V2_MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
#: ``Accept`` values answered with the protobuf form (client-go's ``openAPIV2mimePb`` first).
OPENAPI_V2_MEDIA_TYPES = (
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    OPENAPI_V2_MEDIA_TYPE,
)
_OAS = "openapi.v2."

_SCHEMA_STRINGS = {
    "$ref": "_ref", "format": "format", "title": "title", "description": "description",
    "pattern": "pattern", "discriminator": "discriminator",
}
_SCHEMA_SCALARS = {
    "multipleOf": "multiple_of", "maximum": "maximum", "exclusiveMaximum": "exclusive_maximum",
    "minimum": "minimum", "exclusiveMinimum": "exclusive_minimum", "maxLength": "max_length",
    "minLength": "min_length", "maxItems": "max_items", "minItems": "min_items",
    "uniqueItems": "unique_items", "maxProperties": "max_properties",
    "minProperties": "min_properties", "readOnly": "read_only",
}
#: JSON keys shared by the non-body parameter kinds, ``items`` (PrimitivesItems) and headers.
_PRIMITIVE_FIELDS = {
    "required": "required", "in": "in", "description": "description", "name": "name",
    "allowEmptyValue": "allow_empty_value", "type": "type", "format": "format",
    "collectionFormat": "collection_format", "maximum": "maximum",
    "exclusiveMaximum": "exclusive_maximum", "minimum": "minimum",
    "exclusiveMinimum": "exclusive_minimum", "maxLength": "max_length",
    "minLength": "min_length", "pattern": "pattern", "maxItems": "max_items",
    "minItems": "min_items", "uniqueItems": "unique_items", "multipleOf": "multiple_of",
}
_NON_BODY = {
    "query": "query_parameter_sub_schema",
    "path": "path_parameter_sub_schema",
    "header": "header_parameter_sub_schema",
    "formData": "form_data_parameter_sub_schema",
}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
_SECURITY_KINDS = {
    ("basic", None): "basic_authentication_security",
    ("apiKey", None): "api_key_security",
    ("oauth2", "implicit"): "oauth2_implicit_security",
    ("oauth2", "password"): "oauth2_password_security",
    ("oauth2", "application"): "oauth2_application_security",
    ("oauth2", "accessCode"): "oauth2_access_code_security",
}


def _yaml_text(value: Any) -> str:
    """The ``Any.yaml`` text of a JSON value.

    kube-openapi YAML-decodes it (``VendorExtensionToMap``; the query-parameter probe decodes
    the operation's GVK into a ``map[string]string``). JSON is YAML, so the JSON text is used:
    it keeps ``group: ""`` a string where a careless block emitter would produce a null.
    """
    return json.dumps(value, ensure_ascii=False)


def _set_fields(msg: Any, node: Mapping[str, Any], names: Mapping[str, str]) -> None:
    for key, attr in names.items():
        value = node.get(key)
        if value is not None and not isinstance(value, (dict, list)):
            setattr(msg, attr, value)


def _extensions(msg: Any, node: Mapping[str, Any], field: str = "vendor_extension") -> None:
    target = getattr(msg, field)
    for key, value in node.items():
        if key.startswith("x-"):
            named = target.add()
            named.name = key
            named.value.yaml = _yaml_text(value)


def _schema(node: Mapping[str, Any], msg: Any) -> None:
    """A JSON Schema object into ``openapi.v2.Schema``.

    ``properties`` is marked present even when empty: kube-openapi parses an object with a
    (possibly empty) ``properties`` as a kind and one without as a map or arbitrary value.
    """
    for key, value in node.items():
        attr = _SCHEMA_STRINGS.get(key)
        if attr is not None:
            setattr(msg, attr, value)
            continue
        attr = _SCHEMA_SCALARS.get(key)
        if attr is not None:
            setattr(msg, attr, value)
        elif key == "type":
            msg.type.value.extend([value] if isinstance(value, str) else value)
        elif key == "properties":
            msg.properties.SetInParent()
            props = msg.properties.additional_properties
            for name, sub in value.items():
                named = props.add()
                named.name = name
                _schema(sub, named.value)
        elif key == "items":
            msg.items.SetInParent()
            for sub in value if isinstance(value, list) else [value]:
                _schema(sub, msg.items.schema.add())
        elif key == "additionalProperties":
            if isinstance(value, bool):
                msg.additional_properties.boolean = value
            else:
                _schema(value, msg.additional_properties.schema)
        elif key == "required":
            msg.required.extend(value)
        elif key == "allOf":
            for sub in value:
                _schema(sub, msg.all_of.add())
        elif key == "enum":
            for item in value:
                msg.enum.add().yaml = _yaml_text(item)
        elif key in ("default", "example"):
            getattr(msg, key).yaml = _yaml_text(value)
        elif key == "externalDocs":
            _external_docs(value, msg.external_docs)
        elif key == "xml":
            _set_fields(msg.xml, value, {k: k for k in
                                         ("name", "namespace", "prefix", "attribute", "wrapped")})
            _extensions(msg.xml, value)
        elif key.startswith("x-"):
            named = msg.vendor_extension.add()
            named.name = key
            named.value.yaml = _yaml_text(value)


def _external_docs(node: Mapping[str, Any], msg: Any) -> None:
    _set_fields(msg, node, {"description": "description", "url": "url"})
    _extensions(msg, node)


def _primitive(node: Mapping[str, Any], msg: Any) -> None:
    """Non-body parameters, ``PrimitivesItems`` and headers share these members."""
    fields = msg.DESCRIPTOR.fields_by_name
    _set_fields(msg, node, {k: v for k, v in _PRIMITIVE_FIELDS.items() if v in fields})
    if "items" in node and "items" in fields:
        _primitive(node["items"], msg.items)
    if "default" in node:
        msg.default.yaml = _yaml_text(node["default"])
    for item in node.get("enum", ()):
        msg.enum.add().yaml = _yaml_text(item)
    _extensions(msg, node)


def _parameter(node: Mapping[str, Any], msg: Any) -> None:
    """One parameter into ``openapi.v2.Parameter``: ``in`` picks the message, as in gnostic."""
    where = node.get("in")
    if where == "body":
        body = msg.body_parameter
        _set_fields(body, node, {"description": "description", "name": "name", "in": "in",
                                 "required": "required"})
        if "schema" in node:
            _schema(node["schema"], body.schema)
        _extensions(body, node)
        return
    sub = _NON_BODY.get(str(where))
    if sub is None:
        raise ProtobufError(f"parameter {node.get('name')!r} has unknown location {where!r}")
    _primitive(node, getattr(msg.non_body_parameter, sub))


def _parameters(nodes: list[Mapping[str, Any]], target: Any) -> None:
    for node in nodes:
        item = target.add()
        if "$ref" in node:
            item.json_reference._ref = node["$ref"]
            if "description" in node:
                item.json_reference.description = node["description"]
        else:
            _parameter(node, item.parameter)


def _response(node: Mapping[str, Any], msg: Any) -> None:
    if "description" in node:
        msg.description = node["description"]
    schema = node.get("schema")
    if schema is not None:
        if schema.get("type") == "file":
            file_schema = msg.schema.file_schema
            _set_fields(file_schema, schema, {"format": "format", "title": "title",
                                              "description": "description", "type": "type",
                                              "readOnly": "read_only"})
            file_schema.required.extend(schema.get("required", ()))
            _extensions(file_schema, schema)
        else:
            _schema(schema, msg.schema.schema)
    for name, header in node.get("headers", {}).items():
        named = msg.headers.additional_properties.add()
        named.name = name
        _primitive(header, named.value)
    for name, example in node.get("examples", {}).items():
        named = msg.examples.additional_properties.add()
        named.name = name
        named.value.yaml = _yaml_text(example)
    _extensions(msg, node)


def _responses(node: Mapping[str, Any], msg: Any) -> None:
    for code, value in node.items():
        if code.startswith("x-"):
            continue
        named = msg.response_code.add()
        named.name = code
        if "$ref" in value:
            named.value.json_reference._ref = value["$ref"]
        else:
            _response(value, named.value.response)
    _extensions(msg, node)


def _security(nodes: list[Mapping[str, list[str]]], target: Any) -> None:
    for requirement in nodes:
        msg = target.add()
        for name, scopes in requirement.items():
            named = msg.additional_properties.add()
            named.name = name
            named.value.value.extend(scopes)


def _operation(node: Mapping[str, Any], msg: Any) -> None:
    _set_fields(msg, node, {"summary": "summary", "description": "description",
                            "operationId": "operation_id", "deprecated": "deprecated"})
    msg.tags.extend(node.get("tags", ()))
    msg.produces.extend(node.get("produces", ()))
    msg.consumes.extend(node.get("consumes", ()))
    msg.schemes.extend(node.get("schemes", ()))
    if "externalDocs" in node:
        _external_docs(node["externalDocs"], msg.external_docs)
    _parameters(node.get("parameters", []), msg.parameters)
    if "responses" in node:
        _responses(node["responses"], msg.responses)
    _security(node.get("security", []), msg.security)
    _extensions(msg, node)


def _path_item(node: Mapping[str, Any], msg: Any) -> None:
    if "$ref" in node:
        msg._ref = node["$ref"]
    for method in _METHODS:
        if method in node:
            _operation(node[method], getattr(msg, method))
    _parameters(node.get("parameters", []), msg.parameters)
    _extensions(msg, node)


def _info(node: Mapping[str, Any], msg: Any) -> None:
    _set_fields(msg, node, {"title": "title", "version": "version",
                            "description": "description", "termsOfService": "terms_of_service"})
    if "contact" in node:
        _set_fields(msg.contact, node["contact"], {"name": "name", "url": "url",
                                                   "email": "email"})
        _extensions(msg.contact, node["contact"])
    if "license" in node:
        _set_fields(msg.license, node["license"], {"name": "name", "url": "url"})
        _extensions(msg.license, node["license"])
    _extensions(msg, node)


def _security_definitions(node: Mapping[str, Mapping[str, Any]], msg: Any) -> None:
    for name, scheme in node.items():
        kind = str(scheme.get("type"))
        flow = scheme.get("flow") if kind == "oauth2" else None
        field = _SECURITY_KINDS.get((kind, flow))
        if field is None:
            raise ProtobufError(f"security definition {name!r} has unknown type {kind!r}")
        named = msg.additional_properties.add()
        named.name = name
        target = getattr(named.value, field)
        fields = target.DESCRIPTOR.fields_by_name
        _set_fields(target, scheme, {k: v for k, v in {
            "type": "type", "name": "name", "in": "in", "description": "description",
            "flow": "flow", "authorizationUrl": "authorization_url", "tokenUrl": "token_url",
        }.items() if v in fields})
        for scope, text in scheme.get("scopes", {}).items():
            entry = target.scopes.additional_properties.add()
            entry.name = scope
            entry.value = text
        _extensions(target, scheme)


def encode_openapi_v2(doc: Mapping[str, Any]) -> bytes:
    """The gnostic ``openapi.v2.Document`` bytes for a Swagger 2.0 JSON document (a dict)."""
    msg: Any = message_class(_OAS + "Document")()
    _set_fields(msg, doc, {"swagger": "swagger", "host": "host", "basePath": "base_path"})
    if "info" in doc:
        _info(doc["info"], msg.info)
    msg.schemes.extend(doc.get("schemes", ()))
    msg.consumes.extend(doc.get("consumes", ()))
    msg.produces.extend(doc.get("produces", ()))
    paths = doc.get("paths")
    if paths is not None:
        msg.paths.SetInParent()
        for url, item in paths.items():
            if url.startswith("x-"):
                continue
            named = msg.paths.path.add()
            named.name = url
            _path_item(item, named.value)
        _extensions(msg.paths, paths)
    definitions = doc.get("definitions")
    if definitions is not None:
        msg.definitions.SetInParent()
        target = msg.definitions.additional_properties
        for name, schema in definitions.items():
            named = target.add()
            named.name = name
            _schema(schema, named.value)
    for name, param in doc.get("parameters", {}).items():
        named = msg.parameters.additional_properties.add()
        named.name = name
        _parameter(param, named.value)
    for name, response in doc.get("responses", {}).items():
        named = msg.responses.additional_properties.add()
        named.name = name
        _response(response, named.value)
    _security(doc.get("security", []), msg.security)
    if "securityDefinitions" in doc:
        _security_definitions(doc["securityDefinitions"], msg.security_definitions)
    for tag in doc.get("tags", ()):
        entry = msg.tags.add()
        _set_fields(entry, tag, {"name": "name", "description": "description"})
        if "externalDocs" in tag:
            _external_docs(tag["externalDocs"], entry.external_docs)
        _extensions(entry, tag)
    if "externalDocs" in doc:
        _external_docs(doc["externalDocs"], msg.external_docs)
    _extensions(msg, doc)
    data: bytes = msg.SerializeToString()
    return data


_v2_lock = threading.Lock()
_v2_cache: tuple[bytes, bytes] | None = None


def openapi_v2_protobuf(json_document: bytes) -> bytes:
    """``encode_openapi_v2`` of a serialized JSON document, built once and cached.

    Keyed on the JSON bytes themselves (the OpenAPI builder hands out the same cached object
    until a CRD change rebuilds it), so a rebuilt JSON document is re-encoded exactly once;
    comparing a couple of MiB is a ``memcmp``, far cheaper than re-encoding.
    """
    global _v2_cache
    cached = _v2_cache
    if cached is not None and (cached[0] is json_document or cached[0] == json_document):
        return cached[1]
    with _v2_lock:
        cached = _v2_cache
        if cached is not None and cached[0] == json_document:
            return cached[1]
        data = encode_openapi_v2(orjson.loads(json_document))
        _v2_cache = (json_document, data)
        return data
