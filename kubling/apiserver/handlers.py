"""REST handlers: one HTTP request on a resource path → one Store operation.

The handlers know HTTP (query parameters, bodies, status codes, streaming); the Store
knows objects. Nothing here is per kind: a kind's differences are in its strategy, and a
subresource is its parent's store with another strategy.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from kubling.api import fieldmanager, labels, meta, patch, schema, tables
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.apiserver import authn, authz, errors, negotiation, reviews, watchcache
from kubling.apiserver.registry import listing
from kubling.apiserver.registry.registry import Registry
from kubling.apiserver.registry.store import DeleteOptions, Preconditions, Store
from kubling.apiserver.registry.strategy import Strategy
from kubling.apiserver.requestinfo import RequestInfo

#: Upstream's default watch duration is randomised in [minRequestTimeout, 2x) = 30-60 min.
_MIN_REQUEST_TIMEOUT = 1800
_BOOKMARK_INTERVAL = 60.0
#: Most watch events written to a client at once when a burst of them is queued.
_WATCH_BATCH = 256

_PATCH_TYPES = (
    negotiation.JSON_PATCH,
    negotiation.MERGE_PATCH,
    negotiation.STRATEGIC_MERGE_PATCH,
    negotiation.APPLY_PATCH,
)


def json_response(data: Any, *, status: int = 200, rep: negotiation.Representation | None = None,
                  headers: Mapping[str, str] | CIMultiDict[str] | None = None) -> web.Response:
    rep = rep or negotiation.Representation()
    return web.Response(
        body=negotiation.encode(data, rep),
        status=status,
        content_type=rep.content_type,
        headers=headers,
    )


def raw_json_response(body: bytes, *, status: int = 200, content_type: str = "application/json",
                      headers: Mapping[str, str] | None = None) -> web.Response:
    resp = web.Response(body=body, status=status, headers=headers)
    resp.content_type = content_type.split(";")[0]
    if ";" in content_type:
        # aiohttp splits parameters off content_type; aggregated discovery needs them.
        resp.headers["Content-Type"] = content_type
    return resp


def field_manager(request: web.Request, options_kind: str) -> str:
    """The ``fieldManager`` of a write: the parameter, else the User-Agent's product name."""
    manager = request.query.get("fieldManager")
    if manager is None:
        return fieldmanager.default_manager(request.headers.get("User-Agent", ""))
    problem = fieldmanager.validate_field_manager(manager)
    if problem:
        raise _options_invalid(options_kind, problem)
    return manager


def _options_invalid(options_kind: str, problem: str) -> errors.APIError:
    return errors.APIError(422, "Invalid",
                           f'{options_kind}.meta.k8s.io "" is invalid: {problem}',
                           details={"group": "meta.k8s.io", "kind": options_kind})


def _dry_run(query: Mapping[str, str]) -> bool:
    values = [v for k, v in query.items() if k == "dryRun"]
    for value in values:
        if value != "All":
            raise errors.bad_request(f"Invalid dry run value: {value}; supported: All")
    return bool(values)


