"""The controller manager: runs the enabled controllers against the cluster's API.

Like kube-controller-manager, it talks to the cluster only through ``kubling.client``:
the controllers share one informer per resource (``SharedInformerFactory``), each owns a
work queue and ``reconcile(key)``, and only the holder of the ``kube-controller-manager``
Lease in ``kube-system`` runs them, so that a second server can take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import socket
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from kubling.api import jwt
from kubling.client import clock as clocks
from kubling.client import events, informer, leaderelection, rest

log = logging.getLogger("kubling.controllers")

#: name → "module:Class" of every controller; a new controller is one line here.
#: Imported lazily so that ``--controllers`` can leave one out without loading it.
CONTROLLERS: dict[str, str] = {
    "namespace": "kubling.controllers.namespace:NamespaceController",
    "serviceaccount": "kubling.controllers.serviceaccount:ServiceAccountController",
    "serviceaccount-token": "kubling.controllers.serviceaccount_tokens:TokensController",
    "root-ca-cert-publisher": "kubling.controllers.rootcacert:RootCACertPublisher",
    "garbagecollector": "kubling.controllers.garbagecollector:GarbageCollector",
    "replicaset": "kubling.controllers.replicaset:ReplicaSetController",
    "replicationcontroller": "kubling.controllers.replicaset:ReplicationManager",
    "deployment": "kubling.controllers.deployment:DeploymentController",
    "job": "kubling.controllers.job:JobController",
    "cronjob": "kubling.controllers.cronjob:CronJobController",
    "statefulset": "kubling.controllers.statefulset:StatefulSetController",
    "daemonset": "kubling.controllers.daemonset:DaemonSetController",
    "endpoints": "kubling.controllers.endpoints:EndpointsController",
    "endpointslice": "kubling.controllers.endpointslice:EndpointSliceController",
    "disruption": "kubling.controllers.disruption:DisruptionController",
    "podgc": "kubling.controllers.podgc:PodGCController",
    "ttl-after-finished": "kubling.controllers.ttlafterfinished:TTLAfterFinishedController",
    "nodelifecycle": "kubling.controllers.nodelifecycle:NodeLifecycleController",
    "servicelb": "kubling.controllers.servicelb:ServiceLBController",
    "persistentvolume-binder": "kubling.controllers.persistentvolume:PersistentVolumeController",
}

#: Controllers that upstream leaves off unless asked for (``--controllers=*,bootstrapsigner``).
DISABLED_BY_DEFAULT: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class ControllerContext:
    """What every controller gets: the API client, shared informers, events, a clock, and
    the service-account signing key when the manager was given one (the token controller's
    ``--service-account-private-key-file``)."""

    client: rest.Client
    informers: informer.SharedInformerFactory
    clock: clocks.Clock
    recorder_for: Callable[[str], events.EventRecorder]
    service_account_key: jwt.PrivateKey | None = None


class Controller(Protocol):
    """A controller: constructed with a context (registering its informer handlers),
    then ``run`` until cancelled, reconciling keys with ``workers`` concurrent workers."""

    async def run(self, *, workers: int) -> None: ...


ControllerFactory = Callable[[ControllerContext], Controller]


def parse_selection(spec: str, known: Iterable[str]) -> list[str]:
    """kube-controller-manager's ``--controllers``: ``*`` is the defaults, ``name`` adds,
    ``-name`` removes (``*,-garbagecollector``). Unknown names are a ``ValueError``."""
    names = list(known)
    chosen: list[str] = []
    removed: set[str] = set()
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "*":
            chosen += [n for n in names if n not in DISABLED_BY_DEFAULT]
            continue
        name = item[1:] if item.startswith("-") else item
        if item.startswith("-"):
            removed.add(name)  # removing an unknown or absent controller is harmless
            continue
        if name not in names:
            raise ValueError(f"unknown controller {name!r} (known: {', '.join(sorted(names))})")
        chosen.append(name)
    return [n for n in dict.fromkeys(chosen) if n not in removed]


def load(name: str) -> ControllerFactory:
    module_name, _, attr = CONTROLLERS[name].partition(":")
    factory: ControllerFactory = getattr(importlib.import_module(module_name), attr)
    return factory


class ControllerManager:
    def __init__(self, client: rest.Client, *, controllers: list[str], workers: int = 2,
                 identity: str = "", clock: clocks.Clock = clocks.REAL,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0,
                 service_account_key_file: Path | None = None) -> None:
        self.client = client
        self.service_account_key_file = service_account_key_file
        self.names = controllers
        self.workers = workers
        self.clock = clock
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4()}"
        self._elector = leaderelection.LeaderElector(
            client, "kube-system", "kube-controller-manager", self.identity,
            lease_duration=lease_duration, renew_deadline=renew_deadline,
            retry_period=retry_period, clock=clock)
        self._recorders: list[events.EventRecorder] = []

    def _recorder(self, component: str) -> events.EventRecorder:
        recorder = events.EventRecorder(self.client, component, socket.gethostname(),
                                        clock=self.clock)
        self._recorders.append(recorder)
        return recorder

    async def _service_account_key(self) -> jwt.PrivateKey | None:
        path = self.service_account_key_file
        if path is None:
            return None
        try:
            return jwt.load_private_key(await asyncio.to_thread(path.read_bytes))
        except (OSError, ValueError, TypeError) as err:
            log.error("cannot load the service-account key %s: %s", path, err)
            return None

    async def _supervise(self, name: str, controller: Controller) -> None:
        """Run one controller; a crash restarts it after a backoff without stopping the
        others (each upstream controller is an independent goroutine)."""
        delay = 1.0
        while True:
            try:
                await controller.run(workers=self.workers)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller %s crashed; restarting in %.0fs", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def run(self) -> None:
        """Campaign for the Lease; while leading, run every enabled controller."""
        while True:
            await self._elector.run(self._lead)
            await asyncio.sleep(1.0)  # lost the lease: campaign again

    async def _lead(self) -> None:
        factory = informer.SharedInformerFactory(self.client)
        context = ControllerContext(self.client, factory, self.clock, self._recorder,
                                    service_account_key=await self._service_account_key())
        controllers = []
        for name in self.names:
            try:
                factory_of = load(name)
            except (ImportError, AttributeError) as err:
                log.error("controller %s is not available: %s", name, err)
                continue
            controllers.append((name, factory_of(context)))
        factory.start()
        try:
            await factory.wait_for_sync(timeout=60)
            log.info("controllers running: %s", ", ".join(n for n, _ in controllers) or "none")
            if not controllers:
                await asyncio.Event().wait()  # hold the lease; nothing to run
            async with asyncio.TaskGroup() as group:
                for name, controller in controllers:
                    group.create_task(self._supervise(name, controller),
                                      name=f"controller-{name}")
        finally:
            await factory.shutdown()
            for recorder in self._recorders:
                with contextlib.suppress(Exception):
                    await recorder.close()
            self._recorders.clear()
