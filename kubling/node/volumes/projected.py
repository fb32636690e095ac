"""projected volumes: configMap, secret, downwardAPI and serviceAccountToken sources merged
into one directory, on a tmpfs (it may hold secrets and tokens).

This is how every pod reaches the API: the API server adds upstream's
``kube-api-access-<suffix>`` volume (a token, the ``kube-root-ca.crt`` ConfigMap's
``ca.crt``, the namespace from the downward API) mounted at
``/var/run/secrets/kubernetes.io/serviceaccount``. Tokens come from the agent's
``TokenManager`` and are replaced on disk when it renews them.
"""

from __future__ import annotations

from pathlib import Path

from kubling.api.meta import Object
from kubling.node.volumes import atomicwriter, configmap, downwardapi, plugin, secret, tokens

DEFAULT_TOKEN_SECONDS = 3600


class ProjectedVolume(plugin.FileVolume):
    memory = True

    def __init__(self, volume: Object, pod_dir: Path, host: plugin.Host) -> None:
        super().__init__("projected", volume, pod_dir, host)

    async def payload(self, pod: Object) -> atomicwriter.Payload:
        mode = self.source.get("defaultMode")
        out: dict[str, atomicwriter.FileProjection] = {}
        for source in self.source.get("sources") or []:
            if source.get("configMap") is not None:
                out.update(await configmap.configmap_payload(
                    source["configMap"], pod, self.host, default_mode=mode))
            elif source.get("secret") is not None:
                out.update(await secret.secret_payload(
                    source["secret"], pod, self.host, default_mode=mode))
            elif source.get("downwardAPI") is not None:
                out.update(downwardapi.items_payload(
                    source["downwardAPI"].get("items") or [], pod, self.host,
                    default_mode=mode))
            elif source.get("serviceAccountToken") is not None:
                out.update(await self._token(source["serviceAccountToken"], pod))
        return out

    async def _token(self, source: Object, pod: Object) -> dict[str,
                                                               atomicwriter.FileProjection]:
        try:
            token = await self.host.tokens.get(
                pod, audience=str(source.get("audience") or ""),
                expiration_seconds=int(source.get("expirationSeconds")
                                       or DEFAULT_TOKEN_SECONDS))
        except tokens.TokenError as err:
            raise plugin.VolumeError(str(err)) from err
        mode = plugin.file_mode({}, self.source.get("defaultMode"))
        owner = plugin.fs_user(pod)
        if owner is not None:
            mode = 0o600
        return {source.get("path") or "token": atomicwriter.FileProjection(
            token.value.encode(), mode, owner)}
