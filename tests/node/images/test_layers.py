"""Unpacking image layers: contents, metadata, whiteouts, the diff_id, and the refusals that
keep a hostile layer inside its directory."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from kubling.node.images.layers import LayerError, unpack_layer
from kubling.node.images.rootfs import mount_rootfs, unmount_rootfs

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, trusted xattrs)")

MTIME = 1_600_000_000


@dataclass
class Entry:
    """One tar member to write: `data` for regular files, `link` for symlinks and hardlinks."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    link: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    pax: dict[str, str] | None = None
    major: int = 0
    minor: int = 0


def file(
    name: str,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    pax: dict[str, str] | None = None,
) -> Entry:
    return Entry(name, data=data, mode=mode, uid=uid, gid=gid, pax=pax)


def directory(name: str, mode: int = 0o755, mtime: int = MTIME) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode, mtime=mtime)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, link=target, mode=0o777)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, link=target)


def tar_bytes(entries: list[Entry]) -> bytes:
    """The uncompressed tar stream (PAX format, as image builders write)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.type
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.mtime = entry.mtime
            info.linkname = entry.link
            info.devmajor, info.devminor = entry.major, entry.minor
            if entry.pax:
                info.pax_headers = entry.pax
            info.size = len(entry.data) if entry.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(entry.data) if info.size else None)
    return out.getvalue()


def compress(raw: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(raw)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(raw)
    return raw


@pytest.fixture
def layers_dir(tmp_path: Path) -> Path:
    path = tmp_path / "layers"
    path.mkdir()
    return path


def write_blob(tmp_path: Path, entries: list[Entry], compression: str = "tar") -> Path:
    blob = tmp_path / f"blob.{compression}"
    blob.write_bytes(compress(tar_bytes(entries), compression))
    return blob


def assert_nothing_left(layers_dir: Path, dest: Path) -> None:
    assert not os.path.lexists(dest)
    assert [p.name for p in layers_dir.iterdir() if p.name.startswith(".tmp-")] == []


# --- contents and metadata -----------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("compression", ["tar", "gzip", "zstd"])
def test_files_dirs_and_metadata(tmp_path: Path, layers_dir: Path, compression: str) -> None:
    entries = [
        directory("./", mode=0o755, mtime=MTIME - 100),
        directory("usr/", mode=0o755),
        directory("usr/bin/", mode=0o750, mtime=MTIME + 5),
        file("usr/bin/tool", b"#!/bin/sh\necho hi\n", mode=0o4755, uid=1000, gid=2000),
        file("/etc/hostname", b"box\n", mode=0o600),  # an absolute name lands in the layer
        directory("tmp/", mode=0o1777),
        file("big", os.urandom(3 * 1024 * 1024 + 17)),
        file("empty"),
    ]
    raw = tar_bytes(entries)
    blob = tmp_path / "blob"
    blob.write_bytes(compress(raw, compression))
    dest = layers_dir / "l1"

    diff_id = unpack_layer(blob, dest)

    assert diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    tool = os.lstat(dest / "usr/bin/tool")
    assert (dest / "usr/bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(tool.st_mode) == 0o4755  # setuid survives the chown
    assert (tool.st_uid, tool.st_gid) == (1000, 2000)
    assert tool.st_mtime == MTIME
    assert stat.S_IMODE(os.lstat(dest / "usr/bin").st_mode) == 0o750
    # Directory mtimes are set after their contents were created.
    assert os.lstat(dest / "usr/bin").st_mtime == MTIME + 5
    assert os.lstat(dest).st_mtime == MTIME - 100
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    assert (dest / "etc/hostname").read_bytes() == b"box\n"
    assert stat.S_IMODE(os.lstat(dest / "etc/hostname").st_mode) == 0o600
    assert (dest / "big").read_bytes() == entries[6].data
    assert (dest / "empty").read_bytes() == b""
    assert_nothing_left(layers_dir, layers_dir / "missing")


def test_layer_root_defaults_to_0755(tmp_path: Path, layers_dir: Path) -> None:
    unpack_layer(write_blob(tmp_path, [file("a", b"x")]), layers_dir / "l1")
    assert stat.S_IMODE(os.lstat(layers_dir / "l1").st_mode) == 0o755


def test_symlinks_are_kept_verbatim_and_not_followed(tmp_path: Path, layers_dir: Path) -> None:
    entries = [
        symlink("etc/passwd-link", "/etc/passwd"),
        symlink("rel", "../some/where"),
        symlink("dangling", "/nonexistent/target"),
    ]
    dest = layers_dir / "l1"
    unpack_layer(write_blob(tmp_path, entries, "gzip"), dest)

    assert os.readlink(dest / "etc/passwd-link") == "/etc/passwd"
    assert os.readlink(dest / "rel") == "../some/where"
    assert os.readlink(dest / "dangling") == "/nonexistent/target"
    assert stat.S_ISLNK(os.lstat(dest / "etc/passwd-link").st_mode)
    assert os.lstat(dest / "rel").st_mtime == MTIME


def test_hardlinks_share_the_inode(tmp_path: Path, layers_dir: Path) -> None:
    entries = [
        file("bin/busybox", b"\x7fELF...", mode=0o755),
        hardlink("bin/sh", "bin/busybox"),
        hardlink("usr/bin/ls", "./bin/busybox"),
        symlink("bin/link", "busybox"),
        hardlink("bin/link2", "bin/link"),  # a hard link to a symlink links the symlink
    ]
    dest = layers_dir / "l1"
    unpack_layer(write_blob(tmp_path, entries), dest)

    original = os.lstat(dest / "bin/busybox")
    assert os.lstat(dest / "bin/sh").st_ino == original.st_ino
    assert os.lstat(dest / "usr/bin/ls").st_ino == original.st_ino
    assert original.st_nlink == 3
    assert os.lstat(dest / "bin/link2").st_ino == os.lstat(dest / "bin/link").st_ino
    assert os.readlink(dest / "bin/link2") == "busybox"


@needs_root
def test_fifos_and_devices(tmp_path: Path, layers_dir: Path) -> None:
    entries = [
        Entry("run/fifo", tarfile.FIFOTYPE, mode=0o620),
        Entry("dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
        Entry("dev/loop9", tarfile.BLKTYPE, mode=0o660, major=7, minor=9),
    ]
    dest = layers_dir / "l1"
    unpack_layer(write_blob(tmp_path, entries), dest)

    fifo = os.lstat(dest / "run/fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o620
    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = os.lstat(dest / "dev/loop9")
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 9)


@needs_root
def test_whiteouts_become_overlay_whiteouts(tmp_path: Path, layers_dir: Path) -> None:
    entries = [
        file(".wh.gone"),
        file("etc/.wh.passwd"),
        directory("var/"),
        file("var/.wh..wh..opq"),
        file("var/kept", b"new"),
        file("opaque-only/.wh..wh..opq"),  # the directory is made if the layer lacks it
        file(".wh..wh.plnk"),  # aufs bookkeeping: ignored
        file("same", b"stays"),
        file(".wh.same"),  # hides only lower layers: the entry of this layer stays
    ]
    dest = layers_dir / "l1"
    unpack_layer(write_blob(tmp_path, entries, "zstd"), dest)

    for hidden in ("gone", "etc/passwd"):
        st = os.lstat(dest / hidden)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(dest / "var", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dest / "opaque-only", "trusted.overlay.opaque") == b"y"
    assert (dest / "var/kept").read_bytes() == b"new"
    assert (dest / "same").read_bytes() == b"stays"
    assert sorted(os.listdir(dest)) == ["etc", "gone", "opaque-only", "same", "var"]


def test_pax_xattrs_are_applied(tmp_path: Path, layers_dir: Path) -> None:
    entries = [
        file("f", b"x", pax={"SCHILY.xattr.user.kubling": "hello"}),
        Entry("d", tarfile.DIRTYPE, mode=0o755, pax={"SCHILY.xattr.user.dir": "yes"}),
        # A layer may not set overlayfs's own attributes.
        file("g", b"y", pax={"SCHILY.xattr.trusted.overlay.opaque": "y"}),
        # user.* xattrs are not allowed on symlinks: skipped, not an error.
        Entry("s", tarfile.SYMTYPE, link="f", pax={"SCHILY.xattr.user.x": "1"}),
    ]
    dest = layers_dir / "l1"
    unpack_layer(write_blob(tmp_path, entries), dest)

    assert os.getxattr(dest / "f", "user.kubling") == b"hello"
    assert os.getxattr(dest / "d", "user.dir") == b"yes"
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "g")


def test_later_entries_replace_earlier_ones(tmp_path: Path, layers_dir: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_bytes(b"untouched")
    entries = [
        file("a", b"first"),
        file("a", b"second"),
        file("b", b"a file"),
        directory("b/"),  # a directory replaces a file
        file("b/inner", b"in b"),
        directory("c/"),
        file("c/old", b"old"),
        file("c", b"a file now"),  # a file replaces a whole directory
        directory("d/"),
        file("d/one", b"1"),
        directory("d/", mode=0o700),  # a directory merges with a directory
        file("d/two", b"2"),
        symlink("e", str(outside / "target")),
        file("e", b"not through the link"),  # replaces the symlink, never writes through it
        symlink("f", "/somewhere"),
        symlink("f", "/elsewhere"),
        file("g", b"file"),
        symlink("g", "a"),
    ]
    dest = layers_dir / "l1"
    unpack_layer(write_blob(tmp_path, entries), dest)

    assert (dest / "a").read_bytes() == b"second"
    assert (dest / "b/inner").read_bytes() == b"in b"
    assert (dest / "c").read_bytes() == b"a file now"
    assert sorted(os.listdir(dest / "d")) == ["one", "two"]
    assert stat.S_IMODE(os.lstat(dest / "d").st_mode) == 0o700
    assert not stat.S_ISLNK(os.lstat(dest / "e").st_mode)
    assert (dest / "e").read_bytes() == b"not through the link"
    assert (outside / "target").read_bytes() == b"untouched"
    assert os.readlink(dest / "f") == "/elsewhere"
    assert os.readlink(dest / "g") == "a"


def test_zstd_with_several_frames(tmp_path: Path, layers_dir: Path) -> None:
    raw = tar_bytes([file(f"f{i}", os.urandom(1000)) for i in range(50)])
    half = len(raw) // 2
    cctx = zstandard.ZstdCompressor()
    blob = tmp_path / "blob"
    blob.write_bytes(cctx.compress(raw[:half]) + cctx.compress(raw[half:]))

    media_type = "application/vnd.oci.image.layer.v1.tar+zstd"
    diff_id = unpack_layer(blob, layers_dir / "l1", media_type=media_type)

    assert diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert len(os.listdir(layers_dir / "l1")) == 50


def test_diff_id_covers_the_padding_after_the_archive(tmp_path: Path, layers_dir: Path) -> None:
    raw = tar_bytes([file("a", b"x")]) + b"\0" * 8192  # extra zero records, as some tools write
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(raw))
    assert unpack_layer(blob, layers_dir / "l1") == "sha256:" + hashlib.sha256(raw).hexdigest()


# --- refusals ---------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A directory next to the layers that a hostile layer tries to write into."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_bytes(b"secret")
    yield path
    assert sorted(os.listdir(path)) == ["secret"], "a layer wrote outside its directory"
    assert (path / "secret").read_bytes() == b"secret"


def refusal_cases(outside: Path) -> dict[str, tuple[list[Entry], str]]:
    return {
        "dotdot": ([file("../x", b"evil")], 'layer entry "../x": path escapes the layer root'),
        "absolute dotdot": ([file("/../../x", b"evil")], "path escapes the layer root"),
        "inner dotdot": ([file("a/../../outside/x", b"evil")], "path escapes the layer root"),
        "absolute symlink parent": (
            [symlink("a", str(outside)), file("a/pwned", b"evil")],
            'layer entry "a/pwned": "a" is a symbolic link',
        ),
        "relative symlink parent": (
            [symlink("a", "../../.."), file("a/x", b"evil")],
            'layer entry "a/x": "a" is a symbolic link',
        ),
        "relative symlink parent to outside": (
            [symlink("a", "../../../../../../.."), file(f"a{outside}/pwned", b"evil")],
            '"a" is a symbolic link',
        ),
        "deep symlink parent": (
            [directory("d/"), symlink("d/l", str(outside)), directory("d/l/sub/")],
            '"d/l" is a symbolic link',
        ),
        "symlink parent of a whiteout": (
            [symlink("a", str(outside)), file("a/.wh.secret")],
            '"a" is a symbolic link',
        ),
        "symlink parent of an opaque marker": (
            [symlink("a", str(outside)), file("a/.wh..wh..opq")],
            '"a" is a symbolic link',
        ),
        "hardlink outside": (
            [hardlink("h", "../outside/secret")],
            'hard link target "../outside/secret" escapes the layer root',
        ),
        "hardlink through a symlink": (
            [symlink("a", str(outside)), hardlink("h", "a/secret")],
            '"a" is a symbolic link',
        ),
        "hardlink to a missing entry": (
            [hardlink("h", "nope")],
            'hard link target "nope" does not exist in this layer',
        ),
        "file as a parent": ([file("f"), file("f/x")], '"f" is not a directory'),
    }


@pytest.mark.parametrize(
    "case",
    [
        "dotdot",
        "absolute dotdot",
        "inner dotdot",
        "absolute symlink parent",
        "relative symlink parent",
        "relative symlink parent to outside",
        "deep symlink parent",
        "symlink parent of a whiteout",
        "symlink parent of an opaque marker",
        "hardlink outside",
        "hardlink through a symlink",
        "hardlink to a missing entry",
        "file as a parent",
    ],
)
def test_unsafe_layers_are_refused(
    tmp_path: Path, layers_dir: Path, outside: Path, case: str
) -> None:
    entries, message = refusal_cases(outside)[case]
    dest = layers_dir / "l1"
    with pytest.raises(LayerError, match=re.escape(message)):
        unpack_layer(write_blob(tmp_path, entries, "gzip"), dest)
    assert_nothing_left(layers_dir, dest)


def corrupt_blob(tmp_path: Path, kind: str) -> Path:
    raw = tar_bytes([file(f"f{i}", os.urandom(20000)) for i in range(20)])
    blob = tmp_path / "blob"
    if kind == "truncated gzip":
        data = gzip.compress(raw)
        blob.write_bytes(data[: len(data) // 2])
    elif kind == "gzip cut in the trailer":
        blob.write_bytes(gzip.compress(raw)[:-4])
    elif kind == "gzip with a bad crc":
        damaged = bytearray(gzip.compress(raw))
        damaged[-6] ^= 0xFF  # in the CRC32 of the trailer
        blob.write_bytes(bytes(damaged))
    elif kind == "corrupt zstd":
        damaged = bytearray(zstandard.ZstdCompressor().compress(raw))
        damaged[4:40] = b"\xff" * 36  # frame header and first block header
        blob.write_bytes(bytes(damaged))
    elif kind == "truncated zstd":
        data = zstandard.ZstdCompressor().compress(raw)
        blob.write_bytes(data[:-3])  # even a cut in the final padding is noticed
    elif kind == "truncated tar":
        blob.write_bytes(raw[: len(raw) // 2 + 100])
    elif kind == "damaged tar header":
        damaged = bytearray(raw)
        offsets = [member.offset for member in tarfile.open(fileobj=io.BytesIO(raw))]
        damaged[offsets[5] : offsets[5] + 100] = b"\x01" * 100  # its checksum no longer matches
        blob.write_bytes(bytes(damaged))
    elif kind == "not a tar":
        blob.write_bytes(b"this is not a tar archive\n" * 200)
    elif kind == "empty":
        blob.write_bytes(b"")
    return blob


@pytest.mark.parametrize(
    "kind",
    [
        "truncated gzip",
        "gzip cut in the trailer",
        "gzip with a bad crc",
        "corrupt zstd",
        "truncated zstd",
        "truncated tar",
        "damaged tar header",
        "not a tar",
        "empty",
    ],
)
def test_corrupt_layers_are_refused(tmp_path: Path, layers_dir: Path, kind: str) -> None:
    dest = layers_dir / "l1"
    with pytest.raises(LayerError, match="layer is truncated or corrupt"):
        unpack_layer(corrupt_blob(tmp_path, kind), dest)
    assert_nothing_left(layers_dir, dest)


def test_existing_destination_is_refused(tmp_path: Path, layers_dir: Path) -> None:
    dest = layers_dir / "l1"
    dest.mkdir()
    (dest / "keep").write_bytes(b"keep")
    with pytest.raises(LayerError, match="already exists"):
        unpack_layer(write_blob(tmp_path, [file("a", b"x")]), dest)
    assert os.listdir(dest) == ["keep"]
    assert [p.name for p in layers_dir.iterdir()] == ["l1"]


def test_missing_blob_is_refused(tmp_path: Path, layers_dir: Path) -> None:
    with pytest.raises(LayerError, match="cannot read layer blob"):
        unpack_layer(tmp_path / "nope", layers_dir / "l1")
    assert_nothing_left(layers_dir, layers_dir / "l1")


def test_unsupported_compression_is_refused(tmp_path: Path, layers_dir: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"BZh91AY&SY" + os.urandom(100))
    with pytest.raises(LayerError, match="bzip2, which is not supported"):
        unpack_layer(blob, layers_dir / "l1")
    assert_nothing_left(layers_dir, layers_dir / "l1")


# --- the kernel's view --------------------------------------------------------------------


@needs_root
def test_overlay_honours_whiteouts_and_opaque_dirs(tmp_path: Path, layers_dir: Path) -> None:
    lower = write_blob(
        tmp_path,
        [
            file("file.txt", b"lower"),
            file("kept.txt", b"kept"),
            directory("dir/"),
            file("dir/old.txt", b"old"),
            directory("dir/sub/"),
            file("dir/sub/deep.txt", b"deep"),
        ],
        "gzip",
    )
    unpack_layer(lower, layers_dir / "lower")
    upper = tmp_path / "upper.tar.zst"
    upper.write_bytes(
        compress(
            tar_bytes(
                [file(".wh.file.txt"), file("dir/.wh..wh..opq"), file("dir/new.txt", b"new")]
            ),
            "zstd",
        )
    )
    unpack_layer(upper, layers_dir / "upper")

    container = tmp_path / "kubling-container"
    try:
        rootfs = mount_rootfs([layers_dir / "lower", layers_dir / "upper"], container)
        assert sorted(os.listdir(rootfs)) == ["dir", "kept.txt"]
        assert not (rootfs / "file.txt").exists()
        assert os.listdir(rootfs / "dir") == ["new.txt"]
        assert (rootfs / "dir/new.txt").read_bytes() == b"new"
        assert (rootfs / "kept.txt").read_bytes() == b"kept"
    finally:
        unmount_rootfs(container)
    assert not container.exists()
