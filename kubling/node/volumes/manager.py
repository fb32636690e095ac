"""The kubelet's volume manager, reduced to what one node agent needs.

``VolumeManager`` (one per agent) holds what volumes share — the watch-based cache of
configMaps and secrets, the token manager, the node's allocatable resources — and hands
each pod worker a ``PodVolumes``. The worker calls ``PodVolumes.set_up`` on every sync:

- it (re-)registers every configMap and secret the pod references (volumes, projected
  sources, ``env`` and ``envFrom``) with the cache, whose watches wake the worker when one
  changes — this is how an update reaches a running pod within a second;
- it sets up or refreshes each volume, and returns upstream's ``FailedMount`` event
  messages for those that failed;
- ``ready`` says whether every volume was set up at least once: until then no container of
  the pod starts (they wait in ``ContainerCreating``). A volume that fails a later refresh
  keeps its last content, as upstream does.

``tear_down`` runs when the pod is removed, after its containers are gone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from kubling.api.meta import Object
from kubling.client import rest
from kubling.node.volumes import (
    configmap,
    downwardapi,
    emptydir,
    hostpath,
    persistentvolumeclaim,
    plugin,
    projected,
    secret,
    sources,
    tokens,
)

log = logging.getLogger("kubling.node.volumes")

#: How often disk emptyDir usage is measured against sizeLimit (the eviction manager's
#: housekeeping interval).
USAGE_PERIOD = 10.0

_KINDS: dict[str, Callable[[Object, Path, plugin.Host], plugin.Volume]] = {
    "emptyDir": emptydir.EmptyDirVolume,
    "configMap": configmap.ConfigMapVolume,
    "secret": secret.SecretVolume,
    "downwardAPI": downwardapi.DownwardAPIVolume,
    "projected": projected.ProjectedVolume,
    "hostPath": hostpath.HostPathVolume,
}


@dataclasses.dataclass(frozen=True)
class Mounted:
    """A volume ready for containers: where to bind it from, and whether only read-only."""

    host_path: Path
    read_only: bool


class VolumeManager:
    def __init__(self, client: rest.Client, *, allocatable: Mapping[str, str],
                 objects: sources.ObjectCache | None = None) -> None:
        self.client = client
        self.objects = objects or sources.ObjectCache(client)
        self.tokens = tokens.TokenManager(client)
        self.host = plugin.Host(objects=self.objects, tokens=self.tokens,
                                allocatable=dict(allocatable))

    def for_pod(self, uid: str, pod_dir: Path, *, wake: Callable[[], None]) -> PodVolumes:
        return PodVolumes(self, uid, pod_dir, wake)

    async def close(self) -> None:
        await self.objects.close()


class PodVolumes:
    """One pod's volumes, owned by its worker (never used by two tasks at once)."""

    def __init__(self, manager: VolumeManager, uid: str, pod_dir: Path,
                 wake: Callable[[], None]) -> None:
        self._manager = manager
        self._uid = uid
        self._pod_dir = pod_dir
        self._wake = wake
        self._volumes: dict[str, plugin.Volume] = {}
        self._ready: set[str] = set()
        self._names: list[str] = []
        self._measured = 0.0

    @property
    def ready(self) -> bool:
        return all(name in self._ready for name in self._names)

    def mounted(self) -> dict[str, Mounted]:
        return {name: Mounted(volume.host_path, volume.read_only)
                for name, volume in self._volumes.items() if name in self._ready}

    async def set_up(self, pod: Object) -> list[str]:
        """Set up or refresh every volume; the FailedMount messages of those that failed."""
        self._manager.objects.register(self._uid, referenced(pod), self._wake)
        specs = (pod.get("spec") or {}).get("volumes") or []
        self._names = [v["name"] for v in specs]
        failures: list[str] = []
        for spec in specs:
            if spec["name"] not in self._volumes:
                volume = self._new(spec)
                if volume is None:
                    failures.append(f"Unable to attach or mount volumes: unmounted volumes=["
                                    f"{spec['name']}], unattached volumes=[], failed to process"
                                    f" volumes=[{spec['name']}]: failed to get Plugin from "
                                    f'volumeSpec for volume "{spec["name"]}" err=no volume '
                                    "plugin matched")
                    continue
                self._volumes[spec["name"]] = volume
        results = await asyncio.gather(*(self._set_up_one(v, pod)
                                         for v in self._volumes.values()))
        failures += [message for message in results if message]
        return failures

    async def _set_up_one(self, volume: plugin.Volume, pod: Object) -> str:
        try:
            await volume.set_up(pod)
        except persistentvolumeclaim.ClaimError as err:
            return (f"Unable to attach or mount volumes: unmounted volumes=[{volume.name}], "
                    f"unattached volumes=[{volume.name}], failed to process volumes="
                    f"[{volume.name}]: {err}")
        except plugin.VolumeError as err:
            return f'MountVolume.SetUp failed for volume "{volume.name}" : {err}'
        self._ready.add(volume.name)
        return ""

    def _new(self, spec: Object) -> plugin.Volume | None:
        if spec.get("persistentVolumeClaim") is not None:
            return persistentvolumeclaim.PersistentVolumeClaimVolume(
                spec, self._pod_dir, self._manager.host, self._manager.client)
        for kind, factory in _KINDS.items():
            if spec.get(kind) is not None:
                return factory(spec, self._pod_dir, self._manager.host)
        return None

    async def exceeded_limit(self) -> str:
        """The eviction message of a disk emptyDir over its ``sizeLimit`` ("" when none
        is), measured at most every ``USAGE_PERIOD`` seconds (the eviction manager's
        monitoring interval)."""
        now = time.monotonic()
        limited = [v for v in self._volumes.values()
                   if isinstance(v, emptydir.EmptyDirVolume) and v.size_limit is not None]
        if not limited or now - self._measured < USAGE_PERIOD:
            return ""
        self._measured = now
        for volume in limited:
            message = await asyncio.to_thread(volume.exceeded)
            if message:
                return message
        return ""

    async def tear_down(self) -> None:
        """Unmount and remove every volume directory; stop watching for this pod."""
        self._manager.objects.unregister(self._uid)
        self._manager.tokens.forget_pod(self._uid)
        for volume in self._volumes.values():
            try:
                await volume.tear_down()
            except Exception as err:  # the sandbox removal retries whatever is left
                log.warning("pod %s: tearing down volume %s: %s", self._uid, volume.name, err)
        self._volumes.clear()
        self._ready.clear()


