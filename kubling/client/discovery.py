"""Discovery as a client reads it: the resources the API server serves, as ``ResourceType``s.

``discover`` reads ``/api/v1``, ``/apis`` and each group's preferred version (the documents
``kubectl api-resources`` reads) into a ``Discovery``. The namespace controller deletes
what it lists; the garbage collector watches what it lists and maps an ``ownerReference``'s
kind to a resource through ``Discovery.by_kind``. A group whose document cannot be read is
reported, not fatal: callers carry on with the rest, as upstream's partial discovery allows.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping

from kubling.api import meta
from kubling.api.resources import ResourceType
from kubling.client import rest

#: What a discovery request may fail with (an answer, or no answer at all).
DISCOVERY_ERRORS: tuple[type[BaseException], ...] = (rest.ApiError, *rest.TRANSPORT_ERRORS)


@dataclasses.dataclass(frozen=True)
class Discovery:
    """The top-level resources of each group's preferred version, as the server lists them.

    ``failed`` maps a group-version whose document could not be read to the error;
    ``unparsable`` lists group-version strings that are not ``[group/]version``. Callers
    carry on with what was discovered, as upstream's partial discovery allows.
    """

    resources: tuple[ResourceType, ...]
    failed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    unparsable: tuple[str, ...] = ()

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        """The resource serving ``kind`` of ``api_version``'s group (any version of it:
        every served version of a resource reads the same objects)."""
        group, version = meta.split_api_version(api_version)
        fallback = None
        for rt in self.resources:
            if rt.group == group and rt.kind == kind:
                if rt.version == version:
                    return rt
                fallback = fallback or rt
        if fallback is not None:
            return fallback
        try:
            return rest.lookup_kind(api_version, kind)
        except KeyError:
            return None


async def discover(client: rest.Client) -> Discovery:
    """Read ``/api/v1``, ``/apis`` and each group's preferred version concurrently."""
    group_versions = ["v1"]
    failed: dict[str, str] = {}
    unparsable: list[str] = []
    try:
        group_list = await client.request("GET", "/apis")
    except DISCOVERY_ERRORS as err:
        failed["apis"] = str(err) or type(err).__name__
        group_list = {}
    for group in (group_list or {}).get("groups") or []:
        preferred = (group.get("preferredVersion") or {}).get("groupVersion")
        if not preferred:
            versions = group.get("versions") or []
            preferred = versions[0].get("groupVersion") if versions else None
        if isinstance(preferred, str) and preferred:
            group_versions.append(preferred)
    results = await asyncio.gather(
        *(_group_version_resources(client, gv) for gv in group_versions),
        return_exceptions=True,
    )
    resources: list[ResourceType] = []
    for gv, result in zip(group_versions, results, strict=True):
        if isinstance(result, ValueError):
            unparsable.append(gv)
        elif isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            failed[gv] = str(result) or type(result).__name__
        else:
            resources.extend(result)
    return Discovery(tuple(resources), failed, tuple(unparsable))


async def _group_version_resources(client: rest.Client, gv: str) -> list[ResourceType]:
    group, version = meta.split_api_version(gv)
    if not version or "/" in group:
        raise ValueError(f"unexpected GroupVersion string: {gv}")
    path = f"/apis/{gv}" if group else f"/api/{version}"
    document = await client.request("GET", path)
    found: list[ResourceType] = []
    for entry in (document or {}).get("resources") or []:
        plural = str(entry.get("name") or "")
        if not plural or "/" in plural:
            continue  # subresources are served through their parent
        builtin = None
        try:
            builtin = rest.lookup(gv, plural)
        except KeyError:
            pass
        verbs = tuple(str(v) for v in entry.get("verbs") or ())
        if builtin is not None and builtin.verbs == verbs:
            found.append(builtin)  # the catalogue's own value: shared informers match it
            continue
        kind = str(entry.get("kind") or "")
        found.append(ResourceType(
            group=group, version=version, kind=kind, plural=plural,
            singular=str(entry.get("singularName") or kind.lower()),
            namespaced=bool(entry.get("namespaced")), verbs=verbs,
        ))
    return found
