"""The OpenAPI documents kubectl reads: ``/openapi/v3`` (index and per group-version) and v2.

kubectl depends on these for more than ``explain``:

* **field validation** -- before ``create``/``apply``/``replace`` it looks in the v3 document
  of the object's group-version for a PATCH operation tagged with the object's
  ``x-kubernetes-group-version-kind`` and checks that it declares a ``fieldValidation``
  query parameter.  Without one it falls back to v2 (protobuf only) and, when that fails
  too, refuses the command ("failed to download openapi").  So every served kind needs
  a PATCH operation here, even kinds without an upstream schema.
* **client-side apply** computes strategic merge patches from the component schemas'
  ``x-kubernetes-patch-merge-key`` / ``x-kubernetes-patch-strategy``, locating the
  kind's schema by a one-element ``x-kubernetes-group-version-kind`` list, and uses SMP
  only when the PATCH operation accepts ``application/strategic-merge-patch+json``
  (custom kinds therefore omit it and get JSON merge patches, as upstream).

The schemas come from the project's one copy of the upstream definitions
(:mod:`kubling.api.schema`, JSON-schema flavoured) and are rewritten into the two OpenAPI
dialects the way kube-apiserver spells them.  Documents are built on first use and cached
as bytes: they are large (hundreds of KiB) and requested on every ``kubectl apply``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson

from kubling.api import schema
from kubling.api.resources import Catalogue, ResourceType, Subresource

JSON = dict[str, Any]
#: Returns an OpenAPI v3 schema (a CRD's ``openAPIV3Schema``) for a kind that has no
#: upstream definition, or None.  Called with (group, version, kind).
CustomSchema = Callable[[str, str, str], Mapping[str, Any] | None]

KUBERNETES_VERSION = "v1.32.0"

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
STATUS = _META + "Status"
DELETE_OPTIONS = _META + "DeleteOptions"
PATCH = _META + "Patch"
WATCH_EVENT = _META + "WatchEvent"
API_RESOURCE_LIST = _META + "APIResourceList"
OBJECT_META = _META + "ObjectMeta"
LIST_META = _META + "ListMeta"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
#: Served in every group-version document, as upstream does.
_META_ROOTS = (STATUS, DELETE_OPTIONS, PATCH, WATCH_EVENT, API_RESOURCE_LIST)

_GVK_EXT = "x-kubernetes-group-version-kind"
_JSON_MT = "application/json"
_YAML_MT = "application/yaml"
_PROTOBUF_MT = "application/vnd.kubernetes.protobuf"
_OBJECT_MEDIA = (_JSON_MT, _YAML_MT, _PROTOBUF_MT)
_WATCH_MEDIA = (_JSON_MT + ";stream=watch", _PROTOBUF_MT + ";stream=watch")
_SMP_MT = "application/strategic-merge-patch+json"


def _patch_media(strategic: bool) -> tuple[str, ...]:
    """Patch types a PATCH accepts; kubectl uses SMP only when it is listed."""
    kinds = ["application/json-patch+json", "application/merge-patch+json"]
    if strategic:
        kinds.append(_SMP_MT)
    kinds.append("application/apply-patch+yaml")
    return tuple(kinds)


# --- schema dialects -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Dialect:
    """How one OpenAPI version spells references and the two multi-type definitions."""

    ref_prefix: str
    #: OpenAPI 3.0 ignores the siblings of ``$ref``; upstream keeps a field's description
    #: by wrapping the reference in a one-element ``allOf`` (kubectl unwraps it).
    wrap_sibling_refs: bool
    #: JSON schema's ``oneOf`` of nullable types has no OpenAPI 2 spelling.
    overrides: Mapping[str, JSON]


_INT_OR_STRING_DOC = (
    "IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML "
    "marshalling and unmarshalling, it produces or consumes the inner type.  This allows "
    "you to have, for example, a JSON field that can accept a name or number."
)
_QUANTITY_DOC = (
    "Quantity is a fixed-point representation of a number. It provides convenient "
    "marshaling/unmarshaling in JSON and YAML, in addition to String() and AsInt64() "
    "accessors. Serialized as a string such as 100m, 1Gi or 0.5."
)

_V3 = _Dialect(
    ref_prefix="#/components/schemas/",
    wrap_sibling_refs=True,
    overrides={
        INT_OR_STRING: {
            "description": _INT_OR_STRING_DOC,
            "format": "int-or-string",
            "oneOf": [{"type": "integer"}, {"type": "string"}],
        },
        QUANTITY: {
            "description": _QUANTITY_DOC,
            "oneOf": [{"type": "string"}, {"type": "number"}],
        },
    },
)
_V2 = _Dialect(
    ref_prefix="#/definitions/",
    wrap_sibling_refs=False,
    overrides={
        INT_OR_STRING: {
            "description": _INT_OR_STRING_DOC,
            "format": "int-or-string",
            "type": "string",
        },
        QUANTITY: {"description": _QUANTITY_DOC, "type": "string"},
    },
)

_SUBSCHEMA_KEYS = ("items", "additionalProperties", "not")
_SCHEMA_LIST_KEYS = ("oneOf", "anyOf", "allOf")


def _ref_name(ref: str) -> str:
    """``#/$defs/io.k8s.X`` (or any other prefix) -> ``io.k8s.X``."""
    return ref.rsplit("/", 1)[-1]


