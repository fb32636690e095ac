"""What only the SQLite driver promises: persistence across restarts, crash durability."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import kubling
from kubling.storage import (
    MemoryBackend,
    SQLiteBackend,
    open_backend,
)

HERE = Path(__file__).parent
REPO = Path(kubling.__file__).parent.parent


def test_reopen_keeps_data_revision_and_compaction(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    async def first() -> None:
        b = SQLiteBackend(path)
        await b.start()
        kv = await b.create("/a", b"1")
        await b.update("/a", b"2", expected_revision=kv.mod_revision)
        await b.create("/b", b"b")
        await b.compact(3)
        await b.create("/tmp", b"t")
        await b.delete("/tmp")  # the newest row; deleting it must not rewind revisions
        await b.close()

    async def second() -> None:
        b = SQLiteBackend(path)
        await b.start()
        assert await b.current_revision() == 5
        assert await b.compacted_revision() == 3
        assert [(kv.key, kv.value) for kv in (await b.list("/")).items] == [
            ("/a", b"2"),
            ("/b", b"b"),
        ]
        await b.compact(5)
        assert (await b.create("/c", b"c")).mod_revision == 6
        await b.close()

    async def third() -> None:
        b = SQLiteBackend(path)
        await b.start()
        assert (await b.current_revision(), await b.compacted_revision()) == (6, 5)
        await b.close()

    asyncio.run(first())
    asyncio.run(second())
    asyncio.run(third())


def test_revision_survives_compaction_of_every_row(tmp_path: Path) -> None:
    """AUTOINCREMENT: revisions never go back, even once the newest rows are gone."""
    path = tmp_path / "state.db"

    async def body() -> None:
        b = SQLiteBackend(path)
        await b.start()
        await b.create("/x", b"1")
        await b.delete("/x")
        await b.create("/y", b"1")
        await b.delete("/y")
        await b.compact(4)
        await b.close()
        with sqlite3.connect(path) as raw:
            raw.execute("DELETE FROM kv")  # worst case: the table is empty
        b = SQLiteBackend(path)
        await b.start()
        assert await b.current_revision() == 4
        assert (await b.create("/z", b"1")).mod_revision == 5
        await b.close()

    asyncio.run(body())


def test_file_created_private_with_parents(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"

    async def body() -> None:
        b = open_backend(f"sqlite://{path}")
        assert isinstance(b, SQLiteBackend)
        await b.start()
        await b.create("/secret", b"s")
        await b.close()

    asyncio.run(body())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_open_backend_endpoints(tmp_path: Path) -> None:
    assert isinstance(open_backend("memory://"), MemoryBackend)
    b = open_backend("sqlite:///var/lib/kubling/state.db?_journal=WAL&cache=shared")
    assert isinstance(b, SQLiteBackend) and b.path == Path("/var/lib/kubling/state.db")
    rel = open_backend("sqlite://db/state.db")
    assert isinstance(rel, SQLiteBackend) and rel.path == Path("db/state.db")
    for bad in ["etcd://127.0.0.1:2379", "postgres://x", "sqlite://", "/plain/path"]:
        with pytest.raises(ValueError, match="sqlite://"):
            open_backend(bad)


def test_close_commits_pending_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    async def body() -> None:
        b = SQLiteBackend(path)
        await b.start()
        pending = [asyncio.ensure_future(b.create(f"/p/{i}", b"x")) for i in range(50)]
        await asyncio.sleep(0)  # let them queue
        await b.close()
        assert all(p.done() and p.exception() is None for p in pending)
        b = SQLiteBackend(path)
        await b.start()
        assert await b.count("/p/") == 50
        await b.close()

    asyncio.run(body())


def _read_lines(stream: object, out: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.append(line.strip())


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "durability_writer.py"), str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, acked), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 15
        while not acked and time.monotonic() < deadline:  # wait out interpreter start-up
            time.sleep(0.01)
        assert acked, "writer never acknowledged a write"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join(5)
    assert proc.returncode == -signal.SIGKILL
    acked = [k for k in acked if k]
    print(f"{len(acked)} acknowledged writes before SIGKILL")
    assert len(acked) > 20

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {name for (name,) in raw.execute("SELECT name FROM kv WHERE deleted = 0")}
    assert not set(acked) - stored, "acknowledged writes lost"

    async def reopen() -> None:
        b = SQLiteBackend(path)
        await b.start()
        assert await b.count("/durable/") == len(stored)
        assert await b.current_revision() >= len(acked)
        await b.close()

    asyncio.run(reopen())
