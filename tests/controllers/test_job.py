"""The Job controller, in-process with a fake clock against a server that does not run it.

There is no kubelet: the tests finish pods by writing their status, as a node would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubling.client import clock as clocks
from kubling.client import rest
from kubling.controllers import job, job_status, podcontrol
from tests.client.helpers import make_namespace, run
from tests.controllers.test_podgc import controller_running, private_server, settle
from tests.server_fixture import KublingServer

JOBS = rest.lookup("batch/v1", "jobs")
PODS = rest.lookup("v1", "pods")
EVENTS = rest.lookup("v1", "events")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with private_server(tmp_path_factory.mktemp("job")) as started:
        yield started


async def wait_for(check: Any, *, timeout: float = 10.0, clock: clocks.FakeClock | None = None,
                   step: float = 0.0) -> Any:
    """Poll ``check()`` (async) until it returns something truthy; with ``clock``, move
    fake time ``step`` seconds per round."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        if clock is not None and step:
            clock.advance(step)
        await asyncio.sleep(0.05)


async def create_job(client: rest.Client, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    await make_namespace(client, ns)
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": ns},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "c", "image": "busybox"}]}}, **spec}}
    created: dict[str, Any] = await client.resource(JOBS).create(body, namespace=ns)
    return created


async def get_job(client: rest.Client, ns: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = await client.resource(JOBS).get(name, namespace=ns)
    return found


async def job_pods(client: rest.Client, ns: str, name: str,
                   active_only: bool = False) -> list[dict[str, Any]]:
    page = await client.resource(PODS).list(namespace=ns, label_selector=f"job-name={name}")
    pods: list[dict[str, Any]] = page.get("items") or []
    if active_only:
        pods = [p for p in pods if job_status.is_active(p)]
    return sorted(pods, key=lambda p: p["metadata"]["name"])


async def finish(client: rest.Client, pod: dict[str, Any], phase: str,
                 exit_code: int | None = None) -> None:
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [{
            "name": "c", "image": "busybox", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "reason": "Error"}}}]
    await client.resource(PODS).patch(pod["metadata"]["name"], {"status": status},
                                      namespace=pod["metadata"]["namespace"],
                                      subresource="status")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return podcontrol.find_condition(obj, type_)


