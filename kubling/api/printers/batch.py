"""Columns of Jobs and CronJobs: how far a run got, and when the next one came.

A Job's STATUS (1.30+) is read from its conditions in upstream's precedence: a finished
job says so even while it is being deleted, a suspended one only when nothing else holds.
"""

from __future__ import annotations

from typing import Any

from kubling.api.meta import Object
from kubling.api.printers import common

_NAME, _AGE, _col, _wide = common.NAME, common.AGE, common.column, common.wide

JOB_COLUMNS = [
    _NAME,
    _col("Status", "Status of the job."),
    _col("Completions", "The number of pods which reached phase Succeeded."),
    _col("Duration", "Time required to complete the job."),
    _AGE,
    _wide("Containers", common.CONTAINERS_DESCRIPTION),
    _wide("Images", common.IMAGES_DESCRIPTION),
    _wide("Selector", "A label query over pods that should match the pod count."),
]


def job_status(obj: Object) -> str:
    conditions = common.dig(obj, "status", "conditions")
    if common.condition_true(conditions, "Complete"):
        return "Complete"
    if common.condition_true(conditions, "Failed"):
        return "Failed"
    if common.is_deleting(obj):
        return "Terminating"
    if common.condition_true(conditions, "Suspended"):
        return "Suspended"
    if common.condition_true(conditions, "FailureTarget"):
        return "FailureTarget"
    return "Running"


def job_completions(obj: Object) -> str:
    """``succeeded/completions``; work-queue jobs (no completions) count toward 1."""
    succeeded = common.integer(common.dig(obj, "status", "succeeded"))
    completions = common.dig(obj, "spec", "completions")
    if isinstance(completions, int) and not isinstance(completions, bool):
        return f"{succeeded}/{completions}"
    parallelism = common.integer(common.dig(obj, "spec", "parallelism"))
    if parallelism > 1:
        return f"{succeeded}/1 of {parallelism}"
    return f"{succeeded}/1"


def job_duration(obj: Object) -> str:
    """Start to completion, or start to now while running; empty before the job starts."""
    started = common.parse_time(common.dig(obj, "status", "startTime"))
    if started is None:
        return ""
    completed = common.parse_time(common.dig(obj, "status", "completionTime"))
    end = completed if completed is not None else common.now()
    return common.human_duration((end - started).total_seconds())


def job_cells(obj: Object) -> list[Any]:
    names, images = common.containers_and_images(common.dig(obj, "spec", "template", "spec"))
    return [
        common.name(obj),
        job_status(obj),
        job_completions(obj),
        job_duration(obj),
        common.age(obj),
        names,
        images,
        common.format_label_selector(common.dig(obj, "spec", "selector")),
    ]


CRONJOB_COLUMNS = [
    _NAME,
    _col("Schedule", "The schedule in Cron format."),
    _col("Timezone", "The time zone name for the given schedule."),
    _col("Suspend", "This flag tells the controller to suspend subsequent executions.",
         col_type="boolean"),
    _col("Active", "A list of pointers to currently running jobs.", col_type="integer"),
    _col("Last Schedule", "Information when was the last time the job was successfully "
         "scheduled."),
    _AGE,
    _wide("Containers", common.CONTAINERS_DESCRIPTION),
    _wide("Images", common.IMAGES_DESCRIPTION),
    _wide("Selector", "A label query over pods that should match the pod count."),
]


def cronjob_cells(obj: Object) -> list[Any]:
    """SUSPEND is a string (``True``/``False``/``<unset>``) under a boolean column, as upstream."""
    spec = common.mapping(obj.get("spec"))
    job_spec = common.mapping(common.dig(spec, "jobTemplate", "spec"))
    names, images = common.containers_and_images(common.dig(job_spec, "template", "spec"))
    last = common.dig(obj, "status", "lastScheduleTime")
    return [
        common.name(obj),
        common.text(spec.get("schedule")),
        common.text(spec.get("timeZone"), "<none>"),
        common.bool_ptr(spec.get("suspend")),
        common.length(common.dig(obj, "status", "active")),
        "<none>" if last is None else common.since(last),
        common.age(obj),
        names,
        images,
        common.format_label_selector(job_spec.get("selector")),
    ]


PRINTERS: dict[tuple[str, str], common.Printer] = {
    ("batch", "Job"): (JOB_COLUMNS, job_cells),
    ("batch", "CronJob"): (CRONJOB_COLUMNS, cronjob_cells),
}
