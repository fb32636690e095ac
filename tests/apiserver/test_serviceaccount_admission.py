"""ServiceAccount admission on pod creation, through the registry's admission chain."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kubling import storage
from kubling.api.resources import Catalogue
from kubling.apiserver import admission, errors, watchcache
from kubling.apiserver.admission import serviceaccount
from kubling.apiserver.registry.registry import Registry
from kubling.apiserver.registry.store import Store

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


class Env:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], Awaitable[None]] | None = None

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            await self.on_sleep()

    def store(self, plural: str) -> Store:
        rt = self.registry.catalogue.lookup("", "v1", plural)
        assert rt is not None
        return self.registry.store(rt)

    async def create(self, plural: str, obj: dict[str, Any], ns: str = "default") -> Any:
        store = self.store(plural)
        store.strategy.default(obj)
        return await store.create(obj, namespace=ns)


def run(body: Callable[[Env], Awaitable[None]]) -> None:
    async def main() -> None:
        backend = storage.MemoryBackend()
        await backend.start()
        caches = watchcache.CacheSet(backend)
        await caches.start()
        registry = Registry(Catalogue(), backend, caches)
        env = Env(registry)
        registry.set_admission(admission.Chain([
            serviceaccount.ServiceAccountAdmission(registry, sleep=env.sleep)]))
        await env.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": "default"}}, ns="")
        try:
            await body(env)
        finally:
            await caches.stop()
            await backend.close()

    asyncio.run(main())


def account(name: str = "default", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}, **fields}


def pod(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def test_default_account_and_the_upstream_token_volume() -> None:
    async def body(env: Env) -> None:
        await env.create("serviceaccounts", account())
        created = await env.create("pods", pod(
            initContainers=[{"name": "init", "image": "busybox"}]))
        spec = created["spec"]
        assert spec["serviceAccountName"] == "default"
        [volume] = spec["volumes"]
        assert re.fullmatch(r"kube-api-access-[bcdfghjklmnpqrstvwxz2456789]{5}", volume["name"])
        assert volume["projected"] == {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt",
                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}
        mount = {"name": volume["name"], "readOnly": True, "mountPath": MOUNT_PATH}
        assert spec["containers"][0]["volumeMounts"] == [mount]
        assert spec["initContainers"][0]["volumeMounts"] == [mount]

    run(body)


def test_missing_account_is_refused_with_upstream_wording() -> None:
    async def body(env: Env) -> None:
        with pytest.raises(errors.APIError) as caught:
            await env.create("pods", pod(serviceAccountName="builder"))
        assert caught.value.code == 403
        assert caught.value.message == (
            'pods "web" is forbidden: error looking up service account default/builder: '
            'serviceaccount "builder" not found')
        assert env.sleeps == []  # only ``default`` is waited for
        assert await env.store("pods").read(env.store("pods").key("default", "web")) is None

    run(body)


def test_default_account_is_waited_for_then_refused() -> None:
    async def body(env: Env) -> None:
        with pytest.raises(errors.APIError) as caught:
            await env.create("pods", pod())
        assert caught.value.code == 403
        assert len(env.sleeps) == 9 and all(0.1 <= s <= 0.2 for s in env.sleeps)

    run(body)


def test_default_account_created_meanwhile_is_found() -> None:
    async def body(env: Env) -> None:
        async def controller_catches_up() -> None:
            if len(env.sleeps) == 3:
                await env.create("serviceaccounts", account())

        env.on_sleep = controller_catches_up
        created = await env.create("pods", pod())
        assert created["spec"]["volumes"][0]["name"].startswith("kube-api-access-")

    run(body)


@pytest.mark.parametrize(("pod_choice", "account_choice", "mounted"), [
    (None, False, False), (False, None, False), (True, False, True), (None, True, True),
])
def test_automount_choice(pod_choice: bool | None, account_choice: bool | None,
                          mounted: bool) -> None:
    async def body(env: Env) -> None:
        fields = {} if account_choice is None else {
            "automountServiceAccountToken": account_choice}
        await env.create("serviceaccounts", account(**fields))
        spec = {} if pod_choice is None else {"automountServiceAccountToken": pod_choice}
        created = await env.create("pods", pod(**spec))
        assert bool(created["spec"].get("volumes")) is mounted
        assert bool(created["spec"]["containers"][0].get("volumeMounts")) is mounted

    run(body)


def test_own_mount_at_the_token_path_and_pull_secrets() -> None:
    async def body(env: Env) -> None:
        await env.create("serviceaccounts", account(imagePullSecrets=[{"name": "registry"}]))
        own = {"name": "mine", "mountPath": MOUNT_PATH}
        created = await env.create("pods", pod(
            containers=[{"name": "a", "image": "busybox", "volumeMounts": [own]},
                        {"name": "b", "image": "busybox"}],
            volumes=[{"name": "mine", "emptyDir": {}}]))
        spec = created["spec"]
        assert spec["containers"][0]["volumeMounts"] == [own]
        assert spec["containers"][1]["volumeMounts"][0]["mountPath"] == MOUNT_PATH
        assert spec["volumes"][0] == {"name": "mine", "emptyDir": {}}
        assert spec["volumes"][1]["name"].startswith("kube-api-access-")
        assert spec["imagePullSecrets"] == [{"name": "registry"}]

    run(body)


def test_mirror_pods_are_left_alone() -> None:
    async def body(env: Env) -> None:
        mirror = pod()
        mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "x"}
        created = await env.create("pods", mirror)
        assert "volumes" not in created["spec"]

    run(body)
