"""Informers against a real server: sync, events, sharing, and recovery after a restart."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from kubling.client import informer, rest
from tests.client.helpers import (
    CONFIGMAPS,
    ROOT_CA,
    configmap,
    eventually,
    make_namespace,
    run,
)
from tests.server_fixture import KublingServer


class Recorder:
    """Handlers that only remember what they were told (as handlers should only enqueue)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_add(self, obj: dict[str, Any]) -> None:
        self.events.append(("add", informer.key_of(obj)))

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.events.append(("update", informer.key_of(new)))

    def on_delete(self, obj: dict[str, Any]) -> None:
        self.events.append(("delete", informer.key_of(obj)))

    def register(self, inf: informer.Informer) -> None:
        inf.add_event_handler(on_add=self.on_add, on_update=self.on_update,
                              on_delete=self.on_delete)


def test_informer_syncs_and_follows_configmaps(kubling: KublingServer) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(kubling.kubeconfig) as client:
            ns = "client-informer"
            await make_namespace(client, ns)
            cms = client.resource(CONFIGMAPS)
            for i in range(5):
                await cms.create(configmap(f"pre-{i}", ns, i=str(i)))

            inf = informer.Informer(client, CONFIGMAPS, namespace=ns, page_size=2)
            seen = Recorder()
            seen.register(inf)
            assert not inf.has_synced
            inf.start()
            await inf.wait_for_sync(timeout=5)
            assert inf.has_synced and inf.lists == 1
            # every namespace also holds the root-CA publisher's ConfigMap
            expected = sorted([f"{ns}/{ROOT_CA}", *(f"{ns}/pre-{i}" for i in range(5))])
            assert sorted(inf.indexer.keys()) == expected
            assert sorted(seen.events) == [("add", key) for key in expected]

            seen.events.clear()
            await cms.create(configmap("new", ns, v="1"))
            await cms.patch("new", {"data": {"v": "2"}}, namespace=ns)
            await cms.delete("pre-0", namespace=ns)
            await eventually(lambda: len(seen.events) == 3)
            assert seen.events == [("add", f"{ns}/new"), ("update", f"{ns}/new"),
                                   ("delete", f"{ns}/pre-0")]
            cached = inf.indexer.get(f"{ns}/new")
            assert cached is not None and cached["data"] == {"v": "2"}
            assert f"{ns}/pre-0" not in inf.indexer
            assert len(inf.indexer.by_index(informer.NAMESPACE_INDEX, ns)) == 6

            # a handler registered late is told about what is already cached
            late = Recorder()
            late.register(inf)
            assert sorted(late.events) == sorted(("add", k) for k in inf.indexer.keys())

            # a failing handler is logged and does not stop the others or the informer
            def broken(obj: dict[str, Any]) -> None:
                raise RuntimeError("handler bug")

            inf.add_event_handler(on_add=broken)
            await cms.create(configmap("after-bug", ns))
            await eventually(lambda: ("add", f"{ns}/after-bug") in seen.events)
            await inf.stop()

    run(main())


def test_selectors_factory_sharing_and_resync(kubling: KublingServer) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(kubling.kubeconfig) as client:
            ns = "client-factory"
            await make_namespace(client, ns)
            cms = client.resource(CONFIGMAPS)
            labelled = configmap("web", ns)
            labelled["metadata"]["labels"] = {"app": "web"}
            await cms.create(labelled)
            await cms.create(configmap("other", ns))

            factory = informer.SharedInformerFactory(client, resync_period=0.2)
            web = factory.informer(CONFIGMAPS, namespace=ns, label_selector="app=web")
            assert factory.informer(CONFIGMAPS, namespace=ns, label_selector="app=web") is web
            everything = factory.informer(CONFIGMAPS, namespace=ns)
            assert everything is not web
            resyncs: list[str] = []

            def on_update(old: dict[str, Any], new: dict[str, Any]) -> None:
                if old is new:  # a resync hands the cached object as both
                    resyncs.append(informer.key_of(new))

            web.add_event_handler(on_update=on_update)
            factory.start()
            await factory.wait_for_sync(timeout=5)
            assert web.indexer.keys() == [f"{ns}/web"]
            assert sorted(everything.indexer.keys()) == [f"{ns}/{ROOT_CA}", f"{ns}/other",
                                                         f"{ns}/web"]
            await eventually(lambda: len(resyncs) >= 2)
            assert set(resyncs) == {f"{ns}/web"}
            # a label change moves the object out of the selection: a DELETED event
            await cms.patch("web", {"metadata": {"labels": {"app": "db"}}}, namespace=ns)
            await eventually(lambda: not web.indexer.keys())
            await factory.shutdown()

    run(main())


def test_informer_recovers_after_a_server_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server goes away; while the informer cannot see it, objects change (through a
    second server on the same data dir); when the server comes back on its port, the
    informer's old resourceVersion is too old (410), and it re-lists and emits the diff."""
    server = KublingServer(tmp_path / "data")
    server.start()
    ns = "restart"

    async def main() -> None:
        async with rest.Client.from_kubeconfig(server.kubeconfig, timeout=5) as client:
            await make_namespace(client, ns)
            cms = client.resource(CONFIGMAPS)
            for name in ("keep", "doomed", "changed"):
                await cms.create(configmap(name, ns, v="1"))
            inf = informer.Informer(client, CONFIGMAPS, namespace=ns)
            seen = Recorder()
            seen.register(inf)
            inf.start()
            await inf.wait_for_sync(timeout=5)
            old_rv = inf.resource_version
            seen.events.clear()

            await asyncio.to_thread(server.stop)
            await asyncio.sleep(0.3)  # the informer notices and starts backing off
            other = KublingServer(tmp_path / "data")
            await asyncio.to_thread(other.start)
            try:
                async with rest.Client.from_kubeconfig(other.kubeconfig) as second:
                    away = second.resource(CONFIGMAPS)
                    await away.delete("doomed", namespace=ns)
                    await away.patch("changed", {"data": {"v": "2"}}, namespace=ns)
                    await away.create(configmap("born", ns, v="1"))
            finally:
                await asyncio.to_thread(other.stop)
            await asyncio.to_thread(server.start)

            await eventually(lambda: sorted(inf.indexer.keys()) ==
                             [f"{ns}/born", f"{ns}/changed", f"{ns}/keep", f"{ns}/{ROOT_CA}"],
                             timeout=15)
            changed = inf.indexer.get(f"{ns}/changed")
            assert changed is not None and changed["data"] == {"v": "2"}
            assert sorted(seen.events) == [("add", f"{ns}/born"), ("delete", f"{ns}/doomed"),
                                           ("update", f"{ns}/changed")]
            assert inf.lists == 2  # recovered by a re-list after 410 Gone

            # the stale resourceVersion is indeed gone on the restarted server
            with pytest.raises(rest.ApiError) as exc:
                async for _ in cms.watch(namespace=ns, resource_version=old_rv,
                                         timeout_seconds=1):
                    pass
            assert rest.is_gone(exc.value)

            # and the informer keeps following new changes
            await cms.delete("keep", namespace=ns)
            await eventually(lambda: ("delete", f"{ns}/keep") in seen.events)
            await inf.stop()

    try:
        with caplog.at_level(logging.INFO, logger="kubling.client.informer"):
            run(main(), timeout=40)
    finally:
        server.stop()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "unreachable" in messages and "re-listing" in messages