class ResourceHandlers:
    """Serve every resource request of the catalogue from its Store."""

    def __init__(self, registry: Registry, authorizer: authz.Authorizer) -> None:
        self.registry = registry
        self.authorizer = authorizer

    # -- entry ----------------------------------------------------------------------------
    async def handle(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        rt = self.registry.catalogue.lookup(info.group, info.version, info.resource)
        if rt is None:
            # A CRD acknowledged a moment ago may not have reached the catalogue yet.
            await self.registry.caches.wait_fresh()
            rt = self.registry.catalogue.lookup(info.group, info.version, info.resource)
        if rt is None:
            raise errors.path_not_found()
        if info.namespace and not rt.namespaced and info.resource != "namespaces":
            raise errors.path_not_found()
        if rt.namespaced and not info.namespace and info.verb not in ("list", "watch"):
            # /api/v1/pods serves list and watch across namespaces, nothing else (a DELETE
            # there must not become a deletecollection of every namespace).
            raise errors.method_not_supported(rt.group, rt.plural, info.verb)
        store = self.registry.store(rt)
        if info.subresource:
            return await self._subresource(request, info, rt, store)
        if info.verb not in rt.verbs:
            raise errors.method_not_supported(rt.group, rt.plural, info.verb)
        namespace = info.namespace if rt.namespaced else ""
        handler = {
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }.get(info.verb)
        if handler is None:
            raise errors.method_not_supported(rt.group, rt.plural, info.verb)
        return await handler(request, info, rt, store, namespace)

    async def _subresource(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                           store: Store) -> web.StreamResponse:
        """Overridden by ``subresources.APIHandlers``, which knows each subresource."""
        raise errors.path_not_found()

    def _representation(self, request: web.Request) -> negotiation.Representation:
        return negotiation.choose(
            request.headers.get("Accept"),
            table_ok=True,
            query_include=request.query.get("includeObject", ""),
        )

    # -- bodies ---------------------------------------------------------------------------
    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > negotiation.MAX_BODY:
            raise errors.request_entity_too_large(negotiation.MAX_BODY)
        # StreamReader.read(n) returns what has arrived so far, not the whole body: read
        # until the end of the body (or past the limit).
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.read(negotiation.MAX_BODY + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > negotiation.MAX_BODY:
                raise errors.request_entity_too_large(negotiation.MAX_BODY)
        return b"".join(chunks)

    async def _read_object(
        self, request: web.Request, rt: ResourceType, strategy: Strategy | None = None
    ) -> tuple[Object, list[str]]:
        """Decode a body into an object of the endpoint's kind; return it and warnings."""
        content_type = request.headers.get("Content-Type", negotiation.JSON)
        media = negotiation.parse_media_type(content_type).type
        if media not in (negotiation.JSON, negotiation.YAML, "", "application/x-yaml",
                         negotiation.PROTOBUF):
            raise errors.unsupported_media_type()
        body = await self._read_body(request)
        if not body.strip():
            raise errors.bad_request("the body of the request was empty")
        obj = negotiation.decode_body(body, content_type)
        kind = rt.kind
        api_version = rt.api_version
        if not isinstance(obj, dict):
            raise errors.bad_request(
                f"{kind} in version \"{rt.version}\" cannot be handled as a {kind}: "
                "the body is not a JSON object"
            )
        body_kind = obj.get("kind")
        body_version = obj.get("apiVersion")
        if body_kind not in (None, "") and body_kind != kind:
            raise errors.bad_request(
                f'{body_kind} in version "{body_version or rt.version}" cannot be handled as a '
                f"{kind}: the object provided is unrecognized (must be of type {kind})"
            )
        if body_version not in (None, "") and body_version != api_version:
            raise errors.bad_request(
                f"the API version in the data ({body_version}) does not match the expected API "
                f"version ({api_version})"
            )
        obj["kind"] = kind
        obj["apiVersion"] = api_version
        _null_strings(obj)
        duplicates: list[str] = []
        if request.query.get("fieldValidation") != "Ignore":
            if media in (negotiation.JSON, ""):
                duplicates = [f'duplicate field "{path}"'
                              for path in negotiation.duplicate_fields(body)]
            elif media in (negotiation.YAML, "application/x-yaml"):
                duplicates = negotiation.duplicate_yaml_keys(body)
        warnings = self._check_schema(request, strategy or Strategy(rt), obj, duplicates)
        return obj, warnings

    @staticmethod
    def _check_schema(request: web.Request, strategy: Strategy, obj: Object,
                      duplicates: list[str] | None = None) -> list[str]:
        """Type errors are 400s (as upstream's decoder); unknown fields follow
        ``fieldValidation``: Strict rejects, Warn (the default) warns, Ignore ignores."""
        mode = request.query.get("fieldValidation", "Warn")
        if mode not in ("Strict", "Warn", "Ignore"):
            raise errors.bad_request(
                f"fieldValidation parameter unsupported: {mode}. Valid values are Strict, Warn, "
                "Ignore"
            )
        decode_error, unknown = strategy.check_decode(obj)
        if decode_error is not None:
            raise errors.bad_request(decode_error)
        unknown = [*(duplicates or []), *unknown]
        if unknown and mode == "Strict":
            rt = strategy.rt
            raise errors.bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                "strict decoding error: " + ", ".join(unknown)
            )
        return unknown if mode == "Warn" else []

    def _respond(self, request: web.Request, store: Store, obj: Object, status: int,
                 warnings: list[str] | None = None) -> web.Response:
        rep = self._representation(request)
        headers = _warning_headers(warnings or [])
        if rep.table:
            rt = store.rt
            body = tables.table(rt.group, rt.kind, [obj], include_object=rep.include_object,
                                printer=store.strategy.printer())
            return json_response(body, status=status, rep=rep, headers=headers)
        if rep.partial:
            obj = tables.partial_metadata(obj)
        return json_response(obj, status=status, rep=rep, headers=headers)

    # -- verbs ----------------------------------------------------------------------------
    async def _get(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                   store: Store, namespace: str) -> web.StreamResponse:
        rv = request.query.get("resourceVersion", "")
        if rv == "0":
            cached = store.cache.items.get(store.key(namespace, info.name))
            if cached is None:
                raise store.not_found(info.name)
            obj = store.present(cached)
        else:
            obj = await store.get(namespace, info.name)
        return self._respond(request, store, obj, 200)

    async def _list(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                    store: Store, namespace: str) -> web.StreamResponse:
        opts = listing.parse_list_options(request.query)
        rep = self._representation(request)
        result = await listing.list_objects(store, self.registry.caches, namespace, opts)
        list_meta: dict[str, Any] = {"resourceVersion": str(result.revision)}
        if result.continue_token:
            list_meta["continue"] = result.continue_token
        if result.remaining is not None:
            list_meta["remainingItemCount"] = result.remaining
        if rep.table:
            body = tables.table(rt.group, rt.kind, (store.present(c) for c in result.items),
                                include_object=rep.include_object, list_meta=list_meta,
                                printer=store.strategy.printer())
            return json_response(body, rep=rep)
        if rep.partial:
            return json_response({
                "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": list_meta,
                "items": [tables.partial_metadata(store.present(c)) for c in result.items]})
        if rep.encoding == "yaml":
            data: Object = {"apiVersion": rt.api_version,
                            "items": [store.present(c) for c in result.items],
                            "kind": rt.list_kind, "metadata": list_meta}
            return json_response(data, rep=rep)
        head: bytes = orjson.dumps({"kind": rt.list_kind, "apiVersion": rt.api_version,
                                    "metadata": list_meta})
        raw = head[:-1] + b',"items":[' + b",".join(store.present_json(c) for c in result.items) + b"]}"
        return raw_json_response(raw)

    async def _create(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                      store: Store, namespace: str) -> web.StreamResponse:
        if info.name:
            raise errors.method_not_supported(rt.group, rt.plural, "create")
        obj, warnings = await self._read_object(request, rt, store.strategy)
        review = reviews.REVIEWS.get((rt.group, rt.plural))
        if review is not None:
            answered = await review(obj, request[authn.USER_KEY], self.authorizer, namespace)
            return self._respond(request, store, answered, 201, warnings)
        if rt.namespaced:
            body_ns = meta.namespace_of(obj)
            if body_ns and body_ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            if not namespace:
                raise errors.path_not_found()
        store.strategy.default(obj)
        manager = field_manager(request, "CreateOptions")
        created = await store.create(obj, namespace=namespace, dry_run=_dry_run(request.query),
                                     manager=manager)
        return self._respond(request, store, created, 201, warnings)

    async def _update(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                      store: Store, namespace: str) -> web.StreamResponse:
        obj, warnings = await self._read_object(request, rt, store.strategy)
        self._check_namespace(rt, obj, namespace)
        store.strategy.default(obj)
        updated, created = await store.update(
            namespace, info.name, obj, dry_run=_dry_run(request.query),
            manager=field_manager(request, "UpdateOptions"),
        )
        return self._respond(request, store, updated, 201 if created else 200, warnings)

    @staticmethod
    def _check_namespace(rt: ResourceType, obj: Object, namespace: str) -> None:
        body_ns = meta.namespace_of(obj)
        if rt.namespaced and body_ns and body_ns != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )

    async def _patch(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                     store: Store, namespace: str) -> web.StreamResponse:
        media = negotiation.parse_media_type(request.headers.get("Content-Type", "")).type
        if media == negotiation.APPLY_PATCH:
            return await self._server_side_apply(request, info, store, namespace)
        if request.query.get("force") is not None:
            raise _options_invalid("PatchOptions",
                                   "force: Forbidden: may not be specified for non-apply patch")
        transform, warnings = await self._patch_transform(request, rt, store.strategy)

        async def apply(current: Object) -> Object:
            patched = transform(current)
            self._check_namespace(rt, patched, namespace)
            store.strategy.default(patched)
            return patched

        updated = await store.guaranteed_update(
            namespace, info.name, apply, dry_run=_dry_run(request.query),
            manager=field_manager(request, "PatchOptions"),
        )
        return self._respond(request, store, updated, 200, warnings)

    async def _server_side_apply(self, request: web.Request, info: RequestInfo, store: Store,
                                 namespace: str, strategy: Strategy | None = None,
                                 ) -> web.StreamResponse:
        """PATCH application/apply-patch+yaml: merge the configuration, track ownership,
        refuse conflicts unless forced; a missing object is created (201)."""
        rt = store.rt
        manager = request.query.get("fieldManager", "")
        problem = fieldmanager.validate_field_manager(manager, apply=True)
        if problem:
            raise _options_invalid("PatchOptions", problem)
        force = (request.query.get("force") or "false").lower() == "true"
        body = await self._read_body(request)
        config = negotiation.decode_body(body, negotiation.YAML)
        if not isinstance(config, dict):
            raise errors.bad_request("the apply configuration must be an object")
        if config.get("apiVersion") != rt.api_version or config.get("kind") != rt.kind:
            raise errors.bad_request(
                f"the apply configuration's apiVersion/kind ({config.get('apiVersion')}/"
                f"{config.get('kind')}) does not match the endpoint ({rt.api_version}/{rt.kind})"
            )
        md = config.get("metadata")
        if not isinstance(md, dict) or md.get("name", info.name) != info.name:
            raise errors.bad_request(
                "the name of the object in the apply configuration does not match the name "
                f"on the URL ({info.name})")
        self._check_namespace(rt, config, namespace)
        checked = orjson.loads(orjson.dumps(config))
        warnings = self._check_schema(request, store.strategy, checked)
        strategy = strategy or store.strategy
        dry_run = _dry_run(request.query)

        def merge(live: Object | None) -> Object:
            try:
                merged = fieldmanager.apply(
                    live, config, manager=manager, force=force,
                    definition=strategy.field_definition(), now=meta.now(),
                    subresource=strategy.subresource, ignored=strategy.reset_fields())
            except fieldmanager.ConflictError as err:
                details: dict[str, Any] = {"name": info.name}
                if rt.group:
                    details["group"] = rt.group
                details["kind"] = rt.plural
                details["causes"] = err.causes
                raise errors.APIError(409, "Conflict", err.message, details=details) from None
            except fieldmanager.FieldManagerError as err:
                raise errors.APIError(err.code, "BadRequest" if err.code == 400 else "",
                                      err.message) from None
            strategy.default(merged)
            return merged

        if not strategy.subresource and await store.read(store.key(namespace, info.name)) is None:
            try:
                created = await store.create(merge(None), namespace=namespace, dry_run=dry_run)
                return self._respond(request, store, created, 201, warnings)
            except errors.APIError as err:
                if err.reason != "AlreadyExists":
                    raise  # else another writer created it meanwhile: apply onto theirs

        async def apply(current: Object) -> Object:
            return merge(current)

        updated = await store.guaranteed_update(namespace, info.name, apply, dry_run=dry_run,
                                                strategy=strategy)
        return self._respond(request, store, updated, 200, warnings)

    async def _patch_transform(
        self, request: web.Request, rt: ResourceType, strategy: Strategy | None = None
    ) -> tuple[Callable[[Object], Object], list[str]]:
        """Decode a PATCH body into a function from the current object to the patched one."""
        media = negotiation.parse_media_type(request.headers.get("Content-Type", "")).type
        if media not in _PATCH_TYPES:
            raise errors.APIError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: " + ", ".join(_PATCH_TYPES),
            )
        if media == negotiation.APPLY_PATCH:
            # Only the main resource takes apply configurations here (not /status, /scale).
            raise errors.APIError(
                415, "UnsupportedMediaType",
                "server-side apply is supported on the main resource only; use a merge patch "
                "for subresources",
            )
        kind, api_version = rt.kind, rt.api_version
        definition = schema.definition_for(rt.group, rt.version, kind)
        if media == negotiation.STRATEGIC_MERGE_PATCH and definition is None:
            # Custom resources have no patch strategies: upstream refuses, clients fall back.
            raise errors.APIError(
                415, "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml",
            )
        body = await self._read_body(request)
        document = negotiation.decode_body(body, negotiation.JSON)
        warnings: list[str] = []
        strategy = strategy or Strategy(rt)
        self._check_schema(request, strategy, {})  # reject a bad fieldValidation now

        def transform(current: Object) -> Object:
            try:
                if media == negotiation.JSON_PATCH:
                    result = patch.json_patch(current, document)
                elif media == negotiation.MERGE_PATCH:
                    result = patch.merge_patch(current, document)
                else:
                    result = patch.strategic_merge_patch(current, document, definition)
            except patch.PatchError as err:
                raise errors.APIError(422, "Invalid", str(err)) from None
            if not isinstance(result, dict):
                raise errors.bad_request("the patch does not result in an object")
            patched: Object = result
            if result.get("kind") != kind or result.get("apiVersion") != api_version:
                raise errors.bad_request(
                    f"the patch changes apiVersion/kind: {result.get('apiVersion')}/"
                    f"{result.get('kind')}"
                )
            _null_strings(patched)
            warnings[:] = self._check_schema(request, strategy, patched)
            return patched

        return transform, warnings

    async def _delete(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                      store: Store, namespace: str) -> web.StreamResponse:
        options = await self._delete_options(request)
        result = await store.delete(namespace, info.name, options)
        if not result.deleted:
            # Upstream answers 202 only when orphanDependents=false was asked for.
            code = 202 if options.orphan_dependents is False else 200
            return self._respond(request, store, result.obj, code)
        if store.strategy.return_deleted_object:
            return self._respond(request, store, result.obj, 200)
        details: dict[str, Any] = {"name": info.name}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        details["uid"] = result.obj["metadata"].get("uid", "")
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success", "details": details})

    async def _delete_options(self, request: web.Request) -> DeleteOptions:
        body = await self._read_body(request)
        data: Any = {}
        if body.strip():
            data = negotiation.decode_body(body, request.headers.get("Content-Type"))
            if not isinstance(data, dict):
                raise errors.bad_request("DeleteOptions must be a JSON object")
        query = request.query
        grace = data.get("gracePeriodSeconds")
        if "gracePeriodSeconds" in query:
            try:
                grace = int(query["gracePeriodSeconds"])
            except ValueError:
                raise errors.bad_request("gracePeriodSeconds must be an integer") from None
        if grace is not None and not isinstance(grace, int):
            raise errors.bad_request("gracePeriodSeconds must be an integer")
        policy = query.get("propagationPolicy") or data.get("propagationPolicy")
        orphan = data.get("orphanDependents")
        if "orphanDependents" in query:
            orphan = query["orphanDependents"].lower() == "true"
        if orphan is not None:
            if not isinstance(orphan, bool):
                raise errors.bad_request("orphanDependents must be a boolean")
            if policy is not None:
                raise errors.APIError(422, "Invalid", 'DeleteOptions.meta.k8s.io "" is invalid: '
                                      "propagationPolicy: Invalid value: \"" + str(policy)
                                      + "\": orphanDependents and deletionPropagation "
                                      "cannot be both set")
            policy = "Orphan" if orphan else "Background"
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise errors.bad_request(
                f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                '"Foreground", "Background", "Orphan"'
            )
        pre = data.get("preconditions") or {}
        if not isinstance(pre, dict):
            raise errors.bad_request("preconditions must be an object")
        body_dry = data.get("dryRun")
        if body_dry is not None and (not isinstance(body_dry, list)
                                     or any(v != "All" for v in body_dry)):
            raise errors.bad_request(f"Invalid dry run value: {body_dry}; supported: All")
        dry = _dry_run(query) or bool(body_dry)
        return DeleteOptions(
            grace_period_seconds=grace,
            preconditions=Preconditions(pre.get("uid"), pre.get("resourceVersion")),
            propagation_policy=policy,
            dry_run=dry,
            orphan_dependents=orphan,
        )

    async def _delete_collection(self, request: web.Request, info: RequestInfo,
                                 rt: ResourceType, store: Store,
                                 namespace: str) -> web.StreamResponse:
        options = await self._delete_options(request)
        opts = listing.parse_list_options(request.query)
        result = await listing.list_objects(store, self.registry.caches, namespace, opts)
        deleted: list[Object] = []
        for item in result.items:
            try:
                outcome = await store.delete(item.namespace, meta.name_of(item.obj), options)
            except errors.APIError as err:
                if err.code == 404:
                    continue
                raise
            deleted.append(outcome.obj)
        return json_response({"kind": rt.list_kind, "apiVersion": rt.api_version,
                              "metadata": {"resourceVersion": str(result.revision)},
                              "items": deleted})

    # -- watch ----------------------------------------------------------------------------
    async def _watch(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                     store: Store, namespace: str) -> web.StreamResponse:
        query = dict(request.query)
        if info.name:  # /watch/.../name: a watch of one object
            query["fieldSelector"] = ",".join(
                s for s in (query.get("fieldSelector", ""), f"metadata.name={info.name}") if s
            )
        opts = listing.parse_list_options(query, watch=True)
        rep = self._representation(request)
        opened = await listing.open_watch(store, self.registry.caches, namespace, opts)
        try:
            return await self._stream_watch(request, store, opts, rep, opened)
        finally:
            store.cache.watchers.discard(opened.watcher)

    async def _stream_watch(self, request: web.Request, store: Store,
                            opts: listing.ListOptions, rep: negotiation.Representation,
                            opened: listing.OpenedWatch) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        timeout = opts.timeout_seconds
        if not timeout or timeout < 0:  # 0 means "the server's default", as upstream
            timeout = _MIN_REQUEST_TIMEOUT + int(random.random() * _MIN_REQUEST_TIMEOUT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        encoder = _EventEncoder(store, rep)
        last_revision = opened.start_revision
        with contextlib.suppress(ConnectionResetError):
            for initial in opened.initial:
                await response.write(encoder.event(initial))
            if opened.initial_events_end:
                await response.write(encoder.bookmark(last_revision, initial_end=True))
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(min(remaining, _BOOKMARK_INTERVAL)):
                        event = await opened.watcher.queue.get()
                except TimeoutError:
                    last_revision = max(last_revision, self.registry.caches.revision)
                    if opts.allow_watch_bookmarks:
                        await response.write(encoder.bookmark(last_revision))
                    continue
                if event is None:
                    break  # overflowed or the server is stopping: the client re-watches
                # Events already queued go out in one write (upstream flushes once its
                # channel is empty): one chunk, one TLS record and one send for a burst.
                chunk = [encoder.event(event)]
                last_revision = event.revision
                queue = opened.watcher.queue
                while not queue.empty() and len(chunk) < _WATCH_BATCH:
                    event = queue.get_nowait()
                    if event is None:
                        break
                    chunk.append(encoder.event(event))
                    last_revision = event.revision
                await response.write(chunk[0] if len(chunk) == 1 else b"".join(chunk))
                if event is None:
                    break
            await response.write_eof()
        return response


def _null_strings(obj: Object) -> None:
    """A null label or annotation value decodes to "" (Go's map[string]string), not null."""
    md = obj.get("metadata")
    if not isinstance(md, dict):
        return
    for key in ("labels", "annotations"):
        values = md.get(key)
        if isinstance(values, dict):
            for name, value in values.items():
                if value is None:
                    values[name] = ""


def _warning_headers(warnings: list[str]) -> CIMultiDict[str] | None:
    """One ``Warning: 299 - "<text>"`` header per warning (RFC 7234 quoting), as upstream."""
    if not warnings:
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    for text in warnings:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        headers.add("Warning", f'299 - "{escaped}"')
    return headers


class _EventEncoder:
    """Serialize watch events; JSON objects are shared bytes from the watch cache."""

    def __init__(self, store: Store, rep: negotiation.Representation) -> None:
        self.store = store
        self.rt = store.rt
        self.rep = rep
        self._headers_sent = False

    def event(self, event: watchcache.WatchEvent) -> bytes:
        if self.rep.table:
            table = tables.table(
                self.rt.group, self.rt.kind, [self.store.present(event.obj)],
                include_object=self.rep.include_object,
                list_meta={"resourceVersion": str(event.revision)},
                headers=not self._headers_sent,
                printer=self.store.strategy.printer(),
            )
            self._headers_sent = True
            return orjson.dumps({"type": event.type, "object": table}) + b"\n"
        if self.rep.partial:
            partial = tables.partial_metadata(self.store.present(event.obj))
            return orjson.dumps({"type": event.type, "object": partial}) + b"\n"
        body = self.store.present_json(event.obj)
        return b'{"type":"' + event.type.encode() + b'","object":' + body + b"}\n"

    def bookmark(self, revision: int, *, initial_end: bool = False) -> bytes:
        md: dict[str, Any] = {"resourceVersion": str(revision)}
        if initial_end:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": md}
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"


def label_selector_string(selector: Any) -> str:
    """The ``status.selector`` string of a Scale, from a LabelSelector (or a map, for RCs)."""
    if not isinstance(selector, dict):
        return ""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    try:
        return str(labels.from_label_selector(selector))
    except labels.SelectorError:
        return ""
