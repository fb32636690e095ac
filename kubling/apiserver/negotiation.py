"""Content negotiation: decoding request bodies and choosing the response encoding.

kube-apiserver accepts JSON, YAML and protobuf bodies and answers in what ``Accept`` asks
for. kubectl asks for ``as=Table`` first with a plain JSON fallback, so the chosen media
range also says whether the response is a Table.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
import yaml

from kubling.api import protobuf
from kubling.apiserver import errors

try:  # the C loader is ten times faster when libyaml is present
    from yaml import CSafeLoader as _YAMLLoader
except ImportError:  # pragma: no cover - depends on the platform build
    from yaml import SafeLoader as _YAMLLoader  # type: ignore[assignment]

#: Upstream's limit on a request body (3 MiB).
MAX_BODY = 3 * 1024 * 1024

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


@dataclasses.dataclass(frozen=True, slots=True)
class MediaRange:
    type: str
    params: dict[str, str]

    @property
    def as_kind(self) -> str:
        return self.params.get("as", "")


def parse_media_type(value: str) -> MediaRange:
    head, *rest = value.split(";")
    params: dict[str, str] = {}
    for part in rest:
        key, _, val = part.strip().partition("=")
        if key:
            params[key.strip().lower()] = val.strip().strip('"')
    return MediaRange(head.strip().lower(), params)


@dataclasses.dataclass(frozen=True, slots=True)
class Representation:
    """What to answer with: ``json`` or ``yaml``; ``table`` when a Table was asked for."""

    encoding: str = "json"
    table: bool = False
    include_object: str = "Metadata"
    #: PartialObjectMetadata(List): only kind, apiVersion and metadata (client-go's
    #: metadata client, controller-runtime's metadata-only watches).
    partial: bool = False

    @property
    def content_type(self) -> str:
        return YAML if self.encoding == "yaml" else JSON


def choose(accept: str | None, *, table_ok: bool, query_include: str = "") -> Representation:
    """Pick the first acceptable media range of ``Accept``; 406 when none is."""
    if not accept:
        return Representation()
    for raw in accept.split(","):
        if not raw.strip():
            continue
        rng = parse_media_type(raw)
        as_kind = rng.as_kind
        if as_kind == "Table":
            if not table_ok or rng.params.get("g") != "meta.k8s.io":
                continue
            if rng.params.get("v") not in ("v1", "v1beta1"):
                continue
            if rng.type not in (JSON, "application/*", "*/*"):
                continue
            return Representation("json", True, query_include or "Metadata")
        if as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            if rng.params.get("g") != "meta.k8s.io" or rng.params.get("v") not in (
                    "v1", "v1beta1") or rng.type not in (JSON, "application/*", "*/*"):
                continue
            return Representation("json", partial=True)
        if as_kind:
            continue  # other conversions are not served
        if rng.type in (JSON, "application/*", "*/*", "application/json;stream=watch"):
            return Representation("json")
        if rng.type == YAML:
            return Representation("yaml")
    raise errors.not_acceptable()


def decode_body(body: bytes, content_type: str | None) -> Any:
    """Decode a JSON, YAML or Kubernetes-protobuf body into Python data; malformed input is a 400."""
    media = parse_media_type(content_type or JSON).type
    if media in (JSON, "", "*/*") or media.endswith("+json"):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise errors.bad_request(f"json parse error: {err}") from None
    if media in (YAML, "application/x-yaml", "text/yaml") or media.endswith("+yaml"):
        try:
            _refuse_alias_bombs(body)
            return _string_keys(yaml.load(body, Loader=_YAMLLoader))
        except yaml.YAMLError as err:
            raise errors.bad_request(f"yaml parse error: {err}") from None
    if media == PROTOBUF:  # kubectl's typed commands send these, and do not retry as JSON
        try:
            return protobuf.decode_object(body)
        except protobuf.ProtobufError as err:
            raise errors.bad_request(f"protobuf decode error: {err}") from None
    raise errors.unsupported_media_type()


#: How many nodes a YAML body may expand to through aliases: a few hundred bytes of nested
#: aliases can stand for billions of nodes once serialized or walked.
MAX_YAML_EXPANDED_NODES = 1_000_000


def _refuse_alias_bombs(body: bytes) -> None:
    """Refuse documents whose aliases expand too far, as Go's YAML decoder refuses
    "excessive aliasing"; walking the expansion would block the loop and exhaust memory."""
    if b"*" not in body:
        return
    sizes: dict[int, int] = {}

    def expanded(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(expanded(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(expanded(k) + expanded(v) for k, v in node.value)
        sizes[id(node)] = min(total, MAX_YAML_EXPANDED_NODES + 1)
        return sizes[id(node)]

    for document in yaml.compose_all(body, Loader=_YAMLLoader):
        if document is not None and expanded(document) > MAX_YAML_EXPANDED_NODES:
            raise errors.bad_request("yaml: document contains excessive aliasing")


def _string_keys(value: Any) -> Any:
    """Map keys as JSON has them: YAML's ``1: x`` or ``true: y`` become ``"1"``/``"true"``."""
    if isinstance(value, dict):
        return {_key(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def encode(data: Any, representation: Representation) -> bytes:
    if representation.encoding == "yaml":
        return yaml.safe_dump(data, default_flow_style=False, sort_keys=False).encode()
    return orjson.dumps(data)


class _Fields(dict[str, Any]):
    """A decoded JSON object that remembers which of its keys appeared more than once."""

    duplicates: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> _Fields:
    obj = _Fields(pairs)
    seen: set[str] = set()
    obj.duplicates = []
    for key, _ in pairs:
        if key in seen and key not in obj.duplicates:
            obj.duplicates.append(key)
        seen.add(key)
    return obj


def duplicate_fields(body: bytes) -> list[str]:
    """Paths of fields a JSON body sets twice (``metadata.name``), for field validation.

    orjson keeps the last value silently, as Go's decoder does; upstream then reports each
    duplicate (``duplicate field "metadata.name"``) under ``fieldValidation``.
    """
    if body.count(b'"') < 4:
        return []
    try:
        data = json.loads(body, object_pairs_hook=_pairs)
    except ValueError:
        return []
    found: list[str] = []
    _walk(data, "", found)
    return found


def duplicate_yaml_keys(body: bytes) -> list[str]:
    """Keys a YAML body sets twice in one mapping, worded as Go's strict YAML decoder
    words them (``line 8: key "name" already set in map``), for field validation."""
    if b":" not in body:
        return []
    try:
        documents = list(yaml.compose_all(body, Loader=_YAMLLoader))
    except yaml.YAMLError:
        return []
    found: list[str] = []
    for document in documents:
        if document is not None:
            _yaml_duplicates(document, found, set())
    return found


def _yaml_duplicates(node: yaml.Node, found: list[str], visited: set[int]) -> None:
    if id(node) in visited:  # an alias: already walked
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[tuple[str, str]] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                ident = (key.tag, key.value)
                if ident in seen:
                    shown = f'"{key.value}"' if key.tag.endswith(":str") else key.value
                    found.append(f"line {key.start_mark.line + 1}: key {shown} already set "
                                 "in map")
                seen.add(ident)
            _yaml_duplicates(value, found, visited)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _yaml_duplicates(child, found, visited)


def _walk(value: Any, path: str, found: list[str]) -> None:
    if isinstance(value, _Fields):
        for key in value.duplicates:
            found.append(f"{path}.{key}" if path else key)
        for key, child in value.items():
            _walk(child, f"{path}.{key}" if path else key, found)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _walk(child, f"{path}[{i}]", found)
