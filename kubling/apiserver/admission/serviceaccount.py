"""The ServiceAccount admission plugin: a pod runs as an existing account, with its token.

As upstream's plugin on pod creation: the account defaults to ``default`` and must exist
(else 403 ``error looking up service account ns/name: ...``); unless the pod or the account
says ``automountServiceAccountToken: false`` every container and init container mounts the
``kube-api-access-<random>`` projected volume (a bound token, the cluster CA from the
``kube-root-ca.crt`` ConfigMap, the namespace) read-only at
``/var/run/secrets/kubernetes.io/serviceaccount``; the account's ``imagePullSecrets`` fill
a pod that names none. Mirror pods are left as they are.

The ``default`` account is created by the serviceaccount controller a moment after its
namespace, so a pod created right after its namespace waits for it as upstream does: the
lookup of ``default`` is retried ten times, 100-200ms apart, before it is refused.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from kubling.api import satoken
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.apiserver import admission, errors
from kubling.apiserver.registry import store as stores
from kubling.apiserver.registry.registry import Registry

DEFAULT_SERVICE_ACCOUNT = "default"
TOKEN_VOLUME_PREFIX = "kube-api-access-"
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
#: Lookups of ``default`` before giving up (upstream's numAttempts for it).
DEFAULT_ATTEMPTS = 10


def token_volume(name: str) -> Object:
    """The projected volume upstream injects (``TokenVolumeSource``), mode 0644 explicit."""
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": satoken.WARN_ONLY_EXPIRATION_SECONDS,
                                 "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP,
                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


class ServiceAccountAdmission:
    """``admission.Plugin`` for pod creation; reads accounts through the registry."""

    def __init__(self, registry: Registry, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.registry = registry
        self.sleep = sleep

    def handles(self, resource: ResourceType, operation: str) -> bool:
        return (resource.group, resource.plural, operation) == ("", "pods", admission.CREATE)

    async def admit(self, obj: Object, attributes: admission.Attributes) -> None:
        md = obj.get("metadata") or {}
        if MIRROR_POD_ANNOTATION in (md.get("annotations") or {}):
            return
        spec = obj.setdefault("spec", {})
        name = spec.get("serviceAccountName") or DEFAULT_SERVICE_ACCOUNT
        spec["serviceAccountName"] = spec["serviceAccount"] = name
        account = await self._service_account(attributes.namespace, name)
        if account is None:
            raise errors.forbidden("", "pods", attributes.name,
                                   f"error looking up service account {attributes.namespace}/"
                                   f'{name}: serviceaccount "{name}" not found')
        if _should_automount(account, spec):
            mount_token(spec)
        if not spec.get("imagePullSecrets") and account.get("imagePullSecrets"):
            spec["imagePullSecrets"] = [{"name": ref.get("name", "")}
                                        for ref in account["imagePullSecrets"]
                                        if isinstance(ref, dict)]

    async def _service_account(self, namespace: str, name: str) -> Object | None:
        rt = self.registry.catalogue.lookup("", "v1", "serviceaccounts")
        assert rt is not None
        accounts = self.registry.store(rt)
        attempts = DEFAULT_ATTEMPTS if name == DEFAULT_SERVICE_ACCOUNT else 1
        interval = random.uniform(0.1, 0.2)
        for attempt in range(attempts):
            if attempt:
                await self.sleep(interval)
            kv = await accounts.read(accounts.key(namespace, name))
            if kv is not None:
                return accounts.load(kv)
        return None


def _should_automount(account: Object, spec: dict[str, Any]) -> bool:
    """The pod's choice wins, then the account's; mounting is the default."""
    for choice in (spec.get("automountServiceAccountToken"),
                   account.get("automountServiceAccountToken")):
        if isinstance(choice, bool):
            return choice
    return True


def mount_token(spec: dict[str, Any]) -> None:
    """Mount the token volume in every (init) container that has nothing at the token path
    already; reuse an existing ``kube-api-access-*`` volume (upstream's ``mountServiceAccountToken``)."""
    volumes = spec.get("volumes")
    if not isinstance(volumes, list):
        volumes = []
    existing = next((v["name"] for v in volumes if isinstance(v, dict)
                     and str(v.get("name", "")).startswith(TOKEN_VOLUME_PREFIX)), None)
    volume_name = existing or stores.generate_name(TOKEN_VOLUME_PREFIX)
    needed = False
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if not isinstance(container, dict):
                continue
            mounts = container.get("volumeMounts")
            if not isinstance(mounts, list):
                mounts = []
            if any(isinstance(m, dict) and m.get("mountPath") == TOKEN_MOUNT_PATH
                   for m in mounts):
                continue
            mounts.append({"name": volume_name, "readOnly": True,
                           "mountPath": TOKEN_MOUNT_PATH})
            container["volumeMounts"] = mounts
            needed = True
    if needed and existing is None:
        volumes.append(token_volume(volume_name))
        spec["volumes"] = volumes
