"""Field selectors (``?fieldSelector=``) with apimachinery's ``fields`` semantics.

A field selector is an AND of ``field=value`` / ``field!=value`` terms over a small, per-kind set
of *selectable* fields (``metadata.name`` everywhere, ``spec.nodeName`` for pods, ...). Unlike
label selectors there is no whitespace handling and values use backslash escaping (``\\,``,
``\\=``, ``\\\\``), because that is what clients such as kubectl and client-go send.

The table at the bottom says which fields each kind supports and how to read them out of an
object, so the API server can both reject unsupported fields up front (400, upstream wording)
and filter lists/watches with :func:`field_set`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from kubling.api.labels import SelectorError

__all__ = [
    "EQUALS",
    "NOT_EQUALS",
    "FieldRequirement",
    "FieldSelector",
    "SelectorError",
    "convert_for",
    "escape_value",
    "everything",
    "field_set",
    "parse",
    "selectable_fields",
    "selector_from_set",
    "unescape_value",
    "validate_for",
]

EQUALS = "="
NOT_EQUALS = "!="

# "==" must be tried before "=" so it does not leave a stray "=" at the start of the value.
_TERM_OPERATORS = ("!=", "==", "=")


class FieldRequirement(NamedTuple):
    """One term; ``operator`` is ``"="`` (also for ``==``) or ``"!="``."""

    field: str
    operator: str
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        """A missing field reads as ``""``, so ``spec.nodeName=`` selects unscheduled pods."""
        equal = fields.get(self.field, "") == self.value
        return equal if self.operator == EQUALS else not equal

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{escape_value(self.value)}"


@dataclasses.dataclass(frozen=True, slots=True)
class FieldSelector:
    """An AND of field requirements; no requirements selects everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def requires_exact_match(self, field: str) -> str | None:
        """The value ``field`` must equal, if any (lets storage use an index, e.g. nodeName)."""
        for r in self.requirements:
            if r.field == field and r.operator == EQUALS:
                return r.value
        return None

    def transform(self, fn: Callable[[str, str], tuple[str, str]]) -> FieldSelector:
        """Rewrite each ``(field, value)``; ``fn`` may raise :class:`SelectorError`."""
        out = []
        for r in self.requirements:
            field, value = fn(r.field, r.value)
            out.append(FieldRequirement(field, r.operator, value))
        return FieldSelector(tuple(out))

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def everything() -> FieldSelector:
    return FieldSelector()


def selector_from_set(fields: Mapping[str, str]) -> FieldSelector:
    """Equality terms for each pair, sorted by field (e.g. ``metadata.name=x`` for a watch)."""
    return FieldSelector(tuple(FieldRequirement(k, EQUALS, v) for k, v in sorted(fields.items())))


# --------------------------------------------------------------------------- parsing


def escape_value(value: str) -> str:
    """Escape the characters that would otherwise end a value (``\\``, ``,``, ``=``)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def unescape_value(text: str) -> str:
    """Inverse of :func:`escape_value`; unknown escapes and bare ``,``/``=`` are errors."""
    if "\\" not in text and "," not in text and "=" not in text:
        return text
    out: list[str] = []
    in_slash = False
    for ch in text:
        if in_slash:
            if ch not in "\\,=":
                raise SelectorError(
                    f"invalid field selector: invalid escape sequence: \\{ch}",
                )
            out.append(ch)
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch in ",=":
            raise SelectorError(f"invalid field selector: unescaped character in value: {ch}")
        else:
            out.append(ch)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(text: str) -> list[str]:
    """Split on commas not preceded by a backslash; escapes are kept for ``unescape_value``."""
    terms: list[str] = []
    start = 0
    in_slash = False
    for i, ch in enumerate(text):
        if in_slash:
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    """``(lhs, op, raw rhs)`` split at the first operator; the lhs has no escaping."""
    for i in range(len(term)):
        for op in _TERM_OPERATORS:
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def parse(text: str) -> FieldSelector:
    """Parse ``?fieldSelector=``; ``""`` selects everything. Terms are sorted like upstream."""
    if not isinstance(text, str):
        raise SelectorError(f"field selector must be a string, not {type(text).__name__}")
    if not text:
        return everything()
    requirements: list[FieldRequirement] = []
    for part in sorted(_split_terms(text)):
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        lhs, op, rhs = split
        value = unescape_value(rhs)
        requirements.append(FieldRequirement(lhs, NOT_EQUALS if op == "!=" else EQUALS, value))
    return FieldSelector(tuple(requirements))


# --------------------------------------------------------------------------- per-kind table

_Extractor = Callable[[Mapping[str, Any]], str]


def _dig(obj: Mapping[str, Any], *path: str) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _text(value: Any) -> str:
    """Render the way upstream's field sets do (Go zero values, ``strconv`` formatting)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _string(*path: str) -> _Extractor:
    return lambda obj: _text(_dig(obj, *path))


