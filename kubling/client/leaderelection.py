"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection.

Candidates race to write their identity into one Lease; every write is a compare-and-swap
on the Lease's resourceVersion, so exactly one wins. The leader renews the Lease every
``retry_period``; when it cannot renew for ``renew_deadline`` it stops leading. Other
candidates take over once the Lease has not changed for ``lease_duration`` *as measured on
their own clock* from when they last saw it change (never by comparing the ``renewTime``
written by another machine, whose clock may differ).

Choose ``lease_duration > renew_deadline > retry_period``: a leader that loses contact
stops acting before anyone else may start.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import clock as clocks
from kubling.client import rest

log = logging.getLogger(__name__)

_LEASES = rest.lookup("coordination.k8s.io/v1", "leases")
_API_FAILURES: tuple[type[BaseException], ...] = (rest.ApiError, *rest.TRANSPORT_ERRORS)
_JITTER = 1.2  # acquire retries wait retry_period * [1, 2.2), as upstream's JitterFactor


class LeaderElector:
    """One candidate for the lock ``lock_namespace/lock_name``, known as ``identity``."""

    def __init__(
        self,
        client: rest.Client,
        lock_namespace: str,
        lock_name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_on_cancel: bool = True,
        clock: clocks.Clock = clocks.REAL,
    ) -> None:
        if not identity:
            raise ValueError("a leader election identity is required")
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.leases = client.resource(_LEASES)
        self.lock_namespace = lock_namespace
        self.lock_name = lock_name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self.clock = clock
        self._observed: dict[str, Any] = {}
        self._observed_at = 0.0
        self._leading = False

    @property
    def is_leader(self) -> bool:
        """True while ``run`` holds the lease (between the two callbacks)."""
        return self._leading

    @property
    def leader(self) -> str:
        """The holder identity last seen in the Lease (``""`` when none)."""
        return str(self._observed.get("holderIdentity") or "")

    async def run(
        self,
        on_started_leading: Callable[[], Awaitable[None]],
        on_stopped_leading: Callable[[], None] | None = None,
    ) -> None:
        """Wait to become leader, run ``on_started_leading()`` while leading, then return.

        Leading ends when the lease cannot be renewed (the started task is cancelled),
        when ``on_started_leading`` returns or raises (its exception is re-raised here),
        or when ``run`` is cancelled. ``on_stopped_leading()`` is then called, if leading
        had started. The lease is released (so that another candidate need not wait for it
        to expire) unless it was lost or ``release_on_cancel`` is false. ``run`` does not
        try to lead again: callers that want to, call it again.
        """
        await self._acquire()
        self._leading = True
        log.info("%s: became leader of lease %s/%s", self.identity, self.lock_namespace,
                 self.lock_name)
        leading: asyncio.Future[None] = asyncio.ensure_future(on_started_leading())
        renewing = asyncio.create_task(self._renew(), name=f"renew-{self.lock_name}")
        lost = False
        try:
            done, _ = await asyncio.wait({leading, renewing}, return_when=asyncio.FIRST_COMPLETED)
            lost = renewing in done
            if lost:
                log.warning("%s: lost lease %s/%s: not renewed within %.1fs", self.identity,
                            self.lock_namespace, self.lock_name, self.renew_deadline)
        finally:
            self._leading = False
            for task in (leading, renewing):
                task.cancel()
            await asyncio.gather(leading, renewing, return_exceptions=True)
            if not lost and self.release_on_cancel:
                await self._release()
            if on_stopped_leading is not None:
                on_stopped_leading()
        if not lost and not leading.cancelled():
            error = leading.exception()
            if error is not None:
                raise error

    async def _acquire(self) -> None:
        while not await self._try_acquire_or_renew():
            await self.clock.sleep(self.retry_period * (1.0 + random.random() * _JITTER))

    async def _renew(self) -> None:
        """Renew every ``retry_period``; return once renewal failed for ``renew_deadline``."""
        last_renewed = self.clock.monotonic()
        while True:
            await self.clock.sleep(self.retry_period)
            remaining = self.renew_deadline - (self.clock.monotonic() - last_renewed)
            renewed = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(remaining, 0.001)):
                    renewed = await self._try_acquire_or_renew()
            if renewed:
                last_renewed = self.clock.monotonic()
            elif self.clock.monotonic() - last_renewed >= self.renew_deadline:
                return

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the lease; False when someone else holds it or the
        API refused or could not be reached."""
        now = meta.now_micro()
        try:
            lease = await self.leases.get(self.lock_name, namespace=self.lock_namespace)
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                log.warning("%s: cannot read lease: %s", self.identity, err)
                return False
            return await self._create(now)
        except rest.TRANSPORT_ERRORS as err:
            log.warning("%s: cannot read lease: %s", self.identity, err or type(err).__name__)
            return False
        spec = lease.get("spec") or {}
        if spec != self._observed:
            self._observed = dict(spec)
            self._observed_at = self.clock.monotonic()
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or self.lease_duration
        held = self._observed_at + float(duration) > self.clock.monotonic()
        if holder and holder != self.identity and held:
            return False
        updated = copy.deepcopy(lease)
        if holder == self.identity:
            updated["spec"] = self._spec(spec.get("acquireTime") or now, now,
                                         int(spec.get("leaseTransitions") or 0))
        else:
            updated["spec"] = self._spec(now, now, int(spec.get("leaseTransitions") or 0) + 1)
        try:
            written = await self.leases.update(updated)
        except _API_FAILURES as err:
            log.debug("%s: cannot write lease: %s", self.identity, err)
            return False
        self._observe(written)
        return True

    async def _create(self, now: str) -> bool:
        lease: Object = {
            "apiVersion": _LEASES.api_version,
            "kind": _LEASES.kind,
            "metadata": {"name": self.lock_name, "namespace": self.lock_namespace},
            "spec": self._spec(now, now, 0),
        }
        try:
            created = await self.leases.create(lease)
        except _API_FAILURES as err:
            log.debug("%s: cannot create lease: %s", self.identity, err)
            return False
        self._observe(created)
        return True

    async def _release(self) -> None:
        """Give the lease up: no holder and a one-second duration, as upstream."""
        try:
            lease = await self.leases.get(self.lock_name, namespace=self.lock_namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = meta.now_micro()
            lease["spec"] = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0),
            }
            self._observe(await self.leases.update(lease))
        except _API_FAILURES as err:
            log.warning("%s: cannot release lease: %s", self.identity, err)

    def _spec(self, acquire_time: str, renew_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration)),
            "acquireTime": acquire_time,
            "renewTime": renew_time,
            "leaseTransitions": transitions,
        }

    def _observe(self, lease: Object) -> None:
        self._observed = dict(lease.get("spec") or {})
        self._observed_at = self.clock.monotonic()
