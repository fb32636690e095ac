"""Server-side apply and ``metadata.managedFields``: a pure library the API server calls.

Upstream splits this between sigs.k8s.io/structured-merge-diff (typed merge, comparison,
field sets) and apiserver's ``fieldmanager`` (a stack of wrappers around it). We reproduce
the observable behaviour of that stack, in the order upstream composes it:

* **last-applied upgrade** -- for managers named ``kubectl*``, conflicts with fields that
  the ``kubectl.kubernetes.io/last-applied-configuration`` annotation still describes
  truthfully are forced through (client-side apply → server-side apply migration), and for
  the manager ``kubectl`` that annotation is rewritten from the applied configuration;
* **skip non-applied** -- an object whose managed fields were cleared is not tracked again
  by ordinary updates; the first apply then hands all existing fields to
  ``before-first-apply``;
* **cap managers** -- at most ten ``Update`` entries; the oldest collapse into
  ``ancient-changes``;
* **timestamps** -- an entry's ``time`` moves only when its write changed the object;
* **strip meta** -- identity fields (``metadata.name``, ``uid``, ...) are never owned;
* **the structured merge** -- typed by the OpenAPI definitions of :mod:`kubling.api.schema`
  (``x-kubernetes-list-type``/``-list-map-keys``/``-map-type``, with the patch-merge-key
  fallback upstream's schema converter applies), or by a CRD's ``openAPIV3Schema``, or
  deduced (maps granular, lists atomic) for kinds without a schema.

Values are plain JSON-shaped Python data. Inputs are never mutated except ``new`` in
:func:`update_managed_fields`, whose job is to set its managed fields; :func:`apply`
returns a fresh object sharing nothing mutable with its inputs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
from collections.abc import Mapping
from typing import Any, Final

import orjson

from kubling.api import _fieldpath as fp
from kubling.api import schema as schema_mod
from kubling.api._fieldpath import DOT, FieldSet, FieldsV1Error, Node

__all__ = [
    "LAST_APPLIED_ANNOTATION",
    "Conflict",
    "ConflictError",
    "FieldManagerError",
    "FieldSet",
    "FieldsV1Error",
    "Schema",
    "apply",
    "custom_schema",
    "decode_managed_fields",
    "default_manager",
    "field_set",
    "managed_field_sets",
    "paths",
    "strip_for_compare",
    "update_managed_fields",
    "validate_field_manager",
]

LAST_APPLIED_ANNOTATION: Final = "kubectl.kubernetes.io/last-applied-configuration"
BEFORE_FIRST_APPLY: Final = "before-first-apply"
ANCIENT_CHANGES: Final = "ancient-changes"
MAX_UPDATE_MANAGERS: Final = 10
FIELD_MANAGER_MAX_LENGTH: Final = 128

_EMPTY: Final[Node] = {}
_MISSING: Any = object()

# Fields nobody owns (upstream stripMetaManager): they identify the object or are set by
# the server, so recording them would only produce meaningless conflicts.
_STRIP: Final[Node] = {
    "f:apiVersion": {},
    "f:kind": {},
    "f:metadata": {
        DOT: {},
        "f:name": {},
        "f:namespace": {},
        "f:creationTimestamp": {},
        "f:selfLink": {},
        "f:uid": {},
        "f:clusterName": {},
        "f:generation": {},
        "f:managedFields": {},
        "f:resourceVersion": {},
    },
}


# --------------------------------------------------------------------------- errors


class FieldManagerError(ValueError):
    """A request server-side apply cannot process.

    ``code`` is the HTTP status upstream answers with: 400 for malformed apply requests,
    500 (reason ``""``) for configurations the typed merge rejects -- upstream returns those
    as plain errors, which the API server reports as status 500 with the message verbatim.
    """

    def __init__(self, message: str, code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclasses.dataclass(frozen=True, slots=True)
class Conflict:
    """One conflicting field: ``manager`` is upstream's printed form (``"mgr" using v1``)."""

    manager: str
    path: str
    sort_key: str


class ConflictError(Exception):
    """Apply conflicts (HTTP 409, reason ``Conflict``), worded exactly as upstream.

    ``causes`` are the ``details.causes`` of the Status: ``FieldManagerConflict`` entries
    with ``message`` ``conflict with "mgr" ...`` and ``field`` the path.
    """

    code = 409

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        self.message = _conflict_message(conflicts)
        super().__init__(self.message)

    @property
    def causes(self) -> list[dict[str, str]]:
        return [
            {
                "type": "FieldManagerConflict",
                "message": f"conflict with {c.manager}",
                "field": c.path,
            }
            for c in self.conflicts
        ]


def _conflict_message(conflicts: list[Conflict]) -> str:
    if len(conflicts) == 1:
        c = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {c.manager}: {c.path}"
    by_manager: dict[str, tuple[str, list[str]]] = {}
    for c in conflicts:
        by_manager.setdefault(c.sort_key, (c.manager, []))[1].append(c.path)
    lines: list[str] = []
    for key in sorted(by_manager):
        shown, items = by_manager[key]
        lines.append(f"conflicts with {shown}:")
        lines.extend(f"- {p}" for p in items)
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)


