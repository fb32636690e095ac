"""kubling.client: how every component other than the API server talks to the cluster.

- ``config``: a kubeconfig context → ``ClientConfig`` (+ its TLS context);
- ``rest``: ``Client`` and ``Resource`` (every verb, watch), ``ApiError`` and ``is_*``;
- ``informer``: list+watch into an indexed cache, shared through a factory;
- ``discovery``: the served resources (``/api``, ``/apis``) as ``ResourceType``s;
- ``workqueue``: the deduplicating, rate-limited queue and ``run_workers``;
- ``events``: the aggregating ``EventRecorder``;
- ``leaderelection``: ``LeaderElector`` on a Lease;
- ``clock``: the time seam (``FakeClock`` for tests).

A controller is: informers whose handlers ``add`` keys to a ``WorkQueue``, and
``run_workers(queue, reconcile)`` where ``reconcile(key)`` reads the informers' caches and
writes through a ``Resource``.
"""

from kubling.client.config import ClientConfig, KubeconfigError, load_kubeconfig
from kubling.client.events import EventRecorder
from kubling.client.informer import Indexer, Informer, SharedInformerFactory
from kubling.client.leaderelection import LeaderElector
from kubling.client.rest import (
    ApiError,
    Client,
    Resource,
    is_already_exists,
    is_conflict,
    is_gone,
    is_not_found,
)
from kubling.client.workqueue import QueueShutDown, WorkQueue, run_workers

__all__ = [
    "ApiError",
    "Client",
    "ClientConfig",
    "EventRecorder",
    "Indexer",
    "Informer",
    "KubeconfigError",
    "LeaderElector",
    "QueueShutDown",
    "Resource",
    "SharedInformerFactory",
    "WorkQueue",
    "is_already_exists",
    "is_conflict",
    "is_gone",
    "is_not_found",
    "load_kubeconfig",
    "run_workers",
]
