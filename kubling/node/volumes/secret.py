"""secret volumes: as configMap volumes, but the keys are base64 in ``data`` and the files
live on a tmpfs, so a secret never reaches the node's disk (upstream's rule)."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from kubling.api.meta import Object
from kubling.node.volumes import atomicwriter, configmap, plugin


class SecretVolume(plugin.FileVolume):
    memory = True

    def __init__(self, volume: Object, pod_dir: Path, host: plugin.Host) -> None:
        super().__init__("secret", volume, pod_dir, host)

    async def payload(self, pod: Object) -> atomicwriter.Payload:
        source = dict(self.source)
        source["name"] = source.get("secretName", "")
        return await secret_payload(source, pod, self.host,
                                    default_mode=source.get("defaultMode"))


async def secret_payload(source: Object, pod: Object, host: plugin.Host, *,
                         default_mode: object) -> dict[str, atomicwriter.FileProjection]:
    """The files a secret source projects; ``source["name"]`` names the Secret."""
    obj = await configmap.fetch("secret", source, pod, host)
    if obj is None:
        return {}
    return configmap.project(secret_data(obj), source, default_mode=default_mode,
                             missing="references non-existent secret key: {key}")


def secret_data(obj: Object) -> dict[str, bytes]:
    """A Secret's ``data``, decoded (a value that is not base64 is taken as it is)."""
    out: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            out[key] = str(value).encode()
    return out
