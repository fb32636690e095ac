"""Leader election on a real Lease: one leader, takeover after expiry, release."""

from __future__ import annotations

import asyncio
import re

import pytest

from kubling.client import leaderelection, rest
from tests.client.helpers import eventually, make_namespace, run
from tests.server_fixture import KublingServer

LEASES = rest.lookup("coordination.k8s.io/v1", "leases")
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")



def elector(client: rest.Client, lock: str, identity: str, *,
            release: bool = True) -> leaderelection.LeaderElector:
    """Short durations keep the tests quick: expiry after 1 s, renewals every 0.1 s."""
    return leaderelection.LeaderElector(
        client, "client-le", lock, identity, lease_duration=1.0, renew_deadline=0.6,
        retry_period=0.1, release_on_cancel=release,
    )


class Candidate:
    def __init__(self, client: rest.Client, identity: str, *, release: bool) -> None:
        self.elector = elector(client, "lock", identity, release=release)
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def lead(self) -> None:
        self.started.set()
        await asyncio.Event().wait()  # work until leadership ends

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run(self.lead, self.stopped.set))

    async def cancel(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def test_one_leader_then_takeover_after_expiry_then_release(kubling: KublingServer) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(kubling.kubeconfig) as client:
            await make_namespace(client, "client-le")
            leases = client.resource(LEASES)
            a = Candidate(client, "a", release=False)
            b = Candidate(client, "b", release=True)
            a.start()
            await asyncio.wait_for(a.started.wait(), 5)
            assert a.elector.is_leader
            b.start()
            await asyncio.sleep(0.6)  # several renewals of a, several tries of b
            assert not b.started.is_set() and not b.elector.is_leader
            assert b.elector.leader == "a"
            lease = await leases.get("lock", namespace="client-le")
            spec = lease["spec"]
            assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 1
            assert spec["leaseTransitions"] == 0
            assert MICRO_TIME.fullmatch(spec["renewTime"])
            assert MICRO_TIME.fullmatch(spec["acquireTime"])
            assert spec["renewTime"] > spec["acquireTime"]

            # a stops renewing without releasing: b must wait for the lease to expire
            loop = asyncio.get_running_loop()
            stopped_at = loop.time()
            await a.cancel()
            assert a.stopped.is_set() and not a.elector.is_leader
            await asyncio.wait_for(b.started.wait(), 5)
            waited = loop.time() - stopped_at
            assert waited >= 0.4, waited  # not before the lease could have expired
            lease = await leases.get("lock", namespace="client-le")
            assert lease["spec"]["holderIdentity"] == "b"
            assert lease["spec"]["leaseTransitions"] == 1
            assert b.elector.is_leader

            # b releases on cancel: the lease is free at once for the next candidate
            await b.cancel()
            assert b.stopped.is_set()
            lease = await leases.get("lock", namespace="client-le")
            assert lease["spec"]["holderIdentity"] == ""
            c = Candidate(client, "c", release=True)
            started_at = loop.time()
            c.start()
            await asyncio.wait_for(c.started.wait(), 5)
            assert loop.time() - started_at < 0.5
            await c.cancel()

    run(main())


def test_leadership_is_lost_when_renewals_fail(kubling: KublingServer) -> None:
    """Someone else overwrites the lease (as after a partition): the leader notices within
    the renew deadline, its work is cancelled and ``run`` returns."""

    async def main() -> None:
        async with rest.Client.from_kubeconfig(kubling.kubeconfig) as client:
            await make_namespace(client, "client-le")
            leases = client.resource(LEASES)
            cancelled = asyncio.Event()
            candidate = elector(client, "lost-lock", "me")

            async def lead() -> None:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    cancelled.set()
                    raise

            task = asyncio.create_task(candidate.run(lead))
            await eventually(lambda: candidate.is_leader)
            await leases.patch("lost-lock", {"spec": {"holderIdentity": "intruder"}},
                               namespace="client-le")
            await asyncio.wait_for(task, 5)  # returns (does not raise) on loss
            assert cancelled.is_set() and not candidate.is_leader
            lease = await leases.get("lost-lock", namespace="client-le")
            assert lease["spec"]["holderIdentity"] == "intruder"  # never released

    run(main())


def test_errors_in_the_leading_work_are_raised_after_release(kubling: KublingServer) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(kubling.kubeconfig) as client:
            await make_namespace(client, "client-le")
            candidate = elector(client, "crash-lock", "me")

            async def lead() -> None:
                raise RuntimeError("work failed")

            with pytest.raises(RuntimeError, match="work failed"):
                await candidate.run(lead)
            lease = await client.resource(LEASES).get("crash-lock", namespace="client-le")
            assert lease["spec"]["holderIdentity"] == ""

    run(main())


def test_timings_are_checked() -> None:
    with pytest.raises(ValueError):
        leaderelection.LeaderElector(None, "ns", "n", "id", lease_duration=5,  # type: ignore[arg-type]
                                     renew_deadline=10)
