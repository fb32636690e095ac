"""The REST client: every verb on every resource, over one keep-alive connection pool.

``Client`` owns one ``aiohttp.ClientSession`` (created on first use, inside the running
loop) and the credentials of a ``ClientConfig``; ``client.resource(rt)`` gives a
``Resource`` that speaks one group/version/resource's paths. Objects are plain dicts, as
they travel on the wire. Any non-2xx answer raises ``ApiError`` carrying the server's
``Status``; the ``is_*`` helpers classify it the way upstream's ``apierrors`` package does.
A transport failure (refused connection, reset, timeout) raises one of ``TRANSPORT_ERRORS``,
which callers that retry (informers, workers, the leader elector) treat as transient.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import urllib.parse
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import aiohttp
import orjson

from kubling.api import meta, resources
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.client import config as client_config

log = logging.getLogger(__name__)

PatchType = Literal["merge", "json", "strategic"]

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}

#: Exceptions that mean "the server could not be reached", as opposed to an answer.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, TimeoutError)

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

_CATALOGUE = resources.Catalogue()


def lookup(api_version: str, plural: str) -> ResourceType:
    """A built-in resource type by apiVersion and plural: ``lookup("apps/v1", "deployments")``."""
    group, version = meta.split_api_version(api_version)
    rt = _CATALOGUE.lookup(group, version, plural)
    if rt is None:
        raise KeyError(f"no built-in resource {plural} in {api_version}")
    return rt


def lookup_kind(api_version: str, kind: str) -> ResourceType:
    """A built-in resource type by apiVersion and kind (an ``ownerReference``'s terms)."""
    group, version = meta.split_api_version(api_version)
    rt = _CATALOGUE.by_kind(group, version, kind)
    if rt is None:
        raise KeyError(f"no built-in kind {kind} in {api_version}")
    return rt


# -- errors ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Status:
    """The part of a ``metav1.Status`` that callers act on."""

    code: int
    reason: str
    message: str
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def from_object(cls, obj: Any, *, code: int = 0) -> Status:
        """Read a ``Status`` body; fill what is missing from the HTTP ``code``."""
        if not isinstance(obj, dict) or obj.get("kind") != "Status":
            reason = _REASONS.get(code, "Unknown")
            return cls(code, reason, f"the server responded with {code} {reason}")
        status_code = obj.get("code")
        code = status_code if isinstance(status_code, int) and status_code else code
        details = obj.get("details")
        return cls(
            code=code,
            reason=str(obj.get("reason") or _REASONS.get(code, "Unknown")),
            message=str(obj.get("message") or ""),
            details=details if isinstance(details, dict) else {},
        )


class ApiError(Exception):
    """The server answered with an error ``Status``."""

    def __init__(self, status: Status) -> None:
        super().__init__(f"{status.code} {status.reason}: {status.message}")
        self.status = status

    @property
    def code(self) -> int:
        return self.status.code

    @property
    def reason(self) -> str:
        return self.status.reason

    @property
    def message(self) -> str:
        return self.status.message


def is_not_found(err: BaseException) -> bool:
    return isinstance(err, ApiError) and (err.reason == "NotFound" or err.code == 404)


def is_already_exists(err: BaseException) -> bool:
    return isinstance(err, ApiError) and err.reason == "AlreadyExists"


def is_conflict(err: BaseException) -> bool:
    """A stale ``resourceVersion`` (409 Conflict), not an existing name (409 AlreadyExists)."""
    return isinstance(err, ApiError) and err.code == 409 and err.reason != "AlreadyExists"


def is_gone(err: BaseException) -> bool:
    """410: a watch or continue token older than the server keeps; the caller re-lists."""
    return isinstance(err, ApiError) and err.code == 410


def is_invalid(err: BaseException) -> bool:
    return isinstance(err, ApiError) and err.code == 422


# -- the client --------------------------------------------------------------------------


class Client:
    """An API server connection: one keep-alive pool, one set of credentials.

    Create it anywhere, use it inside one event loop, and ``await close()`` it (or use
    ``async with``). ``timeout`` bounds every request except watches, which are bounded by
    their ``timeout_seconds``.
    """

    def __init__(
        self,
        config: client_config.ClientConfig,
        *,
        timeout: float = 30.0,
        user_agent: str = "kubling-client",
    ) -> None:
        self.config = config
        self.timeout = timeout
        self._ssl = client_config.ssl_context(config)
        self._headers = {"Accept": "application/json", "User-Agent": user_agent}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"
        self._session: aiohttp.ClientSession | None = None
        self._resources: dict[ResourceType, Resource] = {}

    @classmethod
    def from_kubeconfig(
        cls, path: Path | str, *, context: str | None = None, timeout: float = 30.0
    ) -> Client:
        return cls(client_config.load_kubeconfig(path, context=context), timeout=timeout)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def resource(self, rt: ResourceType) -> Resource:
        """The verbs of one resource type (cached: call it as often as convenient)."""
        res = self._resources.get(rt)
        if res is None:
            res = self._resources[rt] = Resource(self, rt)
        return res

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl if self._ssl is not None else True,
                limit=0,  # watches hold a connection each; never make a request wait for one
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    def _url(self, path: str) -> str:
        return self.config.server + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        """One request; the decoded JSON answer, or ``ApiError`` for a non-2xx one."""
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else None
        request_timeout = aiohttp.ClientTimeout(total=timeout or self.timeout)
        async with self.session.request(
            method, self._url(path), params=params, data=data, headers=headers,
            timeout=request_timeout, server_hostname=self.config.tls_server_name,
        ) as resp:
            raw = await resp.read()
            decoded = _decode(raw)
            if resp.status >= 300:
                raise ApiError(Status.from_object(decoded, code=resp.status))
            return decoded

    async def stream_lines(
        self, path: str, params: Mapping[str, str], *, timeout_seconds: int | None
    ) -> AsyncGenerator[bytes, None]:
        """The non-empty lines of a streamed answer (a watch), until the server closes it.

        A connection that breaks mid-stream ends the stream as a clean close does: either
        way the caller re-watches from the last resourceVersion it saw.
        """
        total = timeout_seconds + self.timeout if timeout_seconds else None
        stream_timeout = aiohttp.ClientTimeout(
            total=total, sock_connect=self.timeout, connect=self.timeout
        )
        async with self.session.get(
            self._url(path), params=params, timeout=stream_timeout,
            server_hostname=self.config.tls_server_name,
        ) as resp:
            if resp.status >= 300:
                raise ApiError(Status.from_object(_decode(await resp.read()), code=resp.status))
            buffer = b""
            try:
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    if b"\n" not in chunk:
                        continue
                    # One split per chunk: a chunk may carry a burst of events, and cutting
                    # them off the front one at a time would copy the rest each time.
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield line
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                    ConnectionResetError, TimeoutError) as exc:
                log.debug("watch stream %s closed: %s", path, exc)
            if buffer.strip():
                yield buffer


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


