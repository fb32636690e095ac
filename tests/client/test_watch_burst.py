"""A burst of writes reaches a live watch whole and in order.

The server writes the events already queued for a watcher in one chunk, and the client
splits a chunk into its lines once: neither may lose, reorder or merge an event.
"""

from __future__ import annotations

import asyncio
import contextlib

from kubling.client import rest
from tests.client.helpers import CONFIGMAPS, configmap, make_namespace, run
from tests.server_fixture import KublingServer

BURST = 400


def test_burst_of_events_arrives_whole_and_in_order(kubling: KublingServer) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(kubling.kubeconfig) as client:
            await make_namespace(client, "client-burst")
            cms = client.resource(CONFIGMAPS)
            _, rv = await cms.list_all(namespace="client-burst")
            seen: list[tuple[str, str, int]] = []

            async def follow() -> None:
                events = cms.watch(namespace="client-burst", resource_version=rv,
                                   timeout_seconds=60)
                async with contextlib.aclosing(events):
                    async for kind, obj in events:
                        md = obj["metadata"]
                        seen.append((kind, md["name"], int(md["resourceVersion"])))
                        if len(seen) == BURST:
                            return

            watcher = asyncio.create_task(follow())
            await asyncio.sleep(0.2)  # the watch is open before the burst starts
            slots = asyncio.Semaphore(64)

            async def create(i: int) -> None:
                async with slots:
                    await cms.create(configmap(f"b{i}", "client-burst", v=str(i) * 50))

            await asyncio.gather(*(create(i) for i in range(BURST)))
            await asyncio.wait_for(watcher, 30)
            assert [kind for kind, _, _ in seen] == ["ADDED"] * BURST
            assert sorted(name for _, name, _ in seen) == sorted(f"b{i}" for i in range(BURST))
            revisions = [revision for _, _, revision in seen]
            assert revisions == sorted(revisions) and len(set(revisions)) == BURST

    run(main())
