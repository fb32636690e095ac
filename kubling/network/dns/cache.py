"""A small cache of forwarded answers that respects their TTLs.

Pods resolve the same few external names over and over (and with ``ndots:5`` each lookup
fans out into several queries), so the upstream sees one query per name per TTL instead
of one per lookup. Entries live for the smallest TTL in the answer (capped), negative
answers for their SOA minimum (RFC 2308, capped); SERVFAIL and truncated answers are never
stored. The oldest-used entry goes when the cache is full, so memory stays bounded.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from dnslib import QTYPE, RCODE, RR  # type: ignore[import-untyped,unused-ignore]

#: (lower-case name, qtype, qclass).
CacheKey = tuple[str, int, int]


@dataclasses.dataclass(frozen=True)
class CachedAnswer:
    """The sections of an upstream answer, with TTLs already counted down."""

    rcode: int
    answers: list[Any]
    authority: list[Any]
    additional: list[Any]


@dataclasses.dataclass
class _Entry:
    rcode: int
    sections: tuple[list[Any], list[Any], list[Any]]
    stored: float
    expires: float


class AnswerCache:
    """LRU of upstream answers keyed by question; ``get`` returns TTL-adjusted copies."""

    def __init__(self, max_entries: int = 10_000, *, max_ttl: int = 3600,
                 max_negative_ttl: int = 300,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self._clock = clock
        self._entries: collections.OrderedDict[CacheKey, _Entry] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> CachedAnswer | None:
        entry = self._entries.get(key)
        now = self._clock()
        if entry is None or entry.expires <= now:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        elapsed = int(now - entry.stored)
        answers, authority, additional = ([_aged(rr, elapsed) for rr in section]
                                          for section in entry.sections)
        return CachedAnswer(entry.rcode, answers, authority, additional)

    def put(self, key: CacheKey, response: Any) -> None:
        """Store an upstream response (a dnslib ``DNSRecord``) if it may be cached."""
        rcode = response.header.rcode
        if response.header.tc or rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
            return
        additional = [rr for rr in response.ar if rr.rtype != QTYPE.OPT]
        if response.rr:
            ttl = min(rr.ttl for rr in [*response.rr, *response.auth])
            ttl = min(ttl, self.max_ttl)
        else:
            soas = [rr for rr in response.auth if rr.rtype == QTYPE.SOA]
            if not soas:
                return
            ttl = min(soas[0].ttl, soas[0].rdata.times[-1], self.max_negative_ttl)
        if ttl <= 0 or self.max_entries <= 0:
            return
        now = self._clock()
        self._entries[key] = _Entry(rcode, (list(response.rr), list(response.auth), additional),
                                    now, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def _aged(rr: Any, elapsed: int) -> Any:
    return RR(rr.rname, rr.rtype, rr.rclass, max(0, rr.ttl - elapsed), rr.rdata)
