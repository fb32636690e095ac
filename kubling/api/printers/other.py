"""Columns of the smaller groups: coordination, policy, scheduling, autoscaling, node,
certificates and admissionregistration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubling.api.meta import Object
from kubling.api.printers import common

_NAME, _AGE, _col = common.NAME, common.AGE, common.column

# -- coordination.k8s.io -----------------------------------------------------------------

LEASE_COLUMNS = [
    _NAME,
    _col("Holder", "holderIdentity contains the identity of the holder of a current lease."),
    _AGE,
]


def lease_cells(obj: Object) -> list[Any]:
    holder = common.text(common.dig(obj, "spec", "holderIdentity"))
    return [common.name(obj), holder, common.age(obj)]


# -- policy ------------------------------------------------------------------------------

PDB_COLUMNS = [
    _NAME,
    _col("Min Available", "The minimum number of pods that must be available."),
    _col("Max Unavailable", "The maximum number of pods that may be unavailable."),
    _col("Allowed Disruptions", "Calculated number of pods that may be disrupted at this time.",
         col_type="integer"),
    _AGE,
]


def _int_or_string(value: Any) -> str:
    """An ``IntOrString`` as upstream prints it (``2``, ``50%``); ``N/A`` when unset."""
    if isinstance(value, bool) or value is None:
        return "N/A"
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else "N/A"


def pdb_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    return [
        common.name(obj),
        _int_or_string(spec.get("minAvailable")),
        _int_or_string(spec.get("maxUnavailable")),
        common.integer(common.dig(obj, "status", "disruptionsAllowed")),
        common.age(obj),
    ]


# -- scheduling.k8s.io -------------------------------------------------------------------

PRIORITY_CLASS_COLUMNS = [
    _NAME,
    _col("Value", "value represents the integer value of this priority class.",
         col_type="integer"),
    _col("Global-Default", "globalDefault specifies whether this PriorityClass should be "
         "considered as the default priority for pods that do not have any priority class.",
         col_type="boolean"),
    _AGE,
    _col("PreemptionPolicy", "preemptionPolicy is the Policy for preempting pods with lower "
         "priority."),
]


def priority_class_cells(obj: Object) -> list[Any]:
    return [
        common.name(obj),
        common.integer(obj.get("value")),
        obj.get("globalDefault") is True,
        common.age(obj),
        common.text(obj.get("preemptionPolicy")),
    ]


# -- autoscaling -------------------------------------------------------------------------

HPA_COLUMNS = [
    _NAME,
    _col("Reference", "scaleTargetRef points to the target resource to scale."),
    _col("Targets", "metrics contains the specifications for which to use to calculate the "
         "desired replica count."),
    _col("MinPods", "minReplicas is the lower limit for the number of replicas."),
    _col("MaxPods", "maxReplicas is the upper limit for the number of replicas."),
    _col("Replicas", "currentReplicas is current number of replicas of pods managed by this "
         "autoscaler."),
    _AGE,
]

#: The source field of each v2 metric type, in spec and status alike.
_METRIC_SOURCES = {
    "Resource": "resource",
    "ContainerResource": "containerResource",
    "Pods": "pods",
    "Object": "object",
    "External": "external",
}


def _percent(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value}%"
    return None


def _value(value: Any) -> str:
    """A ``Quantity`` cell of a metric: Go prints a nil quantity pointer as ``<nil>``."""
    return "<nil>" if value is None else common.quantity(value)


def _current(status: Mapping[str, Any] | None, source_key: str, field: str) -> Any:
    """A field of the status entry at the same index, if that entry is of the same type."""
    current = common.dig(status, source_key, "current")
    return current.get(field) if isinstance(current, Mapping) else None


def _has_source(status: Mapping[str, Any] | None, source_key: str) -> bool:
    return isinstance(common.dig(status, source_key), Mapping)


def _format_utilization(source: Mapping[str, Any], status: Mapping[str, Any] | None,
                        source_key: str) -> str:
    now = _percent(_current(status, source_key, "averageUtilization")) or "<unknown>"
    goal = _percent(common.dig(source, "target", "averageUtilization")) or "<auto>"
    return f"{common.text(source.get('name'))}: {now}/{goal}"


def _format_metric(spec: Mapping[str, Any], status: Mapping[str, Any] | None) -> str:
    """One TARGETS entry, following upstream ``formatHPAMetrics`` case by case."""
    source_key = _METRIC_SOURCES.get(common.text(spec.get("type")))
    if source_key is None:
        return "<unknown type>"
    source = common.mapping(spec.get(source_key))
    target = common.mapping(source.get("target"))
    known = _has_source(status, source_key)
    average = target.get("averageValue")
    if source_key == "pods":
        now = _value(_current(status, source_key, "averageValue")) if known else "<unknown>"
        return f"{now}/{_value(average)}"
    if source_key in ("object", "external"):
        field, suffix = ("averageValue", " (avg)") if average is not None else ("value", "")
        raw = _current(status, source_key, field)
        now = _value(raw) if known and (raw is not None or field == "value") else "<unknown>"
        return f"{now}/{_value(target.get(field))}{suffix}"
    if average is None:
        return _format_utilization(source, status, source_key)
    now = _value(_current(status, source_key, "averageValue")) if known else "<unknown>"
    return f"{common.text(source.get('name'))}: {now}/{_value(average)}"


def _v1_metrics(obj: Object) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """autoscaling/v1's CPU-only fields, expressed as the v2 metric they convert to."""
    target = common.dig(obj, "spec", "targetCPUUtilizationPercentage")
    if target is None:
        return [], []
    spec = {"type": "Resource",
            "resource": {"name": "cpu", "target": {"averageUtilization": target}}}
    current = common.dig(obj, "status", "currentCPUUtilizationPercentage")
    if current is None:
        return [spec], []
    status = {"type": "Resource",
              "resource": {"name": "cpu", "current": {"averageUtilization": current}}}
    return [spec], [status]


