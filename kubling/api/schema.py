"""Kubernetes 1.32 OpenAPI definitions, and a decoder-faithful structural check against them.

kube-apiserver decodes request bodies into typed Go structs before anything else happens. That
step rejects wrong JSON types (``"replicas": "3"``) with a 400 whose text comes from Go's JSON
decoder, and with ``fieldValidation=Strict`` it also rejects fields the struct does not have.
We have no Go structs, so :func:`check` walks the object against the upstream OpenAPI
definitions shipped by ``kubernetes-validate`` and reports the same two classes of problem with
the same wording. It deliberately does *not* do OpenAPI validation (``required``, ``enum``):
upstream does that later, in per-kind validation, with different messages.

Decoder semantics we mirror, because clients depend on them:

* ``null`` is accepted for every field (Go leaves the zero value), whatever the schema says;
* integers must be integral and fit ``int32``/``int64``; ``true`` is not a number; an integral
  float such as ``3.0`` is accepted (JSON parsers in Python and YAML front-ends produce them);
* ``IntOrString``, ``Quantity``, ``Time``/``MicroTime`` and ``[]byte`` (base64) have custom
  decoders upstream and fail with their own messages; errors from custom decoders abort the
  decode, so they win over earlier ordinary type errors (``SchemaError.fatal``);
* Go's message names the innermost struct and the dotted JSON field names without indices
  (``Go struct field Container.spec.template.spec.containers.image``), while strict unknown
  field errors carry a full path with indices (``spec.containers[0].foo``).

Definitions are compiled once into small checker objects (cached, thread-safe), which keeps a
typical Deployment check in the tens of microseconds.
"""

from __future__ import annotations

import binascii
import calendar
import dataclasses
import functools
import importlib.util
import pathlib
import re
import threading
import time
import types
from collections.abc import Mapping
from typing import Any, Literal

import orjson

__all__ = [
    "SCHEMA_VERSION",
    "SchemaError",
    "base64_error",
    "check",
    "check_definition",
    "decode_error_message",
    "definition_for",
    "definitions",
    "first_decode_error",
    "list_meta",
    "load_seconds",
    "patch_meta",
    "property_definition",
    "property_schema",
    "quantity_error",
    "resolve",
    "strict_decoding_message",
    "time_error",
    "unknown_field_warnings",
]

