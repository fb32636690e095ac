"""The configMaps and secrets the pods of this node reference, kept current by watches.

This is upstream's watch-based object manager (the kubelet's default
``configMapAndSecretChangeDetectionStrategy: Watch``): for each object some pod here refers
to — by a volume, a projected source, an env ``valueFrom`` or an ``envFrom`` — one informer
selected to that single object (``fieldSelector=metadata.name=<name>`` in its namespace),
which is all a node is allowed to read anyway. Readers get the cached object; a change
calls back every pod that references it, so its worker re-projects the files within a
second instead of upstream's minute-long sync period. An informer lives while at least one
pod references its object.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable

from kubling.api.meta import Object
from kubling.client import informer, rest

log = logging.getLogger("kubling.node.volumes")

CONFIG_MAPS = rest.lookup("v1", "configmaps")
SECRETS = rest.lookup("v1", "secrets")
#: How long a first read waits for its informer's list before giving up (retried later).
SYNC_TIMEOUT = 10.0


class SourceNotFound(Exception):
    """The object does not exist; the message is upstream's (``configmap "x" not found``)."""


class SourceUnavailable(Exception):
    """The object could not be read (the API is away); retried by the caller."""


@dataclasses.dataclass(frozen=True)
class Ref:
    """One referenced object: ``kind`` is ``configmap`` or ``secret`` (upstream's words in
    error messages)."""

    kind: str
    namespace: str
    name: str


class ObjectCache:
    """One per agent. ``register`` a pod's references, ``get`` objects, ``unregister`` on
    pod removal. Everything runs on the agent's event loop."""

    def __init__(self, client: rest.Client) -> None:
        self._client = client
        self._informers: dict[Ref, informer.Informer] = {}
        #: who references what: pod uid -> (its refs, what to call when one changes)
        self._pods: dict[str, tuple[frozenset[Ref], Callable[[], None]]] = {}

    def register(self, uid: str, refs: Iterable[Ref], on_change: Callable[[], None]) -> None:
        """The pod's current references (replacing the previous set)."""
        wanted = frozenset(refs)
        previous = self._pods.get(uid)
        self._pods[uid] = (wanted, on_change)
        for ref in wanted:
            if ref not in self._informers:
                self._informers[ref] = self._start(ref)
        if previous is not None:
            self._release(previous[0] - wanted)

    def unregister(self, uid: str) -> None:
        previous = self._pods.pop(uid, None)
        if previous is not None:
            self._release(previous[0])

    async def get(self, ref: Ref) -> Object:
        """The object, as the watch last saw it; raises SourceNotFound / SourceUnavailable."""
        watcher = self._informers.get(ref)
        if watcher is None:  # no pod registered it: a one-off read
            return await self._read(ref)
        try:
            await watcher.wait_for_sync(SYNC_TIMEOUT)
        except TimeoutError:
            raise SourceUnavailable(f"failed to sync {ref.kind} cache: timed out waiting for "
                                    "the condition") from None
        obj = watcher.indexer.get(f"{ref.namespace}/{ref.name}")
        if obj is None:
            raise SourceNotFound(f'{ref.kind} "{ref.name}" not found')
        return obj

    async def _read(self, ref: Ref) -> Object:
        rt = CONFIG_MAPS if ref.kind == "configmap" else SECRETS
        try:
            return await self._client.resource(rt).get(ref.name, namespace=ref.namespace)
        except rest.ApiError as err:
            if rest.is_not_found(err):
                raise SourceNotFound(f'{ref.kind} "{ref.name}" not found') from err
            raise SourceUnavailable(err.message) from err
        except rest.TRANSPORT_ERRORS as err:
            raise SourceUnavailable(str(err)) from err

    async def close(self) -> None:
        watchers = list(self._informers.values())
        self._informers.clear()
        self._pods.clear()
        for watcher in watchers:
            with contextlib.suppress(Exception):
                await watcher.stop()

    def _start(self, ref: Ref) -> informer.Informer:
        rt = CONFIG_MAPS if ref.kind == "configmap" else SECRETS
        watcher = informer.Informer(self._client, rt, namespace=ref.namespace,
                                    field_selector=f"metadata.name={ref.name}")

        def changed(*_objs: Object) -> None:
            for refs, on_change in list(self._pods.values()):
                if ref in refs:
                    on_change()

        watcher.add_event_handler(on_add=changed, on_update=changed, on_delete=changed)
        watcher.start()
        return watcher

    def _release(self, refs: Iterable[Ref]) -> None:
        """Stop the informers no pod needs any more."""
        used = {ref for wanted, _ in self._pods.values() for ref in wanted}
        for ref in refs:
            if ref not in used:
                watcher = self._informers.pop(ref, None)
                if watcher is not None:
                    task = asyncio.get_running_loop().create_task(watcher.stop())
                    task.add_done_callback(_quiet)


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("stopping a watch failed: %s", task.exception())
