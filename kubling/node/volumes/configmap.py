"""configMap volumes: the keys of a ConfigMap as files (all of them, or ``items`` mapped to
paths), with ``defaultMode`` or each item's ``mode``, on disk (a configMap is not secret).

A missing ConfigMap fails the set-up with upstream's ``configmap "x" not found`` unless the
volume is ``optional``, in which case the directory is made empty; a missing key named in
``items`` fails likewise unless optional. The payload function is shared with projected
volumes, which is why it takes the source rather than the volume.
"""

from __future__ import annotations

import base64
from pathlib import Path

from kubling.api.meta import Object
from kubling.node.volumes import atomicwriter, plugin, sources


class ConfigMapVolume(plugin.FileVolume):
    def __init__(self, volume: Object, pod_dir: Path, host: plugin.Host) -> None:
        super().__init__("configMap", volume, pod_dir, host)

    async def payload(self, pod: Object) -> atomicwriter.Payload:
        return await configmap_payload(self.source, pod, self.host,
                                       default_mode=self.source.get("defaultMode"))


async def configmap_payload(source: Object, pod: Object, host: plugin.Host, *,
                            default_mode: object) -> dict[str, atomicwriter.FileProjection]:
    """The files a configMap source projects (volume or projected source)."""
    obj = await fetch("configmap", source, pod, host)
    if obj is None:
        return {}
    data: dict[str, bytes] = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value)
    return project(data, source, default_mode=default_mode,
                   missing="configmap references non-existent config key: {key}")


async def fetch(kind: str, source: Object, pod: Object, host: plugin.Host) -> Object | None:
    """The ConfigMap or Secret ``source["name"]`` in the pod's namespace; None when it is
    absent and the source is optional, VolumeError when it is absent otherwise."""
    namespace = pod["metadata"].get("namespace") or "default"
    try:
        return await host.objects.get(sources.Ref(kind, namespace, source.get("name", "")))
    except sources.SourceNotFound as err:
        if source.get("optional"):
            return None
        raise plugin.VolumeError(str(err)) from err
    except sources.SourceUnavailable as err:
        raise plugin.VolumeError(str(err)) from err


def project(data: dict[str, bytes], source: Object, *, default_mode: object,
            missing: str, owner: int | None = None) -> dict[str, atomicwriter.FileProjection]:
    """Keys to files: every key under its own name, or only ``items`` (key → path, mode);
    a missing item key raises VolumeError with ``missing`` unless the source is optional."""
    items = source.get("items")
    if not items:
        mode = plugin.file_mode({}, default_mode)
        return {key: atomicwriter.FileProjection(value, mode, owner)
                for key, value in data.items()}
    out: dict[str, atomicwriter.FileProjection] = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if source.get("optional"):
                continue
            raise plugin.VolumeError(missing.format(key=key))
        out[item.get("path") or key] = atomicwriter.FileProjection(
            data[key], plugin.file_mode(item, default_mode), owner)
    return out
