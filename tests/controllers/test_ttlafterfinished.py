"""The TTL-after-finished controller, in-process with a fake clock (no job controller runs:
the test finishes its Jobs by writing their status)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest

from kubling.client import clock as clocks
from kubling.client import rest
from kubling.controllers import ttlafterfinished
from tests.client.helpers import make_namespace, run
from tests.controllers.test_podgc import advance_until, controller_running, private_server, settle
from tests.server_fixture import KublingServer

JOBS = rest.lookup("batch/v1", "jobs")
NS = "ttl-jobs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with private_server(tmp_path_factory.mktemp("ttl")) as started:
        yield started


def _stamp(seconds_ago: float = 0.0) -> str:
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _job(client: rest.Client, name: str, *, ttl: int | None,
               finished: str | None, seconds_ago: float = 0.0) -> None:
    spec: dict[str, Any] = {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    jobs = client.resource(JOBS)
    await jobs.create({"apiVersion": "batch/v1", "kind": "Job",
                       "metadata": {"name": name, "namespace": NS}, "spec": spec}, namespace=NS)
    if finished is None:
        return
    stamp = _stamp(seconds_ago)
    status: dict[str, Any] = {"startTime": stamp, "conditions": [
        {"type": "SuccessCriteriaMet" if finished == "Complete" else "FailureTarget",
         "status": "True", "lastTransitionTime": stamp},
        {"type": finished, "status": "True", "lastTransitionTime": stamp}]}
    if finished == "Complete":
        status.update(completionTime=stamp, succeeded=1)
    else:
        status["failed"] = 1
    await jobs.patch(name, {"status": status}, namespace=NS, subresource="status")


async def _exists(client: rest.Client, name: str) -> bool:
    try:
        job = await client.resource(JOBS).get(name, namespace=NS)
    except rest.ApiError as err:
        if rest.is_not_found(err):
            return False
        raise
    return not job["metadata"].get("deletionTimestamp")


def test_finished_jobs_are_deleted_when_their_ttl_expires(server: KublingServer) -> None:
    clock = clocks.FakeClock()

    async def scenario() -> None:
        async with controller_running(
                server, ttlafterfinished.TTLAfterFinishedController, clock) as (_, client):
            await make_namespace(client, NS)
            await _job(client, "done", ttl=60, finished="Complete")
            await _job(client, "failed-long-ago", ttl=30, finished="Failed", seconds_ago=120)
            await _job(client, "no-ttl", ttl=None, finished="Complete")
            await _job(client, "running", ttl=0, finished=None)

            async def gone(name: str) -> bool:
                return not await _exists(client, name)

            # Already expired: deleted without any time passing.
            await advance_until(clock, lambda: gone("failed-long-ago"), step=0.0, limit=1.0)
            # Not before its TTL...
            clock.advance(50)
            await settle()
            assert await _exists(client, "done")
            # ...but once the requeue after the remaining time comes due.
            await advance_until(clock, lambda: gone("done"), step=2.0, limit=20.0)
            assert await _exists(client, "no-ttl")
            assert await _exists(client, "running")

            # A TTL of 0 deletes a Job as soon as it finishes.
            await client.resource(JOBS).patch("running", {"status": {
                "startTime": _stamp(), "completionTime": _stamp(), "succeeded": 1,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True",
                     "lastTransitionTime": _stamp()},
                    {"type": "Complete", "status": "True", "lastTransitionTime": _stamp()}]}},
                namespace=NS, subresource="status")
            await advance_until(clock, lambda: gone("running"), step=0.0, limit=1.0)

    run(scenario(), timeout=30)
