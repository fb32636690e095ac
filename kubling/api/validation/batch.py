"""``batch/v1``: Jobs and CronJobs, including a small syntactic cron-schedule check.

Job pods must terminate, so their ``restartPolicy`` is ``OnFailure`` or ``Never`` — the
defaulted ``Always`` is rejected, giving the familiar "forgot restartPolicy" error.  The
schedule check mirrors robfig/cron's ``ParseStandard`` (which upstream uses) closely
enough that the same strings are accepted and the error texts read the same.
"""

from __future__ import annotations

import re
from typing import Any

from kubling.api.field import (
    FieldError,
    Path,
    immutable,
    invalid,
    not_supported,
    required,
    too_long,
    too_many,
)
from kubling.api.names import validate_annotations, validate_labels
from kubling.api.validation import _common as c
from kubling.api.validation.pods import validate_pod_template_spec

Obj = dict[str, Any]
Errs = list[FieldError]

_SPEC = Path("spec")
#: A CronJob's Jobs are named ``<name>-<11 chars of schedule time>``, which must stay a label.
CRONJOB_NAME_MAX = 52

# -- cron schedules --------------------------------------------------------------------------

_DESCRIPTORS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_MONTHS = {
    m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())
}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
#: (min, max, names) per field: minute, hour, day of month, month, day of week.
_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, _MONTHS),
    (0, 6, _DAYS),
)


_DURATION = re.compile(r"(?:[0-9]*\.?[0-9]+(?:ns|us|µs|ms|s|m|h))+")


class CronError(ValueError):
    """A schedule robfig/cron would refuse; the message is its error text."""


def _parse_int(text: str) -> int:
    if not text.lstrip("+-").isdigit():
        raise CronError(
            f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax'
        )
    number = int(text)
    if number < 0:
        raise CronError(f"negative number ({number}) not allowed: {text}")
    return number


def _parse_value(text: str, names: dict[str, int]) -> int:
    if names and text.lower() in names:
        return names[text.lower()]
    return _parse_int(text)


def _check_range(expr: str, index: int) -> None:
    """One comma-separated term: ``*``, ``?``, ``N``, ``A-B``, each with optional ``/step``."""
    field_min, field_max, names = _FIELDS[index]
    range_step = expr.split("/")
    low_high = range_step[0].split("-")
    if low_high[0] in ("*", "?"):
        start, end = field_min, field_max
    else:
        start = _parse_value(low_high[0], names)
        if len(low_high) == 1:
            end = start
        elif len(low_high) == 2:
            end = _parse_value(low_high[1], names)
        else:
            raise CronError(f"too many hyphens: {expr}")
    step = 1
    if len(range_step) == 2:
        step = _parse_int(range_step[1])
        if len(low_high) == 1:
            end = field_max
    elif len(range_step) > 2:
        raise CronError(f"too many slashes: {expr}")
    if start < field_min:
        raise CronError(f"beginning of range ({start}) below minimum ({field_min}): {expr}")
    if end > field_max:
        raise CronError(f"end of range ({end}) above maximum ({field_max}): {expr}")
    if start > end:
        raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise CronError(f"step of range should be a positive number: {expr}")


def _check_duration(text: str) -> None:
    """``@every <duration>``: Go durations such as ``1h30m``, ``90s``, ``1.5h``."""
    if not _DURATION.fullmatch(text):
        raise CronError(f'failed to parse duration @every {text}: time: invalid duration "{text}"')


def parse_schedule(schedule: str) -> None:
    """Raise :class:`CronError` unless ``schedule`` is a standard 5-field cron spec."""
    spec = schedule.strip()
    if spec.startswith(("TZ=", "CRON_TZ=")):
        spec = spec.split(None, 1)[1] if " " in spec else ""
    if not spec:
        raise CronError("empty spec string")
    if spec.startswith("@"):
        if spec.startswith("@every "):
            _check_duration(spec[len("@every ") :].strip())
        elif spec not in _DESCRIPTORS:
            raise CronError(f"unrecognized descriptor: {spec}")
        return
    fields = spec.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    for i, text in enumerate(fields):
        for expr in text.split(","):
            _check_range(expr, i)


