"""The SQLite driver: kine's log-table design, with group commit and in-process watches.

Layout. One table is the whole store: each write (create, update, delete) inserts a row
whose ``id`` is the write's revision, so the table *is* the revision log. ``AUTOINCREMENT``
makes SQLite remember the highest id ever used (in ``sqlite_sequence``), so the revision
never goes back, even after compaction deletes rows. Reads at a revision take, per name,
the newest row with ``id <= revision``; the ``(name, id)`` index makes that a seek.

Threads. SQLite calls block, so none run on the event loop:

* one *writer* thread owns the only write connection. It drains every write queued
  since its last commit and applies them in one transaction: one fsync acknowledges the
  whole batch (group commit). Compare-and-swap checks run inside that transaction, in
  arrival order, so a failed check fails only its own write. Futures are resolved on the
  loop, after ``COMMIT`` returned.
* a small pool of *reader* threads, each with its own connection; WAL mode lets them read
  a consistent snapshot while the writer commits.

Durability. ``journal_mode=WAL`` with ``synchronous=FULL`` fsyncs the WAL on every commit,
so an acknowledged write survives a process kill and a power loss. (``NORMAL`` would
survive a kill but could lose the last commits on power loss; acknowledged means durable
here, so ``FULL``: group commit pays for it.)

Watches. This process is the only writer, so it knows every commit: after each batch
commits, the writer hands the new rows to the loop, which fans them out to watches
(see ``kubling.storage._common.WatchHub``); no polling of the table is needed.

The backend belongs to the event loop that ran ``start()``.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import dataclasses
import enum
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from kubling.storage._common import (
    DEFAULT_WATCH_QUEUE_LIMIT,
    BackendClosedError,
    HubWatch,
    Row,
    WatchHub,
    check_revision,
    prefix_end,
)
from kubling.storage.interface import (
    CompactedError,
    ConflictError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    StorageError,
)

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Upper bound on writes per transaction, so one commit never holds up callers for long.
MAX_BATCH = 1000
#: Reader threads (and connections); reads are short, a few cover a small cluster.
DEFAULT_READERS = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL,
    old_value BLOB
);
CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""
_COLUMNS = (
    "id",
    "name",
    "created",
    "deleted",
    "create_revision",
    "prev_revision",
    "value",
    "old_value",
)
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM kv"
_SELECT_K = "SELECT " + ", ".join(f"k.{c}" for c in _COLUMNS) + " FROM kv AS k"
_INSERT = f"INSERT INTO kv ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_COMPACT_KEY = "compact_revision"
# Below the target, drop tombstones and rows a newer row (at or below the target) replaced:
# reads at the target and watches from it still find everything they need.
_COMPACT = """
DELETE FROM kv WHERE id < :rev AND (
    deleted = 1 OR EXISTS (
        SELECT 1 FROM kv AS newer WHERE newer.name = kv.name AND newer.id > kv.id AND newer.id <= :rev
    )
)
"""


@dataclasses.dataclass(slots=True)
class WriterStats:
    """Counters kept by the writer thread; they show group commit at work."""

    transactions: int = 0  # write transactions committed (one fsync each)
    writes: int = 0  # write requests handled, successful or not
    largest_batch: int = 0


class _Kind(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    COMPACT = "compact"


_Outcome = Row | int | BaseException  # a written row, a compacted revision, or the failure


@dataclasses.dataclass(slots=True)
class _Op:
    """A write request queued for the writer thread."""

    kind: _Kind
    key: str
    value: bytes
    expected: int  # expected mod_revision (update/delete) or target revision (compact)
    future: asyncio.Future[Row | int]


# -- row-level SQL helpers (each takes the connection of the thread that calls it) ------


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so we know exactly what one
    # transaction (one fsync) covers. check_same_thread=False only so close() can run in a
    # different thread than the one that used the connection; use is never concurrent.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _to_row(t: tuple[int, str, int, int, int, int, bytes, bytes | None]) -> Row:
    rid, name, created, deleted, create_rev, prev_rev, value, old_value = t
    return Row(rid, name, bool(created), bool(deleted), create_rev, prev_rev, value, old_value)


def _sequence(conn: sqlite3.Connection) -> int:
    """The highest revision ever written (survives deletion of the newest rows)."""
    found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kv'").fetchone()
    return int(found[0]) if found else 0


def _compacted(conn: sqlite3.Connection) -> int:
    found = conn.execute("SELECT value FROM meta WHERE key = ?", (_COMPACT_KEY,)).fetchone()
    return int(found[0]) if found else 0


def _latest(conn: sqlite3.Connection, key: str, revision: int = 0) -> Row | None:
    """The newest row of ``key`` (at or below ``revision`` when non-zero)."""
    if revision:
        sql = f"{_SELECT} WHERE name = ? AND id <= ? ORDER BY id DESC LIMIT 1"
        found = conn.execute(sql, (key, revision)).fetchone()
    else:
        found = conn.execute(
            f"{_SELECT} WHERE name = ? ORDER BY id DESC LIMIT 1", (key,)
        ).fetchone()
    return _to_row(found) if found else None


def _name_range(prefix: str, column: str = "name") -> tuple[str, tuple[str, ...]]:
    """A SQL condition for ``column`` starting with ``prefix``, as an index-friendly range."""
    if not prefix:
        return "1", ()
    end = prefix_end(prefix)
    if end is None:
        return f"{column} >= ?", (prefix,)
    return f"{column} >= ? AND {column} < ?", (prefix, end)


def _newest_per_name(prefix: str) -> tuple[str, tuple[str, ...]]:
    """Subquery: the id of each name's newest row at or below a revision parameter."""
    where, params = _name_range(prefix)
    return f"SELECT MAX(id) AS id FROM kv WHERE {where} AND id <= ? GROUP BY name", params