def _single_type(value: Any) -> str | None:
    """OpenAPI has no type lists: keep the one non-null type kubernetes-validate allows."""
    if isinstance(value, str):
        return None if value == "null" else value
    types = [t for t in value if t != "null"]
    return types[0] if types else None


def _convert(node: Mapping[str, Any], dialect: _Dialect) -> JSON:
    """Rewrite one JSON-schema node into ``dialect``, walking schema keywords only.

    Property *names* are never interpreted (``JSONSchemaProps`` has a property called
    ``$ref``), so the walk follows the structure rather than every nested dict.
    """
    out: JSON = {}
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "type":
            single = _single_type(value)
            if single is not None:
                out["type"] = single
        elif key == "properties":
            out[key] = {name: _convert(sub, dialect) for name, sub in value.items()}
        elif key in _SUBSCHEMA_KEYS and isinstance(value, Mapping):
            out[key] = _convert(value, dialect)
        elif key in _SCHEMA_LIST_KEYS:
            out[key] = [_convert(sub, dialect) for sub in value]
        else:
            out[key] = value
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return out
    target = {"$ref": dialect.ref_prefix + _ref_name(ref)}
    if out and dialect.wrap_sibling_refs:
        return {"allOf": [target], **out}
    return {**target, **out}


def _convert_definition(name: str, node: Mapping[str, Any], dialect: _Dialect) -> JSON:
    """A top-level definition, minus kubernetes-validate's additions upstream lacks."""
    override = dialect.overrides.get(name)
    if override is not None:
        return dict(override)
    if _GVK_EXT in node and isinstance(node.get("properties"), Mapping):
        # kubernetes-validate pins apiVersion/kind with ``enum``; upstream does not.
        props = {
            k: _without_enum(v) if k in ("apiVersion", "kind") else v
            for k, v in node["properties"].items()
        }
        node = {**node, "properties": props}
    return _convert(node, dialect)


def _without_enum(node: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in node.items() if k != "enum"}


def _refs(node: Mapping[str, Any]) -> Iterator[str]:
    """Names of the definitions ``node`` references (structural walk, as in _convert)."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        yield _ref_name(ref)
    for key in _SUBSCHEMA_KEYS:
        sub = node.get(key)
        if isinstance(sub, Mapping):
            yield from _refs(sub)
    for key in _SCHEMA_LIST_KEYS:
        for sub in node.get(key, ()):
            yield from _refs(sub)
    for sub in node.get("properties", {}).values():
        yield from _refs(sub)


def _closure(roots: Iterable[str], defs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every definition reachable from ``roots``, sorted (upstream's component order)."""
    seen: set[str] = set()
    stack = [r for r in roots if r in defs]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(r for r in _refs(defs[name]) if r in defs and r not in seen)
    return sorted(seen)


# --- the served kinds, resolved to definitions ------------------------------------------


def _gvk(group: str, version: str, kind: str) -> JSON:
    return {"group": group, "version": version, "kind": kind}


def _synthetic_name(group: str, version: str, kind: str) -> str:
    """Upstream names CRD schemas by the reversed group: ``com.example.v1.CronTab``."""
    reversed_group = ".".join(reversed(group.split("."))) if group else "core"
    return f"{reversed_group}.{version}.{kind}"


