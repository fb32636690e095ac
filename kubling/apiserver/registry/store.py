"""The generic Store: create, get, list, update, delete and watch once, for every kind.

Upstream's ``genericregistry.Store`` in Python. The per-kind differences live in the
``Strategy``; the Store owns the object-metadata rules (uid, timestamps, generateName,
resourceVersion, finalizers, graceful deletion, dry run) and turns storage outcomes into
API errors. Every write is a compare-and-swap on the key's revision: a client's stale
``resourceVersion`` is a 409, a race with another writer of an unconditional update is
retried with the fresh value (``guaranteed_update``).
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from kubling import storage
from kubling.api import fieldmanager, meta
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.apiserver import admission, errors, watchcache
from kubling.apiserver.registry.strategy import Strategy

#: Characters upstream appends to ``generateName`` (no vowels, no look-alikes).
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_GENERATE_ATTEMPTS = 8
_UPDATE_ATTEMPTS = 16

#: What a transform given to ``guaranteed_update`` returns: the new object.
UpdateFunc = Callable[[Object], Awaitable[Object]]


@dataclasses.dataclass(frozen=True, slots=True)
class Preconditions:
    uid: str | None = None
    resource_version: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DeleteOptions:
    grace_period_seconds: int | None = None
    preconditions: Preconditions = Preconditions()
    propagation_policy: str | None = None
    dry_run: bool = False
    #: The deprecated orphanDependents, as sent (it only changes the response code now).
    orphan_dependents: bool | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DeleteResult:
    """The object after the call, and whether it left storage (else it is only marked)."""

    obj: Object
    deleted: bool


#: The finalizer each propagation policy leaves for the garbage collector to honour.
_PROPAGATION_FINALIZERS = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}


def _propagation_finalizer(md: dict[str, Any], policy: str | None) -> None:
    """``Orphan`` and ``Foreground`` deletions are finished by the garbage collector: mark
    the object with the matching finalizer (and drop the other one), as upstream."""
    wanted = _PROPAGATION_FINALIZERS.get(policy or "")
    if wanted is None:
        return
    finalizers = [f for f in md.get("finalizers") or []
                  if f not in _PROPAGATION_FINALIZERS.values()]
    md["finalizers"] = [*finalizers, wanted]


def _shortens(md: dict[str, Any], grace: int) -> bool:
    """Whether a new delete asks for less time than the deletion already under way has
    left (upstream lets a second delete shorten a grace period, never lengthen it)."""
    current = md.get("deletionGracePeriodSeconds")
    return isinstance(current, int) and grace < current


def generate_name(base: str) -> str:
    """``base`` plus five random characters, as upstream's ``SimpleNameGenerator``."""
    suffix = "".join(random.choice(_GENERATE_ALPHABET) for _ in range(5))
    return base[: 63 - 5] + suffix if len(base) > 58 else base + suffix


def encode(obj: Object) -> bytes:
    """The stored form: the object without its ``resourceVersion`` (that is the revision)."""
    md = obj.get("metadata")
    if isinstance(md, dict) and "resourceVersion" in md:
        stripped = dict(obj)
        stripped["metadata"] = {k: v for k, v in md.items() if k != "resourceVersion"}
        return orjson.dumps(stripped)
    return orjson.dumps(obj)


def _with_revision(obj: Object, revision: int) -> Object:
    obj["metadata"]["resourceVersion"] = str(revision)
    return obj


