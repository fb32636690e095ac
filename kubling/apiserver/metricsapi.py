"""``metrics.k8s.io/v1beta1``: the resource metrics API that ``kubectl top`` and the
HorizontalPodAutoscaler read, served as metrics-server serves it.

The objects are computed, never stored: a ``NodeMetrics`` for each Node, a ``PodMetrics``
for each Pod, built from the watch cache (names, labels, selectors) and the
``MetricsStorage`` the scraper fills. Only get and list exist (no watch, no writes); a
node or pod that exists but has no two readings yet is 404 ``nodemetrics.metrics.k8s.io
"<name>" not found`` / ``podmetrics.metrics.k8s.io "<ns>/<name>" not found`` and is left
out of lists, which is how ``kubectl top`` learns that metrics are not available yet.
Authorization happened before (``get``/``list`` on ``nodes``/``pods`` in this group).
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from kubling.api import fields, labels, tables
from kubling.api.meta import Object
from kubling.api.protobuf import go_duration
from kubling.api.resources import ResourceType
from kubling.api.validation import _quantity
from kubling.apiserver import errors, handlers, negotiation
from kubling.apiserver.metricsstorage import MetricsStorage, Usage, binary_si, nanocores
from kubling.apiserver.registry.registry import Registry
from kubling.apiserver.requestinfo import RequestInfo

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
_VERBS = ("get", "list")

#: What discovery advertises (metrics-server's singular names: ``node``, and none for pods).
RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(GROUP, VERSION, "NodeMetrics", "nodes", "node", False, verbs=_VERBS),
    ResourceType(GROUP, VERSION, "PodMetrics", "pods", "", True, verbs=_VERBS),
)
#: The group-resources metrics-server names in its NotFound errors.
_NODE_METRICS = "nodemetrics"
_POD_METRICS = "podmetrics"


def _time(ns: int) -> str:
    """``metav1.Time``: RFC 3339 to the second, UTC."""
    moment = datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resources(used: Usage) -> dict[str, str]:
    return {"cpu": nanocores(used.nanocores), "memory": binary_si(used.memory_bytes)}


def _metadata(source: Object, *, namespaced: bool) -> dict[str, Any]:
    md = source.get("metadata") or {}
    out: dict[str, Any] = {"name": md.get("name", "")}
    if namespaced:
        out["namespace"] = md.get("namespace", "")
    out["creationTimestamp"] = _now()
    if md.get("labels"):
        out["labels"] = dict(md["labels"])
    return out


def node_metrics(node: Object, used: Usage) -> Object:
    return {"kind": "NodeMetrics", "apiVersion": API_VERSION,
            "metadata": _metadata(node, namespaced=False),
            "timestamp": _time(used.timestamp_ns), "window": go_duration(used.window_ns),
            "usage": _resources(used)}


def pod_metrics(pod: Object, containers: list[tuple[str, Usage]]) -> Object:
    """Timestamp and window are those of the container with the earliest reading."""
    earliest = min((used for _, used in containers), key=lambda u: u.timestamp_ns)
    return {"kind": "PodMetrics", "apiVersion": API_VERSION,
            "metadata": _metadata(pod, namespaced=True),
            "timestamp": _time(earliest.timestamp_ns),
            "window": go_duration(earliest.window_ns),
            "containers": [{"name": name, "usage": _resources(used)}
                           for name, used in containers]}


class MetricsAPI:
    """Answers every resource request under ``/apis/metrics.k8s.io/``."""

    def __init__(self, registry: Registry, storage: MetricsStorage) -> None:
        self.storage = storage
        nodes = registry.catalogue.lookup("", "v1", "nodes")
        pods = registry.catalogue.lookup("", "v1", "pods")
        assert nodes is not None and pods is not None
        self._nodes = registry.store(nodes)
        self._pods = registry.store(pods)

    async def handle(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        rt = next((r for r in RESOURCES if r.plural == info.resource), None)
        if info.version != VERSION or rt is None or info.subresource or \
                (info.namespace and not rt.namespaced) or \
                (rt.namespaced and info.name and not info.namespace):
            raise errors.path_not_found()
        if info.verb == "watch":
            raise errors.method_not_supported(GROUP, rt.plural, "watch")
        if info.verb not in _VERBS or request.method not in ("GET", "HEAD"):
            raise errors.APIError(
                405, "MethodNotAllowed",
                "the server does not allow this method on the requested resource")
        rep = negotiation.choose(request.headers.get("Accept"), table_ok=True,
                                 query_include=request.query.get("includeObject", ""))
        if rt.namespaced:
            body = (self._get_pod(info.namespace, info.name) if info.name
                    else self._list_pods(info.namespace, request.query))
        else:
            body = (self._get_node(info.name) if info.name
                    else self._list_nodes(request.query))
        if rep.table:
            items = body["items"] if "items" in body else [body]
            body = tables.table(GROUP, rt.kind, items, include_object=rep.include_object,
                                printer=(TABLE_COLUMNS, _table_cells))
        return handlers.json_response(body, rep=rep)

    # -- nodes ------------------------------------------------------------------------------
    def _get_node(self, name: str) -> Object:
        cached = self._nodes.cache.items.get(self._nodes.key("", name))
        if cached is None:  # the node lister's own NotFound, as metrics-server passes it on
            raise errors.not_found("", "node", name)
        used = self.storage.node(name)
        if used is None:
            raise errors.not_found(GROUP, _NODE_METRICS, name)
        return node_metrics(cached.obj, used)

    def _list_nodes(self, query: Any) -> Object:
        label_sel, field_sel = _selectors(query)
        items = []
        for cached in self._nodes.cache.snapshot(""):
            node = cached.obj
            md = node.get("metadata") or {}
            if not _selected(md, label_sel, field_sel, namespaced=False):
                continue
            used = self.storage.node(md.get("name", ""))
            if used is not None:
                items.append(node_metrics(node, used))
        items.sort(key=lambda m: m["metadata"]["name"])
        return {"kind": "NodeMetricsList", "apiVersion": API_VERSION, "metadata": {},
                "items": items}

    # -- pods -------------------------------------------------------------------------------
    def _get_pod(self, namespace: str, name: str) -> Object:
        cached = self._pods.cache.items.get(self._pods.key(namespace, name))
        if cached is None:
            raise errors.not_found("", "pods", name)
        containers = self.storage.pod(namespace, name)
        if containers is None:
            raise errors.not_found(GROUP, _POD_METRICS, f"{namespace}/{name}")
        return pod_metrics(cached.obj, containers)

    def _list_pods(self, namespace: str, query: Any) -> Object:
        label_sel, field_sel = _selectors(query)
        items = []
        for cached in self._pods.cache.snapshot(namespace):
            pod = cached.obj
            md = pod.get("metadata") or {}
            if namespace and md.get("namespace") != namespace:
                continue
            if not _selected(md, label_sel, field_sel, namespaced=True):
                continue
            containers = self.storage.pod(md.get("namespace", ""), md.get("name", ""))
            if containers is not None:
                items.append(pod_metrics(pod, containers))
        items.sort(key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"]))
        return {"kind": "PodMetricsList", "apiVersion": API_VERSION, "metadata": {},
                "items": items}


#: metrics-server's columns: the name, each resource (sorted), the window.
TABLE_COLUMNS: list[tables.Column] = [
    {"name": "Name", "type": "string", "format": "name", "description": "Name of the resource",
     "priority": 0},
    {"name": "cpu", "type": "string", "format": "quantity", "description": "", "priority": 0},
    {"name": "memory", "type": "string", "format": "quantity", "description": "",
     "priority": 0},
    {"name": "Window", "type": "string", "format": "duration", "description": "",
     "priority": 0},
]


def _table_cells(obj: Object) -> list[Any]:
    """A pod's row sums its containers, as metrics-server's table does."""
    usages = [c["usage"] for c in obj.get("containers") or []] if "containers" in obj \
        else [obj["usage"]]
    cpu = sum((_quantity.parse_quantity(u.get("cpu")) or 0 for u in usages), 0)
    memory = sum((_quantity.parse_quantity(u.get("memory")) or 0 for u in usages), 0)
    return [obj["metadata"]["name"], nanocores(int(cpu * 1_000_000_000)),
            binary_si(int(memory)), obj["window"]]


def _selectors(query: Any) -> tuple[labels.Selector | None, fields.FieldSelector | None]:
    """``labelSelector`` and ``fieldSelector``; one that does not parse is a 400."""
    try:
        label_text = query.get("labelSelector", "")
        field_text = query.get("fieldSelector", "")
        return (labels.parse(label_text) if label_text else None,
                fields.parse(field_text) if field_text else None)
    except (labels.SelectorError, fields.SelectorError) as err:
        raise errors.bad_request(str(err)) from None


def _selected(md: dict[str, Any], label_sel: labels.Selector | None,
              field_sel: fields.FieldSelector | None, *, namespaced: bool) -> bool:
    """Labels of the Node or Pod; fields are its object-meta ones (``metadata.name``, and
    ``metadata.namespace`` for pods), all metrics-server filters on."""
    if label_sel is not None and not label_sel.matches(md.get("labels") or {}):
        return False
    if field_sel is not None:
        known = {"metadata.name": md.get("name", "")}
        if namespaced:
            known["metadata.namespace"] = md.get("namespace", "")
        if not field_sel.matches(known):
            return False
    return True