def _object_schema(group: str, version: str, kind: str, custom: Mapping[str, Any] | None) -> JSON:
    """A kind without an upstream definition: its custom schema, or "anything goes".

    Like upstream's CRD schemas it always has apiVersion/kind/metadata, so ``explain``
    shows something and the kind is findable by its GVK extension.
    """
    base: JSON = dict(custom) if custom else {"type": "object"}
    if not custom:
        base["x-kubernetes-preserve-unknown-fields"] = True
    props = dict(base.get("properties", {}))
    props.setdefault("apiVersion", {"type": "string", "description": "APIVersion of the object."})
    props.setdefault("kind", {"type": "string", "description": "Kind of the object."})
    props["metadata"] = {"$ref": "#/$defs/" + OBJECT_META}
    base.update(type="object", properties=props)
    base[_GVK_EXT] = [_gvk(group, version, kind)]
    return base


def _list_schema(group: str, version: str, kind: str, item: str) -> JSON:
    return {
        "description": f"{kind} is a list of {item.rsplit('.', 1)[-1]}.",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"$ref": "#/$defs/" + LIST_META},
            "items": {"type": "array", "items": {"$ref": "#/$defs/" + item}},
        },
        "required": ["items"],
        _GVK_EXT: [_gvk(group, version, kind)],
    }


class _Definitions:
    """Upstream definitions plus synthesized ones for kinds upstream doesn't publish."""

    def __init__(self, custom: CustomSchema | None) -> None:
        self.upstream: Mapping[str, Mapping[str, Any]] = schema.definitions()
        self.extra: dict[str, JSON] = {}
        self._custom = custom

    def merged(self) -> dict[str, Mapping[str, Any]]:
        return {**self.upstream, **self.extra}

    def is_upstream_kind(self, rt: ResourceType) -> bool:
        return schema.definition_for(rt.group, rt.version, rt.kind) is not None

    def kind(self, rt: ResourceType) -> str:
        """The resource's own schema name, synthesizing one when upstream has none."""
        name = schema.definition_for(rt.group, rt.version, rt.kind)
        if name is not None:
            return name
        name = _synthetic_name(rt.group, rt.version, rt.kind)
        if name not in self.extra:
            custom = self._custom(rt.group, rt.version, rt.kind) if self._custom else None
            self.extra[name] = _object_schema(rt.group, rt.version, rt.kind, custom)
        return name

    def list_kind(self, rt: ResourceType) -> str:
        name = schema.definition_for(rt.group, rt.version, rt.list_kind)
        if name is not None:
            return name
        name = _synthetic_name(rt.group, rt.version, rt.list_kind)
        if name not in self.extra:
            self.extra[name] = _list_schema(rt.group, rt.version, rt.list_kind, self.kind(rt))
        return name

    def sub_kind(self, rt: ResourceType, sub: Subresource) -> str | None:
        """Schema of a subresource's kind (Scale, Eviction...); None if unpublished."""
        group, version = _sub_group_version(rt, sub)
        if (group, version, sub.kind) == (rt.group, rt.version, rt.kind):
            return self.kind(rt)
        return schema.definition_for(group, version, sub.kind)


def _sub_group_version(rt: ResourceType, sub: Subresource) -> tuple[str, str]:
    if sub.version:
        return sub.group, sub.version
    return rt.group, rt.version


# --- operations, in a dialect-neutral form ----------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Param:
    name: str
    location: str  # "path" or "query"
    type: str
    description: str

    @property
    def required(self) -> bool:
        return self.location == "path"


@dataclasses.dataclass(frozen=True, slots=True)
class _Operation:
    method: str
    operation_id: str
    description: str
    action: str
    gvk: JSON
    params: tuple[_Param, ...]
    #: (schema name, media types, required) of the request body, if any.
    body: tuple[str, tuple[str, ...], bool] | None
    #: HTTP code -> schema name (None: no body, just the description).
    responses: tuple[tuple[str, str | None], ...]
    produces: tuple[str, ...] = _OBJECT_MEDIA


@dataclasses.dataclass(slots=True)
class _PathItem:
    url: str
    params: tuple[_Param, ...]
    operations: list[_Operation]
    tag: str


_RESPONSE_TEXT = {"200": "OK", "201": "Created", "202": "Accepted", "401": "Unauthorized"}

_FIELD_VALIDATION_DOC = (
    "fieldValidation instructs the server on how to handle objects in the request "
    "(POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: "
    "This will ignore any unknown fields that are silently dropped from the object, and "
    "will ignore all but the last duplicate field that the decoder encounters. This is the "
    "default behavior prior to v1.23. - Warn: This will send a warning via the standard "
    "warning response header for each unknown field that is dropped from the object, and "
    "for each duplicate field that is encountered. The request will still succeed if there "
    "are no other errors, and will only persist the last of any duplicate fields. This is "
    "the default in v1.23+ - Strict: This will fail the request with a BadRequest error if "
    "any unknown fields would be dropped from the object, or if any duplicate fields are "
    "present. The error returned from the server will contain all unknown and duplicate "
    "fields encountered."
)
_FIELD_MANAGER_DOC = (
    "fieldManager is a name associated with the actor or entity that is making these "
    "changes. The value must be less than or 128 characters long, and only contain "
    "printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint."
)


