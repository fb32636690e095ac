"""Client figures: concurrent create rate, informer initial sync, watch-to-handler latency,
work queue throughput.

Run: .venv/bin/python bench/client_bench.py [--objects N] [--updates N]
Prints one line per figure; record them in docs/performance.md with the machine and date.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubling.client import informer, rest, workqueue
from tests.server_fixture import KublingServer

CONFIGMAPS = rest.lookup("v1", "configmaps")
NAMESPACES = rest.lookup("v1", "namespaces")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def cluster_figures(server: KublingServer, objects: int, updates: int) -> None:
    async with rest.Client.from_kubeconfig(server.kubeconfig) as client:
        await client.resource(NAMESPACES).create({"metadata": {"name": "bench"}})
        cms = client.resource(CONFIGMAPS)
        limit = asyncio.Semaphore(32)

        async def create(i: int) -> None:
            async with limit:
                await cms.create({"metadata": {"name": f"cm-{i}", "namespace": "bench"},
                                  "data": {"i": str(i)}})

        started = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(objects)))
        elapsed = time.perf_counter() - started
        print(f"create x{objects} (32 concurrent): {objects / elapsed:.0f}/s")

        inf = informer.Informer(client, CONFIGMAPS, namespace="bench")
        started = time.perf_counter()
        inf.start()
        await inf.wait_for_sync()
        print(f"informer initial sync of {len(inf.indexer)} objects: "
              f"{(time.perf_counter() - started) * 1000:.0f} ms")

        arrived: dict[str, asyncio.Future[float]] = {}

        def on_update(old: dict[str, Any], new: dict[str, Any]) -> None:
            future = arrived.get(new["data"].get("mark", ""))
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

        inf.add_event_handler(on_update=on_update)
        latencies = []
        loop = asyncio.get_running_loop()
        for i in range(updates):
            mark = str(i)
            arrived[mark] = loop.create_future()
            sent = time.perf_counter()
            await cms.patch(f"cm-{i % objects}", {"data": {"mark": mark}}, namespace="bench")
            latencies.append((await arrived[mark]) - sent)
        print(f"patch → informer handler x{updates}: median "
              f"{statistics.median(latencies) * 1000:.2f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms")
        await inf.stop()


async def queue_figures(keys: int) -> None:
    queue: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    done = 0

    async def reconcile(key: str) -> None:
        nonlocal done
        done += 1

    started = time.perf_counter()
    workers = asyncio.create_task(workqueue.run_workers(queue, reconcile, workers=4))
    for i in range(keys):
        queue.add(f"ns/key-{i % (keys // 2)}")  # half are duplicates
    while len(queue):
        await asyncio.sleep(0)
    queue.shut_down()
    await workers
    elapsed = time.perf_counter() - started
    print(f"work queue: {keys} adds, {done} reconciles, {keys / elapsed:.0f} adds/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--updates", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubling-client-bench-") as tmp:
        server = KublingServer(Path(tmp) / "data")
        server.start()
        try:
            asyncio.run(cluster_figures(server, args.objects, args.updates))
        finally:
            server.stop()
    asyncio.run(queue_figures(200_000))


if __name__ == "__main__":
    main()