# -- read queries (run in a reader thread, inside one read transaction = one snapshot) ----


def _read_get(conn: sqlite3.Connection, key: str, revision: int) -> KeyValue | None:
    if revision:
        check_revision(revision, current=_sequence(conn), compacted=_compacted(conn))
    row = _latest(conn, key, revision)
    return None if row is None or row.deleted else row.kv()


def _read_list(conn: sqlite3.Connection, prefix: str, revision: int) -> ListResult:
    rev = check_revision(revision, current=_sequence(conn), compacted=_compacted(conn))
    newest, params = _newest_per_name(prefix)
    sql = f"{_SELECT_K} JOIN ({newest}) AS m ON k.id = m.id WHERE k.deleted = 0 ORDER BY k.name"
    rows = conn.execute(sql, (*params, rev)).fetchall()
    return ListResult([_to_row(r).kv() for r in rows], rev)


def _read_count(conn: sqlite3.Connection, prefix: str) -> int:
    newest, params = _newest_per_name(prefix)
    sql = f"SELECT COUNT(*) FROM kv AS k JOIN ({newest}) AS m ON k.id = m.id WHERE k.deleted = 0"
    return int(conn.execute(sql, (*params, _sequence(conn))).fetchone()[0])


def _read_history(
    conn: sqlite3.Connection, prefix: str, start: int, end: int, limit: int
) -> list[Event]:
    compacted = _compacted(conn)
    if start < compacted:
        raise CompactedError(start, compacted)
    where, params = _name_range(prefix)
    sql = f"{_SELECT} WHERE id >= ? AND id <= ? AND {where} ORDER BY id LIMIT ?"
    return [_to_row(r).event() for r in conn.execute(sql, (start, end, *params, limit))]


# -- the writer thread ------------------------------------------------------------------


