"""Getting a container's image onto the node, as the kubelet's image manager does.

``imagePullPolicy`` decides (the API server has defaulted it: Always for ``:latest`` and
untagged images, IfNotPresent otherwise): Never uses only the store, IfNotPresent pulls
when the store lacks the image, Always asks the registry every time (a pull whose blobs are
all present costs one manifest request). A failure becomes the container's waiting reason
(ErrImagePull, then ImagePullBackOff while the back-off lasts; InvalidImageName;
ErrImageNeverPull) and the same Events as upstream.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from kubling.api.meta import Object
from kubling.client import events, rest
from kubling.node.backoff import Backoff
from kubling.node.images import credentials, pull, reference, registries
from kubling.node.images.manifest import ImageConfig
from kubling.node.images.store import Image, ImageStore

log = logging.getLogger("kubling.node.images")

SECRETS = rest.lookup("v1", "secrets")


class ImagePullFailure(Exception):
    """The container cannot have its image: ``reason`` is its waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ContainerImage:
    """An image ready for a container: the store record, its config, and the imageID the
    pod status shows (``docker.io/library/busybox@sha256:<manifest digest>``)."""

    image: Image
    config: ImageConfig
    image_ref: str


class ImageManager:
    def __init__(self, *, store: ImageStore, client: rest.Client, data_dir: Path,
                 recorder: events.EventRecorder,
                 on_pulled: Callable[[], None] | None = None) -> None:
        self.store = store
        self.on_pulled = on_pulled
        self.secrets = client.resource(SECRETS)
        self.registries_path = data_dir / "registries.yaml"
        self.recorder = recorder
        self.backoff = Backoff()

    async def ensure(self, pod: Object, container: Object) -> ContainerImage:
        """The container's image per its pull policy, pulling when needed. Raises
        ImagePullFailure; Events are recorded here."""
        text = str(container.get("image") or "")
        try:
            ref = reference.parse_reference(text)
        except reference.InvalidReference as err:
            message = f'Failed to apply default image tag "{text}": {err}'
            self.recorder.record(pod, events.WARNING, "InspectFailed", message)
            raise ImagePullFailure("InvalidImageName", message) from None
        policy = container.get("imagePullPolicy") or ("Always" if ref.is_latest
                                                       else "IfNotPresent")
        present = await asyncio.to_thread(self.store.get, str(ref))
        if policy == "Never" or (policy == "IfNotPresent" and present is not None):
            if present is None:
                message = f'Container image "{text}" is not present with pull policy of Never'
                self.recorder.record(pod, events.WARNING, "ErrImageNeverPull", message)
                raise ImagePullFailure("ErrImageNeverPull", message)
            self.recorder.record(pod, events.NORMAL, "Pulled",
                                 f'Container image "{text}" already present on machine')
            return await self._ready(present)
        key = f"{pod['metadata']['uid']}/{container.get('name')}/{text}"
        if self.backoff.remaining(key) > 0:
            message = f'Back-off pulling image "{text}"'
            self.recorder.record(pod, events.NORMAL, "BackOff", message)
            raise ImagePullFailure("ImagePullBackOff", message)
        self.recorder.record(pod, events.NORMAL, "Pulling", f'Pulling image "{text}"')
        try:
            result = await pull.pull_image(
                self.store, text,
                registries=await asyncio.to_thread(registries.load_registries,
                                                   self.registries_path),
                credentials=(await self._keyring(pod)).lookup(ref))
        except (pull.PullError, registries.RegistryConfigError) as err:
            self.backoff.next(key)
            reason = getattr(err, "reason", "ErrImagePull")
            reason = "InvalidImageName" if reason == "InvalidImageName" else "ErrImagePull"
            event = err.event_message if isinstance(err, pull.PullError) else str(err)
            self.recorder.record(pod, events.WARNING, "Failed", event)
            self.recorder.record(pod, events.WARNING, "Failed", f"Error: {reason}")
            raise ImagePullFailure(reason, str(err)) from None
        self.backoff.forget(key)
        if self.on_pulled is not None:
            self.on_pulled()
        self.recorder.record(
            pod, events.NORMAL, "Pulled",
            f'Successfully pulled image "{text}" in {result.seconds:.3f}s '
            f"({result.seconds:.3f}s including waiting). Image size: {result.size} bytes.")
        return await self._ready(result.image)

    async def _ready(self, image: Image) -> ContainerImage:
        config = await asyncio.to_thread(self.store.config, image)
        image_ref = image.repo_digests[0] if image.repo_digests else image.id
        return ContainerImage(image, config, image_ref)

    async def _keyring(self, pod: Object) -> credentials.Keyring:
        """The pod's imagePullSecrets as a keyring; a missing secret is skipped, as the
        kubelet skips it (the pull may still work anonymously)."""
        namespace = pod["metadata"].get("namespace") or "default"
        found: list[dict[str, bytes | str]] = []
        for entry in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            name = entry.get("name")
            if not name:
                continue
            try:
                secret = await self.secrets.get(name, namespace=namespace)
            except rest.ApiError as err:
                log.info("pod %s/%s: image pull secret %s: %s", namespace,
                         pod["metadata"]["name"], name, err)
                continue
            found.append({k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()})
        return credentials.Keyring.from_secrets(found)