def hpa_targets(obj: Object) -> str:
    """``cpu: 40%/80%`` per metric, two at most, then ``+ N more...``."""
    specs = common.dicts(common.dig(obj, "spec", "metrics"))
    statuses = common.dicts(common.dig(obj, "status", "currentMetrics"))
    if not specs:
        specs, statuses = _v1_metrics(obj)
    if not specs:
        return "<none>"
    shown = [
        _format_metric(spec, statuses[i] if i < len(statuses) else None)
        for i, spec in enumerate(specs)
    ]
    if len(shown) > 2:
        return f"{', '.join(shown[:2])} + {len(shown) - 2} more..."
    return ", ".join(shown)


def hpa_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    ref = common.mapping(spec.get("scaleTargetRef"))
    min_replicas = spec.get("minReplicas")
    return [
        common.name(obj),
        f"{common.text(ref.get('kind'))}/{common.text(ref.get('name'))}",
        hpa_targets(obj),
        str(common.integer(min_replicas)) if min_replicas is not None else "<unset>",
        common.integer(spec.get("maxReplicas")),
        common.integer(common.dig(obj, "status", "currentReplicas")),
        common.age(obj),
    ]


# -- node.k8s.io -------------------------------------------------------------------------

RUNTIME_CLASS_COLUMNS = [
    _NAME,
    _col("Handler", "handler specifies the underlying runtime and configuration that the CRI "
         "implementation will use to handle pods of this class."),
    _AGE,
]


def runtime_class_cells(obj: Object) -> list[Any]:
    return [common.name(obj), common.text(obj.get("handler")), common.age(obj)]


# -- certificates.k8s.io -----------------------------------------------------------------

CSR_COLUMNS = [
    _NAME,
    _AGE,
    _col("SignerName", "signerName indicates the requested signer."),
    _col("Requestor", "username contains the name of the user that created the "
         "CertificateSigningRequest."),
    _col("RequestedDuration", "expirationSeconds is the requested duration of validity of the "
         "issued certificate."),
    _col("Condition", "conditions applied to the request: Approved, Denied, Failed."),
]


