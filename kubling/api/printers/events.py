"""Event rows, for ``v1`` and ``events.k8s.io/v1`` alike.

Both APIs serve the same stored objects, and kube-apiserver prints either through the
internal type, so one printer reads the core field names and falls back to the
events.k8s.io ones (``regarding``, ``note``, ``deprecated*``) for objects written that way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubling.api.meta import Object
from kubling.api.printers import common

COLUMNS: list[common.Column] = [
    common.column("Last Seen", "The time at which the most recent occurrence of this event "
                  "was recorded."),
    common.column("Type", "Type of this event (Normal, Warning), new types could be added in "
                  "the future"),
    common.column("Reason", "This should be a short, machine understandable string that gives "
                  "the reason for the transition into the object's current status."),
    common.column("Object", "The object that this event is about."),
    common.wide("Subobject", "If referring to a piece of an object instead of an entire "
                "object, this string should contain a valid JSON/Go field access statement."),
    common.wide("Source", "The component reporting this event."),
    common.column("Message", "A human-readable description of the status of this operation."),
    common.wide("First Seen", "The time at which the event was first recorded."),
    common.wide("Count", "The number of times this event has occurred."),
    common.column("Name", common.NAME_DESCRIPTION, priority=1, fmt="name"),
]


def _field(obj: Object, core: str, events_api: str) -> Any:
    value = obj.get(core)
    return obj.get(events_api) if value is None else value


def _source(obj: Object) -> str:
    """Upstream ``formatEventSource``: component (or reporting controller), then host."""
    source = common.mapping(_field(obj, "source", "deprecatedSource"))
    component = common.text(source.get("component")) or common.text(
        obj.get("reportingController")
    )
    host = common.text(source.get("host")) or common.text(obj.get("reportingInstance"))
    return f"{component}, {host}" if host else component


def _target(involved: Mapping[str, Any]) -> str:
    kind = common.text(involved.get("kind")).lower()
    obj_name = common.text(involved.get("name"))
    return f"{kind}/{obj_name}" if obj_name else kind


def _seen(obj: Object) -> tuple[str, str, int]:
    """LAST SEEN, FIRST SEEN and COUNT; a series' last observation wins over the counters."""
    first = common.parse_time(_field(obj, "firstTimestamp", "deprecatedFirstTimestamp"))
    first_seen = common.since(first if first is not None else obj.get("eventTime"))
    last = common.parse_time(_field(obj, "lastTimestamp", "deprecatedLastTimestamp"))
    last_seen = common.since(last) if last is not None else first_seen
    count = common.integer(_field(obj, "count", "deprecatedCount"))
    series = obj.get("series")
    if isinstance(series, Mapping):
        last_seen = common.since(series.get("lastObservedTime"))
        count = common.integer(series.get("count"))
    elif count == 0:
        count = 1  # singleton events of the new API carry no count
    return last_seen, first_seen, count


def cells(obj: Object) -> list[Any]:
    involved = common.mapping(_field(obj, "involvedObject", "regarding"))
    last_seen, first_seen, count = _seen(obj)
    return [
        last_seen,
        common.text(obj.get("type")),
        common.text(obj.get("reason")),
        _target(involved),
        common.text(involved.get("fieldPath")),
        _source(obj),
        common.text(_field(obj, "message", "note")).strip(),
        first_seen,
        count,
        common.name(obj),
    ]


PRINTERS: dict[tuple[str, str], common.Printer] = {
    ("", "Event"): (COLUMNS, cells),
    ("events.k8s.io", "Event"): (COLUMNS, cells),
}