class _ItemError(Exception):
    """A typed-conversion problem, with the path filled in while unwinding."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def render(self) -> str:
        return f"{fp.path_string(tuple(self.path))}: {self.message}"


# --------------------------------------------------------------------------- schema types

_SCALAR, _MAP, _LIST, _DEDUCED = 0, 1, 2, 3
_ATOMIC, _SET, _ASSOC = 0, 1, 2


class _Type:
    """A compiled schema node (upstream SMD ``schema.Atom``)."""

    __slots__ = ("atomic", "elem", "fields", "key_defaults", "keys", "kind", "list_kind", "zero")

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.fields: dict[str, _Type] | None = None
        self.elem: _Type | None = None
        self.atomic = False
        self.list_kind = _ATOMIC
        self.keys: tuple[str, ...] = ()
        self.key_defaults: dict[str, Any] = {}
        # Fields Go always serializes (non-pointer structs as {}, a few lists as null): used
        # when comparing, so "added" matches what upstream sees between typed objects.
        self.zero: dict[str, Any] | None = None

    def with_atomic(self, atomic: bool) -> _Type:
        clone = _Type(self.kind)
        for slot in _Type.__slots__:
            setattr(clone, slot, getattr(self, slot))
        clone.atomic = atomic
        return clone


_SCALAR_T: Final = _Type(_SCALAR)
_DEDUCED_T: Final = _Type(_DEDUCED)
_DEDUCED_MAP: Final = _Type(_MAP)
_DEDUCED_MAP.elem = _DEDUCED_T
_ATOMIC_LIST: Final = _Type(_LIST)
_ATOMIC_LIST.atomic = True
_ATOMIC_LIST.elem = _DEDUCED_T

_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_SCALAR_DEFS = frozenset(
    {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "io.k8s.apimachinery.pkg.api.resource.Quantity",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
    }
)
_DEDUCED_DEFS = frozenset(
    {
        "io.k8s.apimachinery.pkg.runtime.RawExtension",
        "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
    }
)
# Non-pointer struct fields in the Go types (always serialized, at least as {}). The OpenAPI
# we ship has no trace of Go pointers, so this is the upstream convention spelled out.
_VALUE_STRUCT_FIELDS = frozenset(
    {"metadata", "spec", "status", "strategy", "updateStrategy", "jobTemplate", "roleRef"}
)
_NULL_LIST_FIELDS: Final = {("io.k8s.api.core.v1.PodSpec", "containers")}
# Upstream declares these associative-key defaults in the OpenAPI ("default": "TCP").
_KEY_DEFAULTS: Final = {"protocol": "TCP"}

_types: dict[str, _Type] = {}
_pending: dict[str, _Type] = {}  # under construction (cyclic definitions), lock held
_types_lock = threading.RLock()


def _strip_ref(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _compile_def(name: str) -> _Type:
    """The compiled type of a definition; published to the shared cache only complete."""
    cached = _types.get(name)
    if cached is not None:
        return cached
    with _types_lock:
        cached = _types.get(name) or _pending.get(name)
        if cached is not None:
            return cached
        outermost = not _pending
        try:
            t = _build_def(name)
            if outermost:
                _types.update(_pending)
        finally:
            if outermost:
                _pending.clear()
        return t


def _build_def(name: str) -> _Type:
    if name in _SCALAR_DEFS:
        _pending[name] = _SCALAR_T
        return _SCALAR_T
    if name in _DEDUCED_DEFS:
        _pending[name] = _DEDUCED_T
        return _DEDUCED_T
    try:
        raw = schema_mod.resolve(name)
    except KeyError:
        _pending[name] = _DEDUCED_T
        return _DEDUCED_T
    props = raw.get("properties")
    if isinstance(props, dict):
        t = _Type(_MAP)
        _pending[name] = t  # before recursing: definitions can be cyclic
        t.atomic = raw.get("x-kubernetes-map-type") == "atomic"
        fields: dict[str, _Type] = {}
        zero: dict[str, Any] = {}
        for field, prop in props.items():
            ft = _compile_prop(prop, name)
            fields[field] = ft
            ref = prop.get("$ref")
            if isinstance(ref, str) and ft.kind == _MAP and ft.fields is not None:
                target = _strip_ref(ref)
                if (
                    field in _VALUE_STRUCT_FIELDS
                    or (field == "template" and not name.endswith("ReplicationControllerSpec"))
                    or (field == "resources" and target.endswith("ResourceRequirements"))
                ):
                    zero[field] = {}
            if (name, field) in _NULL_LIST_FIELDS:
                zero[field] = None
        t.fields = fields
        t.zero = zero or None
        if raw.get("x-kubernetes-preserve-unknown-fields") is True:
            t.elem = _DEDUCED_T
        return t
    t = _compile_prop(raw, name)
    _pending[name] = t
    return t


def _compile_prop(prop: Mapping[str, Any], owner: str | None) -> _Type:
    ref = prop.get("$ref")
    map_type = prop.get("x-kubernetes-map-type")
    if isinstance(ref, str):
        t = _compile_def(_strip_ref(ref))
        if map_type in ("atomic", "granular") and t.kind == _MAP:
            atomic = map_type == "atomic"
            if atomic != t.atomic:
                t = t.with_atomic(atomic)
        return t
    if prop.get("x-kubernetes-int-or-string") is True or "oneOf" in prop or "anyOf" in prop:
        return _SCALAR_T
    kind = schema_mod.primary_type(prop.get("type"))
    preserve = prop.get("x-kubernetes-preserve-unknown-fields") is True
    if kind == "object":
        props = prop.get("properties")
        extra = prop.get("additionalProperties")
        if isinstance(props, Mapping) and props:
            t = _Type(_MAP)
            t.fields = {
                k: _compile_prop(v, None) for k, v in props.items() if isinstance(v, Mapping)
            }
            if preserve:
                t.elem = _DEDUCED_T
            elif isinstance(extra, Mapping):
                t.elem = _compile_prop(extra, None)
        elif isinstance(extra, Mapping):
            t = _Type(_MAP)
            t.elem = _compile_prop(extra, None)
        else:
            t = _Type(_MAP)
            t.elem = _DEDUCED_T
        t.atomic = map_type == "atomic"
        return t
    if kind == "array":
        t = _Type(_LIST)
        items = prop.get("items")
        t.elem = _compile_prop(items, None) if isinstance(items, Mapping) else _DEDUCED_T
        list_type = prop.get("x-kubernetes-list-type")
        if list_type == "map":
            t.list_kind = _ASSOC
            t.keys = tuple(prop.get("x-kubernetes-list-map-keys") or ())
        elif list_type == "set":
            t.list_kind = _SET
        elif list_type is None and str(prop.get("x-kubernetes-patch-strategy", "")) in (
            "merge",
            "merge,retainKeys",
        ):
            # Upstream's OpenAPI → SMD converter: patch-merge-key lists are associative.
            key = prop.get("x-kubernetes-patch-merge-key")
            if isinstance(key, str):
                t.list_kind = _ASSOC
                t.keys = (key,)
            else:
                t.list_kind = _SET
        t.atomic = t.list_kind == _ATOMIC
        if t.keys:
            t.key_defaults = _key_defaults(t.keys, items, owner)
        return t
    if preserve and kind is None:
        return _DEDUCED_T
    return _SCALAR_T


def _key_defaults(keys: tuple[str, ...], items: Any, owner: str | None) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    item_props: Mapping[str, Any] = {}
    if isinstance(items, Mapping):
        if isinstance(items.get("properties"), Mapping):
            item_props = items["properties"]
    for key in keys:
        prop = item_props.get(key)
        if isinstance(prop, Mapping) and "default" in prop:
            defaults[key] = prop["default"]
        elif owner is not None and key in _KEY_DEFAULTS:
            defaults[key] = _KEY_DEFAULTS[key]
    return defaults


class Schema:
    """A compiled type for a whole object (see :func:`custom_schema`)."""

    __slots__ = ("_type",)

    def __init__(self, root: _Type) -> None:
        self._type = root


def _with_object_meta(t: _Type) -> _Type:
    """Objects always get the typed ``metadata`` and scalar ``apiVersion``/``kind``."""
    root = _Type(_MAP)
    root.fields = dict(t.fields or {})
    root.fields["metadata"] = _compile_def(_OBJECT_META)
    root.fields.setdefault("apiVersion", _SCALAR_T)
    root.fields.setdefault("kind", _SCALAR_T)
    root.elem = t.elem if t.kind == _MAP else _DEDUCED_T
    root.zero = {"metadata": {}}
    return root


@functools.lru_cache(maxsize=256)
def _custom_schema_cached(text: bytes) -> Schema:
    return Schema(_with_object_meta(_compile_prop(orjson.loads(text), None)))


def custom_schema(openapi_v3: Mapping[str, Any]) -> Schema:
    """Compile a CRD ``openAPIV3Schema`` (cached by content) for :func:`apply` and friends."""
    return _custom_schema_cached(orjson.dumps(openapi_v3, option=orjson.OPT_SORT_KEYS))


_DEDUCED_OBJECT: Final = Schema(_with_object_meta(_DEDUCED_MAP))


def _root_type(definition: str | Schema | Mapping[str, Any] | None, obj: Any) -> _Type:
    if isinstance(definition, Schema):
        return definition._type
    if isinstance(definition, str):
        return _compile_def(_strip_ref(definition))
    if isinstance(definition, Mapping):
        return custom_schema(definition)._type
    if isinstance(obj, Mapping):
        api_version = obj.get("apiVersion")
        kind = obj.get("kind")
        if isinstance(api_version, str) and isinstance(kind, str):
            group, _, version = api_version.rpartition("/")
            name = schema_mod.definition_for(group, version, kind)
            if name is not None:
                return _compile_def(name)
    return _DEDUCED_OBJECT._type


def _deduce(value: Any) -> _Type:
    if isinstance(value, dict):
        return _DEDUCED_MAP
    if isinstance(value, list):
        return _ATOMIC_LIST
    return _SCALAR_T


def _child_type(t: _Type, element: str) -> tuple[_Type, bool]:
    """Type below a path element, and whether it is a declared (named) struct field."""
    if element.startswith("f:"):
        fields = t.fields
        if fields is not None:
            ft = fields.get(element[2:])
            if ft is not None:
                return ft, True
    return t.elem or _DEDUCED_T, False


# --------------------------------------------------------------------------- list items


def _item_element(t: _Type, item: Any, index: int, strict: bool) -> str:
    """The path element of a list item (``k:`` for keyed lists, ``v:`` for sets)."""
    if t.keys:
        if not isinstance(item, dict):
            if item is None:
                if strict:
                    raise _ItemError(
                        f"element {index}: associative list with keys may not have a null element"
                    )
            elif strict:
                raise _ItemError(
                    f"element {index}: associative list with keys may not have non-map elements"
                )
            return fp.index_element(index)
        key: dict[str, Any] = {}
        for name in t.keys:
            if name in item:
                key[name] = item[name]
            elif name in t.key_defaults:
                key[name] = t.key_defaults[name]
            elif strict:
                raise _ItemError(
                    f"element {index}: associative list with keys has an element that omits key "
                    f'field "{name}" (and doesn\'t have default value)'
                )
            else:
                return fp.index_element(index)
        if len(key) == 1:
            ((name, value),) = key.items()
            if (
                isinstance(value, str)
                and value.isprintable()
                and '"' not in value
                and "\\" not in value
            ):
                if "<" not in value and ">" not in value and "&" not in value:
                    return f'k:{{"{name}":"{value}"}}'
        return fp.key_element(key)
    if isinstance(item, dict | list) or item is None:
        if strict:
            if isinstance(item, dict):
                why = "associative list without keys has an element that's a map type"
            elif isinstance(item, list):
                why = "not supported: associative list with lists as elements"
            else:
                why = "associative list without keys has an element that's an explicit null"
            raise _ItemError(f"element {index}: {why}")
        return fp.index_element(index)
    return fp.value_element(item)


def _index_items(t: _Type, items: list[Any], strict: bool) -> tuple[list[str], dict[str, Any]]:
    elements: list[str] = []
    by_element: dict[str, Any] = {}
    for i, item in enumerate(items):
        element = _item_element(t, item, i, strict)
        if element in by_element:
            if strict:
                raise _ItemError(f"duplicate entries for key {fp.element_string(element)}")
        else:
            by_element[element] = item
        elements.append(element)
    return elements, by_element


# --------------------------------------------------------------------------- field sets


def _mk(member: bool, children: Node) -> Node | None:
    if children:
        if member:
            children[DOT] = _EMPTY
        return children
    return _EMPTY if member else None


def _collect(value: Any, t: _Type, strict: bool) -> Node:
    """Children of the field set of ``value`` (upstream ``TypedValue.ToFieldSet``)."""
    if t.kind == _DEDUCED:
        t = _deduce(value)
    if t.kind == _MAP and not t.atomic and isinstance(value, dict):
        children: Node = {}
        fields = t.fields
        for key, child in value.items():
            ft = fields.get(key) if fields is not None else None
            declared = ft is not None
            if ft is None:
                ft = t.elem
                if ft is None:
                    if strict:
                        error = _ItemError("field not declared in schema")
                        error.path.append("f:" + key)
                        raise error
                    ft = _DEDUCED_T
            try:
                sub = _collect(child, ft, strict)
            except _ItemError as error:
                error.path.insert(0, "f:" + key)
                raise
            member = not declared or child is None or (isinstance(child, dict) and not child)
            if not sub:
                if member or _is_leaf(child, ft):
                    children["f:" + key] = _EMPTY
            else:
                if member:
                    sub[DOT] = _EMPTY
                children["f:" + key] = sub
        return children
    if t.kind == _LIST and not t.atomic and isinstance(value, list):
        children = {}
        elem = t.elem or _DEDUCED_T
        for i, item in enumerate(value):
            element = _item_element(t, item, i, strict)
            if element in children:
                if strict:
                    raise _ItemError(f"duplicate entries for key {fp.element_string(element)}")
                continue
            try:
                sub = _collect(item, elem, strict)
            except _ItemError as error:
                error.path.insert(0, element)
                raise
            if sub:
                sub[DOT] = _EMPTY
                children[element] = sub
            else:
                children[element] = _EMPTY
        return children
    return {}


def _is_leaf(value: Any, t: _Type) -> bool:
    """Whether ``value`` is recorded as a member by itself (scalars and atomic values)."""
    if t.kind == _DEDUCED:
        t = _deduce(value)
    if t.kind == _MAP:
        return t.atomic or not isinstance(value, dict)
    if t.kind == _LIST:
        return t.atomic or not isinstance(value, list)
    return True


def field_set(
    obj: Mapping[str, Any], definition: str | Schema | Mapping[str, Any] | None = None
) -> FieldSet:
    """The fields ``obj`` sets, as upstream's ``ToFieldSet`` records them for an applier.

    ``definition`` is a definition name (``io.k8s.api.apps.v1.Deployment``), a
    :class:`Schema`, a CRD ``openAPIV3Schema``, or None to look the kind up from the object
    (unknown kinds are deduced: maps granular, lists atomic). Raises
    :class:`FieldManagerError` for objects the typed conversion rejects (missing list keys,
    duplicate keys, undeclared fields).
    """
    t = _root_type(definition, obj)
    try:
        return FieldSet(_collect(obj, t, True))
    except _ItemError as error:
        raise FieldManagerError(error.render()) from None


def paths(*dotted: str) -> FieldSet:
    """A set of plain field paths: ``paths("status", "metadata.labels")`` (for reset fields)."""
    return FieldSet.from_paths([tuple("f:" + p for p in d.split(".")) for d in dotted])


def _ensure_named(node: Node, t: _Type) -> Node:
    """Mark struct fields that have owned children as owned themselves (upstream
    ``EnsureNamedFieldsAreMembers``), so pruning a parent respects owned children."""
    out: Node | None = None
    for key, child in node.items():
        if key == DOT or not child:
            continue
        ct, named = _child_type(t, key)
        if ct.kind == _DEDUCED:
            ct = _DEDUCED_MAP
        new_child = _ensure_named(child, ct)
        if named and DOT not in new_child:
            new_child = {DOT: _EMPTY, **new_child}
        if new_child is not child:
            if out is None:
                out = dict(node)
            out[key] = new_child
    return out if out is not None else node


# --------------------------------------------------------------------------- merge


def _merge(lhs: Any, rhs: Any, t: _Type) -> Any:
    """Apply ``rhs`` (the configuration) onto ``lhs``: upstream ``Merge`` with keep-RHS."""
    if lhs is _MISSING or lhs is rhs:
        return rhs
    if t.kind == _DEDUCED:
        t = _deduce(rhs if rhs is not None else lhs)
    if t.kind == _MAP and not t.atomic:
        if isinstance(lhs, dict) and isinstance(rhs, dict):
            if not lhs:
                return rhs
            if not rhs:
                return rhs if not lhs else lhs
            out = dict(lhs)
            fields = t.fields
            for key, rv in rhs.items():
                lv = out.get(key, _MISSING)
                if lv is _MISSING:
                    out[key] = rv
                else:
                    ft = fields.get(key) if fields is not None else None
                    out[key] = _merge(lv, rv, ft or t.elem or _DEDUCED_T)
            return out
        if rhs is None and isinstance(lhs, dict):
            return lhs
        return rhs
    if t.kind == _LIST and not t.atomic:
        if isinstance(lhs, list) and isinstance(rhs, list):
            if not rhs and not lhs:
                return rhs
            return _merge_list(lhs, rhs, t)
        if rhs is None and isinstance(lhs, list) and lhs:
            return lhs
        return rhs
    return rhs


def _merge_list(lhs: list[Any], rhs: list[Any], t: _Type) -> list[Any]:
    """Merge associative lists keeping live order, with the configuration's order among
    shared items and new items placed next to their configured neighbours (upstream)."""
    elem = t.elem or _DEDUCED_T
    r_pes, r_map = _index_items(t, rhs, False)
    l_pes, l_map = _index_items(t, lhs, False)
    shared = [pe for pe in r_pes if pe in l_map]
    shared_at = 0
    next_shared = shared[0] if shared else None
    merged: set[str] = set()
    out: list[Any] = []
    li = ri = 0
    n_l, n_r = len(l_pes), len(r_pes)
    while li < n_l or ri < n_r:
        if li < n_l and ri < n_r:
            pe = l_pes[li]
            if pe == r_pes[ri]:
                if pe not in merged:
                    merged.add(pe)
                    out.append(_merge(lhs[li], rhs[ri], elem))
                li += 1
                ri += 1
                shared_at += 1
                next_shared = shared[shared_at] if shared_at < len(shared) else None
                continue
            if pe in r_map and next_shared is not None and next_shared != pe:
                li += 1
                continue
        if li < n_l:
            pe = l_pes[li]
            if pe not in r_map:
                out.append(lhs[li])
                li += 1
                continue
            if pe in merged:
                li += 1
                continue
        if ri < n_r:
            pe = r_pes[ri]
            if pe not in merged:
                merged.add(pe)
                out.append(_merge(l_map.get(pe, _MISSING), rhs[ri], elem))
            ri += 1
            if next_shared is not None and next_shared == pe:
                shared_at += 1
                next_shared = shared[shared_at] if shared_at < len(shared) else None
    return out


# --------------------------------------------------------------------------- compare


def _compare(lhs: Any, rhs: Any, t: _Type) -> tuple[Node | None, Node | None, Node | None]:
    """(added, modified, removed) nodes for one path (upstream ``TypedValue.Compare``)."""
    if lhs is rhs:
        return None, None, None
    if t.kind == _DEDUCED:
        t = _deduce(rhs if rhs is not _MISSING else lhs)
    kind = t.kind
    if kind == _MAP and not t.atomic:
        lm = lhs if isinstance(lhs, dict) else ({} if lhs is None or lhs is _MISSING else None)
        rm = rhs if isinstance(rhs, dict) else ({} if rhs is None or rhs is _MISSING else None)
        if lm is not None and rm is not None and (lm or rm):
            added: Node = {}
            modified: Node = {}
            removed: Node = {}
            fields = t.fields
            zero = t.zero
            for key, lv in lm.items():
                rv = rm.get(key, _MISSING)
                if rv is _MISSING and zero is not None and key in zero and rhs is not _MISSING:
                    rv = zero[key]
                if lv is rv:
                    continue
                ft = fields.get(key) if fields is not None else None
                a, m, r = _compare(lv, rv, ft or t.elem or _DEDUCED_T)
                if a is not None:
                    added["f:" + key] = a
                if m is not None:
                    modified["f:" + key] = m
                if r is not None:
                    removed["f:" + key] = r
            for key, rv in rm.items():
                if key in lm:
                    continue
                lv = _MISSING
                if zero is not None and key in zero and lhs is not _MISSING:
                    lv = zero[key]
                ft = fields.get(key) if fields is not None else None
                a, m, r = _compare(lv, rv, ft or t.elem or _DEDUCED_T)
                if a is not None:
                    added["f:" + key] = a
                if m is not None:
                    modified["f:" + key] = m
                if r is not None:
                    removed["f:" + key] = r
            return (
                _mk(lhs is _MISSING, added),
                modified or None,
                _mk(rhs is _MISSING, removed),
            )
    elif kind == _LIST and not t.atomic:
        ll = lhs if isinstance(lhs, list) else ([] if lhs is None or lhs is _MISSING else None)
        rl = rhs if isinstance(rhs, list) else ([] if rhs is None or rhs is _MISSING else None)
        if ll is not None and rl is not None and (ll or rl):
            added = {}
            modified = {}
            removed = {}
            elem = t.elem or _DEDUCED_T
            _, l_map = _index_items(t, ll, False)
            _, r_map = _index_items(t, rl, False)
            for pe, lv in l_map.items():
                a, m, r = _compare(lv, r_map.get(pe, _MISSING), elem)
                if a is not None:
                    added[pe] = a
                if m is not None:
                    modified[pe] = m
                if r is not None:
                    removed[pe] = r
            for pe, rv in r_map.items():
                if pe in l_map:
                    continue
                a, _, _ = _compare(_MISSING, rv, elem)
                if a is not None:
                    added[pe] = a
            return (
                _mk(lhs is _MISSING, added),
                modified or None,
                _mk(rhs is _MISSING, removed),
            )
    if lhs is _MISSING:
        return _EMPTY, None, None
    if rhs is _MISSING:
        return None, None, _EMPTY
    if lhs == rhs and type(lhs) is type(rhs):
        return None, None, None
    if lhs == rhs and isinstance(lhs, int | float) and isinstance(rhs, int | float):
        if not isinstance(lhs, bool) and not isinstance(rhs, bool):
            return None, None, None
    return None, _EMPTY, None


def _compare_objects(old: Any, new: Any, t: _Type) -> tuple[Node, Node, Node]:
    a, m, r = _compare(old, new, t)
    return (
        {k: v for k, v in (a or {}).items() if k != DOT},
        m or {},
        {k: v for k, v in (r or {}).items() if k != DOT},
    )


# --------------------------------------------------------------------------- remove


def _remove(value: Any, node: Node, t: _Type) -> Any:
    """``value`` without the members of ``node`` (whole subtrees); emptied containers go."""
    if t.kind == _DEDUCED:
        t = _deduce(value)
    if t.kind == _MAP and not t.atomic and isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        fields = t.fields
        for key, child in value.items():
            sub = node.get("f:" + key)
            if sub is None:
                out[key] = child
            elif fp.is_member(sub):
                continue
            else:
                ft = fields.get(key) if fields is not None else None
                kept = _remove(child, sub, ft or t.elem or _DEDUCED_T)
                if kept is not _MISSING:
                    out[key] = kept
        return out if out else _MISSING
    if t.kind == _LIST and not t.atomic and isinstance(value, list) and value:
        items: list[Any] = []
        elem = t.elem or _DEDUCED_T
        for i, item in enumerate(value):
            sub = node.get(_item_element(t, item, i, False))
            if sub is None:
                items.append(item)
            elif fp.is_member(sub):
                continue
            else:
                kept = _remove(item, sub, elem)
                if kept is not _MISSING:
                    items.append(kept)
        return items if items else _MISSING
    return value


# --------------------------------------------------------------------------- managed fields


@dataclasses.dataclass(slots=True)
class _Entry:
    manager: str
    operation: str
    api_version: str
    subresource: str
    time: str | None
    root: Node

    @property
    def key(self) -> tuple[str, str, str, str]:
        return _manager_key(self.manager, self.operation, self.api_version, self.subresource)

    def identifier(self) -> str:
        """Upstream's manager identifier: the entry JSON without fields, time (and, for
        appliers, apiVersion); it is also the order conflicts are reported in."""
        data: dict[str, str] = {"manager": self.manager, "operation": self.operation}
        if self.operation != "Apply" and self.api_version:
            data["apiVersion"] = self.api_version
        if self.subresource:
            data["subresource"] = self.subresource
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    def printed(self) -> str:
        text = json.dumps(self.manager, ensure_ascii=False)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource, ensure_ascii=False)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text


def _manager_key(
    manager: str, operation: str, api_version: str, sub: str
) -> tuple[str, str, str, str]:
    return (manager, operation, "" if operation == "Apply" else api_version, sub)


_Managed = dict[tuple[str, str, str, str], _Entry]


def decode_managed_fields(
    entries: Any, *, validate: bool = True
) -> dict[tuple[str, str, str, str], Any]:
    """Parse ``metadata.managedFields`` (``ValueError`` when malformed, as upstream rejects).

    Keys are ``(manager, operation, apiVersion-or-"" for Apply, subresource)``: one entry per
    manager identifier, as upstream keeps them.
    """
    return dict(_decode(entries, validate))


def _decode(entries: Any, validate: bool) -> _Managed:
    managed: _Managed = {}
    if entries is None:
        return managed
    if not isinstance(entries, list):
        raise ValueError("managedFields must be a list")
    for raw in entries:
        if not isinstance(raw, dict):
            raise ValueError("managedFields entries must be objects")
        operation = raw.get("operation")
        if operation not in ("Apply", "Update"):
            raise ValueError(f"operation must be `Apply` or `Update`, got {operation!r}")
        fields_type = raw.get("fieldsType")
        if fields_type != "FieldsV1":
            raise ValueError(f'invalid fieldsType: expected "FieldsV1", got {fields_type!r}')
        fields = raw.get("fieldsV1")
        root = fp.from_fieldsv1(fields, validate=validate) if fields is not None else {}
        time = raw.get("time")
        entry = _Entry(
            manager=str(raw.get("manager") or ""),
            operation=operation,
            api_version=str(raw.get("apiVersion") or ""),
            subresource=str(raw.get("subresource") or ""),
            time=time if isinstance(time, str) else None,
            root=root,
        )
        previous = managed.get(entry.key)
        if previous is not None:
            entry.root = fp.union_children(previous.root, entry.root)
        managed[entry.key] = entry
    return managed


def _encode(managed: _Managed) -> list[dict[str, Any]]:
    entries = sorted(
        managed.values(),
        key=lambda e: (e.operation, e.time or "", e.manager, e.api_version, e.subresource),
    )
    out: list[dict[str, Any]] = []
    for e in entries:
        item: dict[str, Any] = {"manager": e.manager, "operation": e.operation}
        if e.api_version:
            item["apiVersion"] = e.api_version
        if e.time is not None:
            item["time"] = e.time
        item["fieldsType"] = "FieldsV1"
        item["fieldsV1"] = fp.to_fieldsv1(e.root)
        if e.subresource:
            item["subresource"] = e.subresource
        out.append(item)
    return out


def _cap(managed: _Managed) -> None:
    """Fold the oldest ``Update`` entries into ``ancient-changes`` beyond ten (upstream)."""
    updaters = [e for e in managed.values() if e.operation == "Update"]
    if len(updaters) <= MAX_UPDATE_MANAGERS:
        return
    updaters.sort(key=lambda e: (e.time or "", e.identifier()))
    first_by_version: dict[str, _Entry] = {}
    length = len(updaters)
    for entry in updaters:
        if length <= MAX_UPDATE_MANAGERS:
            break
        bucket_key = _manager_key(ANCIENT_CHANGES, "Update", entry.api_version, "")
        first = first_by_version.get(entry.api_version)
        if first is None:
            first_by_version[entry.api_version] = entry
            continue
        bucket = managed.get(bucket_key)
        if bucket is None:
            managed.pop(first.key, None)
            bucket = _Entry(
                ANCIENT_CHANGES, "Update", entry.api_version, "", first.time, first.root
            )
            managed[bucket_key] = bucket
        bucket.root = fp.union_children(entry.root, bucket.root)
        bucket.time = entry.time
        managed.pop(entry.key, None)
        length -= 1


def _without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        meta = dict(meta)
        del meta["managedFields"]
        out["metadata"] = meta
    return out


def strip_for_compare(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without ``metadata.managedFields`` (shallow copy), to tell no-op writes apart."""
    return _without_managed_fields(obj)


