"""The kubelet's per-item back-off (``flowcontrol.Backoff``): the first failure is retried
at once, the next after 10 s, doubling up to 5 minutes; an item that behaved for twice the
cap is forgiven. Image pulls (ImagePullBackOff) and crashing containers (CrashLoopBackOff)
each keep one of these, keyed by pod uid + container name (+ image). Wall-clock time,
because a container's failure time comes from its ``finishedAt``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

INITIAL = 10.0
CAP = 300.0


@dataclasses.dataclass
class _Entry:
    delay: float
    last_update: float


class Backoff:
    def __init__(self, initial: float = INITIAL, cap: float = CAP,
                 clock: Callable[[], float] = time.time) -> None:
        self.initial = initial
        self.cap = cap
        self.clock = clock
        self._entries: dict[str, _Entry] = {}

    def next(self, key: str) -> None:
        """Record a failure: the wait before the following attempt grows."""
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None or now - entry.last_update > 2 * self.cap:
            self._entries[key] = _Entry(self.initial, now)
        else:
            entry.delay = min(entry.delay * 2, self.cap)
            entry.last_update = now

    def remaining(self, key: str, since: float | None = None) -> float:
        """Seconds still to wait before trying `key` again (0: go). `since` is when the
        failure happened (default: when it was recorded)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        start = entry.last_update if since is None else since
        return max(0.0, start + entry.delay - self.clock())

    def delay(self, key: str) -> float:
        entry = self._entries.get(key)
        return entry.delay if entry else 0.0

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]
