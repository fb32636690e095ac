"""Indexed Jobs that fail and succeed index by index: ``backoffLimitPerIndex``,
``maxFailedIndexes``, the ``FailIndex`` pod failure policy action and ``successPolicy``.

In-process controller with a fake clock against a real server, as in ``test_job.py``; the
tests finish pods by writing their status, as a node would.
"""

from __future__ import annotations

from typing import Any

import pytest

from kubling.api.validation import batch as batch_validation
from kubling.client import clock as clocks
from kubling.client import rest
from kubling.controllers import job, job_pods, job_status
from tests.client.helpers import run
from tests.controllers.test_job import (
    condition,
    create_job,
    finish,
    get_job,
    reasons,
    server,
    types_of,
    wait_for,
)
from tests.controllers.test_job import (
    job_pods as pods_of,
)
from tests.controllers.test_podgc import controller_running, settle
from tests.server_fixture import KublingServer

__all__ = ["server"]

INDEX = job_status.COMPLETION_INDEX_ANNOTATION
FAILURES = job_status.INDEX_FAILURE_COUNT_ANNOTATION


def index_of(pod: dict[str, Any]) -> int:
    return int(pod["metadata"]["annotations"][INDEX])


async def active_by_index(client: rest.Client, ns: str, name: str, want: int, *,
                          clock: clocks.FakeClock | None = None,
                          step: float = 0.0) -> dict[int, dict[str, Any]]:
    """The Job's active pods by index once there are ``want`` of them (moving the fake
    clock ``step`` seconds per poll)."""
    async def check() -> dict[int, dict[str, Any]]:
        pods = await pods_of(client, ns, name, active_only=True)
        return {index_of(p): p for p in pods} if len(pods) == want else {}
    found: dict[int, dict[str, Any]] = await wait_for(check, clock=clock, step=step)
    return found