# -- one resource ------------------------------------------------------------------------


class Resource:
    """The verbs of one group/version/resource. Namespaces are ignored for cluster-scoped
    resources; an empty namespace in ``list``/``watch`` means all namespaces."""

    def __init__(self, client: Client, rt: ResourceType) -> None:
        self.client = client
        self.rt = rt
        self._prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"

    def path(self, *, namespace: str = "", name: str = "", subresource: str = "") -> str:
        parts = [self._prefix]
        if self.rt.namespaced and namespace:
            parts.append(f"namespaces/{_quote(namespace)}")
        parts.append(self.rt.plural)
        if name:
            parts.append(_quote(name))
            if subresource:
                parts.append(subresource)
        return "/".join(parts)

    def _namespace(self, namespace: str | None, obj: Object | None = None) -> str:
        if not self.rt.namespaced:
            return ""
        ns = namespace or (meta.namespace_of(obj) if obj is not None else "")
        if not ns:
            raise ValueError(f"{self.rt.group_resource} is namespaced: a namespace is needed")
        return ns

    async def get(self, name: str, *, namespace: str = "", subresource: str = "") -> Object:
        path = self.path(namespace=self._namespace(namespace), name=name, subresource=subresource)
        obj: Object = await self.client.request("GET", path)
        return obj

    async def list(
        self,
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
        resource_version: str = "",
    ) -> Object:
        """One page of a list, as the server returns it (``items``, ``metadata.continue``)."""
        params = _selectors(label_selector, field_selector)
        if limit:
            params["limit"] = str(limit)
        if continue_token:
            params["continue"] = continue_token
        if resource_version:
            params["resourceVersion"] = resource_version
        result: Object = await self.client.request(
            "GET", self.path(namespace=namespace), params=params
        )
        return result

    async def list_all(
        self,
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        page_size: int = 500,
    ) -> tuple[builtins.list[Object], str]:
        """Every matching object and the list's resourceVersion, fetched in pages.

        When a continue token expires mid-way (410), the list starts over unpaged, as
        client-go's pager does. Items get their ``kind``/``apiVersion`` filled in.
        """
        items: builtins.list[Object] = []
        token = ""
        limit = page_size
        while True:
            try:
                page = await self.list(
                    namespace=namespace, label_selector=label_selector,
                    field_selector=field_selector, limit=limit, continue_token=token,
                )
            except ApiError as err:
                if not (token and is_gone(err)):
                    raise
                items, token, limit = [], "", 0
                continue
            items.extend(page.get("items") or [])
            list_meta = page.get("metadata") or {}
            token = list_meta.get("continue") or ""
            if not token:
                for item in items:
                    item.setdefault("kind", self.rt.kind)
                    item.setdefault("apiVersion", self.rt.api_version)
                return items, str(list_meta.get("resourceVersion") or "")

    async def create(
        self, obj: Object, *, namespace: str | None = None, name: str = "", subresource: str = ""
    ) -> Object:
        """POST ``obj``; ``name`` + ``subresource`` post to a subresource (``binding``)."""
        path = self.path(namespace=self._namespace(namespace, obj), name=name,
                         subresource=subresource)
        result: Object = await self.client.request("POST", path, body=obj)
        return result

    async def update(
        self, obj: Object, *, namespace: str | None = None, subresource: str = ""
    ) -> Object:
        """PUT ``obj``; its ``metadata.resourceVersion`` makes it a compare-and-swap."""
        name = meta.name_of(obj)
        if not name:
            raise ValueError("update needs metadata.name")
        path = self.path(namespace=self._namespace(namespace, obj), name=name,
                         subresource=subresource)
        result: Object = await self.client.request("PUT", path, body=obj)
        return result

    async def update_status(self, obj: Object, *, namespace: str | None = None) -> Object:
        return await self.update(obj, namespace=namespace, subresource="status")

    async def patch(
        self,
        name: str,
        body: Any,
        *,
        namespace: str = "",
        type: PatchType = "merge",
        subresource: str = "",
    ) -> Object:
        path = self.path(namespace=self._namespace(namespace), name=name, subresource=subresource)
        result: Object = await self.client.request(
            "PATCH", path, body=body, content_type=_PATCH_CONTENT_TYPES[type]
        )
        return result

    async def delete(
        self,
        name: str,
        *,
        namespace: str = "",
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> Object:
        """DELETE; the answer is the object (while finalizers hold it) or a ``Status``."""
        options: Object = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            options["preconditions"] = dict(preconditions)
        path = self.path(namespace=self._namespace(namespace), name=name)
        result: Object = await self.client.request("DELETE", path, body=options)
        return result

    async def delete_collection(
        self, *, namespace: str = "", label_selector: str = "", field_selector: str = ""
    ) -> Object:
        result: Object = await self.client.request(
            "DELETE", self.path(namespace=namespace),
            params=_selectors(label_selector, field_selector),
        )
        return result

    async def watch(
        self,
        *,
        namespace: str = "",
        name: str = "",
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        allow_bookmarks: bool = False,
        timeout_seconds: int | None = None,
    ) -> AsyncGenerator[tuple[str, Object], None]:
        """``(type, object)`` events until the server closes the stream.

        ``type`` is ``ADDED``, ``MODIFIED``, ``DELETED`` or ``BOOKMARK``; an ``ERROR`` event
        raises ``ApiError`` (``is_gone`` when ``resource_version`` is too old, and the
        caller must re-list). Close the iterator when leaving it early (``aclosing``).
        """
        params = _selectors(label_selector, field_selector)
        params["watch"] = "true"
        if name:
            params["fieldSelector"] = ",".join(
                s for s in (field_selector, f"metadata.name={name}") if s
            )
        if resource_version:
            params["resourceVersion"] = resource_version
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        lines = self.client.stream_lines(
            self.path(namespace=namespace), params, timeout_seconds=timeout_seconds
        )
        try:
            async for line in lines:
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.warning("%s watch: undecodable event dropped: %.200r",
                                self.rt.group_resource, line)
                    continue
                if not isinstance(event, dict):
                    continue
                kind = str(event.get("type", ""))
                obj = event.get("object")
                if kind == "ERROR":
                    raise ApiError(Status.from_object(obj, code=500))
                if isinstance(obj, dict):
                    yield kind, obj
        finally:
            await lines.aclose()


def _selectors(label_selector: str, field_selector: str) -> dict[str, str]:
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
