"""``pods/ephemeralcontainers`` through the real HTTP layer, in process, on the memory
backend: the subresource is authorized as its own resource, and its strategy takes only
``spec.ephemeralContainers`` from the request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import test_utils

from kubling import storage
from kubling.api.resources import Catalogue
from kubling.apiserver import app, authn, authz, health, watchcache
from kubling.apiserver.registry.registry import Registry
from kubling.apiserver.requestinfo import RequestInfo

Body = Callable[[aiohttp.ClientSession, str], Awaitable[None]]
POD_URL = "/api/v1/namespaces/default/pods"
SMP = {"Content-Type": "application/strategic-merge-patch+json"}


class _Tokens:
    """Bearer ``admin`` and ``jane``: two users, nothing else."""

    async def authenticate(self, token: str) -> authn.UserInfo | None:
        return authn.UserInfo(token) if token in ("admin", "jane") else None


class _NoEphemeralForJane:
    """Stands in for RBAC (kubling has none yet): jane may do anything with pods except
    through their ``ephemeralcontainers`` subresource."""

    async def authorize(self, user: authn.UserInfo, info: RequestInfo) -> authz.Decision:
        denied = user.name == "jane" and info.subresource == "ephemeralcontainers"
        return authz.Decision(not denied)

    async def rules(self, user: authn.UserInfo, namespace: str
                    ) -> tuple[authz.Rules, authz.Rules, bool]:
        return [], [], True


def run(body: Body) -> None:
    async def main() -> None:
        backend = storage.MemoryBackend()
        await backend.start()
        caches = watchcache.CacheSet(backend)
        await caches.start()
        registry = Registry(Catalogue(), backend, caches)
        namespaces = registry.catalogue.lookup("", "v1", "namespaces")
        assert namespaces is not None
        ns_store = registry.store(namespaces)
        ns: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": "default"}}
        ns_store.strategy.default(ns)
        await ns_store.create(ns, namespace="")
        server_app = app.APIServerApp(
            registry, authenticator=authn.Authenticator((_Tokens(),)),
            authorizer=_NoEphemeralForJane(), checks=health.HealthChecks())
        server = test_utils.TestServer(server_app.build())
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                await body(session, str(server.make_url("")))
        finally:
            await server.close()
            await caches.stop()
            await backend.close()

    asyncio.run(main())


def _as(user: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}", **(extra or {})}


async def _create_pod(session: aiohttp.ClientSession, base: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
           "spec": {"containers": [{"name": "main", "image": "busybox"}]}}
    async with session.post(base + POD_URL, json=pod, headers=_as("admin")) as resp:
        assert resp.status == 201, await resp.text()


def test_the_subresource_is_authorized_on_its_own() -> None:
    async def body(session: aiohttp.ClientSession, base: str) -> None:
        await _create_pod(session, base)
        patch = json.dumps({"spec": {"ephemeralContainers": [
            {"name": "dbg", "image": "busybox"}]}})
        url = base + POD_URL + "/web/ephemeralcontainers"
        async with session.patch(url, data=patch, headers=_as("jane", SMP)) as resp:
            status = await resp.json()
            assert (resp.status, status["reason"]) == (403, "Forbidden")
            assert status["message"] == (
                'pods "web" is forbidden: User "jane" cannot patch resource '
                '"pods/ephemeralcontainers" in API group "" in the namespace "default"')
        async with session.get(url, headers=_as("jane")) as resp:
            assert resp.status == 403
            assert 'cannot get resource "pods/ephemeralcontainers"' in (await resp.json())[
                "message"]
        async with session.get(base + POD_URL + "/web", headers=_as("jane")) as resp:
            assert resp.status == 200
        async with session.patch(url, data=patch, headers=_as("admin", SMP)) as resp:
            assert resp.status == 200, await resp.text()
            pod = await resp.json()
        assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["dbg"]

    run(body)


def test_put_takes_only_ephemeral_containers_and_defaults_them() -> None:
    async def body(session: aiohttp.ClientSession, base: str) -> None:
        await _create_pod(session, base)
        url = base + POD_URL + "/web/ephemeralcontainers"
        async with session.get(url, headers=_as("admin")) as resp:
            pod = await resp.json()
        pod["metadata"]["labels"] = {"added": "here"}
        pod["spec"]["containers"][0]["image"] = "nginx"
        pod["spec"]["ephemeralContainers"] = [{"name": "dbg", "image": "busybox:1.36"}]
        async with session.put(url, json=pod, headers=_as("admin")) as resp:
            assert resp.status == 200, await resp.text()
            stored = await resp.json()
        assert "labels" not in stored["metadata"]
        assert stored["spec"]["containers"][0]["image"] == "busybox"
        assert stored["spec"]["ephemeralContainers"] == [{
            "name": "dbg", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
            "resources": {}, "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File"}]
        assert int(stored["metadata"]["resourceVersion"]) > int(
            pod["metadata"]["resourceVersion"])
        managed = [f for f in stored["metadata"]["managedFields"]
                   if f.get("subresource") == "ephemeralcontainers"]
        assert [list(f["fieldsV1"]["f:spec"]) for f in managed] == [["f:ephemeralContainers"]]

    run(body)


def test_server_side_apply_adds_and_owns_them() -> None:
    async def body(session: aiohttp.ClientSession, base: str) -> None:
        await _create_pod(session, base)
        config = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                             "spec": {"ephemeralContainers": [
                                 {"name": "dbg", "image": "busybox"}]}})
        url = base + POD_URL + "/web/ephemeralcontainers?fieldManager=debugger"
        headers = _as("admin", {"Content-Type": "application/apply-patch+yaml"})
        async with session.patch(url, data=config, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            pod = await resp.json()
        assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["dbg"]
        assert pod["spec"]["containers"][0]["name"] == "main"
        entry = next(f for f in pod["metadata"]["managedFields"] if f["manager"] == "debugger")
        assert (entry["operation"], entry["subresource"]) == ("Apply", "ephemeralcontainers")

    run(body)