async def finished_job(client: rest.Client, ns: str, name: str, type_: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        got = await get_job(client, ns, name)
        return got if condition(got, type_) else None
    done: dict[str, Any] = await wait_for(check, timeout=20)
    return done


def test_an_index_fails_after_its_own_retries_and_the_job_fails_at_the_end(
        server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns, name = "job-per-index", "per-index"

    async def scenario() -> None:
        async with controller_running(server, job.JobController, clock) as (_, client):
            await create_job(client, ns, name, completions=3, parallelism=3,
                             completionMode="Indexed", backoffLimitPerIndex=1)
            pods = await active_by_index(client, ns, name, 3)
            assert {p["metadata"]["annotations"][FAILURES] for p in pods.values()} == {"0"}
            assert (await get_job(client, ns, name))["spec"]["backoffLimit"] == 2**31 - 1
            await finish(client, pods[0], "Failed", exit_code=1)

            # The failed pod keeps its finalizer until its replacement exists; the
            # replacement waits for the index's own 10 s backoff and carries the count.
            await settle()
            assert len(await pods_of(client, ns, name, active_only=True)) == 2
            failed_first = next(p for p in await pods_of(client, ns, name)
                                if p["metadata"]["name"] == pods[0]["metadata"]["name"])
            assert job_status.JOB_TRACKING_FINALIZER in failed_first["metadata"]["finalizers"]
            retry = (await active_by_index(client, ns, name, 3, clock=clock, step=1.0))[0]
            assert retry["metadata"]["annotations"][FAILURES] == "1"
            assert retry["metadata"]["name"] != pods[0]["metadata"]["name"]

            await finish(client, retry, "Failed", exit_code=1)

            async def index_failed() -> dict[str, Any] | None:
                got = await get_job(client, ns, name)
                return got if got["status"].get("failedIndexes") == "0" else None
            await wait_for(index_failed)
            await settle()
            clock.advance(400)
            await settle()
            # Index 0 is not retried again: only 1 and 2 are at work.
            assert set(await active_by_index(client, ns, name, 2)) == {1, 2}

            for pod in (await active_by_index(client, ns, name, 2)).values():
                await finish(client, pod, "Succeeded")
            done = await finished_job(client, ns, name, "Failed")
            assert types_of(done) == ["FailureTarget", "Failed"]
            cond = condition(done, "Failed")
            assert cond is not None
            assert (cond["reason"], cond["message"]) == ("FailedIndexes", "Job has failed indexes")
            status = done["status"]
            assert (status["failedIndexes"], status["completedIndexes"]) == ("0", "1,2")
            assert (status["failed"], status["succeeded"]) == (2, 2)
            await settle()
            assert "FailedIndexes" in await reasons(client, ns, name)

    run(scenario(), timeout=90)


def test_max_failed_indexes_ends_the_job_at_once(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns, name = "job-max-failed", "max-failed"

    async def scenario() -> None:
        async with controller_running(server, job.JobController, clock) as (_, client):
            await create_job(client, ns, name, completions=4, parallelism=4,
                             completionMode="Indexed", backoffLimitPerIndex=0,
                             maxFailedIndexes=0)
            pods = await active_by_index(client, ns, name, 4)
            initial = await get_job(client, ns, name)
            assert initial["status"]["failedIndexes"] == ""  # shown empty, as upstream
            await finish(client, pods[2], "Failed", exit_code=1)
            done = await finished_job(client, ns, name, "Failed")
            cond = condition(done, "Failed")
            assert cond is not None
            assert cond["reason"] == "MaxFailedIndexesExceeded"
            assert cond["message"] == ("Job has exceeded the specified maximal number of "
                                       "failed indexes")
            assert done["status"]["failedIndexes"] == "2"
            # The other indexes were stopped, and counted as failed as upstream counts them.
            assert done["status"].get("active", 0) == 0
            assert done["status"]["failed"] == 4

    run(scenario(), timeout=60)


def test_fail_index_rule_fails_the_index_without_retry(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns, name = "job-fail-index", "fail-index"

    async def scenario() -> None:
        async with controller_running(server, job.JobController, clock) as (_, client):
            await create_job(
                client, ns, name, completions=2, parallelism=2, completionMode="Indexed",
                backoffLimitPerIndex=3,
                podFailurePolicy={"rules": [{"action": "FailIndex", "onExitCodes": {
                    "operator": "In", "values": [42]}}]})
            pods = await active_by_index(client, ns, name, 2)
            await finish(client, pods[1], "Failed", exit_code=42)

            async def index_failed() -> dict[str, Any] | None:
                got = await get_job(client, ns, name)
                return got if got["status"].get("failedIndexes") == "1" else None
            await wait_for(index_failed)
            clock.advance(60)
            await settle()
            assert set(await active_by_index(client, ns, name, 1)) == {0}
            await finish(client, pods[0], "Succeeded")
            done = await finished_job(client, ns, name, "Failed")
            cond = condition(done, "Failed")
            assert cond is not None and cond["reason"] == "FailedIndexes"

    run(scenario(), timeout=60)


def test_success_policy_completes_the_job_early(server: KublingServer) -> None:
    clock = clocks.FakeClock()
    ns, name = "job-success-policy", "leader"

    async def scenario() -> None:
        async with controller_running(server, job.JobController, clock) as (_, client):
            await create_job(client, ns, name, completions=4, parallelism=4,
                             completionMode="Indexed",
                             successPolicy={"rules": [{"succeededIndexes": "0,2-3",
                                                       "succeededCount": 2}]})
            pods = await active_by_index(client, ns, name, 4)
            await finish(client, pods[1], "Succeeded")  # not in the rule's indexes
            await finish(client, pods[0], "Succeeded")
            await settle()
            got = await get_job(client, ns, name)
            assert condition(got, "SuccessCriteriaMet") is None
            await finish(client, pods[3], "Succeeded")
            done = await finished_job(client, ns, name, "Complete")
            assert types_of(done) == ["SuccessCriteriaMet", "Complete"]
            for type_ in ("SuccessCriteriaMet", "Complete"):
                cond = condition(done, type_)
                assert cond is not None
                assert (cond["reason"], cond["message"]) == ("SuccessPolicy",
                                                             "Matched rules at index 0")
            assert done["status"]["completedIndexes"] == "0,1,3"
            assert done["status"].get("active", 0) == 0  # index 2 was stopped
            assert "completionTime" in done["status"]

    run(scenario(), timeout=60)


# -- the pure parts ------------------------------------------------------------------------


def _pod(index: int, phase: str, *, failures: int = 0, exit_code: int = 1) -> dict[str, Any]:
    return {"metadata": {"uid": f"u{index}-{failures}", "annotations": {
        INDEX: str(index), FAILURES: str(failures)},
        "finalizers": [job_status.JOB_TRACKING_FINALIZER],
        "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": phase, "containerStatuses": [
            {"name": "c", "state": {"terminated": {"exitCode": exit_code}}}]}}


def _job(**spec: Any) -> dict[str, Any]:
    return {"spec": {"completionMode": "Indexed", "completions": 4, **spec}, "status": {}}


def test_index_failure_rules() -> None:
    per_index = _job(backoffLimitPerIndex=1)
    assert not job_status.is_index_failed(per_index, _pod(0, "Failed", failures=0))
    assert job_status.is_index_failed(per_index, _pod(0, "Failed", failures=1))
    assert not job_status.is_index_failed(per_index, _pod(0, "Running", failures=5))
    ignore = _job(backoffLimitPerIndex=0, podFailurePolicy={"rules": [
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}}]})
    assert not job_status.is_index_failed(ignore, _pod(0, "Failed", exit_code=3))
    assert job_status.replacement_failure_counts(ignore, _pod(0, "Failed", exit_code=3)) == (0, 1)
    assert job_status.replacement_failure_counts(ignore, _pod(0, "Failed", exit_code=4)) == (1, 0)
    assert job_status.replacement_failure_counts(ignore, None) == (0, 0)
    garbage = _pod(0, "Failed")
    garbage["metadata"]["annotations"][FAILURES] = "-3"
    assert job_status.index_failure_counts(garbage) == (0, 0)
    with_status = _job(backoffLimitPerIndex=0)
    with_status["status"]["failedIndexes"] = "3"
    assert job_status.failed_indexes(with_status, [_pod(1, "Failed"), _pod(2, "Running")]) == {
        1, 3}


def test_the_replacement_inherits_from_the_latest_failure() -> None:
    per_index = _job(backoffLimitPerIndex=3)
    older, newer = _pod(0, "Failed", failures=0), _pod(0, "Failed", failures=1)
    kept = job_pods.pods_awaiting_replacement(per_index, [older, newer, _pod(1, "Succeeded")],
                                              {1}, set(), now=0.0)
    assert kept == {0: newer}
    created = job_pods.new_pod({"metadata": {"name": "j", "namespace": "d", "uid": "x"},
                                **per_index, "spec": {**per_index["spec"], "template": {}}},
                               0, newer)
    assert created["metadata"]["annotations"][FAILURES] == "2"


def test_success_policy_rules() -> None:
    policy = _job(successPolicy={"rules": [{"succeededCount": 3},
                                           {"succeededIndexes": "1-2"}]})
    assert job_status.match_success_policy(policy, {0, 3}) is None
    assert job_status.match_success_policy(policy, {1, 2}) == "Matched rules at index 1"
    assert job_status.match_success_policy(policy, {0, 1, 3}) == "Matched rules at index 0"
    assert job_status.match_success_policy(_job(), {0, 1, 2, 3}) is None


@pytest.mark.parametrize(("spec", "message"), [
    ({"completionMode": "NonIndexed", "backoffLimitPerIndex": 1},
     "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode"),
    ({"maxFailedIndexes": 1},
     "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified"),
    ({"backoffLimitPerIndex": 1, "maxFailedIndexes": 5},
     "spec.maxFailedIndexes: Invalid value: 5: must be less than or equal to completions"),
    ({"successPolicy": {"rules": []}},
     "spec.successPolicy.rules: Required value: at least one rules must be specified when "
     "the successPolicy is specified"),
    ({"successPolicy": {"rules": [{}]}},
     "spec.successPolicy.rules[0]: Required value: at least one of succeededCount or "
     "succeededIndexes must be specified"),
    ({"successPolicy": {"rules": [{"succeededIndexes": "2-1"}]}},
     'spec.successPolicy.rules[0].succeededIndexes: Invalid value: "2-1": error parsing '
     "succeededIndexes: non-increasing order, previous: 2, current: 1"),
    ({"successPolicy": {"rules": [{"succeededIndexes": "0,9"}]}},
     'spec.successPolicy.rules[0].succeededIndexes: Invalid value: "0,9": error parsing '
     'succeededIndexes: too large index: "9"'),
    ({"successPolicy": {"rules": [{"succeededIndexes": "0-1", "succeededCount": 3}]}},
     "spec.successPolicy.rules[0].succeededCount: Invalid value: 3: must be less than or "
     "equal to 2 (the number of indexes in the specified succeededIndexes field)"),
    ({"successPolicy": {"rules": [{"succeededCount": 1}] * 21}},
     "spec.successPolicy.rules: Too many: 21: must have at most 20 items"),
])
def test_validation_of_per_index_and_success_policy(spec: dict[str, Any], message: str) -> None:
    job_spec = {"completionMode": "Indexed", "completions": 4, "selector": {
        "matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}, **spec}
    errors = [str(e) for e in batch_validation.validate_job({"spec": job_spec})]
    assert message in errors


def test_per_index_validation_through_kubectl(server: KublingServer) -> None:
    manifest = """
apiVersion: batch/v1
kind: Job
metadata: {name: not-indexed, namespace: default}
spec:
  backoffLimitPerIndex: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"""
    result = server.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert result.returncode == 1
    assert ('The Job "not-indexed" is invalid: spec.backoffLimitPerIndex: Invalid value: 1: '
            "requires indexed completion mode") in result.stderr