def _validate_schedule(spec: Obj, path: Path) -> Errs:
    schedule = spec.get("schedule")
    if not schedule:
        return [required(str(path))]
    errs: Errs = []
    try:
        parse_schedule(str(schedule))
    except CronError as err:
        errs.append(invalid(str(path), schedule, str(err)))
    if "TZ" in str(schedule):
        msg = (
            "cannot use both timeZone field and TZ or CRON_TZ in schedule"
            if spec.get("timeZone") is not None
            else "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
        )
        errs.append(invalid(str(path), schedule, msg))
    return errs


# -- jobs ------------------------------------------------------------------------------------


#: Upstream's limits for Indexed Jobs and their per-index failure handling.
_MAX_PARALLELISM_INDEXED = 100_000
_MAX_FAILED_INDEXES = 100_000
_COMPLETIONS_SOFT_LIMIT = 100_000
_HIGH_COMPLETIONS_LIMIT = 10_000  # parallelism and maxFailedIndexes above the soft limit
_MAX_SUCCESS_POLICY_RULES = 20
_MAX_SUCCEEDED_INDEXES_LENGTH = 64 * 1024


def _validate_job_counts(spec: Obj, path: Path) -> Errs:
    errs: Errs = []
    for key in (
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ):
        errs.extend(c.nonnegative(spec.get(key), path.child(key)))
    if spec.get("maxFailedIndexes") is not None and spec.get("backoffLimitPerIndex") is None:
        errs.append(required(str(path.child("backoffLimitPerIndex")),
                             "when maxFailedIndexes is specified"))
    return errs


def _int(value: Any) -> int | None:
    return value if c.is_int(value) else None


def _validate_indexed(spec: Obj, path: Path) -> Errs:
    """Limits of an Indexed Job; per-index fields and success policies need one."""
    errs: Errs = []
    completions, parallelism = _int(spec.get("completions")), _int(spec.get("parallelism"))
    max_failed, per_index = _int(spec.get("maxFailedIndexes")), spec.get("backoffLimitPerIndex")
    if spec.get("completionMode") != "Indexed":
        for key in ("backoffLimitPerIndex", "maxFailedIndexes"):
            if spec.get(key) is not None:
                errs.append(invalid(str(path.child(key)), spec.get(key),
                                    "requires indexed completion mode"))
        if spec.get("successPolicy") is not None:
            errs.append(invalid(str(path.child("successPolicy")), spec.get("successPolicy"),
                                "requires indexed completion mode"))
        return errs
    if parallelism is not None and parallelism > _MAX_PARALLELISM_INDEXED:
        errs.append(invalid(str(path.child("parallelism")), parallelism,
                            f"must be less than or equal to {_MAX_PARALLELISM_INDEXED} when "
                            "completion mode is Indexed"))
    if max_failed is not None:
        if completions is not None and max_failed > completions:
            errs.append(invalid(str(path.child("maxFailedIndexes")), max_failed,
                                "must be less than or equal to completions"))
        if max_failed > _MAX_FAILED_INDEXES:
            errs.append(invalid(str(path.child("maxFailedIndexes")), max_failed,
                                f"must be less than or equal to {_MAX_FAILED_INDEXES}"))
    if completions is not None and completions > _COMPLETIONS_SOFT_LIMIT and per_index is not None:
        high = (f"must be less than or equal to {_HIGH_COMPLETIONS_LIMIT} when completions are "
                f"above {_COMPLETIONS_SOFT_LIMIT} and used with backoff limit per index")
        if max_failed is None:
            errs.append(required(str(path.child("maxFailedIndexes")),
                                 f"must be specified when completions is above "
                                 f"{_COMPLETIONS_SOFT_LIMIT}"))
        if parallelism is not None and parallelism > _HIGH_COMPLETIONS_LIMIT:
            errs.append(invalid(str(path.child("parallelism")), parallelism, high))
        if max_failed is not None and max_failed > _HIGH_COMPLETIONS_LIMIT:
            errs.append(invalid(str(path.child("maxFailedIndexes")), max_failed, high))
    if isinstance(spec.get("successPolicy"), dict) and completions is not None:
        errs.extend(_validate_success_policy(spec["successPolicy"], completions,
                                             path.child("successPolicy")))
    return errs