def types_of(obj: dict[str, Any]) -> list[str]:
    return [c["type"] for c in (obj.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"]


async def reasons(client: rest.Client, ns: str, name: str) -> set[str]:
    page = await client.resource(EVENTS).list(
        namespace=ns, field_selector=f"involvedObject.name={name}")
    return {e.get("reason") for e in page.get("items") or []}


def test_completions_with_parallelism_run_to_complete(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns, name = "job-complete", "five"

    async def scenario() -> None:
        async with controller_running(server, job.JobController, clock) as (_, client):
            await create_job(client, ns, name, completions=5, parallelism=2)
            finished = 0
            while finished < 5:
                active = await wait_for(lambda: job_pods(client, ns, name, active_only=True))
                assert len(active) <= 2
                pod = active[0]
                md = pod["metadata"]
                assert job_status.JOB_TRACKING_FINALIZER in md["finalizers"]
                ref = md["ownerReferences"][0]
                assert (ref["kind"], ref["controller"], ref["blockOwnerDeletion"]) == (
                    "Job", True, True)
                for label in ("batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name",
                              "controller-uid", "job-name"):
                    assert label in md["labels"]
                await finish(client, pod, "Succeeded")
                finished += 1

                async def counted(n: int = finished) -> bool:
                    return (await get_job(client, ns, name)).get("status", {}).get(
                        "succeeded", 0) >= n
                await wait_for(counted)

            async def complete() -> dict[str, Any] | None:
                got = await get_job(client, ns, name)
                return got if condition(got, "Complete") else None
            done = await wait_for(complete)
            status = done["status"]
            assert status["succeeded"] == 5
            assert not status.get("active") and not status.get("failed")
            assert status["ready"] == 0 and status["terminating"] == 0
            assert status["uncountedTerminatedPods"] == {}
            assert status["completionTime"] and status["startTime"]
            assert types_of(done) == ["SuccessCriteriaMet", "Complete"]
            cond = condition(done, "Complete")
            assert cond is not None and cond["reason"] == "CompletionsReached"
            pods = await job_pods(client, ns, name)
            assert len(pods) == 5
            assert all(job_status.JOB_TRACKING_FINALIZER not in (p["metadata"].get(
                "finalizers") or []) for p in pods)
            await settle()
            assert {"SuccessfulCreate", "Completed"} <= await reasons(client, ns, name)

    run(scenario(), timeout=60)


def test_backoff_limit_fails_the_job_after_exponential_delays(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns, name = "job-backoff", "flaky"

    async def scenario() -> None:
        async with controller_running(server, job.JobController, clock) as (_, client):
            await create_job(client, ns, name, backoffLimit=1)
            first = (await wait_for(lambda: job_pods(client, ns, name, active_only=True)))[0]
            await finish(client, first, "Failed")

            async def failed_count() -> int:
                return int((await get_job(client, ns, name)).get("status", {}).get("failed", 0))
            await wait_for(failed_count)
            # The replacement waits for the 10 s backoff.
            await settle()
            assert await job_pods(client, ns, name, active_only=True) == []
            clock.advance(9)
            await settle()
            assert await job_pods(client, ns, name, active_only=True) == []
            # The pod has no finishedAt (no kubelet), so its failure dates from its creation,
            # up to a second before the controller's clock started: step until it is due.
            second = (await wait_for(lambda: job_pods(client, ns, name, active_only=True),
                                     clock=clock, step=0.5))[0]
            await finish(client, second, "Failed")

            async def failed() -> dict[str, Any] | None:
                got = await get_job(client, ns, name)
                return got if condition(got, "Failed") else None
            done = await wait_for(failed)
            assert done["status"]["failed"] == 2
            assert types_of(done) == ["FailureTarget", "Failed"]
            cond = condition(done, "Failed")
            assert cond is not None
            assert cond["reason"] == "BackoffLimitExceeded"
            assert cond["message"] == "Job has reached the specified backoff limit"
            assert "completionTime" not in done["status"]
            await settle()
            assert "BackoffLimitExceeded" in await reasons(client, ns, name)

    run(scenario(), timeout=60)


def test_indexed_job_tracks_completed_indexes(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns, name = "job-indexed", "idx"

    async def scenario() -> None:
        async with controller_running(server, job.JobController, clock) as (_, client):
            await create_job(client, ns, name, completions=4, parallelism=2,
                             completionMode="Indexed")

            async def two_active() -> list[dict[str, Any]]:
                pods = await job_pods(client, ns, name, active_only=True)
                return pods if len(pods) == 2 else []

            pods = await wait_for(two_active)
            by_index = {int(p["metadata"]["annotations"][job_status.COMPLETION_INDEX_ANNOTATION]):
                        p for p in pods}
            assert set(by_index) == {0, 1}
            pod1 = by_index[1]
            assert pod1["metadata"]["labels"][job_status.COMPLETION_INDEX_ANNOTATION] == "1"
            assert pod1["metadata"]["name"].startswith(f"{name}-1-")
            assert pod1["spec"]["hostname"] == f"{name}-1"
            env = pod1["spec"]["containers"][0]["env"]
            assert env == [{"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                "apiVersion": "v1",
                "fieldPath": "metadata.labels['batch.kubernetes.io/job-completion-index']"}}}]

            await finish(client, pod1, "Succeeded")

            async def indexes(want: str) -> bool:
                got = await get_job(client, ns, name)
                return bool(got.get("status", {}).get("completedIndexes") == want)
            await wait_for(lambda: indexes("1"))
            pods = await wait_for(two_active)
            assert {p["metadata"]["annotations"][job_status.COMPLETION_INDEX_ANNOTATION]
                    for p in pods} == {"0", "2"}
            for pod in pods:
                await finish(client, pod, "Succeeded")
            await wait_for(lambda: indexes("0-2"))
            last = (await wait_for(lambda: job_pods(client, ns, name, active_only=True)))[0]
            assert last["metadata"]["annotations"][job_status.COMPLETION_INDEX_ANNOTATION] == "3"
            await finish(client, last, "Succeeded")

            async def complete() -> dict[str, Any] | None:
                got = await get_job(client, ns, name)
                return got if condition(got, "Complete") else None
            done = await wait_for(complete)
            assert done["status"]["completedIndexes"] == "0-3"
            assert done["status"]["succeeded"] == 4

    run(scenario(), timeout=60)


def test_suspend_deletes_pods_and_resume_restarts_the_clock(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns, name = "job-suspend", "pausable"

    async def scenario() -> None:
        async with controller_running(server, job.JobController, clock) as (_, client):
            await create_job(client, ns, name, completions=3, parallelism=2)

            async def active(n: int) -> bool:
                return len(await job_pods(client, ns, name, active_only=True)) == n
            await wait_for(lambda: active(2))
            started = (await get_job(client, ns, name))["status"]["startTime"]
            jobs = client.resource(JOBS)
            await jobs.patch(name, {"spec": {"suspend": True}}, namespace=ns)

            async def suspended() -> dict[str, Any] | None:
                got = await get_job(client, ns, name)
                cond = condition(got, "Suspended")
                return got if cond and cond["status"] == "True" and not (
                    got["status"].get("active")) else None
            got = await wait_for(suspended)
            assert condition(got, "Suspended")["reason"] == "JobSuspended"  # type: ignore[index]
            assert "startTime" not in got["status"]
            assert await job_pods(client, ns, name) == []  # no pod counted as failed
            assert not got["status"].get("failed")

            clock.advance(120)
            await jobs.patch(name, {"spec": {"suspend": False}}, namespace=ns)

            async def resumed() -> dict[str, Any] | None:
                got = await get_job(client, ns, name)
                cond = condition(got, "Suspended")
                return got if cond and cond["status"] == "False" else None
            got = await wait_for(resumed)
            assert condition(got, "Suspended")["reason"] == "JobResumed"  # type: ignore[index]
            assert got["status"]["startTime"] > started
            await wait_for(lambda: active(2))
            await settle()
            assert {"Suspended", "Resumed"} <= await reasons(client, ns, name)

    run(scenario(), timeout=60)


def test_active_deadline_fails_the_job_and_removes_its_pods(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns, name = "job-deadline", "slow"

    async def scenario() -> None:
        async with controller_running(server, job.JobController, clock) as (_, client):
            await create_job(client, ns, name, parallelism=2, completions=2,
                             activeDeadlineSeconds=30)
            await wait_for(lambda: job_pods(client, ns, name, active_only=True))
            clock.advance(25)
            await settle()
            assert not condition(await get_job(client, ns, name), "FailureTarget")
            clock.advance(6)

            async def failed() -> dict[str, Any] | None:
                got = await get_job(client, ns, name)
                return got if condition(got, "Failed") else None
            done = await wait_for(failed)
            cond = condition(done, "Failed")
            assert cond is not None and cond["reason"] == "DeadlineExceeded"
            assert cond["message"] == "Job was active longer than specified deadline"
            assert done["status"]["failed"] == 2  # the killed pods count as failures
            assert await job_pods(client, ns, name) == []

    run(scenario(), timeout=60)


def test_pod_failure_policy_fail_job_and_ignore(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns = "job-policy"
    policy = {"rules": [
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
        {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In",
                                              "values": [42]}}]}

    async def scenario() -> None:
        async with controller_running(server, job.JobController, clock) as (_, client):
            await create_job(client, ns, "policy", backoffLimit=0, podFailurePolicy=policy)
            pod = (await wait_for(lambda: job_pods(client, ns, "policy", active_only=True)))[0]
            await finish(client, pod, "Failed", exit_code=3)  # ignored: replaced at once

            async def replaced() -> list[dict[str, Any]]:
                pods = await job_pods(client, ns, "policy", active_only=True)
                return [p for p in pods if p["metadata"]["uid"] != pod["metadata"]["uid"]]
            pod = (await wait_for(replaced))[0]
            got = await get_job(client, ns, "policy")
            assert not got["status"].get("failed") and not condition(got, "FailureTarget")
            await finish(client, pod, "Failed", exit_code=42)

            async def failed() -> dict[str, Any] | None:
                got = await get_job(client, ns, "policy")
                return got if condition(got, "Failed") else None
            done = await wait_for(failed)
            cond = condition(done, "Failed")
            assert cond is not None and cond["reason"] == "PodFailurePolicy"
            assert cond["message"].startswith(f"Container c for pod {ns}/{pod['metadata']['name']}"
                                              " failed with exit code 42 matching FailJob rule")

    run(scenario(), timeout=60)


def test_indexes_and_backoff_helpers() -> None:
    assert job_status.format_indexes([5, 1, 3, 4]) == "1,3-5"
    assert job_status.format_indexes([7, 8, 1]) == "1,7,8"
    assert job_status.parse_indexes("1,3-5,9", 6) == {1, 3, 4, 5}
    record = job_status.BackoffRecord().next([], [100.0])
    assert record.remaining(100.0) == 10.0
    record = record.next([], [110.0, 111.0])
    assert record.remaining(111.0) == 40.0
    for t in range(10):
        record = record.next([], [200.0 + t])
    assert record.remaining(209.0) == 360.0
    assert record.next([300.0], []).remaining(300.0) == 0.0
