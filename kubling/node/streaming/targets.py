"""Which pod and which runtime container a streaming request means, in the kubelet's
words when there is none: ``pod does not exist`` (404) and ``container not found ("x")``
(500, what the kubelet's ``findContainer`` answers for a container that is not running).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kubling.api.meta import Object
from kubling.network import netns
from kubling.node import sandbox
from kubling.node.streaming import StreamingError


def find_pod(pods: Iterable[Object], namespace: str, name: str) -> Object:
    for pod in pods:
        md = pod.get("metadata") or {}
        if md.get("name") == name and md.get("namespace", "") == namespace:
            return pod
    raise StreamingError(404, "pod does not exist")


def running_container(pod: Object, container: str) -> str:
    """The runtime id of ``container`` while it runs (``containerID`` without its
    ``runc://`` scheme)."""
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(key) or []:
            if entry.get("name") != container:
                continue
            if (entry.get("state") or {}).get("running") is not None and entry.get("containerID"):
                return str(entry["containerID"]).split("://", 1)[-1]
    raise StreamingError(500, f'container not found ("{container}")')


def network_namespace(pod: Object) -> Path | None:
    """The pod's network namespace; None for a ``hostNetwork`` pod (the node's own)."""
    if (pod.get("spec") or {}).get("hostNetwork"):
        return None
    return netns.path(sandbox.netns_name(pod["metadata"]["uid"]))
