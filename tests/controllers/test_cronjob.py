"""The CronJob controller, in-process with a fake clock against a server that runs no Job
controller (the tests finish Jobs by writing their status), plus the schedule math."""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubling.client import clock as clocks
from kubling.client import rest
from kubling.controllers import cronjob, cronjob_schedule
from tests.client.helpers import make_namespace, run
from tests.controllers.test_podgc import controller_running, private_server, settle
from tests.server_fixture import KublingServer

CRONJOBS = rest.lookup("batch/v1", "cronjobs")
JOBS = rest.lookup("batch/v1", "jobs")
EVENTS = rest.lookup("v1", "events")
UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- schedule math -------------------------------------------------------------------------


def test_parse_accepts_what_upstream_accepts() -> None:
    start = at("2024-03-10T10:07:30")
    assert cronjob_schedule.parse("*/5 * * * *").next(start) == at("2024-03-10T10:10:00")
    assert cronjob_schedule.parse("@hourly").next(start) == at("2024-03-10T11:00:00")
    assert cronjob_schedule.parse("@daily").next(start) == at("2024-03-11T00:00:00")
    assert cronjob_schedule.parse("@weekly").next(start) == at("2024-03-17T00:00:00")
    assert cronjob_schedule.parse("@every 1h30m").next(start) == at("2024-03-10T11:37:30")
    in_paris = cronjob_schedule.parse("0 9 * * *", "Europe/Paris").next(start)
    assert in_paris == at("2024-03-11T08:00:00")
    prefixed = cronjob_schedule.parse("CRON_TZ=America/New_York 0 9 * * *").next(start)
    assert prefixed == at("2024-03-10T13:00:00")  # EDT began that morning
    for bad in ("* * * * * *", "61 * * * *", "@fortnightly", "@every soon", "* * *"):
        with pytest.raises(ValueError):
            cronjob_schedule.parse(bad)
    with pytest.raises(ValueError):
        cronjob_schedule.parse("* * * * *", "Mars/Olympus_Mons")


def test_most_recent_returns_only_the_latest_missed_time() -> None:
    every_minute = cronjob_schedule.parse("* * * * *")
    created = at("2024-01-01T00:00:10")
    nothing = cronjob_schedule.most_recent(every_minute, created=created, last_scheduled=None,
                                           now=at("2024-01-01T00:00:50"))
    assert nothing.time is None and nothing.missed == 0
    one = cronjob_schedule.most_recent(every_minute, created=created, last_scheduled=None,
                                       now=at("2024-01-01T00:01:00"))
    assert one.time == at("2024-01-01T00:01:00") and one.missed == 1
    late = cronjob_schedule.most_recent(every_minute, created=created,
                                        last_scheduled=at("2024-01-01T00:01:00"),
                                        now=at("2024-01-01T00:10:30"))
    assert late.time == at("2024-01-01T00:10:00") and late.missed == 9
    many = cronjob_schedule.most_recent(every_minute, created=created, last_scheduled=None,
                                        now=at("2024-01-01T05:00:00"))
    assert many.time == at("2024-01-01T05:00:00") and many.missed > 100
    # startingDeadlineSeconds: nothing before now - deadline counts.
    fives = cronjob_schedule.parse("*/5 * * * *")
    missed = cronjob_schedule.most_recent(fives, created=created, last_scheduled=None,
                                          now=at("2024-01-01T00:06:00"), starting_deadline=30)
    assert missed.time is None
    with pytest.raises(ValueError):
        cronjob_schedule.most_recent(cronjob_schedule.parse("0 0 31 2 *"), created=created,
                                     last_scheduled=None, now=at("2024-06-01T00:00:00"))
    assert cronjob_schedule.job_name("backup", at("2024-01-01T00:01:00")) == "backup-28401121"


# -- the controller ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with private_server(tmp_path_factory.mktemp("cronjob")) as started:
        yield started


async def wait_for(check: Any, *, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.05)


async def create_cronjob(client: rest.Client, ns: str, name: str,
                         schedule: str = "*/1 * * * *", **spec: Any) -> None:
    await make_namespace(client, ns)
    await client.resource(CRONJOBS).create({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name, "namespace": ns},
        "spec": {"schedule": schedule, "jobTemplate": {
            "metadata": {"labels": {"app": name}},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "c", "image": "busybox"}]}}}}, **spec}}, namespace=ns)


async def jobs_of(client: rest.Client, ns: str, live: bool = True) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.resource(JOBS).list(namespace=ns)).get(
        "items") or []
    if live:
        items = [j for j in items if not j["metadata"].get("deletionTimestamp")]
    return sorted(items, key=lambda j: j["metadata"]["name"])


