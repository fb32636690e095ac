"""Small images made on the fly for the image-store tests: OCI layouts (the format
``skopeo`` reads as ``oci:DIR:NAME``) with chosen files, compressions and platforms."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from kubling.node.images import manifest as mf

Files = dict[str, bytes | str | None]  # path → content; str = symlink target "->x"; None = dir


def _tar(files: Files) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            content = files[name]
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type = tarfile.SYMTYPE
                info.linkname = content
                tar.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o755 if name.startswith(("bin/", "usr/bin/")) else 0o644
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Built:
    manifest_digest: str  # the manifest, or the index for multi-platform images
    config_digest: str
    layer_digests: list[str]
    diff_ids: list[str]


class Layout:
    """An OCI image layout directory that tests fill with images."""

    def __init__(self, root: Path):
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.index: list[dict[str, Any]] = []
        self._write_index()

    def blob(self, data: bytes) -> str:
        d = digest(data)
        (self.root / "blobs" / "sha256" / d.removeprefix("sha256:")).write_bytes(data)
        return d

    def _write_index(self) -> None:
        doc = {
            "schemaVersion": 2,
            "mediaType": mf.OCI_INDEX,
            "manifests": self.index,
        }
        (self.root / "index.json").write_text(json.dumps(doc))

    def image(
        self,
        name: str | None,
        layers: list[Files],
        *,
        compression: str = "gzip",
        docker: bool = False,
        architecture: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Built:
        """One single-platform image; ``name`` (e.g. ``app:v1``) tags it in index.json."""
        arch = architecture or mf.host_platform().architecture
        layer_descs, diff_ids, layer_digests = [], [], []
        for files in layers:
            raw = _tar(files)
            diff_ids.append(digest(raw))
            if compression == "gzip":
                blob = gzip.compress(raw, mtime=0)
                media = (
                    "application/vnd.docker.image.rootfs.diff.tar.gzip"
                    if docker
                    else "application/vnd.oci.image.layer.v1.tar+gzip"
                )
            elif compression == "zstd":
                blob = zstandard.ZstdCompressor().compress(raw)
                media = "application/vnd.oci.image.layer.v1.tar+zstd"
            else:
                blob = raw
                media = "application/vnd.oci.image.layer.v1.tar"
            d = self.blob(blob)
            layer_digests.append(d)
            layer_descs.append({"mediaType": media, "digest": d, "size": len(blob)})
        cfg = {
            "architecture": arch,
            "os": "linux",
            "config": config or {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        cfg_bytes = json.dumps(cfg).encode()
        cfg_digest = self.blob(cfg_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mf.DOCKER_MANIFEST if docker else mf.OCI_MANIFEST,
            "config": {
                "mediaType": mf.DOCKER_CONFIG if docker else mf.OCI_CONFIG,
                "digest": cfg_digest,
                "size": len(cfg_bytes),
            },
            "layers": layer_descs,
        }
        m_bytes = json.dumps(manifest).encode()
        m_digest = self.blob(m_bytes)
        entry: dict[str, Any] = {
            "mediaType": manifest["mediaType"],
            "digest": m_digest,
            "size": len(m_bytes),
            "platform": {"os": "linux", "architecture": arch},
        }
        if name:
            entry["annotations"] = {"org.opencontainers.image.ref.name": name}
            self.index = [e for e in self.index if e.get("annotations") != entry["annotations"]]
            self.index.append(entry)
            self._write_index()
        self.last_manifest_entry = entry
        return Built(m_digest, cfg_digest, layer_digests, diff_ids)

    def multi_platform(self, name: str, per_arch: dict[str, list[Files]]) -> Built:
        """An index over one image per architecture (the host's among them, or not)."""
        entries, built = [], []
        for arch, layers in per_arch.items():
            b = self.image(None, layers, architecture=arch)
            entries.append(self.last_manifest_entry)
            built.append((arch, b))
        idx = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": entries}
        idx_bytes = json.dumps(idx).encode()
        idx_digest = self.blob(idx_bytes)
        self.index.append(
            {
                "mediaType": mf.OCI_INDEX,
                "digest": idx_digest,
                "size": len(idx_bytes),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }
        )
        self._write_index()
        host = dict(built).get(mf.host_platform().architecture) or built[0][1]
        return Built(idx_digest, host.config_digest, host.layer_digests, host.diff_ids)


BUSYBOXISH: Files = {
    "bin/": None,
    "bin/sh": b"#!fake shell\n",
    "etc/": None,
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "etc/motd": "passwd",
}
