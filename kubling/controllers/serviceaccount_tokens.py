"""The token controller: fills the legacy ``kubernetes.io/service-account-token`` Secrets.

Since Kubernetes 1.24 no Secret is made per account any more, but a user may still create
one naming an account (annotation ``kubernetes.io/service-account.name``) and upstream's
``TokensController`` then fills it: a non-expiring token signed with the service-account
key, the cluster CA as ``ca.crt`` and the ``namespace``, plus the account's uid as an
annotation. A Secret whose account is gone (or was recreated: another uid) is deleted,
which also revokes its token. The key is ``namespace/name`` of a Secret; an account's
deletion enqueues the Secrets that name it.

The signing key is the API server's (``<data-dir>/tls/service.key``), handed over as
kube-controller-manager is given ``--service-account-private-key-file``; without it the
controller does not run.
"""

from __future__ import annotations

import base64
import logging

from kubling.api import jwt, meta, satoken
from kubling.api.meta import Object
from kubling.client import rest, workqueue
from kubling.controllers import manager

log = logging.getLogger(__name__)

SECRETS = rest.lookup("v1", "secrets")
SERVICE_ACCOUNTS = rest.lookup("v1", "serviceaccounts")

TOKEN_TYPE = "kubernetes.io/service-account-token"
NAME_ANNOTATION = "kubernetes.io/service-account.name"
UID_ANNOTATION = "kubernetes.io/service-account.uid"


class TokensController:
    """Fills or deletes legacy token Secrets (key: ``namespace/name`` of the Secret)."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.key = ctx.service_account_key
        self.secrets = ctx.client.resource(SECRETS)
        self.accounts = ctx.client.resource(SERVICE_ACCOUNTS)
        ca = ctx.client.config.ca_pem
        self.ca = base64.b64encode(ca).decode() if ca else ""
        self.secret_informer = ctx.informers.informer(SECRETS,
                                                      field_selector=f"type={TOKEN_TYPE}")
        self.account_informer = ctx.informers.informer(SERVICE_ACCOUNTS)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(
            name="serviceaccount_tokens_secret", clock=ctx.clock)
        self.secret_informer.add_event_handler(
            on_add=self._secret_changed,
            on_update=lambda _old, new: self._secret_changed(new))
        self.account_informer.add_event_handler(on_add=self._account_changed,
                                                on_delete=self._account_changed)

    def _secret_changed(self, secret: Object) -> None:
        self.queue.add(f"{meta.namespace_of(secret)}/{meta.name_of(secret)}")

    def _account_changed(self, account: Object) -> None:
        namespace, name = meta.namespace_of(account), meta.name_of(account)
        for secret in self.secret_informer.indexer.list():
            annotations = meta.metadata(secret).get("annotations") or {}
            if meta.namespace_of(secret) == namespace and annotations.get(NAME_ANNOTATION) == name:
                self._secret_changed(secret)

    async def run(self, *, workers: int) -> None:
        if self.key is None:
            log.warning("serviceaccount-token: no service-account key; legacy token Secrets "
                        "are not filled")
            return
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    async def reconcile(self, key: str) -> float | None:
        secret = self.secret_informer.indexer.get(key)
        if secret is None or secret.get("type") != TOKEN_TYPE:
            return None
        md = meta.metadata(secret)
        if md.get("deletionTimestamp"):
            return None
        namespace, annotations = meta.namespace_of(secret), md.get("annotations") or {}
        name = annotations.get(NAME_ANNOTATION) or ""
        account = self.account_informer.indexer.get(f"{namespace}/{name}")
        if account is None:
            try:  # our cache may trail the account's creation: ask the server
                account = await self.accounts.get(name, namespace=namespace)
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    raise
        uid = meta.metadata(account).get("uid", "") if account is not None else ""
        if account is None or annotations.get(UID_ANNOTATION, uid) != uid:
            await self._delete(secret)
            return None
        data = secret.get("data") or {}
        wanted_namespace = base64.b64encode(namespace.encode()).decode()
        if data.get("token") and data.get("ca.crt") == self.ca \
                and data.get("namespace") == wanted_namespace \
                and annotations.get(UID_ANNOTATION) == uid:
            return None
        assert self.key is not None
        updated = dict(secret)  # informer objects are shared: replace, never mutate
        updated["metadata"] = {**md, "annotations": {**annotations, UID_ANNOTATION: uid}}
        new_data = dict(data)
        if not new_data.get("token"):
            token = jwt.encode(satoken.legacy_claims(
                namespace=namespace, service_account=satoken.Ref(name, uid),
                secret_name=meta.name_of(secret)), self.key, kid=jwt.key_id(self.key.public_key()))
            new_data["token"] = base64.b64encode(token.encode()).decode()
        new_data["ca.crt"] = self.ca
        new_data["namespace"] = wanted_namespace
        updated["data"] = new_data
        try:
            await self.secrets.update(updated, namespace=namespace)
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise  # a conflict: the fresh Secret's event requeues the key
        return None

    async def _delete(self, secret: Object) -> None:
        try:
            await self.secrets.delete(meta.name_of(secret), namespace=meta.namespace_of(secret))
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise
        log.info("deleted token secret %s/%s: its service account is gone",
                 meta.namespace_of(secret), meta.name_of(secret))