async def get_cronjob(client: rest.Client, ns: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = await client.resource(CRONJOBS).get(name, namespace=ns)
    return found


async def finish_job(client: rest.Client, job: dict[str, Any], outcome: str) -> None:
    stamp = datetime.datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status: dict[str, Any] = {"startTime": stamp, "conditions": [
        {"type": "SuccessCriteriaMet" if outcome == "Complete" else "FailureTarget",
         "status": "True", "lastTransitionTime": stamp},
        {"type": outcome, "status": "True", "lastTransitionTime": stamp}]}
    if outcome == "Complete":
        status.update(completionTime=stamp, succeeded=1)
    await client.resource(JOBS).patch(job["metadata"]["name"], {"status": status},
                                      namespace=job["metadata"]["namespace"],
                                      subresource="status")


async def reasons(client: rest.Client, ns: str) -> list[str]:
    await settle(0.3)
    page = await client.resource(EVENTS).list(namespace=ns)
    return [str(e.get("reason")) for e in page.get("items") or []]


def to_next_minute(ctl: cronjob.CronJobController) -> float:
    now = ctl.now().timestamp()
    return math.floor(now / 60) * 60 + 60 - now


async def next_run(ctl: cronjob.CronJobController, clock: clocks.FakeClock) -> None:
    """Move fake time to just past the next minute boundary."""
    await settle(0.2)
    clock.advance(to_next_minute(ctl) + 0.5)


def test_creates_a_job_at_the_next_minute_boundary(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns, name = "cron-boundary", "tick"

    async def scenario() -> None:
        async with controller_running(server, cronjob.CronJobController, clock) as (ctl, client):
            await create_cronjob(client, ns, name)
            await settle(0.3)
            clock.advance(to_next_minute(ctl) - 1.0)
            await settle(0.3)
            assert await jobs_of(client, ns) == []
            clock.advance(1.5)
            jobs = await wait_for(lambda: jobs_of(client, ns))
            assert len(jobs) == 1
            job = jobs[0]
            scheduled = datetime.datetime.fromtimestamp(
                math.floor(ctl.now().timestamp() / 60) * 60, UTC)
            assert job["metadata"]["name"] == f"{name}-{int(scheduled.timestamp()) // 60}"
            annotations = job["metadata"]["annotations"]
            assert annotations[cronjob.SCHEDULED_TIMESTAMP_ANNOTATION] == scheduled.strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            assert job["metadata"]["labels"]["app"] == name
            ref = job["metadata"]["ownerReferences"][0]
            assert (ref["kind"], ref["name"], ref["controller"]) == ("CronJob", name, True)

            async def recorded() -> dict[str, Any] | None:
                got = await get_cronjob(client, ns, name)
                return got if got.get("status", {}).get("active") else None
            status = (await wait_for(recorded))["status"]
            assert [a["name"] for a in status["active"]] == [job["metadata"]["name"]]
            assert status["active"][0]["uid"] == job["metadata"]["uid"]
            assert status["lastScheduleTime"] == scheduled.strftime("%Y-%m-%dT%H:%M:%SZ")

            # The run finishes: it leaves the active list and sets lastSuccessfulTime.
            await finish_job(client, job, "Complete")

            async def done() -> dict[str, Any] | None:
                got = await get_cronjob(client, ns, name)
                st = got.get("status", {})
                return got if not st.get("active") and st.get("lastSuccessfulTime") else None
            await wait_for(done)
            assert {"SuccessfulCreate", "SawCompletedJob"} <= set(await reasons(client, ns))

    run(scenario(), timeout=40)


def test_concurrency_policies(server: KublingServer) -> None:
    clock = clocks.FakeClock()

    async def scenario() -> None:
        async with controller_running(server, cronjob.CronJobController, clock) as (ctl, client):
            for policy in ("Allow", "Forbid", "Replace"):
                ns = f"cron-{policy.lower()}"
                await create_cronjob(client, ns, "c", concurrencyPolicy=policy)
            await next_run(ctl, clock)
            for policy in ("Allow", "Forbid", "Replace"):
                ns = f"cron-{policy.lower()}"
                await wait_for(lambda ns=ns: jobs_of(client, ns))
            first = {p: (await jobs_of(client, f"cron-{p.lower()}"))[0]["metadata"]["name"]
                     for p in ("Allow", "Forbid", "Replace")}
            await next_run(ctl, clock)

            async def two_allowed() -> bool:
                return len(await jobs_of(client, "cron-allow")) == 2
            await wait_for(two_allowed)

            async def replaced() -> bool:
                names = [j["metadata"]["name"] for j in await jobs_of(client, "cron-replace")]
                return len(names) == 1 and names[0] != first["Replace"]
            await wait_for(replaced)

            async def replaced_in_status() -> bool:
                got = await get_cronjob(client, "cron-replace", "c")
                active = [a["name"] for a in got.get("status", {}).get("active") or []]
                return len(active) == 1 and active != [first["Replace"]]
            await wait_for(replaced_in_status)

            assert [j["metadata"]["name"] for j in await jobs_of(client, "cron-forbid")] == [
                first["Forbid"]]
            assert "JobAlreadyActive" in await reasons(client, "cron-forbid")
            # Once the running Job finishes, the run that was held back starts (its slot
            # is still the latest one due, as upstream sees it).
            await finish_job(client, (await jobs_of(client, "cron-forbid"))[0], "Complete")

            async def second_forbid() -> bool:
                return len(await jobs_of(client, "cron-forbid")) == 2
            await wait_for(second_forbid)

    run(scenario(), timeout=40)


def test_history_limits_prune_the_oldest_finished_jobs(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns = "cron-history"

    async def scenario() -> None:
        async with controller_running(server, cronjob.CronJobController, clock) as (ctl, client):
            await create_cronjob(client, ns, "h", successfulJobsHistoryLimit=1,
                                 failedJobsHistoryLimit=1)
            outcomes = ["Complete", "Complete", "Failed", "Failed", "Complete"]
            made: list[str] = []
            for outcome in outcomes:
                await next_run(ctl, clock)

                async def new_job() -> dict[str, Any] | None:
                    fresh = [j for j in await jobs_of(client, ns)
                             if j["metadata"]["name"] not in made]
                    return fresh[0] if fresh else None
                job = await wait_for(new_job)
                made.append(job["metadata"]["name"])
                await asyncio.sleep(1.05)  # distinct startTimes, in whole seconds
                await finish_job(client, job, outcome)

            async def pruned() -> list[str] | None:
                names = [j["metadata"]["name"] for j in await jobs_of(client, ns)]
                return names if len(names) == 2 else None
            assert await wait_for(pruned) == sorted([made[3], made[4]])
            assert "SuccessfulDelete" in await reasons(client, ns)

    run(scenario(), timeout=60)


def test_missed_runs_start_one_catch_up_job(server: KublingServer) -> None:
    clock = clocks.FakeClock()

    async def scenario() -> None:
        async with controller_running(server, cronjob.CronJobController, clock) as (ctl, client):
            await create_cronjob(client, "cron-missed", "m")
            await create_cronjob(client, "cron-deadline", "m", schedule="*/5 * * * *",
                                 startingDeadlineSeconds=30)
            await settle(0.3)
            # As if the controller had been down: 10 minutes (and 200 for "many") pass at
            # once; the deadline one's latest slot is then more than 30 s old.
            boundary = to_next_minute(ctl)
            clock.advance(boundary + 9 * 60 + 0.5)
            await wait_for(lambda: jobs_of(client, "cron-missed"))
            latest = math.floor(ctl.now().timestamp() / 60)
            assert [j["metadata"]["name"] for j in await jobs_of(client, "cron-missed")] == [
                f"m-{latest}"]
            await create_cronjob(client, "cron-many", "m")
            await settle(0.3)
            # Its creation is in real time, already minutes behind the fake clock: one
            # catch-up run starts at once. Then 200 minutes pass: again only the latest.
            await wait_for(lambda: jobs_of(client, "cron-many"))
            clock.advance(200 * 60)
            latest = math.floor(ctl.now().timestamp() / 60)

            async def caught_up() -> bool:
                names = [j["metadata"]["name"] for j in await jobs_of(client, "cron-many")]
                return f"m-{latest}" in names and len(names) == 2
            await wait_for(caught_up)
            assert "TooManyMissedTimes" in await reasons(client, "cron-many")
            if ctl.now().timestamp() % 300 > 30:
                assert await jobs_of(client, "cron-deadline") == []

    run(scenario(), timeout=40)


def test_suspended_cronjob_starts_nothing(server: KublingServer) -> None:
    clock = clocks.FakeClock()

    async def scenario() -> None:
        async with controller_running(server, cronjob.CronJobController, clock) as (ctl, client):
            await create_cronjob(client, "cron-suspended", "s", suspend=True)
            await next_run(ctl, clock)
            await settle(0.3)
            assert await jobs_of(client, "cron-suspended") == []
            await client.resource(CRONJOBS).patch("s", {"spec": {"suspend": False}},
                                                  namespace="cron-suspended")
            await next_run(ctl, clock)
            await wait_for(lambda: jobs_of(client, "cron-suspended"))

    run(scenario(), timeout=40)