def referenced(pod: Object) -> set[sources.Ref]:
    """Every configMap and secret the pod refers to (upstream's getPodConfigMapNames and
    getPodSecretNames): what the node may read, and what its worker watches."""
    namespace = pod["metadata"].get("namespace") or "default"
    refs: set[sources.Ref] = set()
    for kind, name in _named_sources(pod.get("spec") or {}):
        if name:
            refs.add(sources.Ref(kind, namespace, name))
    return refs


def _named_sources(spec: Object) -> Iterator[tuple[str, str]]:
    for volume in spec.get("volumes") or []:
        if volume.get("configMap") is not None:
            yield "configmap", volume["configMap"].get("name", "")
        if volume.get("secret") is not None:
            yield "secret", volume["secret"].get("secretName", "")
        for source in (volume.get("projected") or {}).get("sources") or []:
            if source.get("configMap") is not None:
                yield "configmap", source["configMap"].get("name", "")
            if source.get("secret") is not None:
                yield "secret", source["secret"].get("name", "")
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            for env in container.get("env") or []:
                value_from = env.get("valueFrom") or {}
                if value_from.get("configMapKeyRef"):
                    yield "configmap", value_from["configMapKeyRef"].get("name", "")
                if value_from.get("secretKeyRef"):
                    yield "secret", value_from["secretKeyRef"].get("name", "")
            for env_from in container.get("envFrom") or []:
                if env_from.get("configMapRef"):
                    yield "configmap", env_from["configMapRef"].get("name", "")
                if env_from.get("secretRef"):
                    yield "secret", env_from["secretRef"].get("name", "")
