"""Fixtures for the storage suite: run one async test body against each driver.

No pytest-asyncio: a test is a plain function that hands an ``async def body(backend)`` to
the ``run`` fixture, which starts the backend inside ``asyncio.run`` (drivers belong to the
loop that started them) and always closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kubling.storage import Backend, MemoryBackend, SQLiteBackend

Body = Callable[[Backend], Awaitable[None]]


def make_backend(kind: str, tmp_path: Path, **options: Any) -> Backend:
    if kind == "memory":
        return MemoryBackend(**options)
    return SQLiteBackend(tmp_path / "db" / "state.db", **options)


class _Run:
    """Calling it runs ``body`` against a fresh, started backend of ``kind``."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self._tmp_path = tmp_path

    def __call__(self, body: Body, **options: Any) -> None:
        async def main() -> None:
            backend = make_backend(self.kind, self._tmp_path, **options)
            await backend.start()
            try:
                await asyncio.wait_for(body(backend), timeout=15)
            finally:
                await backend.close()

        asyncio.run(main())


@pytest.fixture(params=["memory", "sqlite"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> _Run:
    return _Run(request.param, tmp_path)