def _filter(node: Node, ignored: FieldSet | None) -> Node:
    if ignored is None or not ignored.root:
        return node
    return fp.recursive_difference_children(node, ignored.root)


def _update_sets(
    managed: _Managed,
    old: Any,
    new: Any,
    t: _Type,
    key: tuple[str, str, str, str],
    entry: _Entry,
    ignored: FieldSet | None,
) -> bool:
    """Upstream ``Updater.Update`` plus the timestamp/strip wrappers; True if ``manager``
    took any fields (the object changed)."""
    added, modified, removed = _compare_objects(old, new, t)
    added = _filter(added, ignored)
    modified = _filter(modified, ignored)
    removed = _filter(removed, ignored)
    changed = fp.union_children(added, modified)
    for k in list(managed):
        e = managed[k]
        root = fp.difference_children(fp.difference_children(e.root, changed), removed)
        if not root:
            del managed[k]
        elif root is not e.root:
            managed[k] = dataclasses.replace(e, root=root)
    mine = fp.difference_children(changed, _STRIP)
    if not mine:
        return False
    previous = managed.get(key)
    entry.root = fp.union_children(previous.root, mine) if previous is not None else mine
    managed[key] = entry
    return True


def default_manager(user_agent: str) -> str:
    """The manager name for a write without ``fieldManager``: the User-Agent's product.

    Upstream takes what precedes the first ``/`` (``kubectl/v1.32.0 (linux/amd64) ...`` →
    ``kubectl``), drops non-printable characters and truncates to 128 bytes; an empty result
    becomes ``unknown``. (kubectl's ``kubectl-edit``, ``kubectl-client-side-apply``, ...
    arrive as explicit ``fieldManager`` parameters, not through the User-Agent.)
    """
    head = user_agent.split("/", 1)[0]
    out: list[str] = []
    size = 0
    for ch in head:
        if not ch.isprintable():  # Python's notion matches Go's unicode.IsPrint
            continue
        n = len(ch.encode())
        if size + n > FIELD_MANAGER_MAX_LENGTH:
            break
        out.append(ch)
        size += n
    return "".join(out) or "unknown"


