"""Jobs and CronJobs through the real kubectl, against the session server's controllers.

There is no kubelet: a test plays the node by patching pod status. CronJob timing is
covered with a fake clock in ``tests/controllers/test_cronjob.py``; here ``@every 2s``
shows the running controller starting Jobs without waiting for a minute boundary, and one
``*/1`` schedule runs in real time.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from tests.server_fixture import KublingServer

T = TypeVar("T")


def _ns(kubling: KublingServer) -> str:
    name = "jobs-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "namespace", name)
    return name


def _eventually(check: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.1)


def _pods(kubling: KublingServer, ns: str, job: str) -> list[str]:
    out = kubling.kubectl("get", "pods", "-n", ns, "-l", f"job-name={job}", "-o", "name").stdout
    return out.split()


def _set_phase(kubling: KublingServer, ns: str, pod: str, phase: str) -> None:
    kubling.kubectl("patch", "-n", ns, pod, "--subresource=status", "--type=merge", "-p",
                    json.dumps({"status": {"phase": phase}}))


def _json(kubling: KublingServer, *args: str) -> Any:
    return json.loads(kubling.kubectl(*args, "-o", "json").stdout)


def test_create_job_and_wait_for_complete(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "job", "hello", "-n", ns, "--image=busybox", "--", "echo", "hi")
    pod = _eventually(lambda: _pods(kubling, ns, "hello"))[0]
    _set_phase(kubling, ns, pod, "Succeeded")
    kubling.kubectl("wait", "-n", ns, "--for=condition=complete", "job/hello", "--timeout=30s",
                    timeout=40)
    job = _json(kubling, "get", "job", "hello", "-n", ns)
    assert job["status"]["succeeded"] == 1
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    table = kubling.kubectl("get", "job", "hello", "-n", ns).stdout
    assert "Complete" in table and "1/1" in table
    events = kubling.kubectl("get", "events", "-n", ns,
                             "--field-selector=involvedObject.name=hello").stdout
    assert "SuccessfulCreate" in events


def test_failed_job_reports_backoff_limit(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "doomed"},
                "spec": {"backoffLimit": 0, "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}]}}}}
    kubling.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(manifest))
    pod = _eventually(lambda: _pods(kubling, ns, "doomed"))[0]
    _set_phase(kubling, ns, pod, "Failed")
    kubling.kubectl("wait", "-n", ns, "--for=condition=failed", "job/doomed", "--timeout=30s",
                    timeout=40)
    job = _json(kubling, "get", "job", "doomed", "-n", ns)
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert failed["message"] == "Job has reached the specified backoff limit"


def test_cronjob_starts_jobs_and_create_job_from_cronjob(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "cronjob", "ticker", "-n", ns, "--image=busybox",
                    "--schedule=@every 2s", "--", "date")

    def scheduled() -> list[dict[str, Any]]:
        jobs = _json(kubling, "get", "jobs", "-n", ns)["items"]
        return [j for j in jobs if "batch.kubernetes.io/cronjob-scheduled-timestamp" in (
            j["metadata"].get("annotations") or {})]

    job = _eventually(scheduled, timeout=15)[0]
    assert job["metadata"]["name"].startswith("ticker-")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    status = _eventually(lambda: _json(kubling, "get", "cronjob", "ticker", "-n", ns)
                         .get("status", {}).get("lastScheduleTime") and
                         _json(kubling, "get", "cronjob", "ticker", "-n", ns)["status"])
    assert status["lastScheduleTime"]
    kubling.kubectl("patch", "-n", ns, "cronjob/ticker", "--type=merge", "-p",
                    '{"spec":{"suspend":true}}')

    kubling.kubectl("create", "job", "by-hand", "-n", ns, "--from=cronjob/ticker")
    manual = _json(kubling, "get", "job", "by-hand", "-n", ns)
    assert manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert manual["metadata"]["ownerReferences"][0]["name"] == "ticker"
    pod = _eventually(lambda: _pods(kubling, ns, "by-hand"))[0]
    _set_phase(kubling, ns, pod, "Succeeded")
    kubling.kubectl("wait", "-n", ns, "--for=condition=complete", "job/by-hand",
                    "--timeout=30s", timeout=40)


def test_a_cronjob_every_minute_runs_on_the_minute(kubling: KublingServer) -> None:
    """The course's ``*/1 * * * *`` in real time: the next minute boundary starts a Job,
    whose success the CronJob records (waits up to a minute and a bit)."""
    ns = _ns(kubling)
    kubling.kubectl("create", "cronjob", "minutely", "-n", ns, "--image=busybox",
                    "--schedule=*/1 * * * *", "--", "date")
    jobs = _eventually(lambda: _json(kubling, "get", "jobs", "-n", ns)["items"], timeout=75)
    job = jobs[0]
    scheduled = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    assert scheduled.endswith(":00Z"), scheduled  # on the minute
    pod = _eventually(lambda: _pods(kubling, ns, job["metadata"]["name"]))[0]
    _set_phase(kubling, ns, pod, "Succeeded")
    status = _eventually(lambda: _json(kubling, "get", "cronjob", "minutely", "-n", ns)
                         .get("status", {}).get("lastSuccessfulTime") and
                         _json(kubling, "get", "cronjob", "minutely", "-n", ns)["status"])
    assert status["lastScheduleTime"] == scheduled
    row = kubling.kubectl("get", "cronjob", "minutely", "-n", ns, "--no-headers").stdout.split()
    assert row[:6] == ["minutely", "*/1", "*", "*", "*", "*"]  # NAME, then SCHEDULE
    kubling.kubectl("delete", "namespace", ns, "--wait=false")


def test_cronjob_history_limits_keep_one_job_each(kubling: KublingServer) -> None:
    """``*/1`` in real time with ``successfulJobsHistoryLimit: 1`` and, for a CronJob whose
    Jobs fail, ``failedJobsHistoryLimit: 1``: after two runs each keeps only its latest Job
    (two minute boundaries, so up to ~2.5 minutes)."""
    ns = _ns(kubling)
    template = """
