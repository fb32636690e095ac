"""kubling.storage: the MVCC key-value store under the API server.

Import from here, not from the driver modules: ``open_backend`` picks the driver from an
endpoint string (as k3s' ``--datastore-endpoint``), and the contract lives in
``kubling.storage.interface``.
"""

from __future__ import annotations

from kubling.storage._common import BackendClosedError
from kubling.storage.compactor import compact_once, run_compactor
from kubling.storage.interface import (
    Backend,
    CompactedError,
    ConflictError,
    Event,
    EventType,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    StorageError,
    Watch,
)
from kubling.storage.memory import MemoryBackend
from kubling.storage.sqlite import SQLiteBackend

__all__ = [
    "Backend",
    "BackendClosedError",
    "CompactedError",
    "ConflictError",
    "Event",
    "EventType",
    "FutureRevisionError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyValue",
    "ListResult",
    "MemoryBackend",
    "SQLiteBackend",
    "StorageError",
    "Watch",
    "compact_once",
    "open_backend",
    "run_compactor",
]

SUPPORTED_SCHEMES = ("sqlite://", "memory://")


def open_backend(endpoint: str) -> Backend:
    """The driver for ``endpoint``, not yet started (``await backend.start()`` next).

    * ``sqlite:///abs/path/state.db`` — absolute path; ``sqlite://rel/state.db`` is
      relative to the working directory. A ``?query`` suffix (k3s writes
      ``?_journal=WAL&cache=shared``) is ignored: the driver always sets its own pragmas.
    * ``memory://`` — in-process, lost on exit; for tests.
    """
    if endpoint.startswith("sqlite://"):
        path = endpoint.removeprefix("sqlite://").split("?", 1)[0]
        if not path:
            raise ValueError(f"storage endpoint {endpoint!r} has no file path")
        return SQLiteBackend(path)
    if endpoint == "memory://" or endpoint.startswith("memory://?"):
        return MemoryBackend()
    raise ValueError(
        f"unsupported storage endpoint {endpoint!r}: supported schemes are "
        f"{', '.join(SUPPORTED_SCHEMES)} (e.g. sqlite:///var/lib/kubling/state.db)"
    )