def validate_field_manager(manager: str, *, apply: bool = False) -> str | None:
    """Upstream's field-error text for a bad ``fieldManager`` query parameter, or None.

    The server wraps it as ``PatchOptions.meta.k8s.io "" is invalid: <this>`` (422).
    """
    if apply and manager == "":
        return "fieldManager: Required value: is required for apply patch"
    errors: list[str] = []
    if len(manager.encode()) > FIELD_MANAGER_MAX_LENGTH:
        errors.append(
            f"fieldManager: Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes"
        )
    position = 0
    for ch in manager:
        if not ch.isprintable():
            errors.append(
                f"fieldManager: Invalid value: {json.dumps(manager)}: invalid character "
                f"U+{ord(ch):04X} (at position {position})"
            )
        position += len(ch.encode())
    if not errors:
        return None
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


def _gvk(obj: Mapping[str, Any]) -> str:
    api_version = str(obj.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    return f"{group}/{version}, Kind={obj.get('kind') or ''}"


def _copy(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        annotations = meta.get("annotations")
        if isinstance(annotations, Mapping):
            return annotations
    return {}


def _build_last_applied(config: Mapping[str, Any]) -> str:
    """The annotation upstream writes: the applied config without the annotation, encoded
    by Go's JSON encoder (sorted keys, HTML-escaped, trailing newline)."""
    obj = _copy(config)
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        meta["annotations"].pop(LAST_APPLIED_ANNOTATION, None)
    return fp.go_json(obj) + "\n"


# --------------------------------------------------------------------------- apply

_ANNOTATIONS_MAX_BYTES: Final = 256 * 1024


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


def _drop_nulls(result: Any, config: Any, t: _Type) -> None:
    """Remove struct fields the configuration set to ``null`` from the (fresh) result, as
    upstream's round trip through Go types does: ``null`` means "own this field, unset"."""
    if t.kind == _DEDUCED:
        return
    if t.kind == _MAP and isinstance(result, dict) and isinstance(config, dict):
        fields = t.fields
        for key, child in config.items():
            ft = fields.get(key) if fields is not None else None
            if child is None:
                if ft is not None and result.get(key, 0) is None:
                    del result[key]
            elif isinstance(child, dict | list) and key in result:
                _drop_nulls(result[key], child, ft or t.elem or _DEDUCED_T)
    elif t.kind == _LIST and not t.atomic and isinstance(result, list):
        if not isinstance(config, list) or not t.keys:
            return
        elem = t.elem or _DEDUCED_T
        _, by_element = _index_items(t, config, False)
        for i, item in enumerate(result):
            wanted = by_element.get(_item_element(t, item, i, False))
            if isinstance(wanted, dict):
                _drop_nulls(item, wanted, elem)


class _Conflicts(Exception):
    def __init__(self, found: dict[tuple[str, str, str, str], tuple[_Entry, Node]]) -> None:
        super().__init__("conflicts")
        self.found = found

    def to_error(self, allowed: Node | None = None) -> ConflictError | None:
        conflicts: list[Conflict] = []
        for entry, node in sorted(self.found.values(), key=lambda p: p[0].identifier()):
            shown, ident = entry.printed(), entry.identifier()
            for path in fp.iterate(node):
                if allowed is not None and fp.has_path(allowed, path):
                    continue
                conflicts.append(Conflict(shown, fp.path_string(path), ident))
        return ConflictError(conflicts) if conflicts else None


def apply(
    live: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    *,
    manager: str,
    force: bool = False,
    definition: str | Schema | Mapping[str, Any] | None = None,
    now: str,
    subresource: str = "",
    ignored: FieldSet | None = None,
) -> dict[str, Any]:
    """Server-side apply ``config`` onto ``live`` (None: the object does not exist yet).

    Returns the new object with ``metadata.managedFields`` updated. When nothing but
    ownership changed, the result equals ``live`` apart from managed fields and the
    applier's timestamp is left alone (compare with :func:`strip_for_compare` to skip the
    write). ``ignored`` are fields the caller resets anyway (``status`` on the main resource,
    everything but ``status`` on the status subresource): they are neither merged nor owned.

    Raises :class:`ConflictError` (409) or :class:`FieldManagerError`.
    """
    if not isinstance(config, Mapping):
        raise FieldManagerError("apply patch must be a JSON object", 400)
    meta = config.get("metadata")
    if isinstance(meta, Mapping) and meta.get("managedFields") is not None:
        raise FieldManagerError("metadata.managedFields must be nil", 400)
    t = _root_type(definition, config)
    cfg: Any = dict(config)
    if ignored is not None and ignored.root:
        cfg = _remove(cfg, ignored.root, t)
        if cfg is _MISSING:
            cfg = {}
    try:
        cfg_root = _collect(cfg, t, True)
    except _ItemError as error:
        raise FieldManagerError(
            f"failed to create typed patch object ({_gvk(config)}): {error.render()}"
        ) from None
    api_version = str(config.get("apiVersion") or (live or {}).get("apiVersion") or "")
    live_obj: dict[str, Any] = _without_managed_fields(live) if live is not None else {}
    live_meta = live.get("metadata") if live is not None else None
    try:
        managed = _decode(
            live_meta.get("managedFields") if isinstance(live_meta, Mapping) else None, False
        )
    except (ValueError, FieldsV1Error):
        managed = {}
    if not managed and live is not None:
        # Upstream skipNonAppliedManager: existing fields go to "before-first-apply".
        live_version = str(live.get("apiVersion") or api_version)
        key = _manager_key(BEFORE_FIRST_APPLY, "Update", live_version, subresource)
        entry = _Entry(BEFORE_FIRST_APPLY, "Update", live_version, subresource, now, {})
        _update_sets(managed, {}, live_obj, t, key, entry, ignored)
    try:
        merged, managed = _apply_core(
            live_obj,
            cfg,
            cfg_root,
            managed,
            t,
            manager,
            api_version,
            subresource,
            force,
            now,
            ignored,
        )
    except _Conflicts as conflicts:
        allowed = None
        if manager.startswith("kubectl") and live is not None:
            allowed = _allowed_from_last_applied(live_obj, t)
        remaining = conflicts.to_error(allowed)
        if remaining is not None:
            raise remaining from None
        merged, managed = _apply_core(
            live_obj,
            cfg,
            cfg_root,
            managed,
            t,
            manager,
            api_version,
            subresource,
            True,
            now,
            ignored,
        )
    _cap(managed)
    result: dict[str, Any] = _copy(merged)
    if t.fields is not None and _has_null(cfg):
        _drop_nulls(result, cfg, t)
    if manager == "kubectl" and LAST_APPLIED_ANNOTATION in _annotations(result):
        annotations = result["metadata"]["annotations"]
        annotations[LAST_APPLIED_ANNOTATION] = _build_last_applied(config)
        if sum(len(k) + len(str(v)) for k, v in annotations.items()) > _ANNOTATIONS_MAX_BYTES:
            del annotations[LAST_APPLIED_ANNOTATION]  # upstream drops it rather than fail
    if not isinstance(result.get("metadata"), dict):
        result["metadata"] = {}
    encoded = _encode(managed)
    if encoded:
        result["metadata"]["managedFields"] = encoded
    else:
        result["metadata"].pop("managedFields", None)
    return result


def _apply_core(
    live: dict[str, Any],
    cfg: Any,
    cfg_root: Node,
    managed: _Managed,
    t: _Type,
    manager: str,
    api_version: str,
    subresource: str,
    force: bool,
    now: str,
    ignored: FieldSet | None,
) -> tuple[Any, _Managed]:
    managed = dict(managed)
    key = _manager_key(manager, "Apply", api_version, subresource)
    last = managed.get(key)
    merged = _merge(live, cfg, t)
    managed[key] = _Entry(
        manager, "Apply", api_version, subresource, last.time if last else None, cfg_root
    )
    if last is not None and last.root:
        owned: Node = _STRIP
        for entry in managed.values():
            owned = fp.union_children(owned, entry.root)
        prune = fp.difference_children(_ensure_named(last.root, t), _ensure_named(owned, t))
        if prune:
            merged = _remove(merged, prune, t)
            if merged is _MISSING:
                merged = {}
    added, modified, removed = _compare_objects(live, merged, t)
    object_changed = bool(added or modified or removed)
    added = _filter(added, ignored)
    modified = _filter(modified, ignored)
    removed = _filter(removed, ignored)
    changed = fp.union_children(added, modified)
    found: dict[tuple[str, str, str, str], tuple[_Entry, Node]] = {}
    if changed:
        for k, entry in managed.items():
            if k == key:
                continue
            overlap = fp.intersection_children(entry.root, changed)
            if overlap:
                found[k] = (entry, overlap)
    if found and not force:
        raise _Conflicts(found)
    for k in list(managed):
        if k == key:
            continue
        entry = managed[k]
        root = entry.root
        if k in found:
            root = fp.difference_children(root, found[k][1])
        root = fp.difference_children(root, removed)
        if not root:
            del managed[k]
        elif root is not entry.root:
            managed[k] = dataclasses.replace(entry, root=root)
    mine = managed[key]
    mine.root = fp.difference_children(mine.root, _STRIP)
    if object_changed:
        mine.time = now
    if not mine.root:
        del managed[key]
    return merged, managed


def _allowed_from_last_applied(live: dict[str, Any], t: _Type) -> Node | None:
    """Fields the client-side-apply annotation still describes truthfully: conflicts on
    them are what moving from ``kubectl apply`` to ``kubectl apply --server-side`` means."""
    text = _annotations(live).get(LAST_APPLIED_ANNOTATION)
    if not isinstance(text, str) or not text:
        return None
    try:
        last_applied = json.loads(text)
    except ValueError:
        return None
    if not isinstance(last_applied, dict):
        return None
    try:
        applied_set = _collect(last_applied, t, False)
    except _ItemError:
        return None
    added, modified, removed = _compare_objects(last_applied, live, t)
    for node in (modified, added, removed):
        applied_set = fp.difference_children(applied_set, node)
    return applied_set


# --------------------------------------------------------------------------- update


def _is_reset(entries: Any) -> bool:
    if isinstance(entries, list):
        if not entries:
            return True
        return len(entries) == 1 and entries[0] in ({}, None)
    return False


def update_managed_fields(
    old: Mapping[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    operation: str = "Update",
    definition: str | Schema | Mapping[str, Any] | None = None,
    now: str,
    subresource: str = "",
    ignored: FieldSet | None = None,
) -> None:
    """Record an ordinary write (create, update, patch) in ``new``'s managed fields.

    Fields the write added or changed move to ``manager`` (from every other entry, appliers
    included); removed fields leave everyone; untouched fields keep their owners. Managed
    fields sent by the client replace the stored ones when non-empty and valid (that is how
    kubectl migrates client-side-apply ownership), ``[]`` clears them -- after which
    updates are not tracked until the next apply, as upstream. ``old`` is None for a create.
    """
    meta = new.get("metadata")
    if not isinstance(meta, dict):
        return
    old_meta = old.get("metadata") if old is not None else None
    old_entries = old_meta.get("managedFields") if isinstance(old_meta, Mapping) else None
    sent = meta.pop("managedFields", None)
    managed: _Managed
    if subresource:
        managed = _decode_or_empty(old_entries, False)
    elif _is_reset(sent):
        managed = {}
    else:
        try:
            managed = _decode(sent, True)
        except (ValueError, FieldsV1Error):
            managed = {}
        if not managed:
            managed = _decode_or_empty(old_entries, False)
    if not managed and old is not None and isinstance(old_meta, Mapping) and old_meta.get("uid"):
        return  # upstream skipNonAppliedManager: cleared managed fields stay cleared
    t = _root_type(definition, new)
    api_version = str(new.get("apiVersion") or "")
    key = _manager_key(manager, operation, api_version, subresource)
    entry = _Entry(manager, operation, api_version, subresource, now, {})
    old_obj = _without_managed_fields(old) if old is not None else {}
    _update_sets(managed, old_obj, new, t, key, entry, ignored)
    _cap(managed)
    encoded = _encode(managed)
    if encoded:
        meta["managedFields"] = encoded


def _decode_or_empty(entries: Any, validate: bool) -> _Managed:
    try:
        return _decode(entries, validate)
    except (ValueError, FieldsV1Error):
        return {}


def managed_field_sets(obj: Mapping[str, Any]) -> dict[str, FieldSet]:
    """``{manager: FieldSet}`` of an object (entries of one manager united), for callers
    and tests that reason about ownership."""
    meta = obj.get("metadata")
    entries = meta.get("managedFields") if isinstance(meta, Mapping) else None
    out: dict[str, FieldSet] = {}
    for entry in _decode_or_empty(entries, True).values():
        previous = out.get(entry.manager)
        root = entry.root if previous is None else fp.union_children(previous.root, entry.root)
        out[entry.manager] = FieldSet(root)
    return out
