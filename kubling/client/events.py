"""Recording core/v1 Events about objects, aggregated as upstream's recorder does.

``record`` is called from reconcile loops and must never slow them down or fail them, so it
only queues the event (dropping it, with a log line, when a bounded buffer is full); one
background task writes the queue to the API in order. A repeat of an event — same
involved object, type, reason and message — seen within ten minutes of the previous one
is not a new Event: the existing one gets ``count`` + 1 and a new ``lastTimestamp``
(a PATCH), exactly what ``kubectl describe`` shows as "x3 over 2m". The memory of recent
events is an LRU of bounded size. Upstream's spam filter and its "combined from similar
events" aggregation of different messages are not implemented.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import clock as clocks
from kubling.client import rest

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"

#: A repeat within this many seconds of the previous occurrence updates the same Event.
AGGREGATION_WINDOW = 600.0

_EVENTS = rest.lookup("v1", "events")


@dataclasses.dataclass(frozen=True, slots=True)
class _Pending:
    involved: dict[str, str]
    type: str
    reason: str
    message: str


@dataclasses.dataclass(slots=True)
class _Seen:
    name: str
    namespace: str
    count: int
    observed_at: float


class EventRecorder:
    """Records Events on behalf of ``component`` (``source.component``) running on
    ``host`` (``source.host`` and ``reportingInstance``)."""

    def __init__(
        self,
        client: rest.Client,
        component: str,
        host: str = "",
        *,
        clock: clocks.Clock = clocks.REAL,
        buffer: int = 1000,
        cache_size: int = 4096,
    ) -> None:
        self.events = client.resource(_EVENTS)
        self.component = component
        self.host = host
        self.clock = clock
        self.cache_size = cache_size
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=buffer)
        self._seen: collections.OrderedDict[tuple[Any, ...], _Seen] = collections.OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def record(self, obj: Object, type: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj``. Never raises; failures are logged."""
        try:
            if type not in (NORMAL, WARNING):
                log.warning("event %s about %s dropped: type %r is not Normal or Warning",
                            reason, meta.name_of(obj), type)
                return
            loop = asyncio.get_running_loop()  # outside a loop: dropped, below
            self._queue.put_nowait(_Pending(_involved_object(obj), type, reason, message))
            if self._task is None or self._task.done():
                self._task = loop.create_task(
                    self._send_all(), name=f"event-recorder-{self.component}"
                )
        except asyncio.QueueFull:
            log.warning("event buffer full; dropped %s %s about %s", type, reason,
                        meta.name_of(obj))
        except Exception as exc:  # the caller must never see a failure
            log.warning("event %s about %s dropped: %s", reason, meta.name_of(obj), exc)

    async def flush(self) -> None:
        """Wait until every queued event has been written (or has failed)."""
        await self._queue.join()

    async def close(self) -> None:
        """Stop the writer; events still queued are dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _send_all(self) -> None:
        while True:
            pending = await self._queue.get()
            try:
                await self._send(pending)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # logged, never raised
                involved = pending.involved
                log.warning("cannot record event %s about %s %s/%s: %s", pending.reason,
                            involved.get("kind"), involved.get("namespace", ""),
                            involved.get("name"), exc)
            finally:
                self._queue.task_done()

    async def _send(self, pending: _Pending) -> None:
        involved = pending.involved
        # Upstream's event key: the reference without its resourceVersion, which changes
        # with every write to the object while the event stays the same.
        ref = tuple(sorted((k, v) for k, v in involved.items() if k != "resourceVersion"))
        key = (ref, pending.type, pending.reason, pending.message)
        now = self.clock.monotonic()
        timestamp = meta.now()
        seen = self._seen.get(key)
        if seen is not None and now - seen.observed_at < AGGREGATION_WINDOW:
            try:
                await self.events.patch(
                    seen.name, {"count": seen.count + 1, "lastTimestamp": timestamp},
                    namespace=seen.namespace, type="strategic",
                )
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    raise
                # The Event expired (TTL) or was deleted: start a new one below.
            else:
                seen.count += 1
                seen.observed_at = now
                self._seen.move_to_end(key)
                return
        namespace = involved.get("namespace") or "default"
        name = f"{involved.get('name', '')}.{time.time_ns():x}"
        event: Object = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": pending.reason,
            "message": pending.message,
            "type": pending.type,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        await self.events.create(event, namespace=namespace)
        self._seen[key] = _Seen(name, namespace, 1, now)
        self._seen.move_to_end(key)
        while len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)


def _involved_object(obj: Object) -> dict[str, str]:
    """An ``ObjectReference`` to ``obj``."""
    md = obj.get("metadata")
    if not isinstance(md, dict):
        md = {}
    ref = {
        "kind": str(obj.get("kind") or ""),
        "namespace": str(md.get("namespace") or ""),
        "name": str(md.get("name") or ""),
        "uid": str(md.get("uid") or ""),
        "apiVersion": str(obj.get("apiVersion") or ""),
        "resourceVersion": str(md.get("resourceVersion") or ""),
    }
    return {k: v for k, v in ref.items() if v}