def _q(name: str, type_: str, description: str) -> _Param:
    return _Param(name, "query", type_, description)


PRETTY = _q(
    "pretty",
    "string",
    "If 'true', then the output is pretty printed. Defaults to 'false' unless the "
    "user-agent indicates a browser or command-line HTTP tool (curl and wget).",
)
NAMESPACE = _Param(
    "namespace", "path", "string", "object name and auth scope, such as for teams and projects"
)
DRY_RUN = _q(
    "dryRun",
    "string",
    "When present, indicates that modifications should not be persisted. An invalid or "
    "unrecognized dryRun directive will result in an error response and no further "
    "processing of the request. Valid values are: - All: all dry run stages will be processed",
)
FIELD_MANAGER = _q("fieldManager", "string", _FIELD_MANAGER_DOC)
PATCH_FIELD_MANAGER = _q(
    "fieldManager",
    "string",
    _FIELD_MANAGER_DOC + " This field is required for apply requests "
    "(application/apply-patch) but optional for non-apply patch types (JsonPatch, "
    "MergePatch, StrategicMergePatch).",
)
FIELD_VALIDATION = _q("fieldValidation", "string", _FIELD_VALIDATION_DOC)
FORCE = _q(
    "force",
    "boolean",
    'Force is going to "force" Apply requests. It means user will re-acquire conflicting '
    "fields owned by other people. Force flag must be unset for non-apply patch requests.",
)
_SELECTION = (
    _q(
        "continue",
        "string",
        "The continue option should be set when retrieving more "
        "results from the server: the value of the previous list's metadata.continue.",
    ),
    _q(
        "fieldSelector",
        "string",
        "A selector to restrict the list of returned objects by "
        "their fields. Defaults to everything.",
    ),
    _q(
        "labelSelector",
        "string",
        "A selector to restrict the list of returned objects by "
        "their labels. Defaults to everything.",
    ),
    _q(
        "limit",
        "integer",
        "limit is a maximum number of responses to return for a list "
        "call. If more items exist, the server will set the `continue` field on the list "
        "metadata to a value that can be used with the same initial query to retrieve the "
        "next set of results.",
    ),
    _q(
        "resourceVersion",
        "string",
        "resourceVersion sets a constraint on what resource "
        "versions a request may be served from. See https://kubernetes.io/docs/reference/"
        "using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
    ),
    _q(
        "resourceVersionMatch",
        "string",
        "resourceVersionMatch determines how "
        "resourceVersion is applied to list calls. See https://kubernetes.io/docs/reference/"
        "using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
    ),
    _q(
        "sendInitialEvents",
        "boolean",
        "`sendInitialEvents=true` may be set together with "
        "`watch=true`. In that case, the watch stream will begin with synthetic events to "
        "produce the current state of objects in the collection, followed by a BOOKMARK.",
    ),
    _q(
        "timeoutSeconds",
        "integer",
        "Timeout for the list/watch call. This limits the "
        "duration of the call, regardless of any activity or inactivity.",
    ),
)
ALLOW_WATCH_BOOKMARKS = _q(
    "allowWatchBookmarks",
    "boolean",
    "allowWatchBookmarks requests watch events with type "
    '"BOOKMARK". Servers that do not implement bookmarks may ignore this flag and bookmarks '
    "are sent at the server's discretion. If this is not a watch, this field is ignored.",
)
WATCH = _q(
    "watch",
    "boolean",
    "Watch for changes to the described resources and return them as a "
    "stream of add, update, and remove notifications. Specify resourceVersion.",
)
_DELETION = (
    _q(
        "gracePeriodSeconds",
        "integer",
        "The duration in seconds before the object should "
        "be deleted. Value must be non-negative integer. The value zero indicates delete "
        "immediately. Defaults to a per object value if not specified.",
    ),
    _q(
        "ignoreStoreReadErrorWithClusterBreakingPotential",
        "boolean",
        "if set to true, it "
        "will trigger an unsafe deletion of the resource in case the normal deletion flow "
        "fails with a corrupt object error.",
    ),
    _q(
        "orphanDependents",
        "boolean",
        "Deprecated: please use the PropagationPolicy. Should the dependent objects be orphaned.",
    ),
    _q(
        "propagationPolicy",
        "string",
        "Whether and how garbage collection will be "
        "performed. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - "
        "allow the garbage collector to delete the dependents in the background; "
        "'Foreground' - a cascading policy that deletes all dependents in the foreground.",
    ),
)
LIST_PARAMS = (ALLOW_WATCH_BOOKMARKS, *_SELECTION, WATCH)
WRITE_PARAMS = (DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION)
PATCH_PARAMS = (DRY_RUN, PATCH_FIELD_MANAGER, FIELD_VALIDATION, FORCE)
DELETE_PARAMS = (DRY_RUN, *_DELETION)
DELETE_COLLECTION_PARAMS = tuple(sorted((DRY_RUN, *_DELETION, *_SELECTION), key=lambda p: p.name))


