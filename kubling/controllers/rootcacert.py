"""The root-CA publisher: every namespace has the ``kube-root-ca.crt`` ConfigMap.

Pods verify the API server with the CA in that ConfigMap (the ``ca.crt`` of their
``kube-api-access-*`` volume), so it must be in every active namespace, with the cluster's
CA, and come back when deleted or edited, as upstream's ``root-ca-cert-publisher``. The CA
is the one this controller's own client trusts (upstream's fallback when no
``--root-ca-file`` is given). The key is a namespace name; changes to the ConfigMap enqueue
its namespace.
"""

from __future__ import annotations

import logging

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import rest, workqueue
from kubling.controllers import manager

log = logging.getLogger(__name__)

NAMESPACES = rest.lookup("v1", "namespaces")
CONFIG_MAPS = rest.lookup("v1", "configmaps")

NAME = "kube-root-ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters."
)


class RootCACertPublisher:
    """Keeps ``kube-root-ca.crt`` with ``ca.crt`` in each active namespace (key: its name)."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.config_maps = ctx.client.resource(CONFIG_MAPS)
        ca = ctx.client.config.ca_pem
        self.ca_pem = ca.decode() if ca else ""
        self.namespace_informer = ctx.informers.informer(NAMESPACES)
        self.config_map_informer = ctx.informers.informer(
            CONFIG_MAPS, field_selector=f"metadata.name={NAME}")
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(
            name="root_ca_cert_publisher", clock=ctx.clock)
        self.namespace_informer.add_event_handler(
            on_add=self._namespace_changed,
            on_update=lambda _old, new: self._namespace_changed(new),
        )
        self.config_map_informer.add_event_handler(
            on_update=lambda _old, new: self._config_map_changed(new),
            on_delete=self._config_map_changed,
        )

    def _namespace_changed(self, ns: Object) -> None:
        self.queue.add(meta.name_of(ns))

    def _config_map_changed(self, config_map: Object) -> None:
        self.queue.add(meta.namespace_of(config_map))

    async def run(self, *, workers: int) -> None:
        if not self.ca_pem:
            log.warning("root-ca-cert-publisher: the controller's client has no CA; "
                        "kube-root-ca.crt is not published")
            return
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    async def reconcile(self, namespace: str) -> float | None:
        ns = self.namespace_informer.indexer.get(namespace)
        if ns is None or meta.metadata(ns).get("deletionTimestamp"):
            return None
        if (ns.get("status") or {}).get("phase", "Active") != "Active":
            return None
        current = self.config_map_informer.indexer.get(f"{namespace}/{NAME}")
        try:
            if current is None:
                await self.config_maps.create({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": NAME, "namespace": namespace,
                                 "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
                    "data": {"ca.crt": self.ca_pem},
                }, namespace=namespace)
                return None
            annotations = meta.metadata(current).get("annotations") or {}
            if current.get("data") == {"ca.crt": self.ca_pem} \
                    and annotations.get(DESCRIPTION_ANNOTATION) == DESCRIPTION:
                return None
            wanted = dict(current)  # informer objects are shared: replace, never mutate
            wanted["data"] = {"ca.crt": self.ca_pem}
            wanted["metadata"] = dict(meta.metadata(current))
            wanted["metadata"]["annotations"] = {**annotations,
                                                 DESCRIPTION_ANNOTATION: DESCRIPTION}
            await self.config_maps.update(wanted, namespace=namespace)
        except rest.ApiError as err:
            if rest.is_already_exists(err) or rest.is_not_found(err):
                return None  # our cache trails a write (an event will follow), or ns is gone
            if err.code == 403 and "being terminated" in err.message:
                return None
            raise
        return None
