"""Unpack one image layer blob into a directory that an overlay mount can use as a lower dir.

A layer is a tar stream, plain or compressed with gzip or zstd. It is read once, as a stream:
the uncompressed bytes are hashed on their way into `tarfile`, which gives the layer's diff_id
(the digest an image config lists) without a second pass over the blob.

OCI whiteouts become what overlayfs understands: `dir/.wh.name` becomes a 0/0 character device
at `dir/name`, and `dir/.wh..wh..opq` marks `dir` opaque with the `trusted.overlay.opaque`
xattr.

A layer is untrusted input. Every name is normalised and must stay inside the layer root, and
nothing is ever created through a symbolic link: each parent directory of an entry is checked
(with `lstat`) to be a real directory before anything is written below it. The layer is
unpacked into a sibling temporary directory and renamed into place only when it is complete, so
a directory at `dest` is always a whole layer.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Self, TypeVar

import zstandard

__all__ = ["LayerError", "unpack_layer"]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_UNSUPPORTED_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}

_READ_CHUNK = 256 * 1024  # uncompressed bytes asked of the decompressor at a time
_ZSTD_INPUT_STEP = 2048  # compressed bytes fed to zstd at a time (see _ZstdFrames)
_COPY_CHUNK = 1024 * 1024  # file contents copied at a time

_WHITEOUT_PREFIX = ".wh."
_OPAQUE_MARKER = ".wh..wh..opq"
_OPAQUE_XATTR = "trusted.overlay.opaque"
_PAX_XATTR_PREFIX = "SCHILY.xattr."
# A layer may not forge overlayfs's own metadata (redirects, metacopy, opaque): that would
# change what the kernel shows of the layers below. Opaque dirs come only from the OCI marker.
_FORBIDDEN_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
# Extended attributes the filesystem or our privileges do not allow are skipped, as tar does.
_IGNORED_XATTR_ERRNOS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES})

_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_T = TypeVar("_T")


class LayerError(Exception):
    """A layer that is corrupt, truncated or unsafe; the message says which entry and why."""


class _CorruptStream(Exception):
    """The blob's compressed framing or tar structure is damaged (mapped to LayerError)."""


def unpack_layer(blob: Path, dest: Path, *, media_type: str | None = None) -> str:
    """Unpack the layer `blob` (plain tar, gzip or zstd, told apart by their magic bytes;
    `media_type` is only a hint for error messages) into the directory `dest`.

    `dest` must not exist. The layer is unpacked into a sibling temporary directory (same
    parent, name starting with '.tmp-') that is renamed to `dest` only when complete; on any
    error it is removed and LayerError is raised. Returns the layer's diff_id,
    'sha256:<hex>' of the uncompressed tar stream, computed while unpacking.
    """
    dest = Path(dest)
    if os.path.lexists(dest):
        raise LayerError(f"cannot unpack layer into {dest}: it already exists")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent)
    except OSError as exc:
        raise LayerError(f"cannot unpack layer into {dest}: {exc}") from exc
    try:
        diff_id = _unpack_into(Path(blob), tmp, media_type)
        os.rename(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, LayerError) or not isinstance(exc, Exception):
            raise
        raise LayerError(f"cannot unpack layer {blob} into {dest}: {exc}") from exc
    return diff_id


def _unpack_into(blob: Path, root: str, media_type: str | None) -> str:
    """Stream `blob` into the (empty) directory `root`; return the diff_id."""
    try:
        raw = open(blob, "rb")
    except OSError as exc:
        raise LayerError(f"cannot read layer blob {blob}: {exc}") from exc
    with raw:
        compression = _detect_compression(raw)
        stream = _HashingReader(_decompressed_chunks(raw, compression))
        writer = _LayerWriter(root)
        try:
            with _LayerTar.open(fileobj=stream, mode="r|", tarinfo=_StrictTarInfo) as tar:
                while (member := tar.next()) is not None:
                    writer.add(tar, member)
                    tar.forget_members()
            stream.drain()  # the end-of-archive padding is part of the diff_id too
        except (_CorruptStream, tarfile.TarError) as exc:
            raise LayerError(
                f"layer is truncated or corrupt: {exc}{_compression_note(compression, media_type)}"
            ) from exc
        writer.finish()
    return f"sha256:{stream.hexdigest()}"


