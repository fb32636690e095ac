"""The node's image store: names → images, images → blobs and unpacked layers.

Layout under ``<data-dir>/images``::

    blobs/sha256/<hex>      content (ContentStore): indexes, manifests, configs, layers
    ingest/                 partial downloads and uploads
    layers/sha256/<hex>     each layer unpacked once, named by its diff_id, shared by images
    index.json              names and image records (written atomically)
    lock                    flock: the server, its registry and ``kubling image`` share the store

A *name* (``docker.io/library/nginx:latest``) points at a *target*: the manifest or index
digest a registry or archive gave (the repo digest). An *image* is identified as upstream
by its config digest (the image ID) and lists its layers. Blobs and layers are reference
counted by the images that use them: removing the last name of an image not in use
removes the image, then whatever no image references any more.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kubling.node.images import manifest as mf
from kubling.node.images.content import BlobNotFound, ContentStore, DigestError, check_digest
from kubling.node.images.layers import LayerError, unpack_layer
from kubling.node.images.reference import InvalidReference, is_digest, parse_reference

#: Blobs younger than this are never swept: an upload or pull may be about to use them.
BLOB_GRACE_SECONDS = 600.0


class ImageError(Exception):
    """An image that cannot be stored or used; the message is for users."""


class ImageNotFound(ImageError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "image not found"


@dataclass(frozen=True)
class Layer:
    digest: str
    diff_id: str
    size: int
    media_type: str


@dataclass
class Image:
    id: str  # config digest — upstream's image ID
    manifest: str  # the platform manifest's digest
    layers: list[Layer]
    size: int  # config + compressed layers, as `kubectl describe node` counts
    created: float
    last_used: float
    names: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)  # name@digest of each target

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "layers": [
                {
                    "digest": la.digest,
                    "diffID": la.diff_id,
                    "size": la.size,
                    "mediaType": la.media_type,
                }
                for la in self.layers
            ],
            "size": self.size,
            "created": self.created,
            "lastUsed": self.last_used,
        }

    @classmethod
    def from_json(cls, image_id: str, raw: dict[str, Any]) -> Image:
        return cls(
            id=image_id,
            manifest=raw["manifest"],
            layers=[
                Layer(la["digest"], la["diffID"], int(la["size"]), la.get("mediaType", ""))
                for la in raw["layers"]
            ],
            size=int(raw["size"]),
            created=float(raw.get("created", 0)),
            last_used=float(raw.get("lastUsed", 0)),
        )


@dataclass
class _Index:
    names: dict[str, dict[str, str]] = field(default_factory=dict)  # name → {target, image}
    images: dict[str, dict[str, Any]] = field(default_factory=dict)


class ImageStore:
    def __init__(self, root: Path):
        self.root = root
        self.content = ContentStore(root)
        self.layers_dir = root / "layers" / "sha256"
        self.layers_dir.mkdir(parents=True, exist_ok=True)
        self._index_path = root / "index.json"
        self._lock_path = root / "lock"
        self._thread_lock = threading.RLock()

    # ---- locking and the index file -------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, self._lock_path.open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_index(self) -> _Index:
        """A fresh copy of the index (callers mutate it, then write it back locked)."""
        try:
            raw = orjson.loads(self._index_path.read_bytes())
        except FileNotFoundError:
            return _Index()
        return _Index(dict(raw.get("names", {})), dict(raw.get("images", {})))

    def _write_index(self, index: _Index) -> None:
        tmp = self._index_path.with_name(f".index.{os.getpid()}.{threading.get_ident()}")
        data = orjson.dumps(
            {"names": index.names, "images": index.images}, option=orjson.OPT_SORT_KEYS
        )
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._index_path)

    # ---- adding images ----------------------------------------------------------------

    def resolve_target(self, target: str) -> tuple[str, mf.Manifest]:
        """The platform manifest a target (manifest or index digest) stands for on this host."""
        doc = mf.parse(self.content.read(target))
        if isinstance(doc, mf.Index):
            entry = mf.select_platform(doc)
            manifest_digest = entry.digest
            inner = mf.parse(self.content.read(manifest_digest), entry.media_type or None)
            if not isinstance(inner, mf.Manifest):
                raise mf.ManifestError(f"index entry {manifest_digest} is not an image manifest")
            return manifest_digest, inner
        return target, doc

    def _image_record(self, target: str) -> Image:
        try:
            manifest_digest, manifest = self.resolve_target(target)
            config = mf.parse_config(self.content.read(manifest.config.digest))
        except BlobNotFound as exc:
            raise ImageError(
                f"image {target} is incomplete: blob {exc.args[0]} is missing"
            ) from None
        except (mf.ManifestError, DigestError) as exc:
            raise ImageError(str(exc)) from None
        if len(config.diff_ids) != len(manifest.layers):
            raise ImageError(
                f"image {target}: the config lists {len(config.diff_ids)} layers, "
                f"the manifest {len(manifest.layers)}"
            )
        layers = []
        for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
            try:
                check_digest(desc.digest)
                check_digest(diff_id)
            except DigestError as exc:
                raise ImageError(f"image {target}: {exc}") from None
            if not self.content.has(desc.digest):
                raise ImageError(f"image {target} is incomplete: layer {desc.digest} is missing")
            layers.append(Layer(desc.digest, diff_id, desc.size, desc.media_type))
        now = time.time()
        size = manifest.config.size + sum(la.size for la in layers)
        return Image(manifest.config.digest, manifest_digest, layers, size, now, now)

    def add(self, target: str, names: Iterable[str], *, unpack: bool = True) -> Image:
        """Record the image behind ``target`` (whose blobs are all in the content store)
        under ``names`` and, by default, unpack its layers now — a pull is finished only
        when the image can start at once."""
        check_digest(target)
        image = self._image_record(target)
        if unpack:
            self.unpack(image)
        canonical = [str(parse_reference(n)) for n in names]
        with self._locked():
            index = self._read_index()
            old = index.images.get(image.id)
            if old is not None:
                image.created = float(old.get("created", image.created))
            index.images[image.id] = image.to_json()
            for name in canonical:
                index.names[name] = {"target": target, "image": image.id}
            self._write_index(index)
        found = self.get(image.id)
        assert found is not None
        return found

    def tag(self, name: str, target: str) -> Image | None:
        """Point ``name`` at ``target`` (used by the registry on a manifest push). When the
        target has no image for this host (another platform), the name is kept for the
        registry but no image is recorded; returns the image if there is one."""
        canonical = str(parse_reference(name))
        try:
            image = self._image_record(target)
        except ImageError:
            image = None
        with self._locked():
            index = self._read_index()
            if image is not None:
                index.images.setdefault(image.id, image.to_json())
            index.names[canonical] = {"target": target, "image": image.id if image else ""}
            self._write_index(index)
        return self.get(image.id) if image else None

    # ---- reading --------------------------------------------------------------------

    def _build(self, index: _Index, image_id: str) -> Image:
        image = Image.from_json(image_id, index.images[image_id])
        for name, entry in sorted(index.names.items()):
            if entry.get("image") == image_id:
                image.names.append(name)
                repo = parse_reference(name).name + "@" + entry["target"]
                if repo not in image.repo_digests:
                    image.repo_digests.append(repo)
        return image

    def images(self) -> list[Image]:
        with self._locked():
            index = self._read_index()
            return [self._build(index, image_id) for image_id in sorted(index.images)]

    def names(self) -> dict[str, str]:
        """Every name and its target digest (the registry's tags)."""
        with self._locked():
            return {n: e["target"] for n, e in self._read_index().names.items()}

    def get(self, ref: str) -> Image | None:
        """Find an image by name (normalised), ``name@digest``, image ID or ID prefix."""
        with self._locked():
            index = self._read_index()
            image_id = self._lookup(index, ref)
            return self._build(index, image_id) if image_id else None

    def _lookup(self, index: _Index, ref: str) -> str | None:
        if is_digest(ref):
            if ref in index.images:
                return ref
            for entry in index.names.values():
                if entry["target"] == ref and entry.get("image"):
                    return entry["image"]
            return None
        try:
            parsed = parse_reference(ref)
        except InvalidReference:
            parsed = None
        if parsed is not None:
            if parsed.digest:
                for name, entry in index.names.items():
                    if (
                        entry["target"] == parsed.digest
                        and parse_reference(name).name == parsed.name
                    ):
                        return entry.get("image") or None
                images = [i for i, rec in index.images.items() if rec["manifest"] == parsed.digest]
                return images[0] if images else None
            named = index.names.get(str(parsed))
            if named is not None:
                return named.get("image") or None
        prefix = ref.removeprefix("sha256:")
        if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
            hits = [i for i in index.images if i.removeprefix("sha256:").startswith(prefix)]
            if len(hits) == 1:
                return hits[0]
        return None

    # ---- layers -----------------------------------------------------------------------

    def layer_path(self, diff_id: str) -> Path:
        return self.layers_dir / check_digest(diff_id).removeprefix("sha256:")

    def unpack(self, image: Image) -> None:
        """Unpack the layers not unpacked yet; each is verified against its blob digest
        and its diff_id (the config's promise about the uncompressed content)."""
        for layer in image.layers:
            dest = self.layer_path(layer.diff_id)
            if dest.is_dir():
                continue
            try:
                self.content.verify(layer.digest)
                diff_id = unpack_layer(
                    self.content.path(layer.digest), dest, media_type=layer.media_type
                )
            except (DigestError, BlobNotFound) as exc:
                raise ImageError(f"layer {layer.digest}: {exc}") from None
            except LayerError as exc:
                if dest.is_dir():  # another unpacker won the race
                    continue
                raise ImageError(f"layer {layer.digest}: {exc}") from None
            if diff_id != layer.diff_id:
                shutil.rmtree(dest, ignore_errors=True)
                raise ImageError(
                    f"layer {layer.digest}: uncompressed digest {diff_id} does not match "
                    f"the config's diff_id {layer.diff_id}"
                )

    def layer_dirs(self, image: Image) -> list[Path]:
        """The image's unpacked layers, lowest first (unpacking any that are missing)."""
        self.unpack(image)
        return [self.layer_path(layer.diff_id) for layer in image.layers]

    def config(self, image: Image) -> mf.ImageConfig:
        return mf.parse_config(self.content.read(image.id))

    def mark_used(self, image_id: str) -> None:
        with self._locked():
            index = self._read_index()
            if image_id in index.images:
                index.images[image_id]["lastUsed"] = time.time()
                self._write_index(index)

    # ---- removing -----------------------------------------------------------------------

    def remove(self, ref: str, *, in_use: Iterable[str] = ()) -> list[str]:
        """Remove a name, or an image (by ID: all its names). Refuses an image a container
        uses. Returns the names removed."""
        busy = set(in_use)
        with self._locked():
            index = self._read_index()
            before = self._references(index)
            try:
                parsed = str(parse_reference(ref)) if not is_digest(ref) else None
            except InvalidReference:
                parsed = None
            if parsed is not None and parsed in index.names:
                image_id = index.names[parsed].get("image", "")
                doomed = [parsed]
            else:
                found = self._lookup(index, ref)
                if found is None:
                    raise ImageNotFound(f"image {ref!r} not found")
                image_id = found
                doomed = [n for n, e in index.names.items() if e.get("image") == image_id]
            remaining = [
                n for n, e in index.names.items() if e.get("image") == image_id and n not in doomed
            ]
            if image_id and not remaining and image_id in busy:
                raise ImageError(f"image {ref} is in use by a container and cannot be removed")
            for name in doomed:
                del index.names[name]
            if image_id and not remaining:
                index.images.pop(image_id, None)
            self._write_index(index)
            self._sweep(before, index)
        return doomed

    def prune(self, in_use: Iterable[str] = ()) -> list[Image]:
        """Remove every image no container uses (``kubling image prune``)."""
        busy = set(in_use)
        removed: list[Image] = []
        with self._locked():
            index = self._read_index()
            before = self._references(index)
            for image_id in sorted(index.images):
                if image_id in busy:
                    continue
                removed.append(self._build(index, image_id))
                del index.images[image_id]
                for name in [n for n, e in index.names.items() if e.get("image") == image_id]:
                    del index.names[name]
            self._write_index(index)
            self._sweep(before, index)
        return removed

    def disk_usage_percent(self) -> float:
        st = os.statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        return 100.0 * (total - free) / total if total else 0.0

    def garbage_collect(
        self,
        in_use: Iterable[str],
        *,
        high: float = 85.0,
        low: float = 80.0,
        usage: Any = None,
    ) -> list[Image]:
        """The kubelet's image GC: above ``high`` percent disk use, remove unused images,
        least recently used first, until use falls to ``low``. ``usage`` (a callable
        returning percent) is the measurement, the filesystem's by default."""
        measure = usage or self.disk_usage_percent
        if measure() <= high:
            return []
        busy = set(in_use)
        removed: list[Image] = []
        candidates = sorted(
            (img for img in self.images() if img.id not in busy), key=lambda i: i.last_used
        )
        for image in candidates:
            if measure() <= low:
                break
            with self._locked():
                index = self._read_index()
                if image.id not in index.images:
                    continue
                before = self._references(index)
                del index.images[image.id]
                for name in [n for n, e in index.names.items() if e.get("image") == image.id]:
                    del index.names[name]
                self._write_index(index)
                self._sweep(before, index)
            removed.append(image)
        return removed

    def _references(self, index: _Index) -> tuple[set[str], set[str]]:
        """The blobs and unpacked layers (diff_ids) that names and images reference."""
        blobs: set[str] = set()
        layers: set[str] = set()
        for entry in index.names.values():
            blobs.add(entry["target"])
            try:
                doc = mf.parse(self.content.read(entry["target"]))
            except (BlobNotFound, DigestError, mf.ManifestError):
                continue
            inner_docs: list[mf.Manifest | mf.Index] = [doc]
            if isinstance(doc, mf.Index):
                blobs.update(d.digest for d in doc.manifests)
                for d in doc.manifests:
                    try:
                        inner_docs.append(mf.parse(self.content.read(d.digest)))
                    except (BlobNotFound, DigestError, mf.ManifestError):
                        continue
            for inner in inner_docs:
                if isinstance(inner, mf.Manifest):
                    blobs.add(inner.config.digest)
                    blobs.update(la.digest for la in inner.layers)
        for image_id, raw in index.images.items():
            blobs.add(image_id)
            blobs.add(raw["manifest"])
            for la in raw["layers"]:
                blobs.add(la["digest"])
                layers.add(la["diffID"])
        return blobs, layers

    def _sweep(self, before: tuple[set[str], set[str]], index: _Index) -> None:
        """Delete what the change just unreferenced, and what nothing has referenced for
        longer than the grace period (abandoned uploads). Called locked. Fresh
        unreferenced blobs and layers are kept: a push or pull may be about to use them."""
        keep_blobs, keep_layers = self._references(index)
        cutoff = time.time() - BLOB_GRACE_SECONDS
        for digest in self.content.digests():
            if digest in keep_blobs:
                continue
            path = self.content.path(digest)
            try:
                if digest not in before[0] and path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            self.content.delete(digest)
        for layer_dir in self.layers_dir.iterdir():
            diff_id = "sha256:" + layer_dir.name
            if layer_dir.name.startswith(".") or diff_id in keep_layers:
                continue
            try:
                if diff_id not in before[1] and layer_dir.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            shutil.rmtree(layer_dir, ignore_errors=True)
