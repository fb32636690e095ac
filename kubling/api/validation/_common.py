"""Checks shared by several kinds: numbers, ports, int-or-percent, label selectors.

Kept free of any kind-specific knowledge so that ``pods``, ``core``, ``apps`` and
``batch`` can all lean on the same upstream wording.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from kubling.api.field import FieldError, Path, forbidden, invalid, not_supported, required
from kubling.api.names import is_dns1123_label, is_qualified_name, regex_error, validate_labels

Obj = dict[str, Any]
Errs = list[FieldError]

NEGATIVE_MSG = "must be greater than or equal to 0"
MAX_INT32 = 2**31 - 1

_PORT_NAME_CHARS = re.compile(r"[-a-z0-9]+")
_PERCENT_FMT = "[0-9]+%"
_PERCENT_RE = re.compile(_PERCENT_FMT)


def is_int(value: Any) -> bool:
    """JSON integers only: Python's ``bool`` is an ``int`` but is never a count."""
    return isinstance(value, int) and not isinstance(value, bool)


def dicts(obj: Any, key: str) -> list[Obj]:
    """The dict items of list ``obj[key]`` (absent or malformed lists yield nothing)."""
    if not isinstance(obj, dict):
        return []
    items = obj.get(key)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def sub(obj: Any, *keys: str) -> Obj:
    """A nested dict, or ``{}`` when any level is missing (read-only use)."""
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, dict) else {}


def inclusive_range_error(lo: int, hi: int) -> str:
    return f"must be between {lo} and {hi}, inclusive"


def nonnegative(value: Any, path: Path) -> Errs:
    """Upstream ``ValidateNonnegativeField`` (absent values are fine: they are optional)."""
    if is_int(value) and value < 0:
        return [invalid(str(path), value, NEGATIVE_MSG)]
    return []


def is_valid_port_num(port: Any) -> list[str]:
    if is_int(port) and 1 <= port <= 65535:
        return []
    return [inclusive_range_error(1, 65535)]


def is_valid_port_name(name: str) -> list[str]:
    """IANA_SVC_NAME: what a named port must look like so it can be looked up by name."""
    errs: list[str] = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not _PORT_NAME_CHARS.fullmatch(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name and (name[0] == "-" or name[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def port_num_or_name(value: Any, path: Path) -> Errs:
    """An ``IntOrString`` port: a number in range, or a valid port name."""
    if isinstance(value, str):
        if not value:
            return [required(str(path))]
        return [invalid(str(path), value, msg) for msg in is_valid_port_name(value)]
    return [invalid(str(path), value, msg) for msg in is_valid_port_num(value)]


def protocol(value: Any, path: Path) -> Errs:
    if value in (None, ""):
        return [required(str(path))]
    if value not in ("SCTP", "TCP", "UDP"):
        return [not_supported(str(path), value, ["SCTP", "TCP", "UDP"])]
    return []


def dns_label(value: Any, path: Path) -> Errs:
    return [invalid(str(path), value, msg) for msg in is_dns1123_label(str(value))]


def one_of(value: Any, path: Path, supported: list[str]) -> Errs:
    """``Required`` when empty, ``Unsupported value`` when not in ``supported``."""
    if value in (None, ""):
        return [required(str(path))]
    if value not in supported:
        return [not_supported(str(path), value, supported)]
    return []


# -- int or percent ------------------------------------------------------------------------


def int_or_percent_value(value: Any) -> int:
    """The number in ``3`` or ``"25%"`` (0 when unparsable: validation reports that)."""
    if is_int(value):
        return int(value)
    if isinstance(value, str) and _PERCENT_RE.fullmatch(value):
        return int(value[:-1])
    return 0


def positive_int_or_percent(value: Any, path: Path) -> Errs:
    if value is None:
        return []
    if isinstance(value, str):
        if _PERCENT_RE.fullmatch(value):
            return []
        msg = "a valid percent string must be a numeric string followed by an ending '%'"
        return [invalid(str(path), value, regex_error(msg, _PERCENT_FMT, "1%", "93%"))]
    return nonnegative(value, path)


def not_more_than_100_percent(value: Any, path: Path) -> Errs:
    if isinstance(value, str) and _PERCENT_RE.fullmatch(value) and int(value[:-1]) > 100:
        return [invalid(str(path), value, "must not be greater than 100%")]
    return []


# -- label selectors -----------------------------------------------------------------------

_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def _validate_requirement(req: Obj, path: Path) -> Errs:
    errs: Errs = []
    operator = req.get("operator")
    values = req.get("values") or []
    if operator in ("In", "NotIn"):
        if not values:
            msg = "must be specified when `operator` is 'In' or 'NotIn'"
            errs.append(required(str(path.child("values")), msg))
    elif operator in ("Exists", "DoesNotExist"):
        if values:
            msg = "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            errs.append(forbidden(str(path.child("values")), msg))
    else:
        errs.append(invalid(str(path.child("operator")), operator, "not a valid selector operator"))
    key = str(req.get("key") or "")
    errs.extend(invalid(str(path.child("key")), key, msg) for msg in is_qualified_name(key))
    return errs


def validate_label_selector(selector: Any, path: Path) -> Errs:
    """Upstream ``ValidateLabelSelector`` for a ``metav1.LabelSelector`` dict."""
    if selector is None:
        return []
    if not isinstance(selector, dict):
        return [invalid(str(path), selector, "must be an object")]
    errs = validate_labels(selector.get("matchLabels"), path.child("matchLabels"))
    for i, req in enumerate(dicts(selector, "matchExpressions")):
        errs.extend(_validate_requirement(req, path.child("matchExpressions").index(i)))
    return errs


def selector_is_empty(selector: Any) -> bool:
    return not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    )


def _requirement_matches(req: Obj, labels: dict[str, Any]) -> bool:
    key = req.get("key")
    values = req.get("values") or []
    operator = req.get("operator")
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False


def selector_matches(selector: Any, labels: Any) -> bool:
    """Whether a ``metav1.LabelSelector`` selects ``labels`` (an empty one selects all).

    A private copy of the semantics so validation has no dependency on the selector
    parser; callers only use it after :func:`validate_label_selector` passed.
    """
    if not isinstance(selector, dict):
        return False
    have = labels if isinstance(labels, dict) else {}
    match_labels = selector.get("matchLabels") or {}
    if any(have.get(k) != v for k, v in match_labels.items()):
        return False
    return all(_requirement_matches(r, have) for r in dicts(selector, "matchExpressions"))


def template_labels_match(selector: Any, template: Any, path: Path) -> Errs:
    """``spec.template.metadata.labels`` must be selected by the controller's selector."""
    labels = sub(template, "metadata").get("labels") or {}
    if selector_is_empty(selector) or selector_matches(selector, labels):
        return []
    return [invalid(str(path), labels, "`selector` does not match template `labels`")]


def spec_diff(old: Any, new: Any) -> str:
    """A readable stand-in for the ``cmp.Diff`` upstream appends to "immutable" errors."""
    before = json.dumps(old, indent=2, sort_keys=True).splitlines()
    after = json.dumps(new, indent=2, sort_keys=True).splitlines()
    return "\n".join(list(difflib.unified_diff(before, after, lineterm="", n=1))[2:])