SCHEMA_VERSION = "v1.32.0-local"
_REF_PREFIX = "#/$defs/"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
_MICRO_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
# Types whose Go decoders accept any JSON value (they keep the raw bytes).
_FREE_FORM = frozenset(
    {
        "io.k8s.apimachinery.pkg.runtime.RawExtension",
        "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    }
)
_MAX_STRICT_ERRORS = 100  # upstream caps accumulated strict errors at 100


# --------------------------------------------------------------------------- loading

_load_seconds: float | None = None


def _schema_file() -> pathlib.Path:
    """Locate the packaged schema without importing kubernetes_validate (and its deps)."""
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kubernetes-validate is not installed; it ships the OpenAPI schemas")
    root = pathlib.Path(next(iter(spec.submodule_search_locations)))
    return root / "kubernetes-json-schema" / SCHEMA_VERSION / "_definitions.json"


@functools.cache
def _defs() -> dict[str, Any]:
    """Load the ~1.3 MB definitions file once, on first use (not at import time)."""
    global _load_seconds
    start = time.perf_counter()
    data = orjson.loads(_schema_file().read_bytes())
    _load_seconds = time.perf_counter() - start
    defs: dict[str, Any] = data["$defs"]
    return defs


def load_seconds() -> float | None:
    """How long reading + parsing the definitions took, or None if not loaded yet."""
    return _load_seconds


@functools.cache
def definitions() -> Mapping[str, Any]:
    """All definitions by name (``io.k8s.api.apps.v1.Deployment``), read-only."""
    return types.MappingProxyType(_defs())


@functools.cache
def _gvk_index() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in _defs().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            index.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return index


def definition_for(group: str, version: str, kind: str) -> str | None:
    """The definition name for a group/version/kind (``""`` is the core group)."""
    return _gvk_index().get((group, version, kind))


def _strip_ref(name: str) -> str:
    return name[len(_REF_PREFIX) :] if name.startswith(_REF_PREFIX) else name


def resolve(definition_name: str) -> dict[str, Any]:
    """The raw schema of a definition (a ``#/$defs/...`` ref is accepted); KeyError if unknown."""
    schema: dict[str, Any] = _defs()[_strip_ref(definition_name)]
    return schema


# --------------------------------------------------------------------------- patch metadata


def property_schema(definition: str, field: str) -> dict[str, Any] | None:
    """The schema of one property of a definition, or None if it has no such property."""
    props = resolve(definition).get("properties") or {}
    prop: dict[str, Any] | None = props.get(field)
    return prop


def patch_meta(definition: str, field: str) -> tuple[str | None, str | None]:
    """``(x-kubernetes-patch-strategy, x-kubernetes-patch-merge-key)`` for a property.

    The strategy is returned verbatim (e.g. ``"merge,retainKeys"``) for strategic merge patch.
    """
    prop = property_schema(definition, field) or {}
    return prop.get("x-kubernetes-patch-strategy"), prop.get("x-kubernetes-patch-merge-key")


def list_meta(definition: str, field: str) -> tuple[str | None, tuple[str, ...]]:
    """``(x-kubernetes-list-type, x-kubernetes-list-map-keys)`` for a property."""
    prop = property_schema(definition, field) or {}
    return prop.get("x-kubernetes-list-type"), tuple(prop.get("x-kubernetes-list-map-keys", ()))


def property_definition(definition: str, field: str) -> str | None:
    """The definition a property refers to, looking through list items and map values.

    Lets strategic merge patch recurse: ``("io.k8s.api.core.v1.PodSpec", "containers")`` gives
    ``"io.k8s.api.core.v1.Container"``.
    """
    node = property_schema(definition, field)
    while node is not None:
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _strip_ref(ref)
        inner = node.get("items") or node.get("additionalProperties")
        node = inner if isinstance(inner, dict) else None
    return None


# --------------------------------------------------------------------------- errors


@dataclasses.dataclass(frozen=True, slots=True)
class SchemaError:
    """One decode problem.

    ``kind`` is ``"type"`` (the decode fails: 400) or ``"unknown"`` (only matters for
    ``fieldValidation=Strict``/``Warn``). ``path`` is the full path with indices, ``message``
    the upstream wording. ``fatal`` marks errors from custom decoders, which abort the decode
    upstream and therefore are the one reported even if an ordinary type error came first.
    """

    kind: Literal["type", "unknown"]
    path: str
    message: str
    fatal: bool = False


# A path is a cons list, built only as deep as the walk goes and rendered only on error:
# (parent, segment kind, segment, owning Go struct name for fields else "").
_FIELD, _INDEX, _KEY = 0, 1, 2
_Cell = tuple[Any, int, Any, str]


def _render_path(cell: _Cell | None) -> str:
    segments: list[tuple[int, Any]] = []
    while cell is not None:
        segments.append((cell[1], cell[2]))
        cell = cell[0]
    text = ""
    for kind, seg in reversed(segments):
        if kind == _INDEX:
            text += f"[{seg}]"
        else:
            text += f".{seg}" if text else str(seg)
    return text


def _go_context(cell: _Cell | None) -> tuple[str, str]:
    """Go's error context: innermost struct name and the dotted struct-field names."""
    names: list[str] = []
    struct = ""
    while cell is not None:
        if cell[1] == _FIELD:
            names.append(cell[2])
            struct = struct or cell[3]
        cell = cell[0]
    return struct, ".".join(reversed(names))


def _go_quote(text: str) -> str:
    return orjson.dumps(text).decode()


def _describe(value: Any) -> str:
    """The ``Value`` part of Go's UnmarshalTypeError for a JSON value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return "value"


def _type_error(
    errors: list[SchemaError], cell: _Cell | None, what: str, go_type: str, fatal: bool = False
) -> None:
    struct, fields = _go_context(cell)
    if fields:
        where = f"Go struct field {struct}.{fields}"
    else:
        where = "Go value"
    message = f"json: cannot unmarshal {what} into {where} of type {go_type}"
    errors.append(SchemaError("type", _render_path(cell), message, fatal))


def _plain_error(errors: list[SchemaError], cell: _Cell | None, message: str, fatal: bool) -> None:
    errors.append(SchemaError("type", _render_path(cell), message, fatal))


# --------------------------------------------------------------------------- checker nodes


class _Node:
    """A compiled schema node; ``check`` appends problems with ``value`` to ``errors``."""

    __slots__ = ("go_type",)

    def __init__(self, go_type: str) -> None:
        self.go_type = go_type

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        raise NotImplementedError


class _AnyNode(_Node):
    """Free-form JSON (RawExtension, FieldsV1, untyped schemas): nothing to check."""

    __slots__ = ()

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        return


class _StringNode(_Node):
    __slots__ = ()

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if value is None or type(value) is str or isinstance(value, str):
            return
        _type_error(errors, cell, _describe(value), self.go_type)


class _BoolNode(_Node):
    __slots__ = ()

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if value is None or value is True or value is False:
            return
        _type_error(errors, cell, _describe(value), self.go_type)


def _integral(value: Any, low: int, high: int) -> str | None:
    """None if ``value`` fits an integer of [low, high]; otherwise Go's description of it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _describe(value)
    if isinstance(value, float):
        if not value.is_integer():
            return f"number {value!r}"
        if low <= value <= high:
            return None
        return f"number {int(value)}"  # the JSON text was most likely an integer literal
    return None if low <= value <= high else f"number {value}"


class _IntNode(_Node):
    __slots__ = ("high", "low")

    def __init__(self, bits: int) -> None:
        super().__init__(f"int{bits}")
        self.low = -(2 ** (bits - 1))
        self.high = 2 ** (bits - 1) - 1

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if value is None or (type(value) is int and self.low <= value <= self.high):
            return
        problem = _integral(value, self.low, self.high)
        if problem is not None:
            _type_error(errors, cell, problem, self.go_type)


class _FloatNode(_Node):
    __slots__ = ()

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            return
        _type_error(errors, cell, _describe(value), self.go_type)


class _IntOrStringNode(_Node):
    """Upstream's decoder hands non-strings to an ``int32`` decode, so that is the message."""

    __slots__ = ()

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if value is None or isinstance(value, str):
            return
        problem = _integral(value, -(2**31), 2**31 - 1)
        if problem is not None:
            _type_error(errors, cell, problem, "int32", fatal=True)


# Upstream resource.Quantity parse errors.
_QTY_FORMAT = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
_QTY_SUFFIX = "unable to parse quantity's suffix"
_QTY_RE = re.compile(r"[+-]?[0-9]*(?:\.[0-9]*)?([eEinumkKMGTP]*[-+]?[0-9]*)")
_QTY_SUFFIXES = frozenset(
    {"", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
)
_QTY_EXPONENT = re.compile(r"[eE][+-]?[0-9]+")


def quantity_error(text: str) -> str | None:
    """Why ``text`` is not a valid quantity (upstream ``ParseQuantity``), or None."""
    text = text.strip()
    if not text:
        return _QTY_FORMAT
    match = _QTY_RE.fullmatch(text)
    if match is None:
        return _QTY_FORMAT
    suffix = match.group(1)
    if suffix in _QTY_SUFFIXES or _QTY_EXPONENT.fullmatch(suffix):
        return None
    return _QTY_SUFFIX


class _QuantityNode(_Node):
    __slots__ = ()

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if value is None:
            return
        if isinstance(value, str):
            problem = quantity_error(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return
        else:
            problem = _QTY_FORMAT  # upstream parses the raw JSON text, which is not a number
        if problem is not None:
            _plain_error(errors, cell, problem, fatal=True)


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def base64_error(text: str) -> str | None:
    """Go's ``base64.StdEncoding`` verdict on ``text`` (CR/LF ignored), or None if valid.

    The byte offset is exact for bad characters and approximate for padding problems.
    """
    stripped = text.replace("\r", "").replace("\n", "")
    try:
        binascii.a2b_base64(stripped, strict_mode=True)
        return None
    except (binascii.Error, ValueError):
        pass
    for i, ch in enumerate(text):
        if ch not in _B64_ALPHABET and ch not in "\r\n":
            return f"illegal base64 data at input byte {i}"
    return f"illegal base64 data at input byte {len(stripped) // 4 * 4}"


class _BytesNode(_Node):
    """``[]byte`` travels as base64; a bad encoding is an ordinary (saved) decode error."""

    __slots__ = ()

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if value is None or isinstance(value, list):  # Go also accepts an array of bytes
            return
        if isinstance(value, str):
            problem = base64_error(value)
            if problem is not None:
                _plain_error(errors, cell, problem, fatal=False)
            return
        _type_error(errors, cell, _describe(value), self.go_type)


_RFC3339 = "2006-01-02T15:04:05Z07:00"
_RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00"
_DIGITS2 = re.compile(r"[0-9]{2}")
_TIME_LAYOUT: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("2006", re.compile(r"[0-9]{4}")),
    ("-", re.compile("-")),
    ("01", _DIGITS2),
    ("-", re.compile("-")),
    ("02", _DIGITS2),
    ("T", re.compile("T")),
    ("15", _DIGITS2),
    (":", re.compile(":")),
    ("04", _DIGITS2),
    (":", re.compile(":")),
    ("05", _DIGITS2),
)
_FRACTION_ANY = re.compile(r"[.,][0-9]+")
_FRACTION_MICRO = re.compile(r"\.[0-9]{6}")
_ZONE = re.compile(r"Z|[+-][0-9]{2}:[0-9]{2}")


def time_error(text: str, micro: bool = False) -> str | None:
    """Go ``time.Parse(RFC3339[Micro], text)`` verdict, with its error wording, or None.

    ``MicroTime`` requires exactly six fractional digits, as its upstream layout does.
    """
    layout = _RFC3339_MICRO if micro else _RFC3339
    prefix = f"parsing time {_go_quote(text)}"
    pos = 0
    numbers: list[int] = []
    elements = (
        *_TIME_LAYOUT,
        (".000000" if micro else "", _FRACTION_MICRO if micro else _FRACTION_ANY),
        ("Z07:00", _ZONE),
    )
    for element, pattern in elements:
        match = pattern.match(text, pos)
        if match is None:
            if not element:
                continue  # RFC3339 accepts an absent fraction
            rest = _go_quote(text[pos:])
            return f"{prefix} as {_go_quote(layout)}: cannot parse {rest} as {_go_quote(element)}"
        if match.group().isdigit():
            numbers.append(int(match.group()))
        pos = match.end()
    if pos != len(text):
        return f"{prefix}: extra text: {_go_quote(text[pos:])}"
    return _time_range_error(prefix, numbers)


def _time_range_error(prefix: str, numbers: list[int]) -> str | None:
    year, month, day, hour, minute, second = numbers[:6]
    fields = {"month": month, "day": day, "hour": hour, "minute": minute, "second": second}
    limits = {"month": 12, "day": 31, "hour": 23, "minute": 59, "second": 59}
    for name, limit in limits.items():
        low = 1 if name in ("month", "day") else 0
        if not low <= fields[name] <= limit:
            return f"{prefix}: {name} out of range"
    if day > calendar.monthrange(year, month)[1]:
        return f"{prefix}: day out of range"
    return None


class _TimeNode(_Node):
    """``metav1.Time``/``MicroTime``: a string decode, then an RFC 3339 parse; both abort."""

    __slots__ = ("micro",)

    def __init__(self, micro: bool) -> None:
        super().__init__("v1.MicroTime" if micro else "v1.Time")
        self.micro = micro

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            _type_error(errors, cell, _describe(value), "string", fatal=True)
            return
        problem = time_error(value, self.micro)
        if problem is not None:
            _plain_error(errors, cell, problem, fatal=True)


class _ArrayNode(_Node):
    __slots__ = ("item",)

    def __init__(self, item: _Node) -> None:
        super().__init__("[]" + item.go_type)
        self.item = item

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if type(value) is list or isinstance(value, list | tuple):
            item = self.item
            if type(item) is _AnyNode:
                return
            for i, element in enumerate(value):
                if element is not None:
                    item.check(element, (cell, _INDEX, i, ""), errors)
        elif value is not None:
            _type_error(errors, cell, _describe(value), self.go_type)


class _MapNode(_Node):
    __slots__ = ("value",)

    def __init__(self, value: _Node) -> None:
        super().__init__("map[string]" + value.go_type)
        self.value = value

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if type(value) is dict or isinstance(value, Mapping):
            node = self.value
            if type(node) is _AnyNode:
                return
            for key, element in value.items():
                if element is not None:
                    node.check(element, (cell, _KEY, key, ""), errors)
        elif value is not None:
            _type_error(errors, cell, _describe(value), self.go_type)


class _StructNode(_Node):
    """An object with known properties; other keys are unknown fields (unless preserved)."""

    __slots__ = ("name", "preserve", "props")

    def __init__(self, go_type: str, name: str, preserve: bool) -> None:
        super().__init__(go_type)
        self.name = name
        self.preserve = preserve
        self.props: dict[str, _Node] = {}

    def check(self, value: Any, cell: _Cell | None, errors: list[SchemaError]) -> None:
        if type(value) is dict or isinstance(value, Mapping):
            props = self.props
            for key, element in value.items():
                node = props.get(key)
                if node is None:
                    if not self.preserve:
                        path = _render_path((cell, _FIELD, key, self.name))
                        errors.append(
                            SchemaError("unknown", path, f"unknown field {_go_quote(path)}")
                        )
                elif element is not None:
                    node.check(element, (cell, _FIELD, key, self.name), errors)
        elif value is not None:
            _type_error(errors, cell, _describe(value), self.go_type)


_ANY = _AnyNode("interface {}")
_STRING = _StringNode("string")
_BOOL = _BoolNode("bool")
_FLOAT = _FloatNode("float64")
_INT32 = _IntNode(32)
_INT64 = _IntNode(64)


# --------------------------------------------------------------------------- compiler

_compiled: dict[str, _Node] = {}
_compile_lock = threading.Lock()


def _go_type_name(definition: str) -> str:
    """``io.k8s.api.apps.v1.DeploymentSpec`` → ``v1.DeploymentSpec`` (package.Type)."""
    return ".".join(definition.rsplit(".", 2)[-2:])


def _special(name: str) -> _Node | None:
    if name == _INT_OR_STRING:
        return _IntOrStringNode("intstr.IntOrString")
    if name == _QUANTITY:
        return _QuantityNode("resource.Quantity")
    if name in (_TIME, _MICRO_TIME):
        return _TimeNode(micro=name == _MICRO_TIME)
    if name in _FREE_FORM:
        return _ANY
    return None


class _Compiler:
    """Compiles definitions into nodes; new nodes are published only when complete."""

    def __init__(self) -> None:
        self.local: dict[str, _Node] = {}

    def definition(self, name: str) -> _Node:
        node = _compiled.get(name) or self.local.get(name)
        if node is not None:
            return node
        node = _special(name)
        if node is not None:
            self.local[name] = node
            return node
        schema = _defs().get(name)
        if schema is None:
            self.local[name] = _ANY  # dangling ref: nothing to check against
            return _ANY
        if "properties" in schema or _is_empty_struct(schema):
            return self._struct(schema, _go_type_name(name), name.rsplit(".", 1)[-1], name)
        node = self.inline(schema)
        self.local[name] = node
        return node

    def _struct(
        self, schema: Mapping[str, Any], go_type: str, struct: str, name: str | None
    ) -> _Node:
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        node = _StructNode(go_type, struct, preserve)
        if name is not None:
            self.local[name] = node  # registered before recursing: definitions can be cyclic
        for key, prop in (schema.get("properties") or {}).items():
            node.props[key] = self.inline(prop)
        return node

    def inline(self, schema: Mapping[str, Any]) -> _Node:
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self.definition(_strip_ref(ref))
        if schema.get("x-kubernetes-int-or-string") is True:
            return _IntOrStringNode("intstr.IntOrString")
        kind = primary_type(schema.get("type"))
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            items = schema.get("items")
            return _ArrayNode(self.inline(items) if isinstance(items, Mapping) else _ANY)
        if kind == "string":
            return _string_node(schema.get("format"))
        if kind == "integer":
            return _INT32 if schema.get("format") == "int32" else _INT64
        if kind == "number":
            return _FLOAT
        if kind == "boolean":
            return _BOOL
        return _ANY

    def _object(self, schema: Mapping[str, Any]) -> _Node:
        if "properties" in schema:
            return self._struct(schema, "struct", "", None)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            return _MapNode(self.inline(extra))
        return _MapNode(_ANY)


def _is_empty_struct(schema: Mapping[str, Any]) -> bool:
    """A typed object with no properties and no map values is an empty Go struct."""
    kind = primary_type(schema.get("type"))
    return kind == "object" and "additionalProperties" not in schema


def primary_type(declared: Any) -> str | None:
    """The non-null type of a ``type`` that may be a list like ``["string", "null"]``."""
    if isinstance(declared, str):
        return declared
    if isinstance(declared, list):
        for name in declared:
            if name != "null":
                return str(name)
    return None


def _string_node(fmt: Any) -> _Node:
    if fmt == "byte":
        return _BytesNode("[]uint8")
    if fmt == "date-time":
        return _TimeNode(micro=False)
    return _STRING


def _node_for(definition: str) -> _Node:
    node = _compiled.get(definition)
    if node is not None:
        return node
    with _compile_lock:
        compiler = _Compiler()
        node = compiler.definition(definition)
        _compiled.update(compiler.local)
    return node


# --------------------------------------------------------------------------- checking


def check_definition(obj: Any, definition: str) -> list[SchemaError]:
    """Check ``obj`` against a definition by name; see the module docstring for semantics."""
    errors: list[SchemaError] = []
    _node_for(_strip_ref(definition)).check(obj, None, errors)
    return errors


def check(obj: Any, group: str, version: str, kind: str) -> list[SchemaError]:
    """Decode problems of ``obj`` as a ``group/version, Kind=kind``, in document order.

    Kinds without a built-in definition (custom resources) yield no errors: upstream decodes
    those as unstructured JSON, which cannot fail on types.
    """
    name = definition_for(group, version, kind)
    if name is None:
        return []
    return check_definition(obj, name)


def first_decode_error(errors: list[SchemaError]) -> SchemaError | None:
    """The type error upstream would report: the first fatal one, else the first one."""
    first: SchemaError | None = None
    for error in errors:
        if error.kind != "type":
            continue
        if error.fatal:
            return error
        first = first or error
    return first


def strict_decoding_message(errors: list[SchemaError]) -> str | None:
    """``strict decoding error: unknown field "a", ...`` (deduplicated, at most 100)."""
    messages = unknown_field_warnings(errors)
    if not messages:
        return None
    return "strict decoding error: " + ", ".join(messages)


def unknown_field_warnings(errors: list[SchemaError]) -> list[str]:
    """One ``unknown field "x"`` text per unknown field, as ``fieldValidation=Warn`` sends."""
    seen: dict[str, None] = {}
    for error in errors:
        if error.kind == "unknown" and len(seen) < _MAX_STRICT_ERRORS:
            seen.setdefault(error.message)
    return list(seen)


def decode_error_message(
    kind: str,
    version: str,
    errors: list[SchemaError],
    *,
    strict: bool = False,
    target_kind: str | None = None,
) -> str | None:
    """The 400 message kube-apiserver gives for a body that fails to decode, or None.

    ``Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal
    string into Go struct field DeploymentSpec.spec.replicas of type int32``. Type errors win;
    with ``strict`` (``fieldValidation=Strict``) unknown fields fail the request as well.
    """
    error = first_decode_error(errors)
    detail = error.message if error is not None else None
    if detail is None and strict:
        detail = strict_decoding_message(errors)
    if detail is None:
        return None
    return f"{kind} in version {_go_quote(version)} cannot be handled as a {target_kind or kind}: {detail}"
