"""``ServiceProxy``: keep the node's nftables table in step with Services and EndpointSlices.

Informer handlers only set a "dirty" flag; one task turns flags into syncs. A sync snapshots
both caches, builds the desired state and the ruleset on a thread (informer objects are
replaced, never mutated, so a snapshot of references is safe to read off the loop) and
applies it with one ``nft -f``: the difference from the last sync (a few lines per endpoint
change), or, on the first and the periodic syncs and after any failure, the whole table. Like kube-proxy's ``minSyncPeriod``, a change right after a
quiet period is synced at once, and a burst of changes is coalesced into at most one sync
per ``min_sync_period``. The diff is computed against the full desired table kept in
memory, not against events, so it cannot drift: a failed write drops that memory and the next
sync rewrites everything; a restart starts with a full sync, and the periodic one
(``resync_period``) repairs what no event announces (someone deleting a chain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from kubling.api.meta import Object
from kubling.client import rest
from kubling.client.informer import EventHandlers, Informer, SharedInformerFactory
from kubling.network.proxy import nft
from kubling.network.proxy.model import PortsMemo, ProxyState, build_state
from kubling.network.proxy.ruleset import Inventory, Ruleset, build, check_table_name

__all__ = ["ENDPOINT_SLICES", "SERVICES", "ServiceProxy"]

log = logging.getLogger(__name__)

SERVICES = rest.lookup("v1", "services")
ENDPOINT_SLICES = rest.lookup("discovery.k8s.io/v1", "endpointslices")

_RETRY_INITIAL = 0.5
_RETRY_CAP = 30.0


class ServiceProxy:
    """The service proxy of one node.

    ``node_ips`` are the addresses that serve node ports (loopback is never one, as in
    kube-proxy's nftables mode). Traffic from outside ``cluster_cidr`` to a cluster IP is
    masqueraded (all of it with ``masquerade_all``). Pass ``informers`` to share the
    process's informers; otherwise the proxy makes and owns its own.
    """

    def __init__(
        self,
        client: rest.Client,
        *,
        node_name: str,
        node_ips: Iterable[str],
        cluster_cidr: str = "10.42.0.0/16",
        table: str = "kubling",
        masquerade_all: bool = False,
        min_sync_period: float = 0.1,
        resync_period: float = 60.0,
        informers: SharedInformerFactory | None = None,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.node_ips = tuple(node_ips)
        self.cluster_cidr = cluster_cidr
        self.table = check_table_name(table)
        self.masquerade_all = masquerade_all
        self.min_sync_period = min_sync_period
        self.resync_period = resync_period
        self._factory = informers
        self._services: Informer | None = None
        self._slices: Informer | None = None
        self._registrations: list[tuple[Informer, EventHandlers]] = []
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        #: What the table holds after our last successful sync; None: ask the kernel.
        self._inventory: Inventory | None = None
        #: The ruleset the table holds after our last sync: the next one writes the diff.
        self._ruleset: Ruleset | None = None
        self._applied: ProxyState | None = None
        #: Per-Service ports of the last build (only touched under ``_lock``, by the
        #: thread that builds).
        self._memo: PortsMemo = {}
        #: Successful syncs so far, and how long the last one took (seconds).
        self.syncs = 0
        self.last_sync_seconds = 0.0
        self.last_error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, *, timeout: float | None = 60.0) -> None:
        """Start the informers, wait for their first list, program the table, keep it so.

        A failing first sync is logged and retried by the background task rather than
        raised: the rest of the server should not die because ``nft`` had a bad moment.
        """
        if self._task is not None:
            return
        if self._factory is not None:
            self._services = self._factory.informer(SERVICES)
            self._slices = self._factory.informer(ENDPOINT_SLICES)
        else:
            self._services = Informer(self.client, SERVICES)
            self._slices = Informer(self.client, ENDPOINT_SLICES)
        for informer in (self._services, self._slices):
            self._registrations.append((informer, informer.add_event_handler(
                on_add=self._changed, on_update=self._updated, on_delete=self._changed)))
            informer.start()
        async with asyncio.timeout(timeout):
            await self._services.wait_for_sync()
            await self._slices.wait_for_sync()
        self._dirty.clear()
        try:
            await self.sync(force=True)
        except Exception:
            self._dirty.set()  # the task retries
        self._task = asyncio.get_running_loop().create_task(self._run(), name="service-proxy")

    async def stop(self) -> None:
        """Stop syncing. The table stays: pods stay reachable while the proxy restarts."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for registered, handlers in self._registrations:
            registered.remove_event_handler(handlers)
        self._registrations.clear()
        if self._factory is None:
            for informer in (self._services, self._slices):
                if informer is not None:
                    await informer.stop()

    def set_node_ips(self, node_ips: Iterable[str]) -> None:
        """Node addresses changed (DHCP, a new interface): re-sync with the new ones."""
        self.node_ips = tuple(node_ips)
        self._dirty.set()

    @property
    def applied(self) -> ProxyState | None:
        """The state the last successful sync programmed (None before one, or after a
        failure): when it holds a change, the kernel has committed the rules for it."""
        return self._applied

    # -- syncing --------------------------------------------------------------------------
    def _changed(self, _obj: Object) -> None:
        self._dirty.set()

    def _updated(self, _old: Object, _new: Object) -> None:
        self._dirty.set()

    def snapshot(self) -> tuple[list[Object], list[Object]]:
        """References to the cached Services and EndpointSlices, taken on the loop."""
        services = self._services.indexer.list() if self._services else []
        slices = self._slices.indexer.list() if self._slices else []
        return services, slices

    def _build(self, services: list[Object], slices: list[Object]) -> tuple[ProxyState, Ruleset]:
        state = build_state(services, slices, node_name=self.node_name, node_ips=self.node_ips,
                            cluster_cidr=self.cluster_cidr, masquerade_all=self.masquerade_all,
                            memo=self._memo)
        return state, build(state, table=self.table)

    async def sync(self, *, force: bool = False) -> bool:
        """Program the table from the caches now; False when nothing had changed.

        ``force`` rewrites even an unchanged state (the periodic repair). On failure the
        error is recorded and raised, and the next sync asks the kernel what the table
        holds instead of trusting its memory.
        """
        async with self._lock:
            started = time.perf_counter()
            services, slices = self.snapshot()
            state, ruleset = await asyncio.to_thread(self._build, services, slices)
            if not force and state == self._applied:
                return False
            try:
                if self._ruleset is not None and not force:
                    script = ruleset.diff_script(self._ruleset)
                else:
                    previous = self._inventory
                    if previous is None:
                        previous = await nft.inventory(self.table)
                    script = ruleset.script(previous)
                if script:
                    await nft.apply(script)
            except Exception as err:
                self._inventory = self._applied = self._ruleset = None
                self.last_error = str(err)
                log.error("service proxy: sync of table %s failed: %s", self.table, err)
                raise
            self._inventory = ruleset.inventory()
            self._ruleset = ruleset
            self._applied = state
            self.last_error = None
            self.syncs += 1
            self.last_sync_seconds = time.perf_counter() - started
            log.debug("service proxy: %d service ports synced in %.1f ms",
                      len(state.services), self.last_sync_seconds * 1000)
            return True

    async def _run(self) -> None:
        retry = _RETRY_INITIAL
        while True:
            forced = False
            try:
                await asyncio.wait_for(self._dirty.wait(), self.resync_period)
            except TimeoutError:
                forced = True
            self._dirty.clear()
            try:
                await self.sync(force=forced)
                retry = _RETRY_INITIAL
            except Exception:
                self._dirty.set()
                await asyncio.sleep(retry)
                retry = min(_RETRY_CAP, retry * 2)
                continue
            # Coalesce: whatever arrives now waits for the next slot, then goes in one sync.
            await asyncio.sleep(self.min_sync_period)
