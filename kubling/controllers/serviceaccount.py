"""The service-account controller: every active namespace has a ``default`` ServiceAccount.

Pods that name no service account run as ``default``, so it must exist in every namespace
from the moment the namespace does, and come back if someone deletes it. As upstream's
``ServiceAccountsController``, the key is a namespace name: namespace events enqueue it,
and the deletion of a managed account enqueues its namespace. A namespace that is not
``Active`` (Terminating) is left alone: the API server would refuse the creation anyway.
"""

from __future__ import annotations

import logging

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import rest, workqueue
from kubling.controllers import manager

log = logging.getLogger(__name__)

NAMESPACES = rest.lookup("v1", "namespaces")
SERVICE_ACCOUNTS = rest.lookup("v1", "serviceaccounts")

#: The accounts ensured in each namespace (upstream's ``--service-account`` default).
MANAGED = ("default",)


class ServiceAccountController:
    """Creates the managed ServiceAccounts of each active namespace (key: its name)."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.service_accounts = ctx.client.resource(SERVICE_ACCOUNTS)
        self.namespace_informer = ctx.informers.informer(NAMESPACES)
        self.account_informer = ctx.informers.informer(SERVICE_ACCOUNTS)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="serviceaccount",
                                                                   clock=ctx.clock)
        self.namespace_informer.add_event_handler(
            on_add=self._namespace_changed,
            on_update=lambda _old, new: self._namespace_changed(new),
        )
        self.account_informer.add_event_handler(on_delete=self._account_deleted)

    def _namespace_changed(self, ns: Object) -> None:
        self.queue.add(meta.name_of(ns))

    def _account_deleted(self, account: Object) -> None:
        if meta.name_of(account) in MANAGED:
            self.queue.add(meta.namespace_of(account))

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    async def reconcile(self, namespace: str) -> float | None:
        ns = self.namespace_informer.indexer.get(namespace)
        if ns is None or meta.metadata(ns).get("deletionTimestamp"):
            return None
        if (ns.get("status") or {}).get("phase", "Active") != "Active":
            return None
        for name in MANAGED:
            if self.account_informer.indexer.get(f"{namespace}/{name}") is not None:
                continue
            try:
                await self.service_accounts.create(
                    {"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": name, "namespace": namespace}},
                    namespace=namespace,
                )
            except rest.ApiError as err:
                if rest.is_already_exists(err) or rest.is_not_found(err):
                    continue  # made meanwhile (our cache trails), or the namespace is gone
                if err.code == 403 and "being terminated" in err.message:
                    return None
                raise
            log.debug("created serviceaccount %s/%s", namespace, name)
        return None
