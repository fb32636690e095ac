"""The REST client against a real server: CRUD, patches, errors, watch."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kubling.client import config, rest
from tests.client.helpers import (
    CONFIGMAPS,
    NAMESPACES,
    ROOT_CA,
    configmap,
    make_namespace,
    run,
)
from tests.server_fixture import KublingServer


def test_crud_and_errors(kubling: KublingServer) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(kubling.kubeconfig) as client:
            await make_namespace(client, "client-crud")
            cms = client.resource(CONFIGMAPS)
            created = await cms.create(configmap("a", "client-crud", k="1"))
            assert created["metadata"]["uid"] and created["data"] == {"k": "1"}

            with pytest.raises(rest.ApiError) as exc:
                await cms.create(configmap("a", "client-crud"))
            assert rest.is_already_exists(exc.value) and not rest.is_conflict(exc.value)
            assert exc.value.code == 409 and "already exists" in exc.value.message

            got = await cms.get("a", namespace="client-crud")
            assert got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
            with pytest.raises(rest.ApiError) as exc:
                await cms.get("missing", namespace="client-crud")
            assert rest.is_not_found(exc.value) and exc.value.reason == "NotFound"
            assert exc.value.status.details.get("name") == "missing"

            got["data"]["k"] = "2"
            updated = await cms.update(got)
            assert updated["data"] == {"k": "2"}
            with pytest.raises(rest.ApiError) as exc:
                await cms.update(got)  # stale resourceVersion
            assert rest.is_conflict(exc.value) and exc.value.code == 409

            merged = await cms.patch("a", {"data": {"m": "x"}}, namespace="client-crud")
            assert merged["data"] == {"k": "2", "m": "x"}
            jsoned = await cms.patch("a", [{"op": "remove", "path": "/data/m"}],
                                     namespace="client-crud", type="json")
            assert jsoned["data"] == {"k": "2"}
            strategic = await cms.patch("a", {"metadata": {"labels": {"l": "v"}}},
                                        namespace="client-crud", type="strategic")
            assert strategic["metadata"]["labels"] == {"l": "v"}
            with pytest.raises(rest.ApiError) as exc:
                await cms.patch("a", [{"op": "test", "path": "/data/k", "value": "no"}],
                                namespace="client-crud", type="json")
            assert exc.value.code == 422

            await cms.create(configmap("b", "client-crud"))
            page = await cms.list(namespace="client-crud", limit=1)
            assert len(page["items"]) == 1 and page["metadata"]["continue"]
            items, rv = await cms.list_all(namespace="client-crud", page_size=1)
            assert sorted(i["metadata"]["name"] for i in items) == ["a", "b", ROOT_CA]
            assert int(rv) > 0
            assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in items)
            selected, _ = await cms.list_all(namespace="client-crud", label_selector="l=v")
            assert [i["metadata"]["name"] for i in selected] == ["a"]

            deleted = await cms.delete("a", namespace="client-crud")
            assert deleted.get("status") == "Success" or deleted.get("kind") == "ConfigMap"
            with pytest.raises(rest.ApiError) as exc:
                await cms.delete("a", namespace="client-crud")
            assert rest.is_not_found(exc.value)

            # cluster-scoped resources ignore namespaces; namespaced ones need one
            ns = await client.resource(NAMESPACES).get("client-crud")
            assert ns["metadata"]["name"] == "client-crud"
            with pytest.raises(ValueError):
                await cms.get("a")

    run(main())


def test_the_client_verifies_the_server_certificate(kubling: KublingServer) -> None:
    async def main() -> None:
        cfg = config.load_kubeconfig(kubling.kubeconfig)
        stranger = config.ClientConfig(cfg.server)  # system trust store: the kubling CA is unknown
        async with rest.Client(stranger, timeout=5) as client:
            with pytest.raises(rest.TRANSPORT_ERRORS):
                await client.resource(NAMESPACES).list()
        anonymous = config.ClientConfig(cfg.server, ca_pem=cfg.ca_pem)
        async with rest.Client(anonymous, timeout=5) as client:
            with pytest.raises(rest.ApiError) as api_exc:
                await client.resource(NAMESPACES).list()
            assert api_exc.value.code in (401, 403)

    run(main())


def test_watch_stream(kubling: KublingServer) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(kubling.kubeconfig) as client:
            await make_namespace(client, "client-watch")
            cms = client.resource(CONFIGMAPS)
            _, rv = await cms.list_all(namespace="client-watch")
            seen: list[tuple[str, str, str]] = []

            async def follow() -> None:
                events = cms.watch(namespace="client-watch", resource_version=rv,
                                   allow_bookmarks=True, timeout_seconds=30)
                async with contextlib.aclosing(events):
                    async for kind, obj in events:
                        seen.append((kind, obj["metadata"]["name"],
                                     obj.get("data", {}).get("v", "")))
                        if kind == "DELETED":
                            return

            watcher = asyncio.create_task(follow())
            await cms.create(configmap("w", "client-watch", v="1"))
            await cms.patch("w", {"data": {"v": "2"}}, namespace="client-watch")
            await cms.delete("w", namespace="client-watch")
            await asyncio.wait_for(watcher, 5)
            assert seen == [("ADDED", "w", "1"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]

            # the server's timeout closes the stream: the iterator simply ends
            events = [e async for e in cms.watch(namespace="client-watch", resource_version=rv,
                                                 timeout_seconds=1)]
            assert [kind for kind, _ in events] == ["ADDED", "MODIFIED", "DELETED"]

            # a watch of one object by name
            await cms.create(configmap("x", "client-watch"))
            await cms.create(configmap("y", "client-watch"))
            names = [obj["metadata"]["name"] async for _, obj in
                     cms.watch(namespace="client-watch", name="y", timeout_seconds=1)]
            assert names == ["y"]

    run(main())
