"""The watch cache under write load: reads wait for it to catch up (instead of going to
storage), a wait that cannot succeed times out cleanly, and starting it makes full
garbage collections rare."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

from kubling import storage
from kubling.apiserver import watchcache

KEY = "/registry/core/configmaps/default/a"


def run(body: Callable[[storage.MemoryBackend, watchcache.CacheSet], Awaitable[None]]) -> None:
    async def main() -> None:
        backend = storage.MemoryBackend()
        await backend.start()
        caches = watchcache.CacheSet(backend)
        await caches.start()
        try:
            await body(backend, caches)
        finally:
            await caches.stop()
            await backend.close()

    thresholds = gc.get_threshold()
    try:
        asyncio.run(main())
    finally:
        gc.set_threshold(*thresholds)


def test_catch_up_waits_for_acknowledged_writes() -> None:
    async def body(backend: storage.MemoryBackend, caches: watchcache.CacheSet) -> None:
        for i in range(3):
            await backend.create(f"{KEY}{i}", b'{"metadata": {"name": "a"}}')
        # Acknowledged, but the storage watch has not delivered them to the cache yet.
        assert not await caches.is_fresh()
        assert await caches.catch_up()
        cache = caches.cache("/registry/core/configmaps/")
        assert sorted(cache.items) == [f"{KEY}{i}" for i in range(3)]
        assert caches.revision == await backend.current_revision()

    run(body)


def test_wait_for_a_revision_never_written_times_out_without_leaking() -> None:
    async def body(backend: storage.MemoryBackend, caches: watchcache.CacheSet) -> None:
        await backend.create(KEY, b"{}")
        wanted = await backend.current_revision() + 10
        assert not await caches.wait_for(wanted, timeout=0.05)
        assert caches._waiters == []
        waiting = asyncio.create_task(caches.wait_for(wanted, timeout=5))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert caches._waiters == []

    run(body)


def test_starting_the_cache_makes_full_collections_rare() -> None:
    gc.set_threshold(700, 10, 10)  # CPython's defaults

    async def body(backend: storage.MemoryBackend, caches: watchcache.CacheSet) -> None:
        assert gc.get_threshold() == (700, 10, watchcache.FULL_COLLECTION_THRESHOLD)

    run(body)