apiVersion: batch/v1
kind: CronJob
metadata: {{name: {name}}}
spec:
  schedule: "*/1 * * * *"
  {limit}: 1
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers: [{{name: c, image: busybox, command: [date]}}]
"""
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=template.format(
        name="good", limit="successfulJobsHistoryLimit") + "---" + template.format(
        name="bad", limit="failedJobsHistoryLimit"))
    seen: dict[str, set[str]] = {"good": set(), "bad": set()}
    played: set[str] = set()

    def converged() -> dict[str, list[str]] | None:
        """Play the node (good pods succeed, bad ones fail); done once each CronJob has
        run twice and only its latest Job is left."""
        pods = _json(kubling, "get", "pods", "-n", ns)["items"]
        for pod in pods:
            name = pod["metadata"]["name"]
            if name not in played and pod["status"].get("phase") in (None, "Pending"):
                owner = pod["metadata"]["labels"]["job-name"].split("-")[0]
                _set_phase(kubling, ns, f"pod/{name}",
                           "Succeeded" if owner == "good" else "Failed")
                played.add(name)
        jobs: dict[str, list[str]] = {"good": [], "bad": []}
        for job in _json(kubling, "get", "jobs", "-n", ns)["items"]:
            owner = job["metadata"]["ownerReferences"][0]["name"]
            jobs[owner].append(job["metadata"]["name"])
            seen[owner].add(job["metadata"]["name"])
        if all(len(seen[c]) >= 2 and len(jobs[c]) == 1 for c in jobs):
            return jobs
        return None

    jobs = _eventually(converged, timeout=150)
    for cronjob, outcome in (("good", "Complete"), ("bad", "Failed")):
        assert jobs[cronjob] == [max(seen[cronjob])]  # the latest run's Job stays
        job = _json(kubling, "get", "job", jobs[cronjob][0], "-n", ns)
        assert [c["type"] for c in job["status"]["conditions"]
                if c["status"] == "True"][-1] == outcome
    status = _json(kubling, "get", "cronjob", "good", "-n", ns)["status"]
    assert status["lastSuccessfulTime"]
    kubling.kubectl("delete", "namespace", ns, "--wait=false")