def _name_param(kind: str) -> _Param:
    return _Param("name", "path", "string", f"name of the {kind}")


def _camel(parts: Iterable[str]) -> str:
    return "".join(p[:1].upper() + p[1:] for p in parts)


def _group_words(group: str) -> list[str]:
    """``rbac.authorization.k8s.io`` -> [rbac, authorization]; core -> [core]."""
    if not group:
        return ["core"]
    return group.removesuffix(".k8s.io").split(".")


def operation_prefix(group: str, version: str) -> str:
    """``RbacAuthorizationV1``: inserted after the verb in upstream's operation ids."""
    return _camel(_group_words(group)) + _camel([version])


def tag(group: str, version: str) -> str:
    """``rbacAuthorization_v1``: upstream's per group-version tag."""
    words = _group_words(group)
    return words[0] + _camel(words[1:]) + "_" + version


def api_prefix(group: str, version: str) -> str:
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def document_path(group: str, version: str) -> str:
    """The ``/openapi/v3`` index key of a group-version: ``api/v1``, ``apis/apps/v1``."""
    return api_prefix(group, version).lstrip("/")


class _Builder:
    """Operations of one resource type, with upstream's ids, descriptions and bodies."""

    def __init__(self, rt: ResourceType, defs: _Definitions) -> None:
        self.rt = rt
        self.defs = defs
        self.prefix = operation_prefix(rt.group, rt.version)
        self.tag = tag(rt.group, rt.version)
        self.kind_schema = defs.kind(rt)
        self.strategic = defs.is_upstream_kind(rt)
        self.gvk = _gvk(rt.group, rt.version, rt.kind)

    def paths(self) -> list[_PathItem]:
        items = [self._collection(), self._item(), self._all_namespaces()]
        items.extend(self._subresource(sub) for sub in self.rt.subresources)
        return [item for item in items if item is not None and item.operations]

    def _id(self, verb: str, suffix: str = "", middle: str = "", scoped: bool = True) -> str:
        """``deleteCoreV1CollectionNamespacedPod``: verb, prefix, middle, scope, kind, suffix."""
        namespaced = "Namespaced" if scoped and self.rt.namespaced else ""
        return f"{verb}{self.prefix}{middle}{namespaced}{self.rt.kind}{suffix}"

    def _base(self) -> str:
        base = api_prefix(self.rt.group, self.rt.version)
        if self.rt.namespaced:
            base += "/namespaces/{namespace}"
        return f"{base}/{self.rt.plural}"

    def _scope_params(self, *extra: _Param) -> tuple[_Param, ...]:
        params = (*extra, NAMESPACE) if self.rt.namespaced else extra
        return (*params, PRETTY)

    def _collection(self) -> _PathItem:
        ops: list[_Operation] = []
        kind, verbs = self.rt.kind, self.rt.verbs
        if "list" in verbs:
            ops.append(self._list(self._id("list")))
        if "create" in verbs:
            create = self._write("post", self._id("create"), f"create a {kind}", self.kind_schema)
            ops.append(create)
        if "deletecollection" in verbs:
            op_id = self._id("delete", middle="Collection")
            ops.append(self._delete(op_id, f"delete collection of {kind}", collection=True))
        return _PathItem(self._base(), self._scope_params(), ops, self.tag)

    def _item(self) -> _PathItem:
        kind = self.rt.kind
        ops = self._object_ops(self.rt.verbs, self.kind_schema, self.gvk)
        if "delete" in self.rt.verbs:
            ops.append(self._delete(self._id("delete"), f"delete a {kind}", collection=False))
        params = self._scope_params(_name_param(kind))
        return _PathItem(self._base() + "/{name}", params, ops, self.tag)

    def _all_namespaces(self) -> _PathItem | None:
        """``/api/v1/pods``: what ``kubectl get pods -A`` lists."""
        if not self.rt.namespaced or "list" not in self.rt.verbs:
            return None
        op = self._list(self._id("list", suffix="ForAllNamespaces", scoped=False))
        url = f"{api_prefix(self.rt.group, self.rt.version)}/{self.rt.plural}"
        return _PathItem(url, (PRETTY,), [op], self.tag)

    def _subresource(self, sub: Subresource) -> _PathItem | None:
        schema_name = self.defs.sub_kind(self.rt, sub)
        if schema_name is None:
            return None  # e.g. log/exec: not objects, nothing for kubectl to validate
        gvk = _gvk(*_sub_group_version(self.rt, sub), sub.kind)
        ops = self._object_ops(sub.verbs, schema_name, gvk, sub.name)
        params = self._scope_params(_name_param(sub.kind))
        return _PathItem(f"{self._base()}/{{name}}/{sub.name}", params, ops, self.tag)

    def _object_ops(
        self, verbs: tuple[str, ...], schema_name: str, gvk: JSON, sub: str = ""
    ) -> list[_Operation]:
        """read/replace/patch of the object or one of its subresources (create: actions)."""
        kind, what, suffix = self.rt.kind, f"{sub} of " if sub else "", _camel([sub])
        ops: list[_Operation] = []
        if "get" in verbs:
            description = f"read {what}the specified {kind}"
            ops.append(self._read(self._id("read", suffix), description, schema_name, gvk))
        if sub and "create" in verbs:  # binding, eviction: POSTed to the object's URL
            description = f"create {what}a {kind}"
            ops.append(
                self._write("post", self._id("create", suffix), description, schema_name, gvk)
            )
        if "update" in verbs:
            description = f"replace {what}the specified {kind}"
            ops.append(
                self._write("put", self._id("replace", suffix), description, schema_name, gvk)
            )
        if "patch" in verbs:
            description = f"partially update {what}the specified {kind}"
            ops.append(self._patch(self._id("patch", suffix), description, schema_name, gvk))
        return ops

    def _read(self, op_id: str, description: str, schema_name: str, gvk: JSON) -> _Operation:
        responses = (("200", schema_name), ("401", None))
        return _Operation("get", op_id, description, "get", gvk, (), None, responses)

    def _list(self, op_id: str) -> _Operation:
        description = f"list or watch objects of kind {self.rt.kind}"
        responses = (("200", self.defs.list_kind(self.rt)), ("401", None))
        produces = (*_OBJECT_MEDIA, *_WATCH_MEDIA)
        return _Operation(
            "get", op_id, description, "list", self.gvk, LIST_PARAMS, None, responses, produces
        )

    def _write(
        self, method: str, op_id: str, description: str, schema_name: str, gvk: JSON | None = None
    ) -> _Operation:
        """POST (create) or PUT (replace): the object in, the object out."""
        codes = ("200", "201", "202") if method == "post" else ("200", "201")
        responses = (*((code, schema_name) for code in codes), ("401", None))
        body = (schema_name, _OBJECT_MEDIA, True)
        return _Operation(
            method, op_id, description, method, gvk or self.gvk, WRITE_PARAMS, body, responses
        )

    def _patch(self, op_id: str, description: str, schema_name: str, gvk: JSON) -> _Operation:
        # Subresources of custom kinds (Scale) are built-in types: SMP works for them.
        strategic = self.strategic or schema_name != self.kind_schema
        body = (PATCH, _patch_media(strategic), True)
        responses = (("200", schema_name), ("201", schema_name), ("401", None))
        return _Operation("patch", op_id, description, "patch", gvk, PATCH_PARAMS, body, responses)

    def _delete(self, op_id: str, description: str, *, collection: bool) -> _Operation:
        action, params, codes = (
            ("deletecollection", DELETE_COLLECTION_PARAMS, ("200",))
            if collection
            else ("delete", DELETE_PARAMS, ("200", "202"))
        )
        responses = (*((code, STATUS) for code in codes), ("401", None))
        body = (DELETE_OPTIONS, _OBJECT_MEDIA, False)
        return _Operation("delete", op_id, description, action, self.gvk, params, body, responses)


