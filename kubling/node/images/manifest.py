"""Manifests, indexes and image configs — the OCI image spec and Docker's schema 2, which
registries and archives still serve side by side.

Only what a runtime needs is kept: the layers in order, the config, the platform of each
index entry, and the config's process defaults (Entrypoint, Cmd, Env, ...).
"""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass, field
from typing import Any

import orjson

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
#: What a puller accepts, most wanted first (the Accept header of a manifest GET).
ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

#: Hard cap on a manifest or config document: registries refuse more than 4 MiB.
MAX_DOCUMENT = 4 * 1024 * 1024

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class ManifestError(ValueError):
    """A manifest, index or config that cannot be used; the message says why."""


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            out["platform"] = {"os": self.platform.os, "architecture": self.platform.architecture}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config a runtime and ``kubectl describe`` use."""

    os: str = "linux"
    architecture: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    stop_signal: str = ""
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    diff_ids: tuple[str, ...] = ()


def host_platform() -> Platform:
    machine = _platform.machine()
    return Platform("linux", _ARCH.get(machine, machine))


def _load(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_DOCUMENT:
        raise ManifestError(f"{what} is larger than {MAX_DOCUMENT} bytes")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return doc


def _descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ManifestError(f"{what}: descriptor is not an object")
    digest, size, media_type = raw.get("digest"), raw.get("size"), raw.get("mediaType", "")
    if not isinstance(digest, str) or ":" not in digest:
        raise ManifestError(f"{what}: descriptor without a valid digest")
    if not isinstance(size, int) or size < 0:
        raise ManifestError(f"{what}: descriptor {digest} without a valid size")
    plat = raw.get("platform")
    platform = None
    if isinstance(plat, dict):
        platform = Platform(
            str(plat.get("os", "")), str(plat.get("architecture", "")), str(plat.get("variant", ""))
        )
    annotations = raw.get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    return Descriptor(
        str(media_type), digest, size, platform, {str(k): str(v) for k, v in annotations.items()}
    )


def media_type_of(data: bytes, declared: str | None = None) -> str:
    """The document's media type: the declared one (a registry's Content-Type) when it is
    a manifest type, else the ``mediaType`` field, else guessed from the shape (OCI
    manifests may omit the field)."""
    if declared and declared.split(";")[0].strip() in MANIFEST_TYPES + INDEX_TYPES:
        return declared.split(";")[0].strip()
    doc = _load(data, "manifest")
    field_type = doc.get("mediaType")
    if isinstance(field_type, str) and field_type in MANIFEST_TYPES + INDEX_TYPES:
        return field_type
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    if doc.get("schemaVersion") == 1:
        raise ManifestError("Docker schema 1 manifests are not supported; push the image again")
    raise ManifestError(f"unsupported manifest media type {field_type or declared!r}")


def parse(data: bytes, declared: str | None = None) -> Manifest | Index:
    """Parse a manifest or an index."""
    media_type = media_type_of(data, declared)
    doc = _load(data, "manifest")
    if doc.get("schemaVersion") != 2:
        raise ManifestError("manifest schemaVersion must be 2")
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("index has no manifests list")
        return Index(media_type, tuple(_descriptor(e, "index") for e in entries))
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ManifestError("manifest has no layers list")
    return Manifest(
        media_type,
        _descriptor(doc.get("config"), "manifest config"),
        tuple(_descriptor(layer, "manifest layer") for layer in layers),
    )


def select_platform(index: Index, want: Platform | None = None) -> Descriptor:
    """The index entry for ``want`` (the host by default). Entries without a platform
    (attestations, unknown/unknown) never match."""
    want = want or host_platform()
    candidates = [
        d
        for d in index.manifests
        if d.platform is not None
        and d.platform.os == want.os
        and d.platform.architecture == want.architecture
        and d.media_type in (*MANIFEST_TYPES, "")
    ]
    if want.variant:
        exact = [d for d in candidates if d.platform and d.platform.variant == want.variant]
        candidates = exact or candidates
    if not candidates:
        have = sorted({str(d.platform) for d in index.manifests if d.platform})
        raise ManifestError(
            f"no image for {want} in the index (it has: {', '.join(have) or 'no platforms'})"
        )
    return candidates[0]


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ()


def parse_config(data: bytes) -> ImageConfig:
    doc = _load(data, "image config")
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        cfg = {}
    rootfs = doc.get("rootfs") or {}
    diff_ids = _strings(rootfs.get("diff_ids")) if isinstance(rootfs, dict) else ()
    ports = cfg.get("ExposedPorts") or {}
    labels = cfg.get("Labels") or {}
    return ImageConfig(
        os=str(doc.get("os", "linux")),
        architecture=str(doc.get("architecture", "")),
        entrypoint=_strings(cfg.get("Entrypoint")),
        cmd=_strings(cfg.get("Cmd")),
        env=_strings(cfg.get("Env")),
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        exposed_ports=tuple(sorted(ports)) if isinstance(ports, dict) else (),
        stop_signal=str(cfg.get("StopSignal") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        diff_ids=diff_ids,
    )
