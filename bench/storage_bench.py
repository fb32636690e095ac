"""Storage micro-benchmark: what one write, one read and a burst of writes cost.

    .venv/bin/python bench/storage_bench.py [--dir DIR] [--sequential N] [--burst N] [--uvloop]

Sequential creates measure the latency of one durable write (one fsync each: nothing to
batch with); the concurrent burst shows group commit (many writes per fsync). The DB goes
in a temporary directory unless ``--dir`` names one: put it on the disk you care about.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from kubling.storage import Backend, MemoryBackend, SQLiteBackend


def percentiles(samples_s: list[float]) -> str:
    us = sorted(s * 1e6 for s in samples_s)
    p50 = statistics.median(us)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    return f"p50 {p50:8.1f} us   p99 {p99:8.1f} us"


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> list[float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        await op(i)
        samples.append(time.perf_counter() - t0)
    return samples


async def bench(name: str, backend: Backend, sequential: int, burst: int) -> None:
    await backend.start()
    try:
        value = b"x" * 1024  # about a small Kubernetes object
        seq = await timed(sequential, lambda i: backend.create(f"/seq/{i:08}", value))
        print(f"{name:7} sequential create  ({sequential:5}): {percentiles(seq)}")

        before = backend.stats.transactions if isinstance(backend, SQLiteBackend) else 0
        t0 = time.perf_counter()
        await asyncio.gather(*(backend.create(f"/burst/{i:08}", value) for i in range(burst)))
        elapsed = time.perf_counter() - t0
        line = f"{name:7} concurrent creates ({burst:5}): {burst / elapsed:10.0f} writes/s"
        if isinstance(backend, SQLiteBackend):
            line += f"   ({backend.stats.transactions - before} transactions)"
        print(line)

        gets = await timed(2000, lambda i: backend.get(f"/seq/{i % sequential:08}"))
        print(f"{name:7} get                ({2000:5}): {percentiles(gets)}")
        lists = await timed(20, lambda i: backend.list("/burst/"))
        print(f"{name:7} list of {burst} keys   ({20:5}): {percentiles(lists)}")
    finally:
        await backend.close()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        await bench("sqlite", SQLiteBackend(Path(tmp) / "bench.db"), args.sequential, args.burst)
    await bench("memory", MemoryBackend(), args.sequential, args.burst)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to put the database")
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    ns = parser.parse_args()
    if ns.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(ns))