def _resources_path(group: str, version: str) -> _PathItem:
    """``GET /apis/apps/v1/``: the group-version's APIResourceList."""
    op = _Operation(
        "get",
        f"get{operation_prefix(group, version)}APIResources",
        "get available resources",
        "",
        {},
        (),
        None,
        (("200", API_RESOURCE_LIST), ("401", None)),
    )
    return _PathItem(api_prefix(group, version) + "/", (), [op], tag(group, version))


# --- rendering --------------------------------------------------------------------------


def _v3_param(p: _Param) -> JSON:
    out: JSON = {
        "name": p.name,
        "in": p.location,
        "description": p.description,
        "schema": {"type": p.type, "uniqueItems": True},
    }
    if p.required:
        out["required"] = True
    return out


def _v3_content(schema_name: str, media: Iterable[str]) -> JSON:
    ref = {"$ref": _V3.ref_prefix + schema_name}
    return {mt: {"schema": ref} for mt in media}


def _v3_operation(op: _Operation, tag_: str) -> JSON:
    responses: JSON = {}
    for code, schema_name in op.responses:
        response: JSON = {"description": _RESPONSE_TEXT[code]}
        if schema_name is not None:
            response["content"] = _v3_content(schema_name, op.produces)
        responses[code] = response
    out: JSON = {
        "description": op.description,
        "operationId": op.operation_id,
        "responses": responses,
        "tags": [tag_],
    }
    if op.params:
        out["parameters"] = [_v3_param(p) for p in op.params]
    if op.body is not None:
        name, media, required = op.body
        out["requestBody"] = {"content": _v3_content(name, media), "required": required}
    _add_kubernetes_extensions(out, op)
    return out


