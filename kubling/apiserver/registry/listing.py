"""LIST and WATCH for the generic Store: served from the watch cache, as upstream's cacher.

Resource-version semantics follow the API conventions:
- unset: a consistent read (wait until the cache holds every acknowledged write);
- ``"0"``: any recent state (the cache as it is);
- ``N`` with ``NotOlderThan`` (the default): at least as new as N;
- ``N`` with ``Exact``: the state at revision N (read from storage);
- a ``continue`` token pins the revision of the first page.
Watches start from a resourceVersion and replay the cache's event window; older ones get
410 Gone so that the client re-lists.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable, Mapping

import orjson

from kubling import storage
from kubling.api import field, fields, labels
from kubling.apiserver import errors, watchcache
from kubling.apiserver.registry.store import Store

_CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


@dataclasses.dataclass(frozen=True, slots=True)
class ListOptions:
    label_selector: str = ""
    field_selector: str = ""
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""
    watch: bool = False
    allow_watch_bookmarks: bool = False
    timeout_seconds: int | None = None
    send_initial_events: bool | None = None


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise errors.bad_request(
            f'invalid value for {name}: strconv.ParseInt: parsing "{raw}": invalid syntax'
        ) from None


def _bool_param(query: Mapping[str, str], name: str) -> bool | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("true", "1", "t"):
        return True
    if lowered in ("false", "0", "f"):
        return False
    raise errors.bad_request(f'invalid value for {name}: strconv.ParseBool: parsing "{raw}"')


def parse_list_options(query: Mapping[str, str], *, watch: bool = False) -> ListOptions:
    """Read and validate list/watch query parameters (upstream's ListOptions validation)."""
    opts = ListOptions(
        label_selector=query.get("labelSelector", ""),
        field_selector=query.get("fieldSelector", ""),
        limit=_int_param(query, "limit") or 0,
        continue_token=query.get("continue", ""),
        resource_version=query.get("resourceVersion", ""),
        resource_version_match=query.get("resourceVersionMatch", ""),
        watch=watch or bool(_bool_param(query, "watch")),
        allow_watch_bookmarks=bool(_bool_param(query, "allowWatchBookmarks")),
        timeout_seconds=_int_param(query, "timeoutSeconds"),
        send_initial_events=_bool_param(query, "sendInitialEvents"),
    )
    problems: list[field.FieldError] = []
    match = opts.resource_version_match
    if match and match not in ("Exact", "NotOlderThan"):
        problems.append(
            field.not_supported("resourceVersionMatch", match, ["Exact", "NotOlderThan"])
        )
    if opts.watch:
        if opts.send_initial_events is not None and match != "NotOlderThan":
            problems.append(
                field.forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                )
            )
        elif opts.send_initial_events is None and match:
            problems.append(
                field.forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is "
                    "provided",
                )
            )
        if opts.send_initial_events and not opts.allow_watch_bookmarks:
            problems.append(
                field.forbidden(
                    "allowWatchBookmarks", "allowWatchBookmarks must be set to true"
                )
            )
    else:
        if match and not opts.resource_version:
            problems.append(
                field.forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                )
            )
        if match and opts.continue_token:
            problems.append(
                field.forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                )
            )
        if match == "Exact" and opts.resource_version == "0":
            problems.append(
                field.forbidden(
                    "resourceVersionMatch",
                    'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                )
            )
    if opts.limit < 0:
        problems.append(field.invalid("limit", opts.limit, "must be greater than or equal to 0"))
    if problems:
        raise errors.invalid("meta.k8s.io", "ListOptions", "", problems)
    return opts


def parse_resource_version(value: str) -> int:
    try:
        rv = int(value)
        if rv < 0:
            raise ValueError
    except ValueError:
        raise errors.bad_request(
            f"invalid resource version: {value!r}".replace("'", '"')
        ) from None
    return rv


Filter = Callable[[watchcache.CachedObject], bool]


def make_filter(store: Store, namespace: str, opts: ListOptions) -> Filter:
    """One predicate for the namespace and the label and field selectors."""
    try:
        label_sel = labels.parse(opts.label_selector) if opts.label_selector else None
        field_sel = fields.parse(opts.field_selector) if opts.field_selector else None
        if field_sel is not None:
            # Aliases (events.k8s.io's regarding.*) become the stored object's field names.
            field_sel = fields.convert_for(store.rt.group, store.rt.kind, field_sel)
    except labels.SelectorError as err:
        raise errors.bad_request(str(err)) from None
    except fields.SelectorError as err:
        raise errors.bad_request(str(err)) from None
    group, kind = store.rt.group, store.rt.kind
    namespaced = store.rt.namespaced and bool(namespace)

    def matches(item: watchcache.CachedObject) -> bool:
        if namespaced and item.namespace != namespace:
            return False
        if label_sel is not None:
            item_labels = (item.obj.get("metadata") or {}).get("labels") or {}
            if not label_sel.matches(item_labels):
                return False
        if field_sel is not None and not field_sel.matches(fields.field_set(group, kind, item.obj)):
            return False
        return True

    return matches


@dataclasses.dataclass(frozen=True, slots=True)
class ListResult:
    items: list[watchcache.CachedObject]
    revision: int
    continue_token: str = ""
    remaining: int | None = None


def _encode_continue(revision: int, last_key: str, prefix: str) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": revision, "start": last_key[len(prefix):] + "\x00"}
    return base64.urlsafe_b64encode(orjson.dumps(token)).decode().rstrip("=")


def _decode_continue(token: str, prefix: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(data, dict) or data.get("v") != "meta.k8s.io/v1":
            raise ValueError("unknown version")
        revision = int(data["rv"])
        start = str(data["start"])
        if revision <= 0 or ".." in start or start.startswith("/"):
            raise ValueError("invalid start")
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise errors.bad_request("continue key is not valid: incorrect encoded start "
                                 "resourceVersion (version meta.k8s.io/v1)") from None
    return revision, prefix + start


async def list_objects(
    store: Store, caches: watchcache.CacheSet, namespace: str, opts: ListOptions
) -> ListResult:
    matches = make_filter(store, namespace, opts)
    prefix = store.prefix(namespace)
    if opts.continue_token:
        revision, start = _decode_continue(opts.continue_token, prefix)
        candidates = await _at_revision(store, caches, namespace, revision, continue_=True)
        candidates = [c for c in candidates if c.key >= start]
    elif opts.resource_version_match == "Exact":
        revision = parse_resource_version(opts.resource_version)
        candidates = await _at_revision(store, caches, namespace, revision, continue_=False)
    else:
        if opts.resource_version and opts.resource_version != "0":
            wanted = parse_resource_version(opts.resource_version)
            if not await caches.wait_for(wanted):
                raise errors.too_large_resource_version(wanted, caches.revision)
        elif not opts.resource_version and not await caches.wait_fresh():
            # The cache lags storage (a stalled watch): answer from storage, never stale.
            listed = await store.backend.list(store.prefix(namespace))
            revision = listed.revision
            candidates = [watchcache.decode(kv) for kv in listed.items]
            selected = [c for c in candidates if matches(c)]
            return _page(selected, revision, opts, prefix)
        revision = caches.revision
        candidates = list(store.cache.snapshot(namespace if store.rt.namespaced else ""))
    selected = [c for c in candidates if matches(c)]
    return _page(selected, revision, opts, prefix)


def _page(selected: list[watchcache.CachedObject], revision: int, opts: ListOptions,
          prefix: str) -> ListResult:
    if opts.limit and len(selected) > opts.limit:
        page = selected[: opts.limit]
        remaining = len(selected) - opts.limit
        token = _encode_continue(revision, page[-1].key, prefix)
        unfiltered = not opts.label_selector and not opts.field_selector
        return ListResult(page, revision, token, remaining if unfiltered else None)
    return ListResult(selected, revision)


async def _at_revision(
    store: Store, caches: watchcache.CacheSet, namespace: str, revision: int, *, continue_: bool
) -> list[watchcache.CachedObject]:
    """Objects as they were at ``revision``: from the cache if it is there, else storage."""
    if revision == caches.revision:
        return list(store.cache.snapshot(namespace if store.rt.namespaced else ""))
    try:
        listed = await store.backend.list(store.prefix(namespace), revision=revision)
    except storage.CompactedError as err:
        if continue_:
            raise errors.gone(_CONTINUE_TOO_OLD) from None
        raise errors.too_old_resource_version(revision, err.compacted) from None
    except storage.FutureRevisionError as err:
        raise errors.too_large_resource_version(revision, err.current) from None
    return [watchcache.decode(kv) for kv in listed.items]


@dataclasses.dataclass(slots=True)
class OpenedWatch:
    """A registered watcher plus the events to send before the live ones."""

    watcher: watchcache.Watcher
    initial: list[watchcache.WatchEvent]
    start_revision: int
    #: Send the ``k8s.io/initial-events-end`` bookmark after ``initial``.
    initial_events_end: bool


async def open_watch(
    store: Store, caches: watchcache.CacheSet, namespace: str, opts: ListOptions
) -> OpenedWatch:
    """Register a watcher; nothing may await between the replay and the registration."""
    matches = make_filter(store, namespace, opts)
    rv = opts.resource_version
    send_initial = opts.send_initial_events
    if send_initial is None:
        send_initial = rv in ("", "0")
    wanted = parse_resource_version(rv) if rv not in ("", "0") else 0
    if not rv and send_initial:
        await caches.wait_fresh()
    elif wanted and not await caches.wait_for(wanted):
        raise errors.too_large_resource_version(wanted, caches.revision)
    cache = store.cache
    watcher = watchcache.Watcher(matches)
    initial: list[watchcache.WatchEvent] = []
    if send_initial:
        for item in cache.snapshot(namespace if store.rt.namespaced else ""):
            if matches(item):
                initial.append(watchcache.WatchEvent("ADDED", item, None, item.revision))
        start = caches.revision
    else:
        if wanted == 0:
            wanted = caches.revision
        if wanted < cache.oldest_revision:
            raise errors.too_old_resource_version(wanted, cache.oldest_revision + 1)
        start = wanted
        for event in cache.events_after(wanted):
            watcher.offer(event)
    cache.watchers.add(watcher)
    return OpenedWatch(watcher, initial, start, bool(opts.send_initial_events))
