"""Air-gap import: images from archive files into the node's store, without a registry.

Two archive formats are read, plain or compressed (gzip, zstd, bzip2 or xz, told apart by
their first bytes, never by the file name):

* an OCI image layout in a tar (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``):
  what ``skopeo copy ... oci-archive:``, ``k3s ctr images export``, buildkit's
  ``--output type=oci`` and Docker 25+'s ``docker save`` write;
* a classic ``docker save`` tar (``manifest.json`` listing each image's config file, its
  ``RepoTags`` and its layer tars), as Docker before 25, podman and ``skopeo copy ...
  docker-archive:`` write. Such an image has no manifest: one is synthesised (Docker schema
  2) over the config and the layer tars, stored as they are.

An archive is read once, front to back, as a stream: every blob goes straight into the
content store, hashed on the way and checked against the digest its name promises, so a
compressed archive of any size is neither held in memory nor decompressed to a temporary
file. ``index.json`` and ``manifest.json`` may come anywhere in the tar (skopeo writes
``index.json`` after the blobs); they are small and kept in memory until the end. Nothing
in the archive is ever written to disk under its own name: member names only select what
to read, and a name that is absolute or climbs with ``..`` condemns the whole archive.

Images are then recorded one by one (``ImageStore.add``, which unpacks and verifies the
layers). One image that cannot be imported (another platform, a corrupted blob, an unsafe
layer) does not stop the others; the failures are raised together at the end as one
:class:`ArchiveError` that also carries the images that were imported. Blobs of a failed
image stay unreferenced in the store, where the store's sweep removes them after its grace
period.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import logging
import lzma
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import zstandard

from kubling.node.images import manifest as mf
from kubling.node.images.content import DigestError
from kubling.node.images.reference import InvalidReference, parse_reference
from kubling.node.images.store import Image, ImageError, ImageStore

__all__ = ["ArchiveError", "import_archive", "import_directory"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

#: The containerd annotation with the full image name (``ctr export``, Docker 25+).
CONTAINERD_NAME = "io.containerd.image.name"
#: The OCI annotation: a full reference for skopeo and buildkit, only a tag for some tools.
OCI_REF_NAME = "org.opencontainers.image.ref.name"

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

STATE_FILE = ".imported.json"

_CHUNK = 1024 * 1024
_ZSTD_INPUT_STEP = 4096  # compressed bytes per zstd call: bounds one call's output
_MAX_DOCUMENT = 16 * 1024 * 1024  # index.json / manifest.json of an archive of many images
_MAX_LINK_HOPS = 16
_DOCUMENTS = frozenset({"index.json", "manifest.json", "oci-layout"})
_SKIPPED = frozenset({"repositories"})  # docker save's legacy name → layer-id map
_LEGACY_METADATA = frozenset({"json", "VERSION"})  # docker save's <layer-id>/ files
_BLOB_PATH = re.compile(r"^blobs/sha256/([a-f0-9]{64})$")

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"

# Errors a decompressor or the file raises on damaged or cut-short input.
_READ_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    zstandard.ZstdError,
)


class ArchiveError(Exception):
    """An archive, or some images in it, that could not be imported. The message names the
    file and says what is wrong and what to do. ``images`` are those imported anyway (the
    archive's other images); ``errors`` has one line per image that failed."""

    def __init__(
        self, message: str, *, images: list[Image] | None = None, errors: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.images: list[Image] = images or []
        self.errors: list[str] = errors or []


class _Damaged(Exception):
    """The archive's compression or tar structure is broken (truncated, or corrupt)."""


class _NotTar(Exception):
    """The (decompressed) file does not start with a tar header."""


# ---- public API -------------------------------------------------------------------------


def import_archive(
    store: ImageStore, path: Path, *, progress: Progress | None = None
) -> list[Image]:
    """Import every image in the archive ``path`` into ``store``; returns the images added.

    Raises ArchiveError when the archive cannot be read at all, or when some of its images
    could not be imported (then ``err.images`` holds the ones that were)."""
    say = progress or _quiet
    say(f"importing {path.name}")
    try:
        contents = _read(path, store)
        entries = _entries(contents)
    except ArchiveError as exc:
        raise ArchiveError(f"{path}: {exc}") from None
    return _import_entries(store, path, contents, entries, say)


def import_directory(
    store: ImageStore, directory: Path, *, progress: Progress | None = None
) -> list[Image]:
    """Import every archive in ``directory`` in name order, as k3s does with
    ``agent/images``. Files already imported and unchanged since (same size and mtime, kept
    in ``.imported.json``) are skipped, so a restart costs a ``stat`` per file. A bad file is
    logged and retried at the next start; it never stops the others. Returns the images
    added by this call."""
    if not directory.is_dir():
        return []
    state_path = directory / STATE_FILE
    state = _load_state(state_path)
    files = _archives_in(directory)
    added: list[Image] = []
    for file in files:
        try:
            stamp = _stamp(file)
        except OSError:
            continue  # removed meanwhile
        if state.get(file.name) == stamp:
            continue
        state.pop(file.name, None)
        try:
            images = import_archive(store, file, progress=progress)
        except ArchiveError as exc:
            added.extend(exc.images)
            log.error("%s (it will be tried again at the next start)", exc)
            continue
        except Exception:  # a bug or an unexpected OS error: still only this file fails
            log.exception("importing %s failed (it will be tried again at the next start)", file)
            continue
        added.extend(images)
        state[file.name] = stamp
        _save_state(state_path, state)  # after each file: a crash loses no finished work
    present = {f.name for f in files}
    if any(name not in present for name in state):
        _save_state(state_path, {n: s for n, s in state.items() if n in present})
    return added


# ---- one pass over the archive ----------------------------------------------------------


@dataclass
class _Contents:
    """What the pass over an archive found."""

    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path → (digest, size)
    links: dict[str, str] = field(default_factory=dict)  # path → the member path it names
    documents: dict[str, bytes] = field(default_factory=dict)  # index.json, manifest.json
    corrupt: dict[str, str] = field(default_factory=dict)  # path → the digest it claimed

    def lookup(self, path: str) -> tuple[str, int] | None:
        """The blob a member path holds, through symbolic and hard links (``docker save``
        links ``<id>/layer.tar`` to the one copy of a shared layer)."""
        for _ in range(_MAX_LINK_HOPS):
            if path in self.files:
                return self.files[path]
            if path not in self.links:
                return None
            path = self.links[path]
        return None

    def corrupt_digest(self, path: str) -> str | None:
        for _ in range(_MAX_LINK_HOPS):
            if path in self.corrupt:
                return self.corrupt[path]
            path = self.links.get(path, "")
        return None


def _read(path: Path, store: ImageStore) -> _Contents:
    """Stream the archive into the content store."""
    try:
        with path.open("rb") as raw, _decompressed(raw) as source:
            return _read_tar(store, source)
    except (_Damaged, tarfile.TarError) as exc:
        raise ArchiveError(
            f"the file is truncated or corrupt ({exc}); copy or export it again"
        ) from None
    except _NotTar:
        raise ArchiveError(
            "not an image archive (expected a tar file, plain or compressed with gzip, zstd, "
            "bzip2 or xz)"
        ) from None
    except OSError as exc:  # reading the file or writing the store (disk full, ...)
        raise ArchiveError(f"cannot import it: {exc}") from None


def _read_tar(store: ImageStore, source: _Source) -> _Contents:
    contents = _Contents()
    with tarfile.open(fileobj=source, mode="r|", bufsize=_CHUNK, tarinfo=_StrictTarInfo) as tar:
        while (member := tar.next()) is not None:
            try:
                name = _member_path(member.name)
                if member.issym():
                    contents.links[name] = _symlink_target(name, member.linkname)
                elif member.islnk():
                    contents.links[name] = _member_path(member.linkname)
            except ArchiveError as exc:
                raise ArchiveError(f"refusing the archive: its member {exc}") from None
            if member.isfile() and name:
                _take_file(store, tar, member, name, contents)
    source.drain()
    return contents


def _member_path(name: str) -> str:
    """A member name, normalised. Absolute names and any ``..`` are refused: an archive
    naming files outside itself is malicious or broken, and is not imported at all."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise ArchiveError(f"{name!r} points outside the archive (absolute or with '..')")
    return "/".join(parts)


def _symlink_target(name: str, target: str) -> str:
    """A symbolic link's target as a member path (it is relative to the link's directory)."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if target.startswith("/") or joined == ".." or joined.startswith("../"):
        raise ArchiveError(f"{name!r} links to {target!r}, outside the archive")
    return joined


def _take_file(
    store: ImageStore, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, out: _Contents
) -> None:
    """Keep a document in memory, or spool a blob into the content store."""
    if name in _DOCUMENTS:
        out.documents[name] = _read_document(tar, member, name)
        return
    parts = name.split("/")
    if name in _SKIPPED or (len(parts) == 2 and parts[1] in _LEGACY_METADATA):
        return
    match = _BLOB_PATH.match(name)
    if name.startswith("blobs/") and match is None:
        return  # another digest algorithm, or not a blob: nothing can reference it
    expected = f"sha256:{match.group(1)}" if match else None
    if expected is not None and _refresh(store, expected):
        out.files[name] = (expected, member.size)
        return
    digest = _spool(store, tar, member, expected)
    if digest is None:
        assert expected is not None
        out.corrupt[name] = expected
    else:
        out.files[name] = (digest, member.size)


def _read_document(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> bytes:
    if member.size > _MAX_DOCUMENT:
        raise ArchiveError(f"its {name} is larger than {_MAX_DOCUMENT // 2**20} MiB")
    reader = tar.extractfile(member)
    assert reader is not None  # a regular file
    return reader.read()


def _refresh(store: ImageStore, digest: str) -> bool:
    """True if the store has the blob already; its mtime is renewed so that the store's
    sweep, which spares fresh unreferenced blobs, leaves it for this import to use."""
    try:
        os.utime(store.content.path(digest))
    except FileNotFoundError:
        return False
    return True


def _spool(
    store: ImageStore, tar: tarfile.TarFile, member: tarfile.TarInfo, expected: str | None
) -> str | None:
    """Copy a member into the content store; its digest, or None when its content does not
    match ``expected`` (the digest its name promises)."""
    reader = tar.extractfile(member)
    assert reader is not None
    writer = store.content.writer(expected, size=member.size)
    try:
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    try:
        return writer.commit()
    except DigestError:  # the writer has removed its ingest file
        return None


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile ends an archive quietly where a header is missing or damaged; for an
    archive, that is a truncated or corrupt file. A zero block (the real end) still ends it."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> _StrictTarInfo:
        try:
            return super().fromtarfile(tar)
        except _TAR_END:
            raise
        except _TAR_HEADER_ERROR as exc:
            if tar.offset == 0:
                raise _NotTar(str(exc)) from None
            raise _Damaged(f"no valid tar header at offset {tar.offset}") from None


_TAR_END: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_TAR_HEADER_ERROR: type[Exception] = tarfile.HeaderError


# ---- decompression ------------------------------------------------------------------------


class _Source:
    """The decompressed archive as the read-only stream tarfile wants; read errors (of
    the file or the decompressor) become :class:`_Damaged`."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._read(size if size > 0 else _CHUNK)
        except _READ_ERRORS as exc:
            raise _Damaged(str(exc) or type(exc).__name__) from exc

    def drain(self) -> None:
        """Read past the end of the tar (its padding): a compressed archive cut there, or
        with a bad checksum at its end, is damaged too."""
        while self.read(_CHUNK):
            pass

    def write(self, b: bytes, /) -> int:
        raise OSError("read-only stream")

    def tell(self) -> int:
        raise OSError("stream is not seekable")

    def seek(self, pos: int, /) -> int:
        raise OSError("stream is not seekable")

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _decompressed(raw: BinaryIO) -> Iterator[_Source]:
    """The archive's tar stream, decompressed according to its magic bytes."""
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(_GZIP_MAGIC):
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            yield _Source(gz.read)
    elif head.startswith(_ZSTD_MAGIC):
        yield _Source(_ZstdReader(raw).read)
    elif head.startswith(_BZIP2_MAGIC):
        with bz2.BZ2File(raw) as bz:
            yield _Source(bz.read)
    elif head.startswith(_XZ_MAGIC):
        with lzma.LZMAFile(raw) as xz:
            yield _Source(xz.read)
    elif head.startswith(_LZ4_MAGIC):
        raise ArchiveError(
            "it is compressed with lz4, which is not supported: decompress it (lz4 -d) or "
            "compress it with gzip or zstd instead"
        )
    else:
        yield _Source(raw.read)


class _ZstdReader:
    """zstd frames one after the other (``zstd -T0`` and pzstd write several).

    A decompression object per frame says whether its frame ended (``eof``), which the
    stream reader does not: an archive cut inside a frame must be an error, not a short
    tar. Input goes in small steps because one step's output is not bounded otherwise (a
    crafted block expands ~32000 times)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame: zstandard.ZstdDecompressionObj | None = None
        self._input = b""
        self._output = b""
        self._offset = 0  # in _output: what was read of it already

    def read(self, size: int) -> bytes:
        while self._offset >= len(self._output):
            if not self._decode_step():
                return b""
        start, self._offset = self._offset, min(self._offset + size, len(self._output))
        return self._output[start : self._offset]

    def _decode_step(self) -> bool:
        """Decode one input step into the output; False at the end of the input."""
        data = self._input or self._raw.read(_ZSTD_INPUT_STEP)
        self._input = b""
        if not data:
            if self._frame is not None:
                raise EOFError("the zstd stream ends inside a frame")
            return False
        if self._frame is None:
            self._frame = self._dctx.decompressobj()
        self._output, self._offset = self._frame.decompress(data), 0
        if self._frame.eof:
            self._input = self._frame.unused_data
            self._frame = None
        return True


# ---- what to import -------------------------------------------------------------------------


@dataclass
class _Entry:
    """One image of the archive: an OCI target (manifest or index digest), or a docker
    save entry (config and layer paths)."""

    label: str  # how messages name it: its first name, or its digest
    names: list[str]
    target: str = ""
    size: int = -1
    config_path: str = ""
    layer_paths: list[str] = field(default_factory=list)


def _entries(contents: _Contents) -> list[_Entry]:
    """The archive's images: index.json's when there is one (Docker 25+ writes both files;
    the OCI index is the complete description), else manifest.json's."""
    if "index.json" in contents.documents:
        entries = _oci_entries(contents)
    elif "manifest.json" in contents.documents:
        entries = _docker_entries(contents)
    else:
        raise ArchiveError(
            "not an image archive: it has neither index.json (OCI) nor manifest.json "
            "(docker save) at its top; make it with `docker save` or "
            "`skopeo copy ... oci-archive:FILE`"
        )
    if not entries:
        raise ArchiveError("the archive holds no image")
    return entries


def _load_json(contents: _Contents, name: str) -> Any:
    try:
        return orjson.loads(contents.documents[name])
    except orjson.JSONDecodeError as exc:
        raise ArchiveError(f"its {name} is not valid JSON ({exc})") from None


def _oci_entries(contents: _Contents) -> list[_Entry]:
    """The images of index.json, one per target digest (several names may share one)."""
    try:
        index = mf.parse(contents.documents["index.json"], mf.OCI_INDEX)
    except mf.ManifestError as exc:
        raise ArchiveError(f"its index.json is not an OCI image index: {exc}") from None
    assert isinstance(index, mf.Index)
    entries: dict[str, _Entry] = {}
    for desc in index.manifests:
        if desc.media_type not in (*mf.MANIFEST_TYPES, *mf.INDEX_TYPES, ""):
            log.debug("skipping index.json entry %s of type %s", desc.digest, desc.media_type)
            continue
        entry = entries.setdefault(desc.digest, _Entry(desc.digest, [], desc.digest, desc.size))
        for name in _annotated_names(desc.annotations):
            if name not in entry.names:
                entry.names.append(name)
        entry.label = entry.names[0] if entry.names else desc.digest
    return list(entries.values())


def _annotated_names(annotations: dict[str, str]) -> list[str]:
    """containerd's full name, else the OCI ref.name when it is a reference rather than a
    bare tag (``v1``, ``latest``: containerd does not take those as names either)."""
    full = annotations.get(CONTAINERD_NAME, "")
    if full:
        return [full]
    ref = annotations.get(OCI_REF_NAME, "")
    if any(c in ref for c in "/:@"):
        return [ref]
    return []


def _docker_entries(contents: _Contents) -> list[_Entry]:
    """The images of a docker save manifest.json."""
    doc = _load_json(contents, "manifest.json")
    if not isinstance(doc, list):
        raise ArchiveError("its manifest.json is not a list of images (docker save's format)")
    entries = []
    for item in doc:
        item = item if isinstance(item, dict) else {}
        config, layers, tags = item.get("Config"), item.get("Layers"), item.get("RepoTags")
        if not isinstance(config, str) or not isinstance(layers, list):
            raise ArchiveError("its manifest.json has an entry without Config and Layers")
        names = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
        entries.append(
            _Entry(
                names[0] if names else config,
                names,
                config_path=config,
                layer_paths=[str(p) for p in layers],
            )
        )
    return entries


def _repo_tags(contents: _Contents) -> dict[str, list[str]]:
    """Config digest → RepoTags of manifest.json, for archives that have both (Docker 25+):
    its names where index.json gives only tags."""
    if "manifest.json" not in contents.documents:
        return {}
    try:
        entries = _docker_entries(contents)
    except ArchiveError:
        return {}  # the OCI index is what is imported; the legacy file is only a hint
    tags: dict[str, list[str]] = {}
    for entry in entries:
        with contextlib.suppress(ArchiveError):
            found = contents.lookup(_member_path(entry.config_path))
            if found is not None:
                tags.setdefault(found[0], []).extend(entry.names)
    return tags


# ---- importing ------------------------------------------------------------------------------


def _import_entries(
    store: ImageStore, path: Path, contents: _Contents, entries: list[_Entry], say: Progress
) -> list[Image]:
    """Import each entry; collect what failed into one ArchiveError at the end."""
    oci = "index.json" in contents.documents
    tags = _repo_tags(contents) if oci else {}
    imported: dict[str, Image] = {}
    errors: list[str] = []
    for entry in entries:
        try:
            if oci:
                image, names = _import_oci(store, contents, entry, tags)
            else:
                image, names = _import_docker(store, contents, entry)
        except ArchiveError as exc:
            errors.append(f"image {entry.label}: {exc}")
            continue
        imported[image.id] = image
        say(_imported_line(image, names))
    images = list(imported.values())
    if errors:
        raise ArchiveError(
            _failure_message(path, errors, len(entries)), images=images, errors=errors
        )
    return images


def _failure_message(path: Path, errors: list[str], total: int) -> str:
    if len(errors) == 1:
        return f"{path}: {errors[0]}"
    return f"{path}: {len(errors)} of {total} images could not be imported:\n  " + "\n  ".join(
        errors
    )


def _import_oci(
    store: ImageStore, contents: _Contents, entry: _Entry, tags: dict[str, list[str]]
) -> tuple[Image, list[str]]:
    """Check that the image behind an index.json entry is whole and for this platform,
    then record it."""
    _require(store, contents, entry.target, entry.size, "manifest")
    manifest = _host_manifest(store, contents, entry.target)
    _check_config(store, contents, manifest)
    for layer in manifest.layers:
        _require(store, contents, layer.digest, layer.size, "layer")
    names = _canonical(entry.names or tags.get(manifest.config.digest, []))
    return _add(store, entry.target, names), names


def _host_manifest(store: ImageStore, contents: _Contents, target: str) -> mf.Manifest:
    """The target's manifest, or its index's entry for this node's platform."""
    doc = _parse_manifest(store, target)
    if isinstance(doc, mf.Manifest):
        return doc
    try:
        desc = mf.select_platform(doc)
    except mf.ManifestError as exc:
        raise ArchiveError(
            f"{exc}: this node is {mf.host_platform()}; export the image for it "
            "(e.g. `skopeo copy --all` or `--override-arch`)"
        ) from None
    _require(store, contents, desc.digest, desc.size, "manifest")
    inner = _parse_manifest(store, desc.digest)
    if not isinstance(inner, mf.Manifest):
        raise ArchiveError(f"index entry {desc.digest} is not an image manifest")
    return inner


def _parse_manifest(store: ImageStore, digest: str) -> mf.Manifest | mf.Index:
    try:
        return mf.parse(store.content.read(digest))
    except (mf.ManifestError, DigestError) as exc:
        raise ArchiveError(f"manifest {digest}: {exc}") from None


def _check_config(store: ImageStore, contents: _Contents, manifest: mf.Manifest) -> None:
    """The config must be there and be for this node's OS and architecture: an image for
    another platform would be imported fine and then fail with ``exec format error``."""
    config = _require(store, contents, manifest.config.digest, manifest.config.size, "config")
    host = mf.host_platform()
    os_name = config.os or "linux"
    if os_name != host.os or (config.architecture and config.architecture != host.architecture):
        raise ArchiveError(
            f"the image is for {os_name}/{config.architecture}, but this node is {host}; "
            f"save or export its {host} variant"
        )


def _require(
    store: ImageStore, contents: _Contents, digest: str, size: int, what: str
) -> mf.ImageConfig:
    """Check a blob the image needs: present (from this archive or the store), intact and
    of the size its descriptor says. Returns the parsed config when ``what`` is "config"."""
    if digest in contents.corrupt.values():
        raise ArchiveError(_corrupt_message(digest))
    try:
        present = _refresh(store, digest)
    except DigestError:  # not sha256:<hex>
        raise ArchiveError(f"{what} {digest!r} has an unsupported digest") from None
    if not present:
        raise ArchiveError(f"its {what} {digest} is not in the archive")
    actual = store.content.size(digest)
    if size >= 0 and actual != size:
        raise ArchiveError(
            f"{what} {digest} has {actual} bytes, but the archive's descriptor says {size}"
        )
    if what != "config":
        return mf.ImageConfig()
    try:
        return mf.parse_config(store.content.read(digest))
    except (mf.ManifestError, DigestError) as exc:
        raise ArchiveError(f"config {digest}: {exc}") from None


def _corrupt_message(digest: str) -> str:
    return (
        f"blob {digest} is corrupted: its content does not match its digest "
        "(the archive is damaged; copy or export it again)"
    )


def _import_docker(
    store: ImageStore, contents: _Contents, entry: _Entry
) -> tuple[Image, list[str]]:
    """Store a docker save image: its config and layer tars as they are, and a Docker
    schema 2 manifest over them, since the archive has none."""
    config_digest, config_size = _docker_blob(contents, entry.config_path, "config")
    manifest = mf.Manifest(
        mf.DOCKER_MANIFEST,
        mf.Descriptor(mf.DOCKER_CONFIG, config_digest, config_size),
        tuple(_docker_layer(store, *_docker_blob(contents, p, "layer")) for p in entry.layer_paths),
    )
    _check_config(store, contents, manifest)
    target = store.content.put(_manifest_bytes(manifest))
    names = _canonical(entry.names)
    return _add(store, target, names), names


def _docker_blob(contents: _Contents, member: str, what: str) -> tuple[str, int]:
    try:
        name = _member_path(member)
    except ArchiveError as exc:
        raise ArchiveError(f"its {what} {exc}") from None
    corrupt = contents.corrupt_digest(name)
    if corrupt is not None:
        raise ArchiveError(_corrupt_message(corrupt))
    found = contents.lookup(name)
    if found is None:
        raise ArchiveError(f"its {what} {member!r} is not in the archive")
    return found


def _docker_layer(store: ImageStore, digest: str, size: int) -> mf.Descriptor:
    """A layer descriptor whose media type says how the tar is compressed (docker save
    writes plain tars; newer Dockers and some tools keep them compressed)."""
    with store.content.path(digest).open("rb") as blob:
        head = blob.read(4)
    if head.startswith(_GZIP_MAGIC):
        media_type = DOCKER_LAYER_GZIP
    elif head.startswith(_ZSTD_MAGIC):
        media_type = OCI_LAYER_ZSTD
    else:
        media_type = DOCKER_LAYER
    return mf.Descriptor(media_type, digest, size)


def _manifest_bytes(manifest: mf.Manifest) -> bytes:
    """The synthesised manifest, byte for byte the same for the same image, so that
    importing an archive again finds the same repo digest."""
    return orjson.dumps(
        {
            "schemaVersion": 2,
            "mediaType": manifest.media_type,
            "config": manifest.config.to_json(),
            "layers": [layer.to_json() for layer in manifest.layers],
        }
    )


def _canonical(names: list[str]) -> list[str]:
    """Normalised names (``busybox:1`` → ``docker.io/library/busybox:1``), each once;
    references by digest alone cannot be names and are dropped."""
    out: list[str] = []
    for name in names:
        try:
            ref = parse_reference(name)
        except InvalidReference as exc:
            raise ArchiveError(
                f"its name {name!r} is not a valid image reference ({exc})"
            ) from None
        if ref.tag is not None and str(ref) not in out:
            out.append(str(ref))
    return out


def _add(store: ImageStore, target: str, names: list[str]) -> Image:
    try:
        return store.add(target, names)
    except ImageError as exc:
        raise ArchiveError(str(exc)) from None


def _imported_line(image: Image, names: list[str]) -> str:
    short = image.id[: len("sha256:") + 12] + "…"
    label = ", ".join(names) if names else "<none> (the archive gives it no name; use its ID)"
    return f"imported {label} ({short}, {_human_size(image.size)})"


def _human_size(n: int) -> str:
    """Decimal units, as docker and crictl print image sizes."""
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _quiet(_: str) -> None:
    pass


# ---- the import directory ---------------------------------------------------------------------


def _archives_in(directory: Path) -> list[Path]:
    """Regular files, by name; hidden ones (the state file, copies in progress named
    ``.x.tar.part``) are not archives to import."""
    return sorted(
        (p for p in directory.iterdir() if not p.name.startswith(".") and p.is_file()),
        key=lambda p: p.name,
    )


def _stamp(file: Path) -> list[int]:
    st = file.stat()
    return [st.st_size, st.st_mtime_ns]


def _load_state(path: Path) -> dict[str, list[int]]:
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("ignoring %s (%s): every archive will be imported again", path, exc)
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        str(name): [int(v) for v in stamp]
        for name, stamp in raw.items()
        if isinstance(stamp, list) and len(stamp) == 2 and all(isinstance(v, int) for v in stamp)
    }


def _save_state(path: Path, state: dict[str, list[int]]) -> None:
    """Written atomically; losing it only costs a re-import, so no fsync."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_SORT_KEYS))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s (%s): archives will be imported again at restart", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
