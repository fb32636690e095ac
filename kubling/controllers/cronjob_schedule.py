"""CronJob schedule math: parsing ``spec.schedule`` and finding the run that is due.

Parsing accepts what upstream's ``cron.ParseStandard`` does: five fields, the
``@yearly``/``@annually``/``@monthly``/``@weekly``/``@daily``/``@midnight``/``@hourly``
macros, ``@every <duration>``, and a ``TZ=``/``CRON_TZ=`` prefix; ``croniter`` does the
field matching. Times are aware ``datetime``s; a schedule runs in ``spec.timeZone`` (or
its prefix's zone), else in UTC, the zone the controller runs in.

``most_recent`` is upstream's ``mostRecentScheduleTime``: of all the times missed since
the last run, only the latest is returned, so a controller that was down for a day starts
one catch-up Job, not one per missed slot; when more than 100 were missed the caller says
so with a ``TooManyMissedTimes`` event.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import zoneinfo
from typing import Protocol

from croniter import (  # type: ignore[import-untyped, unused-ignore]
    CroniterBadDateError,
    croniter,
)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}
#: Upstream counts more than this many missed times as "too many".
TOO_MANY_MISSED = 100


class Schedule(Protocol):
    def next(self, after: datetime.datetime) -> datetime.datetime:
        """The first activation strictly after ``after``."""


@dataclasses.dataclass(frozen=True)
class CronSchedule:
    expression: str
    zone: datetime.tzinfo

    def next(self, after: datetime.datetime) -> datetime.datetime:
        try:
            found = croniter(self.expression, after.astimezone(self.zone)).get_next(
                datetime.datetime)
        except CroniterBadDateError as err:  # e.g. "0 0 31 2 *": February has no 31st
            raise ValueError(f"no time matches {self.expression!r}") from err
        if not isinstance(found, datetime.datetime):
            raise ValueError(f"no time matches {self.expression!r}")
        return found


@dataclasses.dataclass(frozen=True)
class EverySchedule:
    """``@every <duration>``: a constant delay, in whole seconds, from the last run."""

    seconds: int

    def next(self, after: datetime.datetime) -> datetime.datetime:
        return after.replace(microsecond=0) + datetime.timedelta(seconds=self.seconds)


def parse_duration(text: str) -> float:
    """A Go duration (``1h30m``, ``90s``) in seconds; ``ValueError`` when malformed."""
    if not text or _DURATION_PART.sub("", text):
        raise ValueError(f"time: invalid duration {text!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def zone(name: str | None) -> datetime.tzinfo:
    """The named IANA zone (``""``/``None``/``UTC``: UTC); ``ValueError`` when unknown."""
    if not name or name in ("UTC", "Local"):
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {name}") from err


def parse(schedule: str, time_zone: str | None = None) -> Schedule:
    """``spec.schedule`` (and ``spec.timeZone``) as a ``Schedule``; ``ValueError`` with a
    message for the ``UnparseableSchedule`` event when it cannot be."""
    text = schedule.strip()
    tz = zone(time_zone)
    if text.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, text = text.partition(" ")
        tz = zone(prefix.partition("=")[2])
        text = text.strip()
    if text.startswith("@every "):
        seconds = parse_duration(text[len("@every "):].strip())
        return EverySchedule(max(1, int(seconds)))
    if text.startswith("@"):
        if text not in _MACROS:
            raise ValueError(f"unrecognized descriptor: {text}")
        text = _MACROS[text]
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"expected exactly 5 fields, found {len(fields)}: {text}")
    if not croniter.is_valid(text):
        raise ValueError(f"invalid cron expression: {text}")
    return CronSchedule(text, tz)


@dataclasses.dataclass(frozen=True)
class Due:
    """What ``most_recent`` found: the time the reckoning started from, the latest
    missed activation (``None`` when nothing is due) and how many were missed."""

    earliest: datetime.datetime
    time: datetime.datetime | None
    missed: int


def most_recent(schedule: Schedule, *, created: datetime.datetime,
                last_scheduled: datetime.datetime | None, now: datetime.datetime,
                starting_deadline: int | None = None) -> Due:
    """The latest activation in (earliest, now], where earliest is the last schedule time
    (or creation) moved up to ``now - startingDeadlineSeconds`` when that is later.

    The number missed is estimated as upstream does, from the gap between the first two
    activations, so that a clock decades off does not enumerate every one of them.
    ``ValueError`` when two activations are less than a second apart (an impossible date).
    """
    earliest = last_scheduled or created
    if starting_deadline is not None:
        earliest = max(earliest, now - datetime.timedelta(seconds=starting_deadline))
    t1 = schedule.next(earliest)
    if now < t1:
        return Due(earliest, None, 0)
    t2 = schedule.next(t1)
    if now < t2:
        return Due(earliest, t1, 1)
    gap = round((t2 - t1).total_seconds())
    if gap < 1:
        raise ValueError("time difference between two schedules is less than 1 second")
    missed = int((now - t1).total_seconds()) // gap + 1
    latest: datetime.datetime | None = None
    t = schedule.next(t1 + datetime.timedelta(seconds=(missed - 2) * gap))
    while t <= now:
        latest = t
        t = schedule.next(t)
    return Due(earliest, latest, missed)


def job_name(cronjob_name: str, scheduled: datetime.datetime) -> str:
    """``<cronjob>-<minutes since the epoch>``: one name per scheduled time, so that a
    second attempt at the same run is refused as AlreadyExists."""
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"
