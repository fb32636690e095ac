"""Helper for the durability test: write keys forever, print each one once acknowledged.

Run as ``python durability_writer.py DB_PATH``. Several concurrent writers, so that
acknowledgements come from group-committed batches. A key is printed (and flushed) only
after ``create`` returned: every printed key was promised durable.
"""

from __future__ import annotations

import asyncio
import sys

from kubling.storage import SQLiteBackend


async def writer(backend: SQLiteBackend, worker: int) -> None:
    i = 0
    while True:
        key = f"/durable/{worker}/{i:06}"
        await backend.create(key, key.encode() * 10)
        sys.stdout.write(key + "\n")
        sys.stdout.flush()
        i += 1


async def main(path: str) -> None:
    backend = SQLiteBackend(path)
    await backend.start()
    await asyncio.gather(*(writer(backend, w) for w in range(8)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
