"""Periodic compaction, so the revision log does not grow without bound.

Like kine, keep the newest ``retain`` revisions: enough for watchers that reconnect after a
short hiccup to resume without a relist, while old superseded values get dropped.
"""

from __future__ import annotations

import asyncio
import logging

from kubling.storage.interface import Backend

_LOG = logging.getLogger(__name__)


async def compact_once(backend: Backend, *, retain: int = 1000) -> int:
    """Compact to ``current - retain`` if that moves forward; returns the compacted revision."""
    target = await backend.current_revision() - retain
    if target > await backend.compacted_revision():
        await backend.compact(target)
    return await backend.compacted_revision()


async def run_compactor(backend: Backend, *, interval: float = 300, retain: int = 1000) -> None:
    """Compact every ``interval`` seconds until cancelled (run it as a task).

    A failed round is logged and retried next interval rather than ending the task: a
    transient error (disk busy) must not silently stop compaction for the process's life.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            revision = await compact_once(backend, retain=retain)
        except Exception:
            _LOG.exception("storage compaction failed")
        else:
            _LOG.debug("storage compacted to revision %d", revision)
