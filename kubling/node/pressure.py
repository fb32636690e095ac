"""Node pressure from real measurements: the kubelet eviction manager's signals and hard
thresholds, and the MemoryPressure / DiskPressure / PIDPressure conditions they give.

The signals are the kubelet's, measured on this machine:

- ``memory.available``: memory capacity less the node's working set (``metrics.node_usage``:
  used memory less the inactive file cache, what the root cgroup's working set is);
- ``nodefs.available`` / ``nodefs.inodesFree``: the filesystem of the data dir (the
  kubelet's root dir: pod volumes and logs live there);
- ``imagefs.available`` / ``imagefs.inodesFree``: the filesystem of the image store (the
  same one unless ``images/`` is a mount of its own);
- ``pid.available``: the node's pid limit (``kernel.pid_max``, or ``kernel.threads-max``
  when lower) less the tasks that exist (``/proc/loadavg``'s count).

Thresholds use the kubelet's ``--eviction-hard`` syntax (``memory.available<100Mi,
nodefs.available<10%``); without the flag the kubelet's Linux defaults apply, and, as the
kubelet does, a flag replaces the defaults as a whole rather than merging with them (there
is no default for ``pid.available``, so PIDPressure only comes with an explicit threshold).

A condition is on while one of its thresholds is met and for ``transition_period`` after
the last time one was (the kubelet's ``evictionPressureTransitionPeriod``, 5 minutes), so a
node at the edge does not flap. ``PressureMonitor`` measures every 10 s (the eviction
manager's monitoring interval) and calls ``on_change`` when the set of conditions changes,
which makes the node status reporter post at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from kubling.api.validation._quantity import parse_quantity
from kubling.node import metrics

log = logging.getLogger("kubling.node.pressure")

MONITOR_PERIOD_SECONDS = 10.0
PRESSURE_TRANSITION_PERIOD_SECONDS = 300.0
#: The kubelet's DefaultEvictionHard on Linux.
DEFAULT_EVICTION_HARD = ("memory.available<100Mi,nodefs.available<10%,"
                         "nodefs.inodesFree<5%,imagefs.available<15%,imagefs.inodesFree<5%")

MEMORY_PRESSURE = "MemoryPressure"
DISK_PRESSURE = "DiskPressure"
PID_PRESSURE = "PIDPressure"

#: signal → the node condition it drives.
SIGNAL_CONDITIONS: Mapping[str, str] = {
    "memory.available": MEMORY_PRESSURE,
    "allocatableMemory.available": MEMORY_PRESSURE,
    "nodefs.available": DISK_PRESSURE,
    "nodefs.inodesFree": DISK_PRESSURE,
    "imagefs.available": DISK_PRESSURE,
    "imagefs.inodesFree": DISK_PRESSURE,
    "containerfs.available": DISK_PRESSURE,
    "containerfs.inodesFree": DISK_PRESSURE,
    "pid.available": PID_PRESSURE,
}


@dataclasses.dataclass(frozen=True)
class Threshold:
    """``signal < quantity`` or ``signal < percentage * capacity`` (one of the two)."""

    signal: str
    quantity: int | None = None
    percentage: float | None = None

    def value(self, capacity: int) -> float:
        if self.quantity is not None:
            return float(self.quantity)
        return (self.percentage or 0.0) * capacity


def parse_eviction_hard(text: str) -> tuple[Threshold, ...]:
    """``--eviction-hard``: comma-separated ``<signal><<value>``; ValueError with the
    kubelet's wording when a statement is wrong. A zero threshold (``0%``, ``0``) is no
    threshold, as the kubelet drops it."""
    thresholds: list[Threshold] = []
    for statement in (s.strip() for s in text.split(",")):
        if not statement:
            continue
        signal, sep, value = statement.partition("<")
        if not sep or not signal or not value:
            raise ValueError(f"invalid eviction threshold syntax {statement}, expected "
                             "<signal><operator><value>")
        if signal not in SIGNAL_CONDITIONS:
            raise ValueError(f"unsupported eviction signal {signal}")
        if value.endswith("%"):
            try:
                percentage = float(value[:-1]) / 100
            except ValueError:
                raise ValueError(f"invalid percentage threshold {value} for {signal}") from None
            if not 0 <= percentage <= 1:
                raise ValueError(f"eviction percentage threshold {signal} must be >= 0% "
                                 f"and <= 100%: {value}")
            if percentage > 0:
                thresholds.append(Threshold(signal, percentage=percentage))
            continue
        quantity = parse_quantity(value)
        if quantity is None:
            raise ValueError(f"invalid eviction threshold value {value} for {signal}")
        if quantity < 0:
            raise ValueError(f"eviction threshold {signal} must be positive: {value}")
        if quantity > 0:
            thresholds.append(Threshold(signal, quantity=int(quantity)))
    return tuple(thresholds)


DEFAULT_THRESHOLDS = parse_eviction_hard(DEFAULT_EVICTION_HARD)


# -- measuring -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Observation:
    available: int
    capacity: int


Observations = dict[str, Observation]


def observe(*, data_dir: Path, image_dir: Path, proc: Path = Path("/proc")) -> Observations:
    """Every signal this machine can measure now (a few small files and two statvfs)."""
    found: Observations = {}
    total = _mem_total(proc)
    node = metrics.node_usage(proc=proc)
    if total is not None and node.working_set is not None:
        found["memory.available"] = Observation(total - node.working_set, total)
    for prefix, path in (("nodefs", data_dir), ("imagefs", _existing(image_dir))):
        try:
            fs = os.statvfs(path)
        except OSError:
            continue
        found[f"{prefix}.available"] = Observation(fs.f_bavail * fs.f_frsize,
                                                   fs.f_blocks * fs.f_frsize)
        if fs.f_files:
            found[f"{prefix}.inodesFree"] = Observation(fs.f_favail, fs.f_files)
    pids = _pid_observation(proc)
    if pids is not None:
        found["pid.available"] = pids
    return found


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _mem_total(proc: Path) -> int | None:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _pid_observation(proc: Path) -> Observation | None:
    try:
        limit = int((proc / "sys/kernel/pid_max").read_text())
        threads = (proc / "sys/kernel/threads-max").read_text().strip()
        if threads.isdigit():
            limit = min(limit, int(threads))
        running = int((proc / "loadavg").read_text().split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return None
    return Observation(limit - running, limit)


def thresholds_met(thresholds: tuple[Threshold, ...],
                   observations: Observations) -> list[Threshold]:
    """The thresholds whose signal is below its value now (unmeasured signals are not)."""
    met = []
    for threshold in thresholds:
        seen = observations.get(threshold.signal)
        if seen is not None and seen.available < threshold.value(seen.capacity):
            met.append(threshold)
    return met


# -- the monitor -----------------------------------------------------------------------------


class PressureMonitor:
    """Which pressure conditions hold (``conditions``), kept current by ``run``."""

    def __init__(self, thresholds: tuple[Threshold, ...], *,
                 observe: Callable[[], Observations],
                 on_change: Callable[[], None] = lambda: None,
                 transition_period: float = PRESSURE_TRANSITION_PERIOD_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.thresholds = thresholds
        self._observe = observe
        self.on_change = on_change
        self._period = transition_period
        self._clock = clock
        self._last_observed: dict[str, float] = {}
        self.conditions: frozenset[str] = frozenset()

    def synchronize(self) -> bool:
        """Measure and update ``conditions``; True when they changed. Blocking (file
        reads): call it in a thread."""
        met = thresholds_met(self.thresholds, self._observe())
        now = self._clock()
        for threshold in met:
            self._last_observed[SIGNAL_CONDITIONS[threshold.signal]] = now
        active = frozenset(c for c, at in self._last_observed.items()
                           if now - at < self._period or at == now)
        if active != self.conditions:
            for condition in sorted(active - self.conditions):
                log.warning("node has %s: %s", condition, ", ".join(
                    f"{t.signal}" for t in met if SIGNAL_CONDITIONS[t.signal] == condition))
            for condition in sorted(self.conditions - active):
                log.info("node no longer has %s", condition)
            self.conditions = active
            return True
        return False

    async def run(self, period: float = MONITOR_PERIOD_SECONDS) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                changed = await asyncio.to_thread(self.synchronize)
            except OSError as err:
                log.warning("cannot measure node pressure: %s", err)
                continue
            if changed:
                self.on_change()  # on the loop: it may touch asyncio objects