# --- Reading: decompression and hashing ---------------------------------------------------


def _detect_compression(raw: BinaryIO) -> str:
    """'gzip', 'zstd' or 'tar', from the blob's first bytes. Registries mislabel layers often
    enough (and the bytes cannot lie) that the media type is only used in error messages."""
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    for magic, name in _UNSUPPORTED_MAGIC.items():
        if head.startswith(magic):
            raise LayerError(f"layer is compressed with {name}, which is not supported")
    return "tar"


def _compression_note(compression: str, media_type: str | None) -> str:
    """A hint for corruption errors: which format the blob was read as, and its media type
    when that claims another one."""
    read_as = "uncompressed tar" if compression == "tar" else compression
    claimed = "tar"
    for name in ("gzip", "zstd"):
        if name in (media_type or ""):
            claimed = name
    if media_type and claimed != compression:
        return f" (read as {read_as}; its media type says {media_type})"
    return f" (read as {read_as})"


def _decompressed_chunks(raw: BinaryIO, compression: str) -> Callable[[], bytes]:
    """A function returning the next piece of the uncompressed tar stream, b'' at its end."""
    if compression == "gzip":
        # GzipFile bounds its output per read, checks CRCs and lengths, reads multi-member
        # files and raises EOFError on a stream cut short.
        gz = gzip.GzipFile(fileobj=raw, mode="rb")
        return lambda: gz.read(_READ_CHUNK)
    if compression == "zstd":
        return _ZstdFrames(raw).next_chunk
    return lambda: raw.read(_READ_CHUNK)


class _ZstdFrames:
    """Decode a sequence of zstd frames in small input steps.

    zstandard's stream reader returns a short stream, without an error, when the input ends
    inside a frame; a decompressobj tells (`eof`). Its output is not bounded, and one
    crafted zstd block expands ~32000 times, so input goes in 2 KiB steps: at most ~64 MiB
    of output per step, at full decoding speed for real layers.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame: zstandard.ZstdDecompressionObj | None = None
        self._pending = b""

    def next_chunk(self) -> bytes:
        while True:
            data = self._pending or self._raw.read(_ZSTD_INPUT_STEP)
            self._pending = b""
            if not data:
                if self._frame is not None:
                    raise _CorruptStream("zstd stream ends inside a frame")
                return b""
            if self._frame is None:
                self._frame = self._dctx.decompressobj()
            out = self._frame.decompress(data)
            if self._frame.eof:
                self._pending = self._frame.unused_data
                self._frame = None
            if out:
                return out


class _HashingReader:
    """The uncompressed layer as a file object for tarfile, hashed as it passes through.

    Pieces are handed out as slices of the current decompressed chunk, so tarfile's small
    reads (512-byte headers, 10 KiB records) cost a copy of what they ask for, not more.
    """

    def __init__(self, next_chunk: Callable[[], bytes]) -> None:
        self._next_chunk = next_chunk
        self._digest = hashlib.sha256()
        self._chunk = b""
        self._offset = 0

    def read(self, size: int = -1, /) -> bytes:
        if self._offset >= len(self._chunk):
            self._chunk = self._fetch()
            self._offset = 0
        start = self._offset
        end = len(self._chunk) if size < 0 else min(start + size, len(self._chunk))
        self._offset = end
        if start == 0 and end == len(self._chunk):
            return self._chunk
        return self._chunk[start:end]

    def drain(self) -> None:
        """Read (and hash) whatever follows the end of the archive."""
        self._chunk, self._offset = b"", 0
        while self._fetch():
            pass

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def _fetch(self) -> bytes:
        try:
            chunk = self._next_chunk()
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            # gzip's EOFError reads "Compressed file ended before the end-of-stream marker
            # was reached"; BadGzipFile is an OSError.
            raise _CorruptStream(str(exc) or type(exc).__name__) from exc
        self._digest.update(chunk)
        return chunk

    # tarfile's typing asks for a full file object; it only reads, in stream mode.
    def write(self, b: bytes, /) -> int:
        raise OSError(errno.EBADF, "read-only stream")

    def tell(self) -> int:
        raise OSError(errno.ESPIPE, "stream is not seekable")

    def seek(self, pos: int, /) -> int:
        raise OSError(errno.ESPIPE, "stream is not seekable")

    def close(self) -> None:
        pass


class _LayerTar(tarfile.TarFile):
    """A TarFile read once, front to back."""

    members: list[tarfile.TarInfo]  # tarfile's own list, which typeshed leaves out

    def forget_members(self) -> None:
        """Drop the members read so far. tarfile keeps them all for random access, which a
        stream read never does; forgetting them keeps memory flat for layers of many files."""
        self.members.clear()


# Undocumented but stable since Python 3.2: a zero block, or no data at all, where the next
# header would be — the two ways an archive ends.
_END_OF_ARCHIVE: tuple[type[Exception], ...] = (
    tarfile.EOFHeaderError,  # type: ignore[attr-defined]
    tarfile.EmptyHeaderError,  # type: ignore[attr-defined]
)
_HeaderError = tarfile.HeaderError


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile ends an archive silently at a damaged header (after the first member); a
    layer with a damaged header is corrupt. A stream that simply stops at a member boundary,
    without the end-of-archive blocks, is accepted as archive/tar (Go) accepts it: the diff_id
    check against the image config is what catches that."""

    @classmethod
    def fromtarfile(cls, tarfile: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile)
        except _END_OF_ARCHIVE:
            raise
        except _HeaderError as exc:  # (the parameter's name, fixed by tarfile, hides the module)
            raise _CorruptStream(f"bad tar header at offset {tarfile.offset}: {exc}") from exc