def _add_kubernetes_extensions(out: JSON, op: _Operation) -> None:
    if op.action:
        out["x-kubernetes-action"] = op.action
    if op.gvk:
        out[_GVK_EXT] = op.gvk


def _v3_path_item(item: _PathItem) -> JSON:
    out: JSON = {op.method: _v3_operation(op, item.tag) for op in item.operations}
    if item.params:
        out["parameters"] = [_v3_param(p) for p in item.params]
    return out


def _v2_param(p: _Param) -> JSON:
    out: JSON = {
        "name": p.name,
        "in": p.location,
        "description": p.description,
        "type": p.type,
        "uniqueItems": True,
    }
    if p.required:
        out["required"] = True
    return out


def _v2_operation(op: _Operation, tag_: str) -> JSON:
    params = [_v2_param(p) for p in op.params]
    consumes: tuple[str, ...] = ("*/*",)
    if op.body is not None:
        name, media, required = op.body
        params.insert(
            0,
            {
                "name": "body",
                "in": "body",
                "required": required,
                "schema": {"$ref": _V2.ref_prefix + name},
            },
        )
        if op.method == "patch":
            consumes = media
    responses: JSON = {}
    for code, schema_name in op.responses:
        response: JSON = {"description": _RESPONSE_TEXT[code]}
        if schema_name is not None:
            response["schema"] = {"$ref": _V2.ref_prefix + schema_name}
        responses[code] = response
    out: JSON = {
        "description": op.description,
        "consumes": list(consumes),
        "produces": list(op.produces),
        "schemes": ["https"],
        "tags": [tag_],
        "operationId": op.operation_id,
        "responses": responses,
    }
    if params:
        out["parameters"] = params
    _add_kubernetes_extensions(out, op)
    return out


def _v2_path_item(item: _PathItem) -> JSON:
    out: JSON = {op.method: _v2_operation(op, item.tag) for op in item.operations}
    if item.params:
        out["parameters"] = [_v2_param(p) for p in item.params]
    return out


_SECURITY_SCHEME = {
    "BearerToken": {
        "description": "Bearer Token authentication",
        "in": "header",
        "name": "authorization",
        "type": "apiKey",
    },
}


