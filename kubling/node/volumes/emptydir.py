"""emptyDir volumes: a directory made when the pod lands on the node and removed with it,
shared by all its containers. ``medium: Memory`` makes it a tmpfs mounted on the host (so
every container sees the same one), sized as upstream's ``SizeMemoryBackedVolumes``: the
smallest of the node's allocatable memory, the pod's memory limit (when every container
has one) and ``sizeLimit``. On disk, ``sizeLimit`` is enforced as the kubelet's eviction
manager does it: ``exceeded`` measures the directory (blocks in use, as ``du``) and the pod
worker evicts the pod when it is over."""

from __future__ import annotations

import asyncio
import math
import os
from fractions import Fraction
from pathlib import Path

from kubling.api.meta import Object
from kubling.api.validation import _quantity
from kubling.node.volumes import plugin, tmpfs


class EmptyDirVolume:
    read_only = False

    def __init__(self, volume: Object, pod_dir: Path, host: plugin.Host) -> None:
        self.name: str = volume["name"]
        source = volume.get("emptyDir") or {}
        self.memory = source.get("medium") == "Memory"
        self.size_limit_text = str(source.get("sizeLimit") or "")
        self.size_limit = _quantity.parse_quantity(source.get("sizeLimit"))
        self.allocatable = _quantity.parse_quantity(host.allocatable.get("memory"))
        self._dir = plugin.volume_dir(pod_dir, "emptyDir", self.name)
        self._ready = False

    @property
    def host_path(self) -> Path:
        return self._dir

    async def set_up(self, pod: Object) -> None:
        if self._ready:
            return
        try:
            await asyncio.to_thread(self._make, self.memory_size(pod), plugin.fs_group(pod))
        except OSError as err:
            raise plugin.VolumeError(str(err)) from err
        self._ready = True

    def memory_size(self, pod: Object) -> int | None:
        """The tmpfs size in bytes (None: the kernel's default)."""
        sizes = [q for q in (self.allocatable, _pod_memory_limit(pod), self.size_limit)
                 if q is not None and q > 0]
        return math.ceil(min(sizes)) if sizes else None

    def _make(self, size: int | None, group: int | None) -> None:
        if self.memory:
            tmpfs.mount(self._dir, size=size, mode=0o777)
        else:
            self._dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._dir, 0o777)  # upstream's mode: any container user may write
        if group is not None:  # SetVolumeOwnership: the fsGroup's, setgid (drwxrwsrwx)
            os.chown(self._dir, -1, group)
            os.chmod(self._dir, 0o2777)

    def exceeded(self) -> str:
        """Upstream's eviction message when a disk emptyDir uses more than its
        ``sizeLimit``, else "". Walks the directory: call it from a thread."""
        if self.memory or self.size_limit is None or not self._ready:
            return ""
        if disk_usage(self._dir) <= self.size_limit:
            return ""
        return (f'Usage of EmptyDir volume "{self.name}" exceeds the limit '
                f'"{self.size_limit_text}". ')

    async def tear_down(self) -> None:
        await asyncio.to_thread(tmpfs.unmount, self._dir)
        self._ready = False


def _pod_memory_limit(pod: Object) -> Fraction | None:
    """The sum of the containers' memory limits, None unless every container has one."""
    total = Fraction(0)
    for container in (pod.get("spec") or {}).get("containers") or []:
        limit = _quantity.parse_quantity(
            ((container.get("resources") or {}).get("limits") or {}).get("memory"))
        if limit is None:
            return None
        total += limit
    return total


def disk_usage(directory: Path) -> int:
    """Bytes of disk blocks used below ``directory`` (``du -s``), not crossing mounts."""
    total = 0
    device = os.lstat(directory).st_dev
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if info.st_dev == device:
                total += info.st_blocks * 512
    return total