def parse_index_intervals(text: str, completions: int) -> int:
    """How many indexes ``"0,2-4"`` names; ValueError (upstream's wording) when the text is
    malformed, out of order, or names an index not below ``completions``."""
    total, last = 0, -1
    for fragment in text.split(",") if text else []:
        limits = fragment.split("-")
        if len(limits) > 2:
            raise ValueError(f'the fragment "{fragment}" violates the requirement that an '
                             "index interval can have at most two parts separated by '-'")
        bounds: list[int] = []
        for limit in limits:
            if not re.fullmatch(r"[+-]?\d+", limit):
                raise ValueError(f'cannot convert string to integer for index: "{limit}"')
            if int(limit) >= completions:
                raise ValueError(f'too large index: "{limit}"')
            bounds.append(int(limit))
        first, end = bounds[0], bounds[-1]
        if len(bounds) == 2 and first >= end:
            raise ValueError(f"non-increasing order, previous: {first}, current: {end}")
        if last >= first:
            raise ValueError(f"non-increasing order, previous: {last}, current: {first}")
        total += end - first + 1
        last = end
    return total


def _validate_success_policy(policy: Obj, completions: int, path: Path) -> Errs:
    errs: Errs = []
    rules = policy.get("rules")
    rules_path = path.child("rules")
    if not rules:
        return [required(str(rules_path),
                         "at least one rules must be specified when the successPolicy is "
                         "specified")]
    if isinstance(rules, list) and len(rules) > _MAX_SUCCESS_POLICY_RULES:
        errs.append(too_many(str(rules_path), len(rules), _MAX_SUCCESS_POLICY_RULES))
    for i, rule in enumerate(c.dicts(policy, "rules")):
        rule_path = rules_path.index(i)
        indexes, count = rule.get("succeededIndexes"), _int(rule.get("succeededCount"))
        if indexes is None and count is None:
            errs.append(required(str(rule_path), "at least one of succeededCount or "
                                                 "succeededIndexes must be specified"))
        total = 0
        if isinstance(indexes, str):
            indexes_path = rule_path.child("succeededIndexes")
            if len(indexes) > _MAX_SUCCEEDED_INDEXES_LENGTH:
                errs.append(too_long(str(indexes_path), _MAX_SUCCEEDED_INDEXES_LENGTH))
            try:
                total = parse_index_intervals(indexes, completions)
            except ValueError as err:
                errs.append(invalid(str(indexes_path), indexes,
                                    f"error parsing succeededIndexes: {err}"))
        if count is not None:
            count_path = rule_path.child("succeededCount")
            errs.extend(c.nonnegative(count, count_path))
            if count > completions:
                errs.append(invalid(str(count_path), count,
                                    f"must be less than or equal to {completions} (the number "
                                    "of specified completions)"))
            if isinstance(indexes, str) and count > total:
                errs.append(invalid(str(count_path), count,
                                    f"must be less than or equal to {total} (the number of "
                                    "indexes in the specified succeededIndexes field)"))
    return errs


def _validate_modes(spec: Obj, path: Path) -> Errs:
    errs: Errs = []
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        errs.append(
            not_supported(str(path.child("completionMode")), mode, ["NonIndexed", "Indexed"])
        )
    if mode == "Indexed" and spec.get("completions") is None:
        errs.append(required(str(path.child("completions")), "when completion mode is Indexed"))
    replacement = spec.get("podReplacementPolicy")
    if replacement is not None and replacement not in ("TerminatingOrFailed", "Failed"):
        supported = ["TerminatingOrFailed", "Failed"]
        errs.append(not_supported(str(path.child("podReplacementPolicy")), replacement, supported))
    return errs


def _validate_job_template(spec: Obj, path: Path) -> Errs:
    template = spec.get("template")
    template_path = path.child("template")
    if not isinstance(template, dict):
        return [required(str(template_path))]
    errs = validate_pod_template_spec(template, template_path)
    policy = c.sub(template, "spec").get("restartPolicy")
    if policy not in ("OnFailure", "Never"):
        policy_path = template_path.child("spec").child("restartPolicy")
        errs.append(not_supported(str(policy_path), policy or "", ["OnFailure", "Never"]))
    return errs


def _validate_job_spec(spec: Obj, path: Path) -> Errs:
    errs = _validate_job_counts(spec, path)
    errs.extend(_validate_modes(spec, path))
    errs.extend(_validate_indexed(spec, path))
    errs.extend(_validate_job_template(spec, path))
    return errs


