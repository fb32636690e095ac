"""Name and metadata validation worded exactly as apimachinery's validation package.

kubectl users, client libraries and conformance tests read these strings, so each message
is reproduced character for character (including upstream's double space in
``(e.g. 'my-name',  or '123-abc', ...)``).  Every ``is_*`` check returns a list of
messages (empty means valid) so callers can attach them to whatever field path they check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kubling.api.field import FieldError, Path, forbidden, immutable, invalid, required, too_long

#: ``(name, prefix) -> messages``: upstream's ``ValidateNameFunc``.  ``prefix`` is true when
#: validating ``generateName``, where a trailing ``-`` is allowed because a suffix follows.
NameRule = Callable[[str, bool], list[str]]

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
DNS1035_LABEL_MAX = 63
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
#: Upstream ``TotalAnnotationSizeLimitB``: keys plus values of all annotations.
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = "(" + _QUALIFIED_NAME_FMT + ")?"

_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL_RE = re.compile(_DNS1035_LABEL_FMT)
_QUALIFIED_NAME_RE = re.compile(_QUALIFIED_NAME_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)

_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character"
)
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character"
)


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Upstream ``RegexError``: the message, examples, and the regex that was applied."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    text = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            text += " or "
        text += f"'{example}', "
    return text + f"regex used for validation is '{fmt}')"


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def empty_error() -> str:
    return "must be non-empty"


def _full(pattern: re.Pattern[str], value: str) -> bool:
    """Go's anchored ``^fmt$`` match: the whole value, with no trailing-newline leniency."""
    return pattern.fullmatch(value) is not None


