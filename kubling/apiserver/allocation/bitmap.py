"""Ranges and the bitmap over them, with upstream's errors and allocation order.

A range maps the values users see (an IP, a port) to offsets ``0..size-1`` of a bitmap.
For an IPv4 CIDR the network and broadcast addresses are not part of it (offset 0 is the
first usable address, ``10.43.0.1`` in ``10.43.0.0/16``), as upstream's ``ipallocator``.

Dynamic allocation is random but prefers the upper part of the range: KEP-3070 (ClusterIPs)
and KEP-3668 (NodePorts) keep a lower band of ``min(max(16, size/step), max)`` offsets for
values users pick themselves (``clusterIP: 10.43.0.10`` for the DNS service, a fixed
nodePort), which dynamic allocation only takes when the upper band is full.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Final

#: (min, max, step) of the static band: upstream's calculateRangeOffset for each allocator.
IP_BAND: Final = (16, 256, 16)
PORT_BAND: Final = (16, 128, 32)


class AllocationError(Exception):
    """A value could not be allocated; the message is upstream's."""


class AlreadyAllocatedError(AllocationError):
    pass


class NotInRangeError(AllocationError):
    pass


class RangeFullError(AllocationError):
    def __init__(self) -> None:
        super().__init__("range is full")


def band_offset(size: int, band: tuple[int, int, int]) -> int:
    """The size of the lower, static band: ``min(max(lo, size/step), hi)``; 0 if tiny."""
    lo, hi, step = band
    if size <= lo:
        return 0
    return max(lo, min(size // step, hi))


class IPRange:
    """The usable addresses of an IPv4 service CIDR (network and broadcast excluded)."""

    family = "IPv4"

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr, strict=False)
        if self.network.version != 4:
            raise ValueError(f"only IPv4 service CIDRs are served: {cidr}")
        self.spec = str(self.network)
        self._base = int(self.network.network_address) + 1
        # The upstream cidr size is 2^bits; it drives the band, the usable size the bitmap.
        cidr_size = self.network.num_addresses
        self.size = max(cidr_size - 2, 0)
        self.band = 0 if cidr_size <= IP_BAND[0] else band_offset(cidr_size, IP_BAND)

    def offset(self, value: str) -> int:
        """The bitmap offset of ``value``; NotInRangeError with upstream's wording."""
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            address = None
        if address is not None and address.version == 4:
            offset = int(address) - self._base
            if 0 <= offset < self.size:
                return offset
        raise NotInRangeError(
            f"the provided IP ({value}) is not in the valid range. "
            f"The range of valid IPs is {self.spec}"
        )

    def contains(self, value: str) -> bool:
        try:
            self.offset(value)
        except NotInRangeError:
            return False
        return True

    def value(self, offset: int) -> str:
        return str(ipaddress.IPv4Address(self._base + offset))

    def already(self, value: str) -> AlreadyAllocatedError:
        return AlreadyAllocatedError("provided IP is already allocated")


class PortRange:
    """A node-port range such as ``30000-32767`` (both ends included)."""

    def __init__(self, spec: str) -> None:
        self.base, self.last = parse_port_range(spec)
        self.spec = f"{self.base}-{self.last}"
        self.size = self.last - self.base + 1
        self.band = band_offset(self.size, PORT_BAND)

    def offset(self, value: int) -> int:
        if isinstance(value, int) and self.base <= value <= self.last:
            return value - self.base
        raise NotInRangeError(
            "provided port is not in the valid range. "
            f"The range of valid ports is {self.spec}"
        )

    def contains(self, value: int) -> bool:
        return isinstance(value, int) and self.base <= value <= self.last

    def value(self, offset: int) -> int:
        return self.base + offset

    def already(self, value: int) -> AlreadyAllocatedError:
        return AlreadyAllocatedError("provided port is already allocated")


def parse_port_range(spec: str) -> tuple[int, int]:
    """``30000-32767`` (or ``30000+2768``, or one port) → (first, last); ValueError if bad."""
    text = spec.strip()
    if "+" in text:
        first_text, count_text = text.split("+", 1)
        first, count = int(first_text), int(count_text)
        last = first + count - 1
    elif "-" in text:
        first_text, last_text = text.split("-", 1)
        first, last = int(first_text), int(last_text)
    else:
        first = last = int(text)
    if not (0 < first <= last <= 65535):
        raise ValueError(f"invalid port range {spec!r}")
    return first, last


class Bitmap:
    """A fixed-size set of offsets: one bit each, bit ``i`` in byte ``i // 8`` (LSB first)."""

    __slots__ = ("bits", "size")

    def __init__(self, size: int, bits: bytearray | None = None) -> None:
        self.size = size
        self.bits = bits if bits is not None else bytearray((size + 7) // 8)

    def copy(self) -> Bitmap:
        return Bitmap(self.size, bytearray(self.bits))

    def has(self, offset: int) -> bool:
        return bool(self.bits[offset >> 3] & (1 << (offset & 7)))

    def set(self, offset: int) -> None:
        self.bits[offset >> 3] |= 1 << (offset & 7)

    def clear(self, offset: int) -> None:
        self.bits[offset >> 3] &= ~(1 << (offset & 7)) & 0xFF

    def count(self) -> int:
        return int.from_bytes(self.bits, "little").bit_count()

    def offsets(self) -> list[int]:
        """Every set offset, ascending."""
        found: list[int] = []
        for index, byte in enumerate(self.bits):
            if byte:
                found.extend(index * 8 + bit for bit in range(8) if byte & (1 << bit))
        return found

    # -- the stored form: upstream's big.Int bytes (big-endian, bit i = offset i) ----------
    def to_bytes(self) -> bytes:
        number = int.from_bytes(self.bits, "little")
        return number.to_bytes((number.bit_length() + 7) // 8, "big")

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Bitmap:
        number = int.from_bytes(data, "big")
        if number.bit_length() > size:
            raise ValueError("allocation data does not fit the range")
        return cls(size, bytearray(number.to_bytes((size + 7) // 8, "little")))

    # -- dynamic allocation -----------------------------------------------------------------
    def free_in(self, start: int, stop: int, rng: random.Random) -> int | None:
        """A free offset in ``[start, stop)``, scanning from a random point (and wrapping),
        skipping full bytes so that a crowded range stays cheap to scan."""
        span = stop - start
        if span <= 0:
            return None
        first = rng.randrange(span)
        i = 0
        while i < span:
            position = (first + i) % span
            at = start + position
            if self.bits[at >> 3] == 0xFF:
                # The rest of this byte is taken: skip it, but not past the wrap point.
                i += min(8 - (at & 7), span - position)
                continue
            if not self.has(at):
                return at
            i += 1
        return None

    def next_free(self, band: int, rng: random.Random) -> int | None:
        """Upstream's randomScanStrategyWithOffset: the upper band first, then the lower."""
        if self.count() >= self.size:
            return None
        found = self.free_in(band, self.size, rng)
        if found is None:
            found = self.free_in(0, band, rng)
        return found