def validate_job(job: Obj) -> Errs:
    """The selector itself is generated by the Job strategy before validation runs."""
    spec = c.sub(job, "spec")
    errs = _validate_job_spec(spec, _SPEC)
    selector = spec.get("selector")
    if selector is None:
        errs.append(required(str(_SPEC.child("selector"))))
        return errs
    selector_errs = c.validate_label_selector(selector, _SPEC.child("selector"))
    errs.extend(selector_errs)
    if not selector_errs:
        labels_path = _SPEC.child("template").child("metadata").child("labels")
        errs.extend(c.template_labels_match(selector, spec.get("template"), labels_path))
    return errs


#: What a suspended, never-started Job may still change in its pod template, so that
#: queueing systems can steer it before it runs.
_SCHEDULING_DIRECTIVES = ("nodeSelector", "tolerations", "affinity", "schedulingGates")


def _template_for_compare(spec: Obj, relax: bool) -> Any:
    template = spec.get("template")
    if not relax or not isinstance(template, dict):
        return template
    spec_part = {
        k: v for k, v in c.sub(template, "spec").items() if k not in _SCHEDULING_DIRECTIVES
    }
    meta = {
        k: v for k, v in c.sub(template, "metadata").items() if k not in ("labels", "annotations")
    }
    return {**template, "metadata": meta, "spec": spec_part}


def _completions_mutable(spec: Obj) -> bool:
    """Elastic Indexed Jobs scale by changing completions and parallelism together."""
    completions = spec.get("completions")
    return (
        spec.get("completionMode") == "Indexed"
        and completions is not None
        and (completions == spec.get("parallelism"))
    )


def validate_job_update(new: Obj, old: Obj) -> Errs:
    """Selector, template and shape are fixed once a Job exists."""
    new_spec, old_spec = c.sub(new, "spec"), c.sub(old, "spec")
    errs: Errs = []
    fixed = ["selector", "completionMode", "backoffLimitPerIndex", "podFailurePolicy",
             "successPolicy", "managedBy"]
    if not _completions_mutable(new_spec):
        fixed.append("completions")
    for key in fixed:
        if new_spec.get(key) != old_spec.get(key):
            errs.append(immutable(str(_SPEC.child(key)), new_spec.get(key)))
    relax = old_spec.get("suspend") is True and not c.sub(old, "status").get("startTime")
    if _template_for_compare(new_spec, relax) != _template_for_compare(old_spec, relax):
        errs.append(immutable(str(_SPEC.child("template")), new_spec.get("template")))
    return errs


# -- cronjobs --------------------------------------------------------------------------------


def _validate_job_template_spec(cron_spec: Obj, path: Path) -> Errs:
    job_spec = c.sub(cron_spec, "jobTemplate", "spec")
    spec_path = path.child("spec")
    errs = _validate_job_spec(job_spec, spec_path)
    if job_spec.get("selector") is not None:
        msg = "`selector` will be auto-generated"
        errs.append(invalid(str(spec_path.child("selector")), job_spec["selector"], msg))
    if job_spec.get("manualSelector") is True:
        errs.append(not_supported(str(spec_path.child("manualSelector")), True, ["nil", "false"]))
    meta = c.sub(cron_spec, "jobTemplate", "metadata")
    errs.extend(validate_labels(meta.get("labels"), path.child("metadata").child("labels")))
    errs.extend(
        validate_annotations(meta.get("annotations"), path.child("metadata").child("annotations"))
    )
    return errs


def validate_cron_job(cron: Obj) -> Errs:
    spec = c.sub(cron, "spec")
    errs: Errs = []
    name = c.sub(cron, "metadata").get("name") or ""
    if len(name) > CRONJOB_NAME_MAX:
        msg = f"must be no more than {CRONJOB_NAME_MAX} characters"
        errs.append(invalid("metadata.name", name, msg))
    errs.extend(_validate_schedule(spec, _SPEC.child("schedule")))
    errs.extend(
        c.one_of(
            spec.get("concurrencyPolicy"),
            _SPEC.child("concurrencyPolicy"),
            ["Allow", "Forbid", "Replace"],
        )
    )
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        errs.extend(c.nonnegative(spec.get(key), _SPEC.child(key)))
    errs.extend(_validate_job_template_spec(spec, _SPEC.child("jobTemplate")))
    if spec.get("timeZone") == "":
        msg = "timeZone must be nil or non-empty string"
        errs.append(invalid(str(_SPEC.child("timeZone")), "", msg))
    return errs