def is_dns1123_label(value: str) -> list[str]:
    """RFC 1123 label (namespaces, container and port names): 63 chars, ``[a-z0-9-]``."""
    errs: list[str] = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _full(_DNS1123_LABEL_RE, value):
        errs.append(regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    """RFC 1123 subdomain: the rule for most object names (dots allowed, 253 chars)."""
    errs: list[str] = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _full(_DNS1123_SUBDOMAIN_RE, value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    """RFC 1035 label: Service names, which become DNS names and env var prefixes."""
    errs: list[str] = []
    if len(value) > DNS1035_LABEL_MAX:
        errs.append(max_len_error(DNS1035_LABEL_MAX))
    if not _full(_DNS1035_LABEL_RE, value):
        errs.append(regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_valid_path_segment_name(value: str) -> list[str]:
    """Names that only need to survive as one URL path segment (RBAC, PVs, CSRs)."""
    for bad in (".", ".."):
        if value == bad:
            return [f"may not be '{bad}'"]
    return is_valid_path_segment_prefix(value)


def is_valid_path_segment_prefix(value: str) -> list[str]:
    return [f"may not contain '{bad}'" for bad in ("/", "%") if bad in value]


def is_qualified_name(value: str) -> list[str]:
    """``[prefix/]name`` as used by label keys, annotation keys and finalizers."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part " + empty_error())
        else:
            errs.extend("prefix part " + msg for msg in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part " + empty_error())
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if not _full(_QUALIFIED_NAME_RE, name):
        errs.append(
            "name part "
            + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > LABEL_VALUE_MAX:
        errs.append(max_len_error(LABEL_VALUE_MAX))
    if not _full(_LABEL_VALUE_RE, value):
        errs.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


# -- name rules (upstream ValidateNameFunc) ---------------------------------------------------


def _mask_trailing_dash(name: str) -> str:
    """generateName may end in '-' (a random suffix follows); check it as if it did not."""
    if len(name) > 1 and name.endswith("-"):
        return name[:-1] + "a"
    return name


def name_is_dns_subdomain(name: str, prefix: bool = False) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool = False) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool = False) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


def name_is_path_segment(name: str, prefix: bool = False) -> list[str]:
    return is_valid_path_segment_prefix(name) if prefix else is_valid_path_segment_name(name)


_RBAC = "rbac.authorization.k8s.io"

#: Which rule upstream applies to each built-in kind's ``metadata.name``.  Kinds absent here
#: use :data:`DEFAULT_NAME_RULE` (DNS subdomain), which is what nearly every kind uses.
NAME_RULES: dict[tuple[str, str], NameRule] = {
    ("", "Namespace"): name_is_dns_label,
    ("", "Service"): name_is_dns1035_label,
    ("", "PersistentVolume"): name_is_path_segment,
    ("", "PersistentVolumeClaim"): name_is_path_segment,
    ("", "Pod"): name_is_dns_subdomain,
    ("", "PodTemplate"): name_is_dns_subdomain,
    ("", "ReplicationController"): name_is_dns_subdomain,
    ("", "ConfigMap"): name_is_dns_subdomain,
    ("", "Secret"): name_is_dns_subdomain,
    ("", "ServiceAccount"): name_is_dns_subdomain,
    ("", "Node"): name_is_dns_subdomain,
    ("", "Endpoints"): name_is_dns_subdomain,
    ("", "Event"): name_is_dns_subdomain,
    ("", "LimitRange"): name_is_dns_subdomain,
    ("", "ResourceQuota"): name_is_dns_subdomain,
    ("apps", "Deployment"): name_is_dns_subdomain,
    ("apps", "ReplicaSet"): name_is_dns_subdomain,
    ("apps", "StatefulSet"): name_is_dns_subdomain,
    ("apps", "DaemonSet"): name_is_dns_subdomain,
    ("apps", "ControllerRevision"): name_is_dns_subdomain,
    ("batch", "Job"): name_is_dns_subdomain,
    ("batch", "CronJob"): name_is_dns_subdomain,
    (_RBAC, "Role"): name_is_path_segment,
    (_RBAC, "RoleBinding"): name_is_path_segment,
    (_RBAC, "ClusterRole"): name_is_path_segment,
    (_RBAC, "ClusterRoleBinding"): name_is_path_segment,
    ("certificates.k8s.io", "CertificateSigningRequest"): name_is_path_segment,
    ("networking.k8s.io", "Ingress"): name_is_dns_subdomain,
    ("networking.k8s.io", "IngressClass"): name_is_dns_subdomain,
    ("networking.k8s.io", "NetworkPolicy"): name_is_dns_subdomain,
    ("discovery.k8s.io", "EndpointSlice"): name_is_dns_subdomain,
    ("storage.k8s.io", "StorageClass"): name_is_dns_subdomain,
    ("coordination.k8s.io", "Lease"): name_is_dns_subdomain,
    ("scheduling.k8s.io", "PriorityClass"): name_is_dns_subdomain,
    ("policy", "PodDisruptionBudget"): name_is_dns_subdomain,
    ("autoscaling", "HorizontalPodAutoscaler"): name_is_dns_subdomain,
}

DEFAULT_NAME_RULE: NameRule = name_is_dns_subdomain


def name_rule_for(group: str, kind: str) -> NameRule:
    """The rule for ``(group, kind)``; custom and unknown kinds get the subdomain rule."""
    return NAME_RULES.get((group, kind), DEFAULT_NAME_RULE)


# -- ObjectMeta ------------------------------------------------------------------------------

_META = Path("metadata")
_STANDARD_FINALIZERS = frozenset({"kubernetes", "orphan", "foregroundDeletion"})


def validate_labels(labels: Any, path: Path) -> list[FieldError]:
    """Label keys are qualified names, values are label values; errors name the map path."""
    if not isinstance(labels, dict):
        return [] if labels is None else [invalid(str(path), labels, "must be a map")]
    errs: list[FieldError] = []
    for key, value in labels.items():
        errs.extend(invalid(str(path), key, msg) for msg in is_qualified_name(key))
        text = value if isinstance(value, str) else str(value)
        errs.extend(invalid(str(path), text, msg) for msg in is_valid_label_value(text))
    return errs


def validate_annotations(annotations: Any, path: Path) -> list[FieldError]:
    """Keys are case-insensitive qualified names; the whole map is capped at 256 KiB."""
    if not isinstance(annotations, dict):
        return [] if annotations is None else [invalid(str(path), annotations, "must be a map")]
    errs: list[FieldError] = []
    total = 0
    for key, value in annotations.items():
        errs.extend(invalid(str(path), key, msg) for msg in is_qualified_name(key.lower()))
        total += len(key.encode()) + len(str(value).encode())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(too_long(str(path), TOTAL_ANNOTATION_SIZE_LIMIT))
    return errs


def validate_finalizer_name(name: str, path: Path, *, kube: bool = True) -> list[FieldError]:
    """Qualified names; for built-in kinds (``kube``) a bare name must also be one of the
    standard finalizers (core validation's rule; CRDs and custom resources skip it)."""
    errs = [invalid(str(path), name, msg) for msg in is_qualified_name(name)]
    if kube and not errs and "/" not in name and name not in _STANDARD_FINALIZERS:
        errs.append(
            invalid(
                str(path),
                name,
                "name is neither a standard finalizer name nor is it fully qualified",
            )
        )
    return errs


def validate_finalizers(finalizers: Any, path: Path, *, kube: bool = True) -> list[FieldError]:
    if not isinstance(finalizers, list):
        return [] if finalizers is None else [invalid(str(path), finalizers, "must be a list")]
    errs: list[FieldError] = []
    for name in finalizers:
        errs.extend(validate_finalizer_name(str(name), path, kube=kube))
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        errs.append(
            invalid(
                str(path), finalizers, "finalizer orphan and foregroundDeletion cannot be both set"
            )
        )
    return errs


def _validate_owner_reference(ref: dict[str, Any], path: Path) -> list[FieldError]:
    errs: list[FieldError] = []
    api_version = str(ref.get("apiVersion") or "")
    version = api_version.rsplit("/", 1)[-1]
    if not version:
        errs.append(
            invalid(str(path.child("apiVersion")), api_version, "version must not be empty")
        )
    for key in ("kind", "name", "uid"):
        value = str(ref.get(key) or "")
        if not value:
            errs.append(invalid(str(path.child(key)), value, f"{key} must not be empty"))
    return errs


def validate_owner_references(refs: Any, path: Path) -> list[FieldError]:
    """Each reference names its owner fully; at most one may be the managing controller."""
    if not isinstance(refs, list):
        return [] if refs is None else [invalid(str(path), refs, "must be a list")]
    errs: list[FieldError] = []
    controller = ""
    for ref in refs:
        if not isinstance(ref, dict):
            errs.append(invalid(str(path), ref, "must be an object"))
            continue
        errs.extend(_validate_owner_reference(ref, path))
        if ref.get("controller") is True:
            current = f"{ref.get('kind', '')}/{ref.get('name', '')}"
            if controller:
                errs.append(
                    invalid(
                        str(path),
                        refs,
                        'Only one reference can have Controller set to true. Found "true" in '
                        f"references for {controller} and {current}",
                    )
                )
            else:
                controller = current
    return errs


def _validate_name(meta: dict[str, Any], name_rule: NameRule) -> list[FieldError]:
    errs: list[FieldError] = []
    generate = meta.get("generateName") or ""
    if generate:
        path = str(_META.child("generateName"))
        errs.extend(invalid(path, generate, msg) for msg in name_rule(str(generate), True))
    name = meta.get("name") or ""
    if not name:
        errs.append(required(str(_META.child("name")), "name or generateName is required"))
    else:
        path = str(_META.child("name"))
        errs.extend(invalid(path, name, msg) for msg in name_rule(str(name), False))
    return errs


def _validate_namespace(meta: dict[str, Any], namespaced: bool) -> list[FieldError]:
    namespace = meta.get("namespace") or ""
    path = str(_META.child("namespace"))
    if not namespaced:
        return [forbidden(path, "not allowed on this type")] if namespace else []
    if not namespace:
        return [required(path)]
    return [invalid(path, namespace, msg) for msg in is_dns1123_label(str(namespace))]


def _validate_counters(meta: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    for key in ("generation", "deletionGracePeriodSeconds"):
        value = meta.get(key)
        if isinstance(value, int) and value < 0:
            errs.append(invalid(str(_META.child(key)), value, "must be greater than or equal to 0"))
    return errs


def validate_object_meta(
    obj: dict[str, Any],
    *,
    namespaced: bool,
    name_rule: NameRule = DEFAULT_NAME_RULE,
    kube_finalizers: bool = True,
) -> list[FieldError]:
    """Upstream ``ValidateObjectMeta``: the checks every kind shares, under ``metadata``.

    The caller should already have turned ``generateName`` into ``name``; a leftover
    ``generateName`` is still checked with the prefix form of ``name_rule``.
    """
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    errs = _validate_name(meta, name_rule)
    errs.extend(_validate_namespace(meta, namespaced))
    errs.extend(_validate_counters(meta))
    errs.extend(validate_labels(meta.get("labels"), _META.child("labels")))
    errs.extend(validate_annotations(meta.get("annotations"), _META.child("annotations")))
    errs.extend(
        validate_owner_references(meta.get("ownerReferences"), _META.child("ownerReferences"))
    )
    errs.extend(
        validate_finalizers(meta.get("finalizers"), _META.child("finalizers"), kube=kube_finalizers)
    )
    return errs


def validate_object_meta_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    """Upstream ``ValidateObjectMetaUpdate``: identity fields never change.

    ``uid`` and ``creationTimestamp`` are compared only when the new object carries them,
    since a Store normally copies them over from the stored object before validating.
    """
    new_meta = new.get("metadata") or {}
    old_meta = old.get("metadata") or {}
    errs: list[FieldError] = []
    for key in ("name", "namespace"):
        if (new_meta.get(key) or "") != (old_meta.get(key) or ""):
            errs.append(immutable(str(_META.child(key)), new_meta.get(key) or ""))
    for key in ("uid", "creationTimestamp"):
        value = new_meta.get(key)
        if value and value != old_meta.get(key):
            errs.append(immutable(str(_META.child(key)), value))
    if old_meta.get("deletionTimestamp"):
        added = sorted(
            set(new_meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
        )
        if added:
            errs.append(
                forbidden(
                    str(_META.child("finalizers")),
                    "no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {_go_string_slice(added)}",
                )
            )
    generation = new_meta.get("generation")
    old_generation = old_meta.get("generation")
    if (
        isinstance(generation, int)
        and isinstance(old_generation, int)
        and generation < old_generation
    ):
        errs.append(invalid(str(_META.child("generation")), generation, "must not be decremented"))
    return errs


def _go_string_slice(values: list[str]) -> str:
    """How Go's ``%#v`` prints a ``[]string``, as upstream embeds it in some messages."""
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"