def csr_condition(obj: Object) -> str:
    """``Denied`` beats ``Approved`` beats ``Pending``; then ``,Failed`` and ``,Issued``."""
    types = {c.get("type") for c in common.dicts(common.dig(obj, "status", "conditions"))}
    status = "Denied" if "Denied" in types else "Approved" if "Approved" in types else "Pending"
    if "Failed" in types:
        status += ",Failed"
    if common.text(common.dig(obj, "status", "certificate")):
        status += ",Issued"
    return status


def csr_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    seconds = spec.get("expirationSeconds")
    duration = "<none>"
    if isinstance(seconds, int) and not isinstance(seconds, bool):
        duration = common.human_duration(seconds)
    return [
        common.name(obj),
        common.age(obj),
        common.text(spec.get("signerName")) or "<none>",
        common.text(spec.get("username")),
        duration,
        csr_condition(obj),
    ]


# -- admissionregistration.k8s.io --------------------------------------------------------

WEBHOOK_COLUMNS = [
    _NAME,
    _col("Webhooks", "Webhooks indicates the number of webhooks registered in this "
         "configuration", col_type="integer"),
    _AGE,
]


def webhook_cells(obj: Object) -> list[Any]:
    return [common.name(obj), common.length(obj.get("webhooks")), common.age(obj)]


POLICY_COLUMNS = [
    _NAME,
    _col("Validations", "Validations indicates the number of validation rules defined in this "
         "configuration", col_type="integer"),
    _col("ParamKind", "ParamKind specifies the kind of resources used to parameterize this "
         "policy"),
    _AGE,
]


def policy_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    param_kind = spec.get("paramKind")
    shown = "<unset>"
    if isinstance(param_kind, Mapping):
        shown = f"{common.text(param_kind.get('apiVersion'))}/{common.text(param_kind.get('kind'))}"
    return [common.name(obj), common.length(spec.get("validations")), shown, common.age(obj)]


POLICY_BINDING_COLUMNS = [
    _NAME,
    _col("PolicyName", "PolicyName indicates the policy definition which the policy binding "
         "binded to"),
    _col("ParamRef", "ParamRef indicates the param resource which sets the configration param"),
    _AGE,
]


def _param_ref(ref: Any) -> str:
    """``namespace/name``, ``*/name`` (namespace unknown here), or the selector."""
    if not isinstance(ref, Mapping):
        return "<unset>"
    ref_name = common.text(ref.get("name"))
    if ref_name:
        return f"{common.text(ref.get('namespace')) or '*'}/{ref_name}"
    if ref.get("selector") is not None:
        return common.selector_string(ref.get("selector"), invalid="<error>")
    return "<unset>"


def policy_binding_cells(obj: Object) -> list[Any]:
    spec = common.mapping(obj.get("spec"))
    return [
        common.name(obj),
        common.text(spec.get("policyName")),
        _param_ref(spec.get("paramRef")),
        common.age(obj),
    ]


_ADMISSION = "admissionregistration.k8s.io"

PRINTERS: dict[tuple[str, str], common.Printer] = {
    ("coordination.k8s.io", "Lease"): (LEASE_COLUMNS, lease_cells),
    ("policy", "PodDisruptionBudget"): (PDB_COLUMNS, pdb_cells),
    ("scheduling.k8s.io", "PriorityClass"): (PRIORITY_CLASS_COLUMNS, priority_class_cells),
    ("autoscaling", "HorizontalPodAutoscaler"): (HPA_COLUMNS, hpa_cells),
    ("node.k8s.io", "RuntimeClass"): (RUNTIME_CLASS_COLUMNS, runtime_class_cells),
    ("certificates.k8s.io", "CertificateSigningRequest"): (CSR_COLUMNS, csr_cells),
    (_ADMISSION, "MutatingWebhookConfiguration"): (WEBHOOK_COLUMNS, webhook_cells),
    (_ADMISSION, "ValidatingWebhookConfiguration"): (WEBHOOK_COLUMNS, webhook_cells),
    (_ADMISSION, "ValidatingAdmissionPolicy"): (POLICY_COLUMNS, policy_cells),
    (_ADMISSION, "ValidatingAdmissionPolicyBinding"): (POLICY_BINDING_COLUMNS,
                                                       policy_binding_cells),
}