# --- Writing: entries into the layer directory --------------------------------------------


class _LayerWriter:
    """Creates the entries of one layer under `root`, never writing through a symlink."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._as_root = os.geteuid() == 0
        # Directories known to be real (not symlinks) since they were created or checked;
        # emptied whenever a directory is removed, so it never vouches for a stale path.
        self._real_dirs: set[str] = {root}
        # Mode and mtime of each directory entry, applied at the end: adding children would
        # change the mtime, and a read-only mode would stop an unprivileged unpack.
        self._dir_meta: dict[str, tuple[int, int | None]] = {root: (0o755, None)}

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Create one tar member; OS errors become a LayerError naming the entry."""
        try:
            self._add(tar, member)
        except OSError as exc:
            raise LayerError(f'layer entry "{member.name}": {exc.strerror or exc}') from exc

    def finish(self) -> None:
        """Apply directory modes and mtimes, deepest first (a parent made read-only first
        would otherwise forbid changing its children when not running as root)."""
        for path in sorted(self._dir_meta, key=lambda p: p.count("/"), reverse=True):
            mode, mtime_ns = self._dir_meta[path]
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
            except FileNotFoundError:
                continue
            os.chmod(path, mode)
            if mtime_ns is not None:
                os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def _add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _normalise(member.name)
        if parts is None:
            raise LayerError(f'layer entry "{member.name}": path escapes the layer root')
        if not parts:
            if not member.isdir():
                raise LayerError(f'layer entry "{member.name}": names the layer root')
            self._set_owner(self._root, member)
            self._dir_meta[self._root] = (member.mode & 0o7777, _mtime_ns(member))
            return
        if parts[-1].startswith(_WHITEOUT_PREFIX):
            self._add_whiteout(parts, member)
            return
        path = os.path.join(self._parent_dir(parts, member.name), parts[-1])
        if member.isdir():
            self._make_dir(path, member)
        elif member.isreg():
            self._make_file(tar, path, member)
        elif member.issym():
            self._make_symlink(path, member)
        elif member.islnk():
            self._make_hardlink(path, member)
        elif member.isfifo():
            self._make_node(path, member, stat.S_IFIFO, 0)
        elif member.ischr() or member.isblk():
            if self._as_root:  # mknod of a device needs CAP_MKNOD; skipped otherwise
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                self._make_node(path, member, kind, os.makedev(member.devmajor, member.devminor))
        else:
            raise LayerError(
                f'layer entry "{member.name}": unsupported tar entry type {member.type!r}'
            )

    # --- paths

    def _parent_dir(self, parts: tuple[str, ...], name: str, *, create: bool = True) -> str:
        """The absolute path of the directory holding `parts`, checked component by component
        to be real directories (never symlinks); missing ones are created when `create`."""
        parent = os.path.join(self._root, *parts[:-1])
        if parent in self._real_dirs:
            return parent
        path = self._root
        for depth, component in enumerate(parts[:-1], start=1):
            path = os.path.join(path, component)
            if path in self._real_dirs:
                continue
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                if not create:
                    raise LayerError(
                        f'layer entry "{name}": "{"/".join(parts)}" does not exist in this layer'
                    ) from None
                os.mkdir(path, 0o755)
                self._real_dirs.add(path)
                continue
            where = "/".join(parts[:depth])
            if stat.S_ISLNK(mode):
                raise LayerError(
                    f'layer entry "{name}": "{where}" is a symbolic link; '
                    "a layer may not write through one"
                )
            if not stat.S_ISDIR(mode):
                raise LayerError(f'layer entry "{name}": "{where}" is not a directory')
            self._real_dirs.add(path)
        return parent

    def _create(self, path: str, make: Callable[[], _T]) -> _T:
        """Run `make`, which creates `path` exclusively. When an earlier entry of the layer is
        in the way, remove it and try once more: later entries replace earlier ones."""
        try:
            return make()
        except FileExistsError:
            self._remove(path)
            return make()

    def _remove(self, path: str) -> None:
        """Remove a file, symlink or whole directory tree (rmtree does not follow symlinks)."""
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
            self._real_dirs = {self._root}
            below = path + "/"
            self._dir_meta = {
                p: meta
                for p, meta in self._dir_meta.items()
                if p != path and not p.startswith(below)
            }
        else:
            os.unlink(path)

    # --- entries

    def _make_dir(self, path: str, member: tarfile.TarInfo) -> None:
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):  # a directory merges with a directory
                self._remove(path)
                os.mkdir(path, 0o755)
        self._real_dirs.add(path)
        self._set_owner(path, member)
        self._set_xattrs(path, member)
        self._dir_meta[path] = (member.mode & 0o7777, _mtime_ns(member))

    def _make_file(self, tar: tarfile.TarFile, path: str, member: tarfile.TarInfo) -> None:
        fd = self._create(path, lambda: os.open(path, _NEW_FILE_FLAGS, 0o600))
        try:
            if member.size:
                _copy_contents(tar, member, fd)
            if self._as_root:
                os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears setuid/setgid
            self._set_xattrs(fd, member)  # after chown, which clears security.capability
            mtime_ns = _mtime_ns(member)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)

    def _make_symlink(self, path: str, member: tarfile.TarInfo) -> None:
        # The target is kept verbatim, absolute or not: it resolves inside the container's
        # root at run time, and nothing here ever follows it.
        self._create(path, lambda: os.symlink(member.linkname, path))
        self._set_owner(path, member)
        self._set_xattrs(path, member)
        mtime_ns = _mtime_ns(member)
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def _make_hardlink(self, path: str, member: tarfile.TarInfo) -> None:
        """Link to an entry unpacked earlier in this layer (tar names it from the root)."""
        target_parts = _normalise(member.linkname)
        if target_parts is None:
            raise LayerError(
                f'layer entry "{member.name}": hard link target "{member.linkname}" '
                "escapes the layer root"
            )
        if not target_parts:
            raise LayerError(f'layer entry "{member.name}": hard link to the layer root')
        target_dir = self._parent_dir(target_parts, member.name, create=False)
        target = os.path.join(target_dir, target_parts[-1])
        try:
            target_mode = os.lstat(target).st_mode
        except FileNotFoundError:
            raise LayerError(
                f'layer entry "{member.name}": hard link target "{member.linkname}" '
                "does not exist in this layer"
            ) from None
        if stat.S_ISDIR(target_mode):
            raise LayerError(
                f'layer entry "{member.name}": hard link target "{member.linkname}" is a directory'
            )
        if target == path:
            return
        # follow_symlinks=False: a link to a symlink links the symlink itself.
        self._create(path, lambda: os.link(target, path, follow_symlinks=False))

    def _make_node(self, path: str, member: tarfile.TarInfo, kind: int, device: int) -> None:
        self._create(path, lambda: os.mknod(path, kind | 0o600, device))
        self._set_owner(path, member)
        os.chmod(path, member.mode & 0o7777)  # path was just made and is not a symlink
        self._set_xattrs(path, member)
        mtime_ns = _mtime_ns(member)
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def _add_whiteout(self, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        """Translate an OCI whiteout into overlayfs's form."""
        parent = self._parent_dir(parts, member.name)
        marker = parts[-1]
        if marker == _OPAQUE_MARKER:
            os.setxattr(parent, _OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if marker.startswith(_WHITEOUT_PREFIX + _WHITEOUT_PREFIX):
            return  # other aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless here
        hidden = marker[len(_WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise LayerError(f'layer entry "{member.name}": not a valid whiteout')
        path = os.path.join(parent, hidden)
        # A whiteout hides only what lower layers have: an entry of the same name in this
        # layer stays (OCI image spec, "Whiteouts").
        if not os.path.lexists(path):
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))

    # --- metadata

    def _set_owner(self, path: str, member: tarfile.TarInfo) -> None:
        if self._as_root:  # numeric ids, as in the image: never mapped through host names
            os.lchown(path, member.uid, member.gid)

    def _set_xattrs(self, target: str | int, member: tarfile.TarInfo) -> None:
        """Apply the member's PAX `SCHILY.xattr.*` records, skipping the ones the filesystem
        or our privileges refuse (and overlayfs's own, which a layer may not set)."""
        for key, value in member.pax_headers.items():
            if not key.startswith(_PAX_XATTR_PREFIX):
                continue
            name = key[len(_PAX_XATTR_PREFIX) :]
            if name.startswith(_FORBIDDEN_XATTR_PREFIXES):
                continue
            # tarfile decodes binary values with surrogateescape; this gives the bytes back.
            raw_value = value.encode("utf-8", "surrogateescape")
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, raw_value)
                else:
                    os.setxattr(target, name, raw_value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _IGNORED_XATTR_ERRNOS:
                    raise


def _normalise(name: str) -> tuple[str, ...] | None:
    """The components of a member name relative to the layer root ('./a//b/' -> ('a', 'b')),
    with '..' resolved lexically; None when it climbs above the root. Leading '/' and './'
    are dropped: names are always relative to the layer root."""
    parts: list[str] = []
    for component in name.split("/"):
        if component in ("", "."):
            continue
        if component == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(component)
    return tuple(parts)


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return round(member.mtime * 1_000_000_000)


def _copy_contents(tar: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
    """Write a regular file's contents to `fd`. They are read straight from the archive
    stream, as TarFile.makefile does: a file object per member (extractfile) costs more than
    writing a small file. Sparse members go through extractfile, which fills in the holes."""
    if member.sparse is not None:
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has contents
        read: Callable[[int], bytes] = source.read
        remaining = member.size
    else:
        tar.fileobj.seek(member.offset_data)  # forward only: where the header left the stream
        read = tar.fileobj.read
        remaining = member.size
    while remaining:
        chunk = read(min(remaining, _COPY_CHUNK))
        if not chunk:
            raise _CorruptStream(f'unexpected end of data in "{member.name}"')
        remaining -= len(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