class _Writer:
    """Owns the write connection; turns queued requests into group-committed batches."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[list[_Op], list[_Outcome]], None],
        stats: WriterStats,
        max_batch: int,
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._on_done = on_done
        self._stats = stats
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()  # None: stop
        self._thread = threading.Thread(target=self._run, name="kubling-sqlite-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: _Op) -> None:
        self._queue.put(op)

    def stop(self) -> None:
        """Commit everything queued so far, then close the connection (blocks)."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take_batch()
                if batch:
                    self._commit(batch)
        finally:
            self._conn.close()

    def _take_batch(self) -> tuple[list[_Op], bool]:
        """Block for one request, then take whatever else is already waiting.

        While a commit is fsyncing, new requests pile up in the queue; the next call takes
        them all at once. That is the whole group commit: no timer, no added latency when
        idle, and batches grow by themselves under load.
        """
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op is None:
                return batch, True
            batch.append(op)
        return batch, False

    def _commit(self, batch: list[_Op]) -> None:
        try:
            outcomes = self._apply_batch(batch)
        except Exception as exc:  # I/O error, disk full, busy...: nothing in it is durable
            _LOG.exception("sqlite write batch of %d failed", len(batch))
            self._rollback()
            outcomes = [_batch_failure(exc) for _ in batch]
        try:
            self._loop.call_soon_threadsafe(self._on_done, batch, outcomes)
        except RuntimeError:  # the loop is closed: nobody is waiting for these any more
            pass

    def _apply_batch(self, batch: list[_Op]) -> list[_Outcome]:
        self._conn.execute("BEGIN IMMEDIATE")
        current = _sequence(self._conn)
        outcomes: list[_Outcome] = []
        for op in batch:
            try:
                outcome: _Outcome = self._apply(op, current)
            except StorageError as exc:  # a failed check: only this request fails
                outcome = exc
            if isinstance(outcome, Row):
                current = outcome.revision
            outcomes.append(outcome)
        self._conn.execute("COMMIT")
        self._stats.transactions += 1
        self._stats.writes += len(batch)
        self._stats.largest_batch = max(self._stats.largest_batch, len(batch))
        return outcomes

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            _LOG.exception("sqlite rollback failed")

    def _apply(self, op: _Op, current: int) -> Row | int:
        """Check and write one request; ``current`` is the newest revision in this txn."""
        if op.kind is _Kind.COMPACT:
            return self._compact(op.expected, current)
        latest = _latest(self._conn, op.key)
        row = _next_row(op, latest, current + 1)
        self._conn.execute(
            _INSERT,
            (
                row.revision,
                row.key,
                int(row.created),
                int(row.deleted),
                row.create_revision,
                row.prev_revision,
                row.value,
                row.old_value,
            ),
        )
        return row

    def _compact(self, revision: int, current: int) -> int:
        if revision > current:
            raise FutureRevisionError(revision, current)
        compacted = _compacted(self._conn)
        if revision <= compacted:
            return compacted
        self._conn.execute(_COMPACT, {"rev": revision})
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_COMPACT_KEY, revision),
        )
        return revision


def _next_row(op: _Op, latest: Row | None, revision: int) -> Row:
    """The row ``op`` writes at ``revision`` given the key's newest row, or the CAS error."""
    live = latest is not None and not latest.deleted
    if op.kind is _Kind.CREATE:
        if live:
            raise KeyExistsError(op.key)
        prev = latest.revision if latest is not None else 0
        return Row(revision, op.key, True, False, revision, prev, op.value, None)
    if latest is None or latest.deleted:
        raise KeyNotFoundError(op.key)
    if op.expected and latest.revision != op.expected:
        raise ConflictError(op.key, latest.kv())
    deleted = op.kind is _Kind.DELETE
    value = latest.value if deleted else op.value
    return Row(
        revision,
        op.key,
        False,
        deleted,
        latest.create_revision,
        latest.revision,
        value,
        latest.value,
    )


def _batch_failure(exc: Exception) -> StorageError:
    """A fresh error per request (sharing one instance across tasks tangles tracebacks)."""
    err = StorageError(f"write not committed: {exc}")
    err.__cause__ = exc
    return err


# -- the backend ------------------------------------------------------------------------