def _bool(*path: str) -> _Extractor:
    """Booleans default to ``false`` (the Go zero value), never ``""``."""
    return lambda obj: _text(bool(_dig(obj, *path)))


def _int(*path: str) -> _Extractor:
    """Integers default to ``0`` (the Go zero value), never ``""``."""
    return lambda obj: _text(_dig(obj, *path) or 0)


def _pod_ip(obj: Mapping[str, Any]) -> str:
    """Upstream reads the first of ``status.podIPs``; ``status.podIP`` is the v1 mirror of it."""
    ips = _dig(obj, "status", "podIPs")
    if isinstance(ips, list) and ips and isinstance(ips[0], Mapping):
        return _text(ips[0].get("ip"))
    return _text(_dig(obj, "status", "podIP"))


def _involved(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """``involvedObject`` (core/v1) or ``regarding`` (events.k8s.io/v1): same storage upstream."""
    ref = obj.get("involvedObject")
    if ref is None:
        ref = obj.get("regarding")
    return ref if isinstance(ref, Mapping) else {}


def _event_reporting(obj: Mapping[str, Any]) -> str:
    return _text(obj.get("reportingComponent") or obj.get("reportingController"))


def _event_source(obj: Mapping[str, Any]) -> str:
    """Upstream falls back to the reporting controller when ``source.component`` is empty."""
    source = obj.get("source")
    if source is None:
        source = obj.get("deprecatedSource")
    component = source.get("component") if isinstance(source, Mapping) else None
    return _text(component) if component else _event_reporting(obj)


def _involved_field(name: str) -> _Extractor:
    return lambda obj: _text(_involved(obj).get(name))


_EVENT_REF_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")
_EVENT_FIELDS: dict[str, _Extractor] = {
    **{f"involvedObject.{f}": _involved_field(f) for f in (*_EVENT_REF_FIELDS, "fieldPath")},
    "reason": _string("reason"),
    "reportingComponent": _event_reporting,
    "source": _event_source,
    "type": _string("type"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class _KindFields:
    """Selectable fields of one kind beyond ``metadata.name``/``metadata.namespace``.

    ``labels`` maps what clients may write to the canonical field name used in the field set
    (identity except for aliases such as a pod's legacy ``spec.host``). Kinds listed here have
    a dedicated upstream conversion function and so use its "field label not supported" wording.
    """

    extractors: Mapping[str, _Extractor]
    labels: Mapping[str, str]


def _kind(extractors: Mapping[str, _Extractor], **aliases: str) -> _KindFields:
    labels = {name: name for name in (*extractors, "metadata.name", "metadata.namespace")}
    return _KindFields(extractors, {**labels, **aliases})


_EVENTS_K8S_IO_LABELS = {
    "metadata.name": "metadata.name",
    "metadata.namespace": "metadata.namespace",
    "reason": "reason",
    "type": "type",
    "reportingController": "reportingComponent",
    **{f"regarding.{f}": f"involvedObject.{f}" for f in (*_EVENT_REF_FIELDS, "fieldPath")},
}

_KINDS: dict[tuple[str, str], _KindFields] = {
    ("", "Pod"): _kind(
        {
            "spec.nodeName": _string("spec", "nodeName"),
            "spec.restartPolicy": _string("spec", "restartPolicy"),
            "spec.schedulerName": _string("spec", "schedulerName"),
            "spec.serviceAccountName": _string("spec", "serviceAccountName"),
            "spec.hostNetwork": _bool("spec", "hostNetwork"),
            "status.phase": _string("status", "phase"),
            "status.podIP": _pod_ip,
            "status.nominatedNodeName": _string("status", "nominatedNodeName"),
        },
        **{"spec.host": "spec.nodeName"},
    ),
    ("", "Event"): _kind(_EVENT_FIELDS),
    ("events.k8s.io", "Event"): _KindFields(_EVENT_FIELDS, _EVENTS_K8S_IO_LABELS),
    ("", "Namespace"): _kind({"status.phase": _string("status", "phase")}),
    ("", "Secret"): _kind({"type": _string("type")}),
    ("", "Node"): _kind({"spec.unschedulable": _bool("spec", "unschedulable")}),
    ("", "ReplicationController"): _kind({"status.replicas": _int("status", "replicas")}),
    ("apps", "ReplicaSet"): _kind({"status.replicas": _int("status", "replicas")}),
    ("batch", "Job"): _kind({"status.successful": _int("status", "succeeded")}),
    ("certificates.k8s.io", "CertificateSigningRequest"): _kind(
        {"spec.signerName": _string("spec", "signerName")}
    ),
    ("resource.k8s.io", "ResourceSlice"): _kind(
        {"spec.nodeName": _string("spec", "nodeName"), "spec.driver": _string("spec", "driver")}
    ),
}

_META_LABELS = {"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace"}


def selectable_fields(group: str, kind: str) -> frozenset[str]:
    """Field names a client may use in a selector for this kind."""
    entry = _KINDS.get((group, kind))
    return frozenset(entry.labels if entry else _META_LABELS)


def field_set(group: str, kind: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """The selectable fields of ``obj`` under their canonical names (what selectors match).

    ``metadata.namespace`` is ``""`` for cluster-scoped objects, which is also what a missing
    field reads as, so selectors behave as upstream's cluster-scoped field sets do.
    """
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    fields = {
        "metadata.name": _text(meta.get("name")),
        "metadata.namespace": _text(meta.get("namespace")),
    }
    entry = _KINDS.get((group, kind))
    if entry is not None:
        for name, extract in entry.extractors.items():
            fields[name] = extract(obj)
    return fields


def _go_quote(text: str) -> str:
    """Go's ``%q`` for the printable strings that reach these messages."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _converter(group: str, kind: str) -> Callable[[str, str], tuple[str, str]]:
    entry = _KINDS.get((group, kind))

    def convert(label: str, value: str) -> tuple[str, str]:
        if entry is None:
            if label in _META_LABELS:
                return label, value
            raise SelectorError(
                f'{_go_quote(label)} is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'
            )
        canonical = entry.labels.get(label)
        if canonical is None:
            raise SelectorError(f"field label not supported: {label}")
        return canonical, value

    return convert


def convert_for(group: str, kind: str, selector: FieldSelector) -> FieldSelector:
    """Check every field is selectable for the kind and map aliases to canonical names.

    Mirrors the apiserver applying the scheme's field-label conversion before listing; the
    error text is upstream's, and the API server should answer it with a 400 BadRequest.
    """
    return selector.transform(_converter(group, kind))


def validate_for(group: str, kind: str, selector: FieldSelector) -> None:
    """Raise :class:`SelectorError` if ``selector`` uses a field the kind cannot select on."""
    convert_for(group, kind, selector)
