"""From a query to a reply: the cluster zone answers its names, upstreams the rest.

``respond_now`` answers whatever needs no network (cluster names, known reverse addresses,
cached upstream answers) synchronously, so the transports can reply inside the datagram
callback; only the rest goes through ``respond``'s awaits. Replies are authoritative for
the cluster domain, with the zone's SOA in the authority section of negative answers so
that resolvers cache NXDOMAIN/NODATA for the short cluster TTL. An ExternalName's CNAME is
followed in the same reply (through the cache and the upstreams) when its target is outside
the cluster domain, as CoreDNS does; if the upstreams fail the CNAME alone is returned and
the client's resolver follows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from dnslib import (  # type: ignore[import-untyped,unused-ignore]
    CLASS,
    EDNS0,
    OPCODE,
    QTYPE,
    RCODE,
    RR,
    DNSError,
    DNSQuestion,
    DNSRecord,
)

from kubling.network.dns.cache import AnswerCache, CachedAnswer, CacheKey
from kubling.network.dns.forwarder import Forwarder, ForwardError
from kubling.network.dns.records import Lookup, Zone

log = logging.getLogger(__name__)

#: The UDP payload size we advertise with EDNS (the DNS flag day 2020 value).
EDNS_PAYLOAD = 1232
#: A plain (non-EDNS) UDP reply must fit in 512 bytes (RFC 1035).
CLASSIC_UDP_LIMIT = 512
#: A TCP message has a two-byte length.
TCP_LIMIT = 65535
_MAX_CNAME_CHAIN = 8
#: IN and ANY (dnslib names the latter "*").
_CLASSES = (CLASS.IN, 255)


def parse(packet: bytes) -> Any | None:
    """The query in ``packet``, or ``None`` for garbage and for responses (never answer a
    response: two servers would bounce it back and forth)."""
    try:
        request = DNSRecord.parse(packet)
    except (DNSError, ValueError, IndexError, UnicodeDecodeError):
        return None
    if request.header.qr:
        return None
    return request


def udp_limit(request: Any) -> int:
    """The largest UDP reply the client accepts: its EDNS payload size, else 512."""
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(CLASSIC_UDP_LIMIT, min(int(rr.rclass), 4096))
    return CLASSIC_UDP_LIMIT


def pack(reply: Any, limit: int | None) -> bytes:
    """Wire bytes of ``reply``; over ``limit`` it becomes an empty reply with TC set, so the
    client asks again over TCP."""
    data = bytes(reply.pack())  # dnslib packs into a bytearray
    if limit is not None and len(data) > limit:
        reply.rr, reply.auth = [], []
        reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
        reply.header.tc = 1
        data = bytes(reply.pack())
    return data


class PackedAnswers:
    """Wire replies to cluster-name queries, keyed by the query's bytes after its ID.

    A zone answer depends only on the query and the zone, so while the zone's generation
    stays the same a repeated query (pods ask the same names all the time) is answered by
    one dict lookup and a two-byte ID splice, without parsing or packing. Any zone change
    empties it; it is also emptied when full, which bounds it.
    """

    def __init__(self, zone: Zone, max_entries: int = 10_000) -> None:
        self.zone = zone
        self.max_entries = max_entries
        self._generation = zone.generation
        self._replies: dict[tuple[bytes, bool], bytes] = {}

    def get(self, packet: bytes, tcp: bool) -> bytes | None:
        if self._generation != self.zone.generation:
            self._replies.clear()
            self._generation = self.zone.generation
            return None
        reply = self._replies.get((packet[2:], tcp))
        return packet[:2] + reply[2:] if reply is not None else None

    def put(self, packet: bytes, tcp: bool, reply: bytes) -> None:
        if self.max_entries <= 0:
            return
        if self._generation != self.zone.generation or len(self._replies) >= self.max_entries:
            self._replies.clear()
            self._generation = self.zone.generation
        self._replies[(packet[2:], tcp)] = reply


class Resolver:
    """Answers parsed queries; see the module docstring."""

    def __init__(self, zone: Zone, forwarder: Forwarder, cache: AnswerCache, *, ttl: int = 5,
                 synced: Callable[[], bool] = lambda: True, max_inflight: int = 1000,
                 packed_answers: int = 10_000) -> None:
        self.zone = zone
        self.forwarder = forwarder
        self.cache = cache
        self.ttl = ttl
        self.synced = synced
        self.max_inflight = max_inflight
        self._inflight: dict[CacheKey, asyncio.Future[CachedAnswer]] = {}
        self._packed = PackedAnswers(zone, packed_answers)

    def answer_packet_now(self, packet: bytes, *, tcp: bool) -> tuple[bytes | None, Any]:
        """The transports' entry point: (wire reply, None) when ``packet`` is answered
        without the network, else (None, the parsed query, or ``None`` for garbage)."""
        cached = self._packed.get(packet, tcp)
        if cached is not None:
            return cached, None
        request = parse(packet)
        if request is None:
            return None, None
        reply = self.respond_now(request)
        if reply is None:
            return None, request
        data = pack(reply, TCP_LIMIT if tcp else udp_limit(request))
        if reply.header.aa:  # a zone answer: a function of the query and the zone alone
            self._packed.put(packet, tcp, data)
        return data, None

    # -- the two entry points -----------------------------------------------------------
    def respond_now(self, request: Any) -> Any | None:
        """The reply when no network is needed, else ``None`` (then call ``respond``)."""
        header = request.header
        if header.opcode != OPCODE.QUERY:
            return self._error(request, RCODE.NOTIMP)
        if len(request.questions) != 1:
            return self._error(request, RCODE.FORMERR)
        question = request.q
        name = str(question.qname).rstrip(".").lower()
        if question.qclass in _CLASSES:
            if self.zone.is_authoritative(name):
                if not self.synced():
                    return self._error(request, RCODE.SERVFAIL)
                lookup = self.zone.lookup(name, question.qtype)
                if self._needs_chase(lookup, question.qtype):
                    return None
                return self._zone_reply(request, lookup)
            reverse = self.zone.lookup_reverse(name)
            if reverse is not None:
                if question.qtype not in (QTYPE.PTR, QTYPE.ANY):
                    reverse = Lookup(True, [])
                return self._zone_reply(request, reverse)
        cached = self.cache.get(_key(question))
        if cached is not None:
            return self._upstream_reply(request, cached)
        return None

    async def respond(self, request: Any, packet: bytes) -> Any:
        """The reply to any query, asking upstreams when needed."""
        reply = self.respond_now(request)
        if reply is not None:
            return reply
        question = request.q
        name = str(question.qname).rstrip(".").lower()
        if self.zone.is_authoritative(name) and question.qclass in _CLASSES:
            return await self._chase(request, self.zone.lookup(name, question.qtype))
        try:
            answer = await self._upstream(_key(question), packet)
        except ForwardError as err:
            log.debug("forwarding %s %s failed: %s", question.qname,
                      QTYPE.get(question.qtype), err)
            return self._error(request, RCODE.SERVFAIL)
        return self._upstream_reply(request, answer)

    # -- the cluster zone ---------------------------------------------------------------
    def _needs_chase(self, lookup: Lookup, qtype: int) -> bool:
        return (qtype not in (QTYPE.CNAME, QTYPE.ANY) and len(lookup.answers) == 1
                and lookup.answers[0][0] == QTYPE.CNAME)

    def _zone_reply(self, request: Any, lookup: Lookup) -> Any:
        reply = request.reply(ra=1, aa=1)
        qname = request.q.qname
        for qtype, rdata in lookup.answers:
            reply.add_answer(RR(qname, qtype, ttl=self.ttl, rdata=rdata))
        for owner, qtype, rdata in lookup.additional:
            reply.add_ar(RR(owner, qtype, ttl=self.ttl, rdata=rdata))
        if not lookup.exists:
            reply.header.rcode = RCODE.NXDOMAIN
        if not lookup.answers:
            reply.add_auth(RR(self.zone.domain, QTYPE.SOA, ttl=self.ttl, rdata=self.zone.soa()))
        return self._with_edns(request, reply)

    async def _chase(self, request: Any, lookup: Lookup) -> Any:
        """Follow an ExternalName CNAME chain; outside the zone, ask the upstreams."""
        qtype = request.q.qtype
        reply = self._zone_reply(request, lookup)
        owner = request.q.qname
        for _ in range(_MAX_CNAME_CHAIN):
            target = str(reply.rr[-1].rdata.label).rstrip(".").lower()
            owner = reply.rr[-1].rdata.label
            if not self.zone.is_authoritative(target):
                break
            step = self.zone.lookup(target, qtype)
            reply.rr.extend(RR(owner, t, ttl=self.ttl, rdata=r) for t, r in step.answers)
            if not self._needs_chase(step, qtype):
                return reply
        else:
            return reply
        question = DNSRecord(q=DNSQuestion(owner, qtype))
        try:
            answer = await self._upstream(_key(question.q), question.pack())
        except ForwardError:
            return reply  # the CNAME alone: the client's resolver can follow it
        reply.rr.extend(answer.answers)
        reply.header.aa = 0
        return reply

    # -- upstreams ----------------------------------------------------------------------
    async def _upstream(self, key: CacheKey, packet: bytes) -> CachedAnswer:
        """One upstream round trip per question at a time: concurrent askers share it."""
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self._inflight) >= self.max_inflight:
            raise ForwardError("too many queries in flight")
        future: asyncio.Future[CachedAnswer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            response = await self.forwarder.forward(packet)
            self.cache.put(key, response)
            answer = CachedAnswer(response.header.rcode, list(response.rr),
                                  list(response.auth),
                                  [rr for rr in response.ar if rr.rtype != QTYPE.OPT])
            future.set_result(answer)
            return answer
        except BaseException as err:
            future.set_exception(err if isinstance(err, ForwardError)
                                 else ForwardError(str(err) or type(err).__name__))
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._inflight[key]

    def _upstream_reply(self, request: Any, answer: CachedAnswer) -> Any:
        reply = request.reply(ra=1, aa=0)
        reply.header.rcode = answer.rcode
        reply.rr, reply.auth, reply.ar = (list(answer.answers), list(answer.authority),
                                          list(answer.additional))
        return self._with_edns(request, reply)

    # -- helpers ------------------------------------------------------------------------
    def _error(self, request: Any, rcode: int) -> Any:
        reply = request.reply(ra=1, aa=0)
        reply.questions = list(request.questions)  # reply() invents one when there is none
        reply.header.rcode = rcode
        return self._with_edns(request, reply)

    @staticmethod
    def _with_edns(request: Any, reply: Any) -> Any:
        if any(rr.rtype == QTYPE.OPT for rr in request.ar):
            reply.add_ar(EDNS0(udp_len=EDNS_PAYLOAD))
        return reply


def _key(question: Any) -> CacheKey:
    return (str(question.qname).lower(), int(question.qtype), int(question.qclass))
