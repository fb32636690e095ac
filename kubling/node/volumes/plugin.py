"""What every volume kind offers the pod worker, and what they share.

A ``Volume`` is one entry of ``spec.volumes`` on this node. Its life, driven by the
``VolumeManager`` on behalf of the pod worker:

- ``set_up(pod)`` before any container of the pod starts, and again on every sync of the
  pod: the first call creates the directory (or checks the host path), later calls refresh
  it (a configMap that changed, a token due for renewal, new labels for the downward API).
  It is idempotent and cheap when nothing changed. A failure raises ``VolumeError`` with the
  text upstream puts after ``MountVolume.SetUp failed for volume "x" :``.
- ``host_path`` is what containers bind-mount; ``read_only`` forces their mounts read-only
  (upstream mounts configMap, secret, downwardAPI and projected volumes read-only).
- ``tear_down()`` when the pod is removed: tmpfs unmounted, directory removed. Host paths
  and persistent volumes are left as they are.

``FileVolume`` is the shared half of the four kinds whose files come from the API through the
atomic writer: a subclass only says which files it wants (``payload``).
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from kubling.api.meta import Object
from kubling.node.volumes import atomicwriter, sources, tmpfs, tokens

PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "downwardAPI": "kubernetes.io~downward-api",
    "projected": "kubernetes.io~projected",
}


class VolumeError(Exception):
    """A volume that cannot be set up (yet); retried on the pod's next sync."""


@dataclasses.dataclass(frozen=True)
class Host:
    """What volumes may use, shared by every pod of one agent."""

    objects: sources.ObjectCache
    tokens: tokens.TokenManager
    #: The node's allocatable resources: what a resourceFieldRef limit defaults to.
    allocatable: Mapping[str, str]


class Volume(Protocol):
    name: str
    read_only: bool

    @property
    def host_path(self) -> Path: ...

    async def set_up(self, pod: Object) -> None: ...

    async def tear_down(self) -> None: ...


def volume_dir(pod_dir: Path, kind: str, name: str) -> Path:
    """``<pod dir>/volumes/kubernetes.io~<kind>/<name>``, upstream's layout."""
    return pod_dir / "volumes" / PLUGIN_DIRS[kind] / name


class FileVolume(abc.ABC):
    """A directory of files projected with the atomic writer; on a tmpfs when ``memory``
    (anything that may hold a secret)."""

    read_only = True
    memory = False

    def __init__(self, kind: str, volume: Object, pod_dir: Path, host: Host) -> None:
        self.name: str = volume["name"]
        self.source: Object = volume.get(kind) or {}
        self.host = host
        self._dir = volume_dir(pod_dir, kind, self.name)
        self._written: atomicwriter.Payload | None = None

    @property
    def host_path(self) -> Path:
        return self._dir

    @abc.abstractmethod
    async def payload(self, pod: Object) -> atomicwriter.Payload:
        """The files wanted now; raises VolumeError (a missing source, a bad key)."""

    async def set_up(self, pod: Object) -> None:
        payload = with_fs_group(await self.payload(pod), fs_group(pod))
        if payload == self._written:
            return
        try:
            await asyncio.to_thread(self._write, payload)
        except (OSError, atomicwriter.PayloadError) as err:
            raise VolumeError(str(err)) from err
        self._written = payload

    def _write(self, payload: atomicwriter.Payload) -> None:
        if self.memory:
            tmpfs.mount(self._dir, mode=0o755)
        else:
            self._dir.mkdir(parents=True, exist_ok=True)
        atomicwriter.write(self._dir, payload)

    async def tear_down(self) -> None:
        await asyncio.to_thread(tmpfs.unmount, self._dir)
        self._written = None


def file_mode(item: Object, default_mode: object) -> int:
    """An item's ``mode``, else the volume's ``defaultMode`` (0644 when neither is set)."""
    mode = item.get("mode")
    if mode is None:
        mode = default_mode
    return int(mode) & 0o7777 if isinstance(mode, int) else 0o644


def fs_group(pod: Object) -> int | None:
    """The pod's ``securityContext.fsGroup``: volumes are made group-owned by it."""
    group = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
    return group if isinstance(group, int) else None


def with_fs_group(payload: atomicwriter.Payload, group: int | None) -> atomicwriter.Payload:
    """Upstream's SetVolumeOwnership for a read-only volume: each file group-owned by the
    fsGroup and readable by it (mode | 0440)."""
    if group is None:
        return payload
    return {path: dataclasses.replace(p, mode=p.mode | 0o440, fs_group=group)
            for path, p in payload.items()}


def fs_user(pod: Object) -> int | None:
    """Upstream makes token files owned by the containers' user when every container runs
    as the same non-root ``runAsUser``, so a 0600 token stays readable; None otherwise."""
    spec = pod.get("spec") or {}
    pod_user = (spec.get("securityContext") or {}).get("runAsUser")
    users: set[object] = set()
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            users.add((container.get("securityContext") or {}).get("runAsUser", pod_user))
    if len(users) != 1:
        return None
    user = users.pop()
    return user if isinstance(user, int) and user != 0 else None