def _dump(document: JSON) -> bytes:
    """Sorted keys: byte-stable output, so the hash (kubectl's cache key) is stable."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def _schemas(
    names: Iterable[str], defs: Mapping[str, Mapping[str, Any]], dialect: _Dialect
) -> JSON:
    return {name: _convert_definition(name, defs[name], dialect) for name in names}


# --- the public face --------------------------------------------------------------------


class OpenAPIDocuments:
    """Lazily built, cached OpenAPI documents for the served catalogue.

    ``custom_schema`` supplies schemas for kinds without an upstream definition (custom
    resources); such kinds still get full paths -- kubectl insists on a PATCH operation
    with ``fieldValidation`` before it creates anything.  Call :meth:`invalidate` when the
    catalogue changes (a CRD was added or removed).
    """

    def __init__(self, catalogue: Catalogue, custom_schema: CustomSchema | None = None) -> None:
        self._catalogue = catalogue
        self._custom_schema = custom_schema
        self.invalidate()

    def invalidate(self) -> None:
        """Forget every built document; the next request rebuilds from the catalogue."""
        self._defs: _Definitions | None = None
        self._v3: dict[str, bytes] = {}
        self._v3_hashes: dict[str, str] = {}
        self._index: bytes | None = None
        self._v2: bytes | None = None

    def document_paths(self) -> list[str]:
        """Index keys of every served group-version, in discovery order."""
        return [
            document_path(group, version)
            for group, versions in self._catalogue.group_versions().items()
            for version in versions
        ]

    def v3_index(self) -> bytes:
        """``GET /openapi/v3``: every group-version with a content-hashed URL.

        The hash lets kubectl cache each document forever under its URL; building the
        index therefore builds every document once.
        """
        if self._index is None:
            paths = {
                path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={self.v3_hash(path)}"}
                for path in self.document_paths()
            }
            self._index = _dump({"paths": paths})
        return self._index

    def v3_document(self, path: str) -> bytes | None:
        """``GET /openapi/v3/<path>`` (``api/v1``, ``apis/apps/v1``); None if not served."""
        path = path.strip("/")
        cached = self._v3.get(path)
        if cached is not None:
            return cached
        if path not in self.document_paths():
            return None
        group, version = _parse_document_path(path)
        data = _dump(self._build_v3(group, version))
        self._v3[path] = data
        return data

    def v3_hash(self, path: str) -> str:
        """Upper-case hex SHA-512 of the document, as upstream's ``?hash=`` and ETag.

        Raises KeyError for a path that is not served.
        """
        path = path.strip("/")
        cached = self._v3_hashes.get(path)
        if cached is None:
            data = self.v3_document(path)
            if data is None:
                raise KeyError(path)
            cached = hashlib.sha512(data).hexdigest().upper()
            self._v3_hashes[path] = cached
        return cached

    def v2(self) -> bytes:
        """``GET /openapi/v2`` as JSON Swagger 2.0: every served path and its definitions."""
        if self._v2 is None:
            self._v2 = _dump(self._build_v2())
        return self._v2

    # -- building --

    def _definitions(self) -> _Definitions:
        if self._defs is None:
            self._defs = _Definitions(self._custom_schema)
        return self._defs

    def _types(self, group: str | None = None, version: str | None = None) -> list[ResourceType]:
        return [
            rt
            for rt in self._catalogue
            if group is None or (rt.group == group and rt.version == version)
        ]

    def _paths(self, types: Iterable[ResourceType]) -> list[_PathItem]:
        defs = self._definitions()
        items: list[_PathItem] = []
        for rt in types:
            items.extend(_Builder(rt, defs).paths())
        return items

    def _schema_names(self, items: Iterable[_PathItem]) -> list[str]:
        """Definitions the paths reference, and everything those reference."""
        roots = set(_META_ROOTS)
        for item in items:
            for op in item.operations:
                roots.update(name for _, name in op.responses if name is not None)
                if op.body is not None:
                    roots.add(op.body[0])
        return _closure(roots, self._definitions().merged())

    def _build_v3(self, group: str, version: str) -> JSON:
        items = [_resources_path(group, version), *self._paths(self._types(group, version))]
        names = self._schema_names(items)
        schemas = _schemas(names, self._definitions().merged(), _V3)
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
            "paths": {item.url: _v3_path_item(item) for item in items},
            "components": {"schemas": schemas, "securitySchemes": _SECURITY_SCHEME},
            "security": [{"BearerToken": []}],
        }

    def _build_v2(self) -> JSON:
        items: list[_PathItem] = []
        for group, versions in self._catalogue.group_versions().items():
            for version in versions:
                items.append(_resources_path(group, version))
                items.extend(self._paths(self._types(group, version)))
        names = self._schema_names(items)
        return {
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
            "paths": {item.url: _v2_path_item(item) for item in items},
            "definitions": _schemas(names, self._definitions().merged(), _V2),
            "securityDefinitions": _SECURITY_SCHEME,
            "security": [{"BearerToken": []}],
        }


def _parse_document_path(path: str) -> tuple[str, str]:
    """``api/v1`` -> ("", "v1"); ``apis/apps/v1`` -> ("apps", "v1")."""
    parts = path.split("/")
    if parts[0] == "api":
        return "", parts[1]
    return parts[1], parts[2]
