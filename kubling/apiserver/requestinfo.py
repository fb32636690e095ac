"""Parse a request path into what is being asked (upstream's ``RequestInfo``).

``/apis/apps/v1/namespaces/default/deployments/web/scale`` becomes group ``apps``,
version ``v1``, namespace ``default``, resource ``deployments``, name ``web``,
subresource ``scale``, and the HTTP method plus query become the Kubernetes verb
(``get``/``list``/``watch``/``create``/``update``/``patch``/``delete``/
``deletecollection``) that authorization and the handlers speak in.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping

_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_LIST_VERBS = {"GET": "list", "POST": "create", "DELETE": "deletecollection"}
_ITEM_VERBS = {
    "GET": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
    "POST": "create",
}


@dataclasses.dataclass(frozen=True, slots=True)
class RequestInfo:
    is_resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def _true(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


class MalformedPath(ValueError):
    """A path with an empty segment or an encoded ``/`` inside a segment: never a request
    on a collection (``DELETE .../configmaps/%2F`` must not become a deletecollection)."""


def _segments(raw_path: str) -> list[str]:
    trimmed = raw_path.strip("/")
    if not trimmed:
        return []
    parts = [urllib.parse.unquote(p) for p in trimmed.split("/")]
    if any(not p or "/" in p for p in parts):
        raise MalformedPath(raw_path)
    return parts


def parse(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """Classify one request. Non-resource paths (``/version``, ``/healthz``) keep the
    lower-cased method as their verb, as upstream's authorizer sees them.

    ``path`` is the raw (still percent-encoded) path; ``MalformedPath`` for one with empty
    segments or an encoded slash in a segment."""
    parts = _segments(path)
    path = urllib.parse.unquote(path)
    non_resource = RequestInfo(False, path, method.lower())
    if not parts or parts[0] not in ("api", "apis"):
        return non_resource
    prefix = parts[0]
    rest = parts[1:]
    if prefix == "api":
        if not rest:
            return non_resource
        group, version, rest = "", rest[0], rest[1:]
    else:
        if len(rest) < 2:
            return non_resource
        group, version, rest = rest[0], rest[1], rest[2:]
    if not rest:
        return non_resource

    watch_prefix = False
    if rest[0] == "watch":
        watch_prefix = True
        rest = rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        # /namespaces/<ns>/status and /finalize are the namespace's own subresources;
        # anything else after the name is a namespaced resource.
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    if not rest:
        return non_resource
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if len(rest) > 3 and subresource != "proxy":
        return RequestInfo(False, path, method.lower())
    if name:
        verb = _ITEM_VERBS.get(method, method.lower())
        if method == "GET" and (watch_prefix or _true(query.get("watch"))):
            verb = "watch"
    else:
        verb = _LIST_VERBS.get(method, method.lower())
        if method == "GET" and (watch_prefix or _true(query.get("watch"))):
            verb = "watch"
    return RequestInfo(
        True,
        path,
        verb,
        api_prefix=prefix,
        group=group,
        version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
    )
