"""Discovery documents: what kubectl reads to learn the served resources.

Both forms are built once from the catalogue and kept as bytes: the legacy ones
(``APIVersions``, ``APIGroupList``, one ``APIResourceList`` per group-version) and the
aggregated ``APIGroupDiscoveryList`` (v2, and v2beta1 for kubectl 1.27-1.29), which lets
kubectl learn everything in two requests. The aggregated form must be answered with its
exact content type, or kubectl misreads it.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from kubling.api.resources import Catalogue, ResourceType

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = (
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
)


def _storage_version_hash(rt: ResourceType) -> str:
    """An opaque per-resource hash, as upstream publishes (clients only compare it)."""
    digest = hashlib.sha256(f"{rt.group}/{rt.storage_version or rt.version}/{rt.kind}".encode())
    return base64.b64encode(digest.digest()[:8]).decode()


def _resource_entries(rt: ResourceType) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    entry["storageVersionHash"] = _storage_version_hash(rt)
    entries = [entry]
    for sub in rt.subresources:
        sub_entry: dict[str, Any] = {
            "name": f"{rt.plural}/{sub.name}",
            "singularName": "",
            "namespaced": rt.namespaced,
        }
        if sub.group or sub.version:
            sub_entry["group"] = sub.group
            sub_entry["version"] = sub.version
        sub_entry["kind"] = sub.kind
        sub_entry["verbs"] = list(sub.verbs)
        entries.append(sub_entry)
    return entries


def _aggregated_resource(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    if rt.subresources:
        entry["subresources"] = [
            {
                "subresource": sub.name,
                "responseKind": {
                    "group": sub.group if sub.version else rt.group,
                    "version": sub.version or rt.version,
                    "kind": sub.kind,
                },
                "verbs": list(sub.verbs),
            }
            for sub in rt.subresources
        ]
    return entry


class Discovery:
    """Discovery bodies for one catalogue, rebuilt when the catalogue changes."""

    def __init__(self, catalogue: Catalogue, *, extra: tuple[ResourceType, ...] = ()) -> None:
        self.catalogue = catalogue
        #: Resources served outside the catalogue (computed, never stored: the metrics API),
        #: advertised after its groups, as aggregated API groups come last upstream.
        self.extra = extra
        self._cache: dict[str, bytes] = {}

    def _types(self) -> list[ResourceType]:
        return [*self.catalogue, *self.extra]

    def _group_versions(self) -> dict[str, list[str]]:
        groups = self.catalogue.group_versions()
        for rt in self.extra:
            versions = groups.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return groups

    def invalidate(self) -> None:
        self._cache.clear()

    def _memo(self, key: str, build: Any) -> bytes:
        body = self._cache.get(key)
        if body is None:
            body = orjson.dumps(build())
            self._cache[key] = body
        return body

    def api_versions(self) -> bytes:
        return self._memo("api", lambda: {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
            ],
        })

    def api_group_list(self) -> bytes:
        def build() -> dict[str, Any]:
            groups = []
            for group, versions in self._group_versions().items():
                if not group:
                    continue
                listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
                groups.append({"name": group, "versions": listed, "preferredVersion": listed[0]})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

        return self._memo("apis", build)

    def api_group(self, group: str) -> bytes | None:
        versions = self._group_versions().get(group)
        if not group or not versions:
            return None
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return self._memo(f"group:{group}", lambda: {
            "kind": "APIGroup", "apiVersion": "v1", "name": group,
            "versions": listed, "preferredVersion": listed[0],
        })

    def resource_list(self, group: str, version: str) -> bytes | None:
        types = [rt for rt in self._types() if rt.group == group and rt.version == version]
        if not types:
            return None
        gv = f"{group}/{version}" if group else version

        def build() -> dict[str, Any]:
            resources = [e for rt in types for e in _resource_entries(rt)]
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": resources}

        return self._memo(f"gv:{gv}", build)

    def aggregated(self, *, legacy: bool, api_version: str) -> bytes:
        """The ``APIGroupDiscoveryList`` for ``/api`` (legacy) or ``/apis``."""

        def build() -> dict[str, Any]:
            items = []
            for group, versions in self._group_versions().items():
                if (group == "") != legacy:
                    continue
                item: dict[str, Any] = {"metadata": {"creationTimestamp": None}}
                if group:
                    item["metadata"]["name"] = group
                item["versions"] = [
                    {
                        "version": v,
                        "resources": [
                            _aggregated_resource(rt)
                            for rt in self._types()
                            if rt.group == group and rt.version == v
                        ],
                        "freshness": "Current",
                    }
                    for v in versions
                ]
                items.append(item)
            return {
                "kind": "APIGroupDiscoveryList",
                "apiVersion": api_version,
                "metadata": {},
                "items": items,
            }

        return self._memo(f"agg:{legacy}:{api_version}", build)


def wants_aggregated(accept: str) -> str | None:
    """The aggregated content type to answer with, if ``Accept`` asks for one first."""
    for raw in accept.split(","):
        part = raw.replace(" ", "")
        if "as=APIGroupDiscoveryList" in part and "g=apidiscovery.k8s.io" in part:
            if "v=v2beta1" in part:
                return AGGREGATED_V2BETA1
            if "v=v2" in part:
                return AGGREGATED_V2
            continue
        if part.startswith(("application/json", "*/*", "application/*")):
            return None
    return None
