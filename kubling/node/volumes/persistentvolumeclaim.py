"""persistentVolumeClaim volumes, for claims bound to a PersistentVolume this node can
mount by itself: ``hostPath`` (with its type check) or ``local`` (the path must exist).

The claim must be ``Bound`` with ``spec.volumeName`` set; until it is, the pod waits and the
set-up fails with upstream's populator words (``error processing PVC ns/x: PVC is not
bound``), which the manager reports in upstream's "Unable to attach or mount volumes"
event. Once resolved the path is kept: a bound claim does not move. Tear-down leaves the
data alone. A ``local`` volume is given to the pod's ``fsGroup`` (``ownership``), as the
kubelet's local plugin does; a ``hostPath`` one is not, as upstream.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from kubling.api.meta import Object
from kubling.client import rest
from kubling.node.volumes import hostpath, ownership, plugin

CLAIMS = rest.lookup("v1", "persistentvolumeclaims")
VOLUMES = rest.lookup("v1", "persistentvolumes")


class ClaimError(plugin.VolumeError):
    """The claim is not usable yet (missing, unbound, an unsupported volume)."""


class PersistentVolumeClaimVolume:
    def __init__(self, volume: Object, pod_dir: Path, host: plugin.Host,
                 client: rest.Client) -> None:
        self.name: str = volume["name"]
        source = volume.get("persistentVolumeClaim") or {}
        self.claim = str(source.get("claimName") or "")
        self.read_only = bool(source.get("readOnly"))
        self._client = client
        self._path: str | None = None

    @property
    def host_path(self) -> Path:
        return Path(self._path or "/nonexistent")

    async def set_up(self, pod: Object) -> None:
        if self._path is not None:
            return
        namespace = pod["metadata"].get("namespace") or "default"
        where = f"error processing PVC {namespace}/{self.claim}"
        try:
            claim = await self._client.resource(CLAIMS).get(self.claim, namespace=namespace)
        except rest.ApiError as err:
            raise ClaimError(f"{where}: failed to fetch PVC from API server: "
                             f"{err.message}") from err
        if (claim.get("status") or {}).get("phase") != "Bound" or not (
                claim.get("spec") or {}).get("volumeName"):
            raise ClaimError(f"{where}: PVC is not bound")
        pv_name = claim["spec"]["volumeName"]
        try:
            pv = await self._client.resource(VOLUMES).get(pv_name)
        except rest.ApiError as err:
            raise ClaimError(f"{where}: failed to fetch PV {pv_name} from API server: "
                             f"{err.message}") from err
        spec = pv.get("spec") or {}
        if spec.get("hostPath"):
            path = str(spec["hostPath"].get("path") or "")
            await asyncio.to_thread(hostpath.check_type, path,
                                    str(spec["hostPath"].get("type") or ""))
        elif spec.get("local"):
            path = str(spec["local"].get("path") or "")
            if not await asyncio.to_thread(os.path.exists, path):
                raise plugin.VolumeError(f'path "{path}" does not exist')
            group = plugin.fs_group(pod)
            if group is not None and not self.read_only:
                policy = str(((pod.get("spec") or {}).get("securityContext") or {}).get(
                    "fsGroupChangePolicy") or "Always")
                await asyncio.to_thread(ownership.set_volume_ownership, Path(path), group,
                                        policy=policy)
        else:
            raise ClaimError(f"{where}: PersistentVolume {pv_name} is neither hostPath nor "
                             "local, the only kinds this node mounts")
        self._path = path

    async def tear_down(self) -> None:
        return None
