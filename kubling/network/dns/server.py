"""``ClusterDNS``: the cluster's DNS server, one component of the server process.

Informers on Namespaces, Services and EndpointSlices keep the :class:`Zone` current; their
handlers only note which Service changed, and one callback per loop turn rebuilds those
Services' records, so a relist or a burst of slice updates costs one rebuild per Service.
Queries never touch the API. Until every informer has listed once, cluster names are
answered SERVFAIL (clients retry) rather than a wrong NXDOMAIN; forwarding works at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Sequence

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import informer, rest
from kubling.network.dns.cache import AnswerCache
from kubling.network.dns.forwarder import Address, Forwarder, default_upstreams, is_self
from kubling.network.dns.records import SERVICE_NAME_LABEL, Zone, build_service
from kubling.network.dns.resolver import Resolver
from kubling.network.dns.transport import DNSServer, bind_pair

log = logging.getLogger(__name__)

NAMESPACES = rest.lookup("v1", "namespaces")
SERVICES = rest.lookup("v1", "services")
ENDPOINT_SLICES = rest.lookup("discovery.k8s.io/v1", "endpointslices")

#: The default address of the cluster DNS: k3s's, inside the service CIDR 10.43.0.0/16.
DEFAULT_LISTEN: tuple[Address, ...] = (("10.43.0.10", 53),)
_SLICE_INDEX = "kubling.network.dns/service"


def _service_key_of_slice(slice_: Object) -> str | None:
    service = meta.labels_of(slice_).get(SERVICE_NAME_LABEL)
    return f"{meta.namespace_of(slice_)}/{service}" if service else None


def _slice_index(slice_: Object) -> list[str]:
    key = _service_key_of_slice(slice_)
    return [key] if key else []


class ClusterDNS:
    """Serves the cluster domain from the API's Services and EndpointSlices over UDP and
    TCP, and forwards everything else to ``upstreams`` (default: the host's resolvers).

    ``listen`` addresses are bound by ``start()`` (port 0 picks a free port, the same for
    UDP and TCP; see ``addresses``); ``sockets`` are already-bound sockets to serve as
    well, e.g. made inside another network namespace. Pass ``informers`` to share the
    process's informer factory; otherwise the component runs its own.
    """

    def __init__(
        self,
        client: rest.Client,
        *,
        domain: str = "cluster.local",
        listen: Sequence[Address] = DEFAULT_LISTEN,
        upstreams: Sequence[Address] | None = None,
        ttl: int = 5,
        sockets: Sequence[socket.socket] = (),
        informers: informer.SharedInformerFactory | None = None,
        cache_size: int = 10_000,
        upstream_timeout: float = 2.0,
    ) -> None:
        self.client = client
        self.listen = list(listen)
        self._extra_sockets = list(sockets)
        if upstreams is None:
            upstreams = default_upstreams(self.listen)
            log.info("cluster DNS forwards to %s",
                     ", ".join(f"{h}:{p}" for h, p in upstreams) or "nothing")
        self.upstreams = [u for u in upstreams if not is_self(u, self.listen)]
        nameservers = [h for h, _ in self.listen if not ipaddress.ip_address(h).is_unspecified]
        self.zone = Zone(domain, ttl=ttl, nameservers=nameservers)
        self.forwarder = Forwarder(self.upstreams, timeout=upstream_timeout)
        self.cache = AnswerCache(cache_size)
        self.resolver = Resolver(self.zone, self.forwarder, self.cache, ttl=ttl,
                                 synced=self.has_synced)
        self._own_factory = informers is None
        self._factory = informers or informer.SharedInformerFactory(client)
        self._namespaces = self._factory.informer(NAMESPACES)
        self._services = self._factory.informer(SERVICES)
        self._slices = self._factory.informer(ENDPOINT_SLICES)
        self._handlers: list[tuple[informer.Informer, informer.EventHandlers]] = []
        self._dirty: set[str] = set()
        self._flush_scheduled = False
        self._ready = False
        self._server: DNSServer | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the listen addresses, start serving and start the informers."""
        with contextlib.suppress(ValueError):  # already there when the factory is shared
            self._slices.indexer.add_index(_SLICE_INDEX, _slice_index)
        sockets: list[socket.socket] = []
        try:
            for host, port in self.listen:
                sockets.extend(bind_pair(host, port))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self._server = DNSServer(self.resolver)
        for sock in [*sockets, *self._extra_sockets]:
            await self._server.serve(sock)
        self._handlers = [
            (self._namespaces, self._namespaces.add_event_handler(
                on_add=self._namespace_added, on_delete=self._namespace_deleted)),
            (self._services, self._services.add_event_handler(
                on_add=self._service_changed, on_update=lambda _, new:
                self._service_changed(new), on_delete=self._service_changed)),
            (self._slices, self._slices.add_event_handler(
                on_add=self._slice_changed, on_update=self._slice_updated,
                on_delete=self._slice_changed)),
        ]
        for inf in (self._namespaces, self._services, self._slices):
            inf.start()

    async def wait_for_sync(self, timeout: float | None = None) -> None:
        """Wait until the zone holds every object of the first lists."""
        async with asyncio.timeout(timeout):
            while not self.has_synced():
                await asyncio.sleep(0.01)

    def has_synced(self) -> bool:
        if self._ready:
            return True
        informers = (self._namespaces, self._services, self._slices)
        self._ready = all(inf.has_synced for inf in informers) and not self._dirty
        return self._ready

    def addresses(self) -> list[Address]:
        """The UDP addresses served (the TCP ones are the same)."""
        return self._server.addresses() if self._server is not None else []

    async def stop(self) -> None:
        for inf, handlers in self._handlers:
            inf.remove_event_handler(handlers)
        self._handlers = []
        if self._own_factory:
            await self._factory.shutdown()
        if self._server is not None:
            await self._server.close()
            self._server = None

    # -- informer handlers: note what changed, rebuild once per loop turn ----------------
    def _namespace_added(self, obj: Object) -> None:
        self.zone.set_namespace(meta.name_of(obj), True)

    def _namespace_deleted(self, obj: Object) -> None:
        self.zone.set_namespace(meta.name_of(obj), False)

    def _service_changed(self, obj: Object) -> None:
        self._mark(informer.key_of(obj))

    def _slice_changed(self, obj: Object) -> None:
        key = _service_key_of_slice(obj)
        if key is not None:
            self._mark(key)

    def _slice_updated(self, old: Object, new: Object) -> None:
        self._slice_changed(old)
        self._slice_changed(new)

    def _mark(self, key: str) -> None:
        self._dirty.add(key)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            service = self._services.indexer.get(key)
            try:
                if service is None:
                    self.zone.replace_service(key, None)
                else:
                    slices = self._slices.indexer.by_index(_SLICE_INDEX, key)
                    self.zone.replace_service(
                        key, build_service(service, slices, self.zone.domain))
            except Exception:
                log.exception("cluster DNS: records of service %s not rebuilt", key)
