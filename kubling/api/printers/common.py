"""What every printer shares: column builders, tolerant field access, and upstream's
formatting of ages, label sets, selectors and container lists.

Printers read objects exactly as users wrote them (no status, ``null`` where a list is
expected, numbers as strings), so every accessor here answers a neutral value instead of
raising. The server always prints the ``-o wide`` cells too: kubectl drops the columns whose
``priority`` is not 0 unless asked for them, as it does against kube-apiserver.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubling.api import labels, meta, tables

Column = tables.Column
RowFunc = tables.RowFunc
#: One kind's printer: its column definitions and the function giving a row's cells.
Printer = tuple[list[Column], RowFunc]

#: The descriptions upstream takes from ``ObjectMeta``'s documentation.
NAME_DESCRIPTION: str = tables.DEFAULT_COLUMNS[0]["description"]
CREATED_DESCRIPTION: str = tables.DEFAULT_COLUMNS[1]["description"]
CONTAINERS_DESCRIPTION = "Names of each container in the template."
IMAGES_DESCRIPTION = "Images referenced by each container in the template."


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


#: The clock ages are measured against; tests replace it with a fixed time.
now: Callable[[], datetime.datetime] = _utcnow


def column(
    name: str, description: str, *, col_type: str = "string", priority: int = 0, fmt: str = ""
) -> Column:
    """A ``TableColumnDefinition`` with its keys in kube-apiserver's order."""
    return {
        "name": name,
        "type": col_type,
        "format": fmt,
        "description": description,
        "priority": priority,
    }


NAME: Column = column("Name", NAME_DESCRIPTION, fmt="name")
AGE: Column = column("Age", CREATED_DESCRIPTION)


def wide(name: str, description: str, *, col_type: str = "string") -> Column:
    """A priority-1 column: only ``kubectl get -o wide`` shows it."""
    return column(name, description, col_type=col_type, priority=1)


# -- tolerant access ---------------------------------------------------------------------


def dig(obj: Any, *path: str | int) -> Any:
    """The value at ``path`` (keys and list indexes), or ``None`` wherever the shape differs."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(obj, list) or not -len(obj) <= step < len(obj):
                return None
            obj = obj[step]
        elif isinstance(obj, Mapping):
            obj = obj.get(step)
        else:
            return None
    return obj


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def dicts(value: Any) -> list[Mapping[str, Any]]:
    """The object entries of a list (the shape of ``containers``, ``conditions``, ...)."""
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def integer(value: Any, default: int = 0) -> int:
    """An int64 field; floats truncate as Go's conversion does, anything else is ``default``."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return int(value)
    return default


def length(value: Any) -> int:
    return len(value) if isinstance(value, list | Mapping) else 0


def name(obj: Mapping[str, Any]) -> str:
    return text(dig(obj, "metadata", "name"))


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return dig(obj, "metadata", "deletionTimestamp") is not None


# -- time ----------------------------------------------------------------------------------


#: The printers' time parser is the API's (re-exported for ``common.parse_time`` callers).
parse_time = meta.parse_time


def human_duration(seconds: float) -> str:
    """Upstream ``duration.HumanDuration``: two or three significant figures (``3m20s``)."""
    whole = int(seconds)  # truncates toward zero, like Go's int(d.Seconds())
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        rest = days % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def short_human_duration(seconds: float) -> str:
    """Upstream ``duration.ShortHumanDuration``: one unit only (``3m``, ``2d``)."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    hours = whole // 3600
    if hours < 24:
        return f"{hours}h"
    if hours < 24 * 365:
        return f"{hours // 24}d"
    return f"{hours // 24 // 365}y"


def since(value: Any) -> str:
    """Upstream ``translateTimestampSince``: the age of a timestamp, ``<unknown>`` if unset."""
    moment = value if isinstance(value, datetime.datetime) else parse_time(value)
    if moment is None:
        return "<unknown>"
    return human_duration((now() - moment).total_seconds())


def age(obj: Mapping[str, Any]) -> str:
    """The AGE cell: kube-apiserver renders it (a string), kubectl does not."""
    return since(dig(obj, "metadata", "creationTimestamp"))


# -- labels, selectors, containers --------------------------------------------------------


def format_labels(value: Any) -> str:
    """Upstream ``labels.FormatLabels``: ``k=v`` sorted by key, ``<none>`` when empty."""
    pairs = sorted(f"{k}={v}" for k, v in mapping(value).items() if isinstance(v, str))
    return ",".join(pairs) if pairs else "<none>"


def selector_string(value: Any, *, invalid: str) -> str:
    """``LabelSelectorAsSelector(...).String()``: ``""`` for nil or empty selectors."""
    if value is None:
        return ""
    try:
        return str(labels.from_label_selector(value))
    except labels.SelectorError:
        return invalid


def format_label_selector(value: Any) -> str:
    """Upstream ``metav1.FormatLabelSelector``: ``<none>`` for nil or empty selectors."""
    return selector_string(value, invalid="<error>") or "<none>"


def containers_and_images(pod_spec: Any) -> tuple[str, str]:
    """Upstream ``layoutContainerCells``: the CONTAINERS and IMAGES cells of a template."""
    containers = dicts(dig(pod_spec, "containers"))
    return (
        ",".join(text(c.get("name")) for c in containers),
        ",".join(text(c.get("image")) for c in containers),
    )


def list_with_more(items: Iterable[str], *, limit: int = 3, empty: str = "<unset>") -> str:
    """The first ``limit`` items, then ``+ N more...`` as upstream's printers abbreviate."""
    values = list(items)
    shown = ",".join(values[:limit])
    if len(values) > limit:
        return f"{shown} + {len(values) - limit} more..."
    return shown or empty


def bool_ptr(value: Any) -> str:
    """Upstream ``printBoolPtr``: ``True``/``False``, ``<unset>`` for nil."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return "<unset>"


def quantity(value: Any) -> str:
    """A ``resource.Quantity`` cell; a missing quantity prints as Go's zero value, ``0``."""
    if isinstance(value, bool) or value is None:
        return "0"
    if isinstance(value, int | float):
        return str(integer(value)) if float(value).is_integer() else str(value)
    return value if isinstance(value, str) and value else "0"


def condition_true(conditions: Any, condition_type: str) -> bool:
    """True when the first condition of ``condition_type`` has status ``True``."""
    for cond in dicts(conditions):
        if cond.get("type") == condition_type:
            return cond.get("status") == "True"
    return False
