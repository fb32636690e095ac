"""The API server as a whole: storage, certificates, caches, bootstrap objects, HTTPS.

``APIServer.start`` runs the start-up phases in order and reports each one through the
``on_phase`` callback (the CLI prints them); ``stop`` undoes them in reverse. Everything
runs on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from kubling import storage
from kubling.api.resources import Catalogue
from kubling.apiserver import (
    admission,
    app,
    authn,
    authz,
    bootstrap,
    health,
    join,
    kubeconfig,
    metricsapi,
    metricsscraper,
    metricsstorage,
    nodeproxy,
    pki,
    tokens,
    watchcache,
)
from kubling.apiserver.admission import serviceaccount as sa_admission
from kubling.apiserver.allocation import repair as allocation_repair
from kubling.apiserver.allocation.bitmap import parse_port_range
from kubling.apiserver.allocation.service import ServiceAllocator
from kubling.apiserver.registry import customresources
from kubling.apiserver.registry.kinds import ServiceStrategy
from kubling.apiserver.registry.registry import Registry

log = logging.getLogger("kubling.apiserver")

PhaseCallback = Callable[[str, float], None]


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    bind_address: str = "0.0.0.0"
    https_port: int = 6443
    datastore_endpoint: str = ""
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    service_node_port_range: str = "30000-32767"
    node_addresses: tuple[str, ...] = ()
    hostnames: tuple[str, ...] = ()
    compact_interval: float = 300.0
    #: Seconds between scrapes of the agents' resource metrics (``--metric-resolution``).
    metric_resolution: float = metricsscraper.DEFAULT_RESOLUTION

    @property
    def endpoint(self) -> str:
        return self.datastore_endpoint or f"sqlite://{self.data_dir / 'db' / 'state.db'}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    @property
    def first_service_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.service_cidr, strict=False).hosts()))


def node_port_range(text: str) -> str:
    """``--service-node-port-range``: ``30000-32767`` (or ``30000+2768``) → canonical form."""
    first, last = parse_port_range(text)
    return f"{first}-{last}"


class APIServer:
    def __init__(self, config: ServerConfig, *, on_phase: PhaseCallback | None = None) -> None:
        self.config = config
        self.on_phase = on_phase or (lambda name, seconds: None)
        self.backend: storage.Backend | None = None
        self.caches: watchcache.CacheSet | None = None
        self.registry: Registry | None = None
        self.crds: customresources.CustomResourceDefinitions | None = None
        self.service_allocator: ServiceAllocator | None = None
        self.pki: pki.ClusterPKI | None = None
        self.token_issuer: tokens.TokenIssuer | None = None
        #: The agents' join token (``<data-dir>/token``) and whether this start made it.
        self.join_token = ""
        self.join_token_created = False
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = False
        self._stopping = False

    async def _phase(self, name: str, started: float) -> None:
        self.on_phase(name, time.monotonic() - started)

    async def start(self) -> None:
        cfg = self.config
        t = time.monotonic()
        self.pki = await asyncio.to_thread(
            pki.ensure_pki,
            cfg.data_dir / "tls",
            hostnames=list(cfg.hostnames),
            ips=sorted({"127.0.0.1", cfg.first_service_ip, *cfg.node_addresses}),
        )
        self.token_issuer = tokens.TokenIssuer(
            await asyncio.to_thread(pki.load_service_account_key, self.pki.service_account_key))
        await asyncio.to_thread(
            kubeconfig.write_admin_kubeconfig,
            cfg.kubeconfig_path,
            server=f"https://127.0.0.1:{cfg.https_port}",
            pki=self.pki,
        )
        self.join_token, self.join_token_created = await asyncio.to_thread(
            join.ensure_token, cfg.data_dir, self.pki.ca_cert)
        await self._phase("certificates", t)

        t = time.monotonic()
        self.backend = storage.open_backend(cfg.endpoint)
        await self.backend.start()
        await self._phase("storage", t)

        t = time.monotonic()
        self.caches = watchcache.CacheSet(self.backend)
        await self.caches.start()
        self.registry = Registry(Catalogue(), self.backend, self.caches)
        self.registry.set_admission(admission.Chain([
            sa_admission.ServiceAccountAdmission(self.registry),
        ]))
        self.crds = customresources.CustomResourceDefinitions(self.registry.catalogue,
                                                              self.registry)
        crd_type = self.registry.catalogue.lookup(
            "apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert crd_type is not None
        self.crds.start(self.caches.cache(crd_type.storage_prefix))
        await self._phase("watch cache", t)

        t = time.monotonic()
        await self._allocation()
        await self._phase("service allocation", t)

        t = time.monotonic()
        await self._bootstrap()
        await self._phase("bootstrap", t)

        t = time.monotonic()
        await self._serve()
        self._tasks.append(asyncio.create_task(
            storage.run_compactor(self.backend, interval=cfg.compact_interval),
            name="compactor",
        ))
        self._ready = True
        await self._phase("https", t)

    async def _allocation(self) -> None:
        """Serve Services with the cluster's IP and node-port pools, repaired from the
        Services in storage first (before anything can allocate)."""
        assert self.registry is not None and self.backend is not None
        self.service_allocator = ServiceAllocator(
            self.backend, service_cidr=self.config.service_cidr,
            node_port_range=self.config.service_node_port_range)
        await self.service_allocator.load()
        services = self.registry.catalogue.lookup("", "v1", "services")
        assert services is not None
        await allocation_repair.repair(self.service_allocator, self.backend,
                                       services.storage_prefix)
        self.registry.set_strategy(services, ServiceStrategy(services, self.service_allocator))

    async def _bootstrap(self) -> None:
        assert self.registry is not None
        address = self.config.node_addresses[0] if self.config.node_addresses else "127.0.0.1"
        await bootstrap.ensure(self.registry, service_ip=self.config.first_service_ip,
                               address=address, port=self.config.https_port)

    def _checks(self) -> health.HealthChecks:
        checks = health.HealthChecks()

        async def ping() -> str | None:
            return None

        async def datastore() -> str | None:
            try:
                assert self.backend is not None
                await asyncio.wait_for(self.backend.current_revision(), 2.0)
            except Exception as err:
                return str(err) or type(err).__name__
            return None

        async def informer_sync() -> str | None:
            return None if self.caches is not None else "watch cache not started"

        async def shutdown() -> str | None:
            return "server is shutting down" if self._stopping else None

        checks.add("ping", ping)
        checks.add("log", ping)
        checks.add("etcd", datastore)
        checks.add("etcd-readiness", datastore, endpoints=("readyz",))
        checks.add("informer-sync", informer_sync, endpoints=("readyz",))
        checks.add("shutdown", shutdown, endpoints=("readyz",))
        return checks

    async def _serve(self) -> None:
        assert self.registry is not None and self.pki is not None
        assert self.crds is not None and self.token_issuer is not None
        service_accounts = tokens.ServiceAccountAuthenticator(
            self.token_issuer, tokens.ObjectGetter(self.registry))
        kubelet = nodeproxy.KubeletConnector(self.pki)
        metrics = metricsstorage.MetricsStorage(
            resolution_ns=int(self.config.metric_resolution * 1e9))
        application = app.APIServerApp(
            self.registry,
            custom_schema=self.crds.schema_for,
            authenticator=authn.Authenticator((service_accounts,)),
            authorizer=authz.AllowAuthenticated(),
            checks=self._checks(),
            kubelet=kubelet,
            token_issuer=self.token_issuer,
            metrics=metricsapi.MetricsAPI(self.registry, metrics),
            join_handlers=join.JoinHandlers(
                self.pki, self.join_token, cluster_cidr=self.config.cluster_cidr,
                service_cidr=self.config.service_cidr, node_pod_cidrs=self._node_pod_cidrs,
                node_passwords=join.NodePasswords(self.registry).check),
        ).build()
        self._runner = web.AppRunner(application, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        context: ssl.SSLContext = pki.server_ssl_context(self.pki)
        site = web.TCPSite(
            self._runner, self.config.bind_address, self.config.https_port,
            ssl_context=context, backlog=1024, reuse_address=True,
        )
        await site.start()
        scraper = metricsscraper.Scraper(self.registry, metrics, kubelet,
                                         resolution=self.config.metric_resolution)
        self._tasks.append(asyncio.create_task(scraper.run(), name="metrics-scraper"))

    async def _node_pod_cidrs(self) -> dict[str, str]:
        """Which pod CIDR each Node has, for the pod CIDR of a joining agent."""
        assert self.registry is not None
        nodes = self.registry.catalogue.lookup("", "v1", "nodes")
        assert nodes is not None
        store = self.registry.store(nodes)
        listed = await self.registry.backend.list(store.prefix(""))
        return join.pod_cidrs_of(store.load(kv) for kv in listed.items)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.crds is not None:
            await self.crds.stop()
        if self.caches is not None:
            await self.caches.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.backend is not None:
            await self.backend.close()