class Store:
    """Storage-backed REST operations for one resource, ruled by its strategy."""

    def __init__(
        self,
        rt: ResourceType,
        strategy: Strategy,
        backend: storage.Backend,
        cache: watchcache.ResourceCache,
        *,
        namespace_state: Callable[[str], Awaitable[Object | None]],
        fresh: Callable[[], Awaitable[bool]] | None = None,
        admission_chain: admission.Chain | None = None,
    ) -> None:
        self.rt = rt
        self.strategy = strategy
        self.backend = backend
        self.cache = cache
        self._namespace_state = namespace_state
        self._fresh = fresh
        self._admission = admission_chain
        #: Objects of this version are stored converted to another one (see conversion.py).
        self.converts = bool(rt.storage_version) and rt.storage_version != rt.api_version

    # -- the stored form ------------------------------------------------------------------
    def encode(self, obj: Object) -> bytes:
        if self.converts:
            obj = self.strategy.convert(obj, self.rt.storage_version)
        return encode(obj)

    def load(self, kv: storage.KeyValue) -> Object:
        """A stored value as an object of this store's version, with its resourceVersion."""
        return self.present(watchcache.decode(kv))

    def _foreign(self, cached: watchcache.CachedObject) -> bool:
        """Whether a stored object is in another version than this store serves (a
        multi-version kind, or a CRD whose storage version changed since it was written)."""
        return self.converts or cached.obj.get("apiVersion") != self.rt.api_version

    def present(self, cached: watchcache.CachedObject) -> Object:
        """A cached object in this store's version (shared when no conversion: read only)."""
        if self._foreign(cached):
            return self.strategy.convert(cached.copy(), self.rt.api_version)
        return cached.obj

    def present_json(self, cached: watchcache.CachedObject) -> bytes:
        """The JSON of a cached object in this store's version; shared bytes if possible."""
        if self._foreign(cached):
            return orjson.dumps(self.present(cached))
        return cached.json

    # -- keys and errors ------------------------------------------------------------------
    def key(self, namespace: str, name: str) -> str:
        if self.rt.namespaced:
            return f"{self.rt.storage_prefix}{namespace}/{name}"
        return f"{self.rt.storage_prefix}{name}"

    def prefix(self, namespace: str) -> str:
        if self.rt.namespaced and namespace:
            return f"{self.rt.storage_prefix}{namespace}/"
        return self.rt.storage_prefix

    def not_found(self, name: str) -> errors.APIError:
        return errors.not_found(self.rt.group, self.rt.plural, name)

    def _conflict(self, name: str, why: str = errors.OBJECT_MODIFIED) -> errors.APIError:
        return errors.conflict(self.rt.group, self.rt.plural, name, why)

    def _invalid(self, name: str, errs: list[Any]) -> errors.APIError:
        return errors.invalid(self.rt.group, self.rt.kind, name, errs)

    # -- reads ----------------------------------------------------------------------------
    async def read(self, key: str) -> storage.KeyValue | None:
        """The key's current value: from the watch cache once it holds every acknowledged
        write (no storage round trip), else from storage. Either way a consistent read."""
        if self._fresh is not None and await self._fresh():
            cached = self.cache.items.get(key)
            if cached is None:
                return None
            return storage.KeyValue(key, cached.json, cached.revision, 0)
        return await self.backend.get(key)

    async def get(self, namespace: str, name: str) -> Object:
        """The object as storage holds it now (a consistent read)."""
        kv = await self.read(self.key(namespace, name))
        if kv is None:
            raise self.not_found(name)
        return self.load(kv)

    # -- create ---------------------------------------------------------------------------
    async def create(self, obj: Object, *, namespace: str, dry_run: bool = False,
                     manager: str | None = None) -> Object:
        """Store a new object. ``manager`` records the write in ``managedFields`` (None: the
        caller has already, as server-side apply does, or the write is the server's own)."""
        md = meta.metadata(obj)
        if md.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if self.rt.namespaced:
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        self._fill_create_meta(md)
        self.strategy.prepare_for_create(obj)
        generate = not md.get("name") and bool(md.get("generateName"))
        if generate:
            md["name"] = self._generated_name(md["generateName"])
        if manager is not None:
            self._track(None, obj, manager, self.strategy)
        errs = self.strategy.validate(obj)
        if errs:
            raise self._invalid(meta.name_of(obj), errs)
        if self.rt.namespaced:
            await self._check_namespace_open(namespace, md["name"])
        if self._admission is not None:
            await self._admission.admit(obj, admission.Attributes(
                self.rt, namespace, md["name"], dry_run=dry_run))
        txn = await self.strategy.begin_create(obj, dry_run=dry_run)
        try:
            created = await self._write_new(obj, namespace, generate, dry_run)
        except errors.APIError:  # certainly not written: give back what was reserved
            if txn is not None:
                await txn.finish(False)
            raise
        if txn is not None:
            await txn.finish(True)
        return created

    async def _write_new(self, obj: Object, namespace: str, generate: bool,
                         dry_run: bool) -> Object:
        md = obj["metadata"]
        if dry_run:
            return obj
        for attempt in range(_GENERATE_ATTEMPTS):
            try:
                kv = await self.backend.create(self.key(namespace, md["name"]), self.encode(obj))
            except storage.KeyExistsError:
                if generate and attempt + 1 < _GENERATE_ATTEMPTS:
                    md["name"] = self._generated_name(md["generateName"])
                    continue
                raise errors.already_exists(self.rt.group, self.rt.plural, md["name"]) from None
            return _with_revision(obj, kv.mod_revision)
        raise AssertionError("unreachable")

    @staticmethod
    def _fill_create_meta(md: dict[str, Any]) -> None:
        md["uid"] = meta.new_uid()
        md["creationTimestamp"] = meta.now()
        for field_name in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            md.pop(field_name, None)

    @staticmethod
    def _generated_name(base: str) -> str:
        return generate_name(base)

    async def _check_namespace_open(self, namespace: str, name: str) -> None:
        ns = await self._namespace_state(namespace)
        if ns is None:
            raise errors.not_found("", "namespaces", namespace)
        if ns.get("metadata", {}).get("deletionTimestamp") or (
            ns.get("status", {}).get("phase") == "Terminating"
        ):
            raise errors.APIError(
                403,
                "Forbidden",
                f'{self.rt.group_resource} "{name}" is forbidden: unable to create '

                f"new content in namespace {namespace} because it is being terminated",
                details={
                    "group": self.rt.group,
                    "kind": self.rt.plural,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    # -- update ---------------------------------------------------------------------------
    async def update(
        self,
        namespace: str,
        name: str,
        obj: Object,
        *,
        strategy: Strategy | None = None,
        dry_run: bool = False,
        manager: str | None = None,
    ) -> tuple[Object, bool]:
        """Replace the object (PUT). Returns the stored object and whether it was created."""
        md = meta.metadata(obj)
        if md.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({md.get('name')}) does not match the name on the URL "
                f"({name})"
            )
        md["name"] = name
        if self.rt.namespaced:
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        wanted_rv = str(md.get("resourceVersion") or "")

        async def replace(_current: Object) -> Object:
            return orjson.loads(orjson.dumps(obj))  # type: ignore[no-any-return]

        try:
            result = await self.guaranteed_update(
                namespace, name, replace, strategy=strategy, dry_run=dry_run,
                expected_rv=wanted_rv, manager=manager,
            )
        except errors.APIError as err:
            if err.code != 404 or not (strategy or self.strategy).allow_create_on_update:
                raise
            md.pop("resourceVersion", None)
            return await self.create(obj, namespace=namespace, dry_run=dry_run,
                                     manager=manager), True
        return result, False

    async def guaranteed_update(
        self,
        namespace: str,
        name: str,
        transform: UpdateFunc,
        *,
        strategy: Strategy | None = None,
        dry_run: bool = False,
        expected_rv: str = "",
        manager: str | None = None,
        subresource: str | None = None,
    ) -> Object:
        """Read, transform, validate, compare-and-swap; retry on a race with other writers.

        ``expected_rv`` (or a ``resourceVersion`` the transform leaves in the new object)
        makes the update conditional: a mismatch is a 409 and is not retried.
        """
        strat = strategy or self.strategy
        key = self.key(namespace, name)
        kv = await self.read(key)
        for _ in range(_UPDATE_ATTEMPTS):
            if kv is None:
                raise self.not_found(name)
            old = self.load(kv)
            new = await transform(orjson.loads(orjson.dumps(old)))
            new_md = meta.metadata(new)
            # A resourceVersion the transform merely carried over from the stored object is
            # no precondition (a patch without one retries on a race); one it changed is.
            carried = str(new_md.get("resourceVersion") or "")
            wanted = expected_rv or (carried if carried != str(kv.mod_revision) else "")
            if wanted and wanted != str(kv.mod_revision):
                raise self._conflict(name)
            self._carry_meta(new_md, old["metadata"], name)
            strat.prepare_for_update(new, old)
            new_md = meta.metadata(new)  # a strategy may have replaced the whole object
            errs = strat.validate_update(new, old)
            if errs:
                raise self._invalid(name, errs)
            new_md["resourceVersion"] = str(kv.mod_revision)
            if "managedFields" not in new_md and "managedFields" in old["metadata"]:
                new_md["managedFields"] = old["metadata"]["managedFields"]
            if new == old:
                return old  # nothing changed: no write, no event (as upstream)
            if manager is not None:
                self._track(old, new, manager, strat, subresource)
            txn = await strat.begin_update(new, old, dry_run=dry_run)
            try:
                written, retry = await self._write_update(key, kv, new, name, wanted, dry_run)
            except errors.APIError:  # certainly not written: give back what was reserved
                if txn is not None:
                    await txn.finish(False)
                raise
            if txn is not None:
                await txn.finish(written is not None)
            if written is None:
                kv = retry  # lost a race with another writer: again, on the fresh value
                continue
            if not dry_run and new_md.get("deletionTimestamp") and (
                    not self.strategy.pending_finalizers(new)
                    and not new_md.get("deletionGracePeriodSeconds")):
                await self.strategy.after_delete(new)  # the update completed a deletion
            return written
        raise self._conflict(name, "too many concurrent writers; please try again")

    async def _write_update(self, key: str, kv: storage.KeyValue, new: Object, name: str,
                            wanted: str, dry_run: bool,
                            ) -> tuple[Object | None, storage.KeyValue | None]:
        """Store ``new`` over ``kv`` (or remove the object when its deletion is complete).
        Returns the result, or None and the current value when another writer won."""
        new_md = new["metadata"]
        if (new_md.get("deletionTimestamp") and not self.strategy.pending_finalizers(new)
                and not new_md.get("deletionGracePeriodSeconds")):
            if dry_run:
                return new, None
            try:
                await self.backend.delete(key, expected_revision=kv.mod_revision)
            except storage.ConflictError as err:
                return None, err.current
            return new, None
        if dry_run:
            return new, None
        try:
            stored = await self.backend.update(
                key, self.encode(new), expected_revision=kv.mod_revision
            )
        except storage.ConflictError as err:
            if wanted:
                raise self._conflict(name) from None
            return None, err.current
        except storage.KeyNotFoundError:
            raise self.not_found(name) from None
        return _with_revision(new, stored.mod_revision), None

    def _track(self, old: Object | None, new: Object, manager: str, strat: Strategy,
               subresource: str | None = None) -> None:
        """Give the fields this write changed to ``manager`` in ``managedFields``."""
        try:
            fieldmanager.update_managed_fields(
                old, new, manager=manager, definition=strat.field_definition(),
                now=meta.now(),
                subresource=strat.subresource if subresource is None else subresource,
                ignored=strat.reset_fields(),
            )
        except fieldmanager.FieldManagerError as err:
            raise errors.APIError(err.code, "BadRequest" if err.code == 400 else "",
                                  err.message) from None

    def _carry_meta(self, new: dict[str, Any], old: dict[str, Any], name: str) -> None:
        """Keep what only the server sets; a different uid is a precondition failure."""
        if new.get("uid") and new["uid"] != old.get("uid"):
            raise self._conflict(
                name,
                f"Precondition failed: UID in precondition: {new['uid']}, "
                f"UID in object meta: {old.get('uid')}",
            )
        new["name"] = old["name"]
        if "namespace" in old:
            new["namespace"] = old["namespace"]
        for field_name in ("uid", "creationTimestamp", "deletionTimestamp",
                           "deletionGracePeriodSeconds"):
            if field_name in old:
                new[field_name] = old[field_name]
            else:
                new.pop(field_name, None)
        if "generateName" in old and "generateName" not in new:
            new["generateName"] = old["generateName"]
        new.pop("selfLink", None)

    # -- delete ---------------------------------------------------------------------------
    async def delete(self, namespace: str, name: str, options: DeleteOptions) -> DeleteResult:
        key = self.key(namespace, name)
        for _ in range(_UPDATE_ATTEMPTS):
            kv = await self.read(key)
            if kv is None:
                raise self.not_found(name)
            obj = self.load(kv)
            self._check_preconditions(obj, name, options.preconditions)
            md = obj["metadata"]
            finalizers_before = list(md.get("finalizers") or [])
            _propagation_finalizer(md, options.propagation_policy)
            grace = self.strategy.grace_period(obj, options.grace_period_seconds)
            if self.strategy.pending_finalizers(obj) or grace > 0:
                already = bool(md.get("deletionTimestamp")) and not _shortens(md, grace)
                if already and md.get("finalizers", []) == finalizers_before:
                    return DeleteResult(obj, False)  # already being deleted, nothing new
                # A new propagation finalizer on an object already being deleted keeps its
                # deletionTimestamp; a first mark (or a shorter grace) sets it.
                marked = obj if already else self._mark_deleting(obj, grace)
                if options.dry_run:
                    return DeleteResult(marked, False)
                try:
                    stored = await self.backend.update(
                        key, self.encode(marked), expected_revision=kv.mod_revision
                    )
                except storage.ConflictError:
                    continue
                return DeleteResult(_with_revision(marked, stored.mod_revision), False)
            if options.dry_run:
                return DeleteResult(obj, True)
            try:
                await self.backend.delete(key, expected_revision=kv.mod_revision)
            except storage.ConflictError:
                continue
            except storage.KeyNotFoundError:
                raise self.not_found(name) from None
            await self.strategy.after_delete(obj)
            return DeleteResult(obj, True)
        raise self._conflict(name, "too many concurrent writers; please try again")

    def _mark_deleting(self, obj: Object, grace: int) -> Object:
        """Set deletionTimestamp to when the grace period ends (first mark or shortening)."""
        md = obj["metadata"]
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=max(grace, 0))
        md["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        md["deletionGracePeriodSeconds"] = max(grace, 0)
        self.strategy.mark_deleting(obj)
        return obj

    def _check_preconditions(self, obj: Object, name: str, pre: Preconditions) -> None:
        md = obj["metadata"]
        if pre.uid is not None and pre.uid != md.get("uid"):
            raise self._conflict(
                name,
                f"Precondition failed: UID in precondition: {pre.uid}, "
                f"UID in object meta: {md.get('uid')}",
            )
        if pre.resource_version is not None and pre.resource_version != md.get(
            "resourceVersion"
        ):
            raise self._conflict(
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre.resource_version}, ResourceVersion in object meta: "
                f"{md.get('resourceVersion')}",
            )