class SQLiteBackend:
    """A durable ``Backend`` in one SQLite file (``path``; parent dirs made, mode 0600)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readers: int = DEFAULT_READERS,
        max_batch: int = MAX_BATCH,
        watch_queue_limit: int = DEFAULT_WATCH_QUEUE_LIMIT,
    ) -> None:
        self.path = Path(path)
        self.stats = WriterStats()
        self._readers = readers
        self._max_batch = max_batch
        self._hub = WatchHub(self._history, watch_queue_limit)
        self._writer: _Writer | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: builtins.list[sqlite3.Connection] = []
        self._read_conns_lock = threading.Lock()
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        conn = await asyncio.to_thread(self._open_db)
        try:
            self._hub.revision = _sequence(conn)
            self._hub.compacted = _compacted(conn)
        except BaseException:
            conn.close()
            raise
        self._writer = _Writer(conn, loop, self._finish_batch, self.stats, self._max_batch)
        self._writer.start()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self._readers, thread_name_prefix="kubling-sqlite-read"
        )

    async def close(self) -> None:
        """Commit queued writes, end watches, close every connection."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)
        self._hub.close_all()
        if self._pool is not None:
            await asyncio.to_thread(self._close_readers, self._pool)

    def _open_db(self) -> sqlite3.Connection:
        """Create the file (0600: it holds every Secret) and schema; the writer's connection."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        conn = _connect(self.path)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path}: cannot enable WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _close_readers(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        pool.shutdown(wait=True)
        with self._read_conns_lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()

    # -- reads --------------------------------------------------------------------------

    async def current_revision(self) -> int:
        """The newest acknowledged revision (the one watches have been fed up to)."""
        return self._hub.revision

    async def compacted_revision(self) -> int:
        return self._hub.compacted

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        return await self._read(lambda conn: _read_get(conn, key, revision))

    async def list(self, prefix: str, *, revision: int = 0) -> ListResult:
        return await self._read(lambda conn: _read_list(conn, prefix, revision))

    async def count(self, prefix: str) -> int:
        return await self._read(lambda conn: _read_count(conn, prefix))

    def watch(self, prefix: str, *, start_revision: int) -> HubWatch:
        if self._closed:
            raise BackendClosedError()
        return self._hub.watch(prefix, start_revision)

    async def _history(self, prefix: str, start: int, end: int, limit: int) -> builtins.list[Event]:
        return await self._read(lambda conn: _read_history(conn, prefix, start, end, limit))

    async def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._closed or self._pool is None:
            raise BackendClosedError()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._in_snapshot, query)

    def _in_snapshot(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``query`` in one read transaction, so all its statements see one snapshot."""
        conn = self._reader_conn()
        conn.execute("BEGIN")
        try:
            return query(conn)
        finally:
            conn.execute("ROLLBACK")  # read-only: ending it just releases the snapshot

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._read_conns_lock:
                self._read_conns.append(conn)
        return conn

    # -- writes -------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KeyValue:
        return (await self._write(_Kind.CREATE, key, value, 0)).kv()

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        return (await self._write(_Kind.UPDATE, key, value, expected_revision)).kv()

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        return (await self._write(_Kind.DELETE, key, b"", expected_revision)).kv()

    async def compact(self, revision: int) -> None:
        await self._submit(_Kind.COMPACT, "", b"", revision)

    async def _write(self, kind: _Kind, key: str, value: bytes, expected: int) -> Row:
        outcome = await self._submit(kind, key, value, expected)
        assert isinstance(outcome, Row)  # only compaction answers with an int
        return outcome

    async def _submit(self, kind: _Kind, key: str, value: bytes, expected: int) -> Row | int:
        """Queue a request and wait for its commit.

        If the caller is cancelled meanwhile the write may still commit (as with etcd);
        it is then seen by watches and later reads like any other.
        """
        if self._closed or self._writer is None:
            raise BackendClosedError()
        future: asyncio.Future[Row | int] = asyncio.get_running_loop().create_future()
        self._writer.submit(_Op(kind, key, value, expected, future))
        return await future

    def _finish_batch(self, batch: Sequence[_Op], outcomes: Sequence[_Outcome]) -> None:
        """On the loop, after COMMIT: feed watches first, then wake the writers' callers.

        Publishing first means that when a write returns, the hub revision already covers
        it: a watch opened "from now" afterwards starts just past it, with no overlap and
        no gap.
        """
        self._hub.publish(o.event() for o in outcomes if isinstance(o, Row))
        for op, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, int):
                self._hub.compacted = max(self._hub.compacted, outcome)
            if op.future.done():  # the caller was cancelled
                continue
            if isinstance(outcome, BaseException):
                op.future.set_exception(outcome)
            else:
                op.future.set_result(outcome)
