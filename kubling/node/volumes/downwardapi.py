"""The downward API: what a pod may learn about itself, as env values or volume files.

``field_value`` resolves a ``fieldRef`` (metadata.name, namespace, uid, labels and
annotations — whole or one key —, spec.nodeName, spec.serviceAccountName, status.hostIP(s),
status.podIP(s)) and ``resource_value`` a ``resourceFieldRef`` (a container's limits or
requests in units of ``divisor``, rounded up; a limit that is not set is the node's
allocatable, as upstream defaults it). Whole label and annotation maps are written as
upstream's ``formatMap`` does: sorted ``key="value"`` lines with Go's quoting.

``DownwardAPIVolume`` projects ``items`` into files with the atomic writer; the pod worker
syncs on every pod update, so a label change reaches the files at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

from kubling.api.meta import Object
from kubling.api.validation import _quantity
from kubling.node.volumes import atomicwriter, plugin

_SUBSCRIPT = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")
_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", '"': '\\"', "\\": "\\\\"}
_DEFAULTED_LIMITS = ("cpu", "memory", "ephemeral-storage")


class FieldError(Exception):
    """A fieldRef or resourceFieldRef this node cannot resolve; upstream's wording."""


def field_value(pod: Object, path: str, *, pod_ips: Sequence[str] = (), host_ip: str = "",
                node_name: str = "") -> str:
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    match path:
        case "metadata.name" | "metadata.namespace" | "metadata.uid":
            return str(md.get(path.split(".", 1)[1]) or "")
        case "metadata.labels" | "metadata.annotations":
            return format_map(md.get(path.split(".", 1)[1]) or {})
        case "spec.nodeName":
            return str(spec.get("nodeName") or node_name)
        case "spec.serviceAccountName":
            return str(spec.get("serviceAccountName") or "")
        case "status.hostIP":
            return host_ip
        case "status.hostIPs":
            return host_ip
        case "status.podIP":
            return pod_ips[0] if pod_ips else ""
        case "status.podIPs":
            return ",".join(pod_ips)
    subscript = _SUBSCRIPT.fullmatch(path)
    if subscript:
        return str((md.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    raise FieldError(f"unsupported fieldPath: {path}")


def format_map(values: Mapping[str, object]) -> str:
    """Upstream's formatMap: ``key="value"`` lines, sorted, Go-quoted, no final newline."""
    return "\n".join(f"{key}={go_quote(str(values[key]))}" for key in sorted(values))


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: printable characters as they are, others escaped."""
    out = ['"']
    for ch in text:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def resource_value(pod: Object, container_name: str, resource: str, divisor: object, *,
                   allocatable: Mapping[str, str]) -> str:
    """A container's resource in units of ``divisor`` (default 1), rounded up."""
    container = _container(pod, container_name)
    if container is None:
        raise FieldError(f"container {container_name} not found")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise FieldError(f"unsupported container resource : {resource}")
    res = container.get("resources") or {}
    value = _quantity.parse_quantity((res.get(kind) or {}).get(name))
    if value is None and kind == "limits" and name in _DEFAULTED_LIMITS:
        value = _quantity.parse_quantity(allocatable.get(name))
    if value is None:
        if name not in _DEFAULTED_LIMITS and not name.startswith("hugepages-"):
            raise FieldError(f"unsupported container resource : {resource}")
        value = Fraction(0)
    unit = _quantity.parse_quantity(divisor) or Fraction(1)
    if name == "cpu":  # upstream works in millicores, each rounded up
        return str(math.ceil(math.ceil(value * 1000) / math.ceil(unit * 1000)))
    return str(math.ceil(math.ceil(value) / math.ceil(unit)))


def _container(pod: Object, name: str) -> Object | None:
    spec = pod.get("spec") or {}
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if container.get("name") == name:
                return dict(container)
    return None


class DownwardAPIVolume(plugin.FileVolume):
    def __init__(self, volume: Object, pod_dir: Path, host: plugin.Host) -> None:
        super().__init__("downwardAPI", volume, pod_dir, host)

    async def payload(self, pod: Object) -> atomicwriter.Payload:
        return items_payload(self.source.get("items") or [], pod, self.host,
                             default_mode=self.source.get("defaultMode"))


def items_payload(items: Sequence[Object], pod: Object, host: plugin.Host, *,
                  default_mode: object) -> dict[str, atomicwriter.FileProjection]:
    """The files of downward API ``items`` (a volume's or a projected source's)."""
    out: dict[str, atomicwriter.FileProjection] = {}
    for item in items:
        try:
            if item.get("fieldRef"):
                text = field_value(pod, item["fieldRef"].get("fieldPath", ""))
            elif item.get("resourceFieldRef"):
                ref = item["resourceFieldRef"]
                text = resource_value(pod, ref.get("containerName", ""),
                                      ref.get("resource", ""), ref.get("divisor"),
                                      allocatable=host.allocatable)
            else:
                continue
        except FieldError as err:
            raise plugin.VolumeError(str(err)) from err
        out[item.get("path", "")] = atomicwriter.FileProjection(
            text.encode(), plugin.file_mode(item, default_mode))
    return out
