"""Root filesystems as real overlay mounts: layering, where writes go, read-only mounts,
idempotence, and that nothing stays mounted."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubling.node.images.rootfs import RootfsError, is_mounted, mount_rootfs, unmount_rootfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below `path`, read from mountinfo independently of the module."""
    prefix = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split(" ")[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """The test's directory; whatever a test mounted below it must be gone at the end."""
    yield tmp_path
    left = mounts_below(tmp_path)
    for point in reversed(left):  # a failed test must not leave a mount behind
        subprocess.run(["umount", "--lazy", point], check=False)
    assert left == [], "left mounted"


def make_layer(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


@pytest.fixture
def layers(workdir: Path) -> list[Path]:
    """Two layers, lowest first; the top one overrides shared.txt."""
    return [
        make_layer(workdir / "layers/base", {"base.txt": b"base", "shared.txt": b"from base"}),
        make_layer(workdir / "layers/top", {"top.txt": b"top", "shared.txt": b"from top"}),
    ]


def test_mount_stacks_layers_and_unmount_removes_everything(
    workdir: Path, layers: list[Path]
) -> None:
    container = workdir / "kubling-c1"
    rootfs = mount_rootfs(layers, container)
    try:
        assert rootfs == container / "rootfs"
        assert is_mounted(rootfs)
        assert sorted(os.listdir(rootfs)) == ["base.txt", "shared.txt", "top.txt"]
        assert (rootfs / "shared.txt").read_bytes() == b"from top"  # the last layer is on top
    finally:
        unmount_rootfs(container)
    assert not is_mounted(rootfs)
    assert not container.exists()
    assert mounts_below(workdir) == []
    assert (layers[0] / "base.txt").read_bytes() == b"base"


def test_writes_land_in_upper_not_in_the_layers(workdir: Path, layers: list[Path]) -> None:
    container = workdir / "kubling-c1"
    rootfs = mount_rootfs(layers, container)
    try:
        (rootfs / "new.txt").write_bytes(b"new")
        (rootfs / "shared.txt").write_bytes(b"changed")
        (rootfs / "base.txt").unlink()

        upper = container / "upper"
        assert (upper / "new.txt").read_bytes() == b"new"
        assert (upper / "shared.txt").read_bytes() == b"changed"
        whiteout = os.lstat(upper / "base.txt")  # the kernel records the deletion as a whiteout
        assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
        assert sorted(os.listdir(layers[0])) == ["base.txt", "shared.txt"]
        assert (layers[1] / "shared.txt").read_bytes() == b"from top"
        assert not (layers[1] / "new.txt").exists()
    finally:
        unmount_rootfs(container)


def test_readonly_mount_refuses_writes(workdir: Path, layers: list[Path]) -> None:
    container = workdir / "kubling-c1"
    rootfs = mount_rootfs(layers, container, readonly=True)
    try:
        assert (rootfs / "shared.txt").read_bytes() == b"from top"
        with pytest.raises(OSError) as raised:
            (rootfs / "new.txt").write_bytes(b"no")
        assert raised.value.errno == errno.EROFS
        assert sorted(os.listdir(container)) == ["rootfs"]  # no upper, no work dir
    finally:
        unmount_rootfs(container)


def test_a_single_readonly_layer(workdir: Path, layers: list[Path]) -> None:
    container = workdir / "kubling-c1"
    rootfs = mount_rootfs(layers[:1], container, readonly=True)
    try:
        assert sorted(os.listdir(rootfs)) == ["base.txt", "shared.txt"]
        with pytest.raises(OSError) as raised:
            (rootfs / "base.txt").write_bytes(b"no")
        assert raised.value.errno == errno.EROFS
    finally:
        unmount_rootfs(container)


def test_no_layers_readonly(workdir: Path) -> None:
    container = workdir / "kubling-c1"
    rootfs = mount_rootfs([], container, readonly=True)
    try:
        assert os.listdir(rootfs) == []
        assert is_mounted(rootfs)
    finally:
        unmount_rootfs(container)


def test_no_layers_gives_an_empty_writable_root(workdir: Path) -> None:
    container = workdir / "kubling-c1"
    rootfs = mount_rootfs([], container)
    try:
        assert os.listdir(rootfs) == []
        (rootfs / "file").write_bytes(b"x")
        assert (container / "upper/file").read_bytes() == b"x"
        assert sorted(os.listdir(container)) == ["empty-0", "rootfs", "upper", "work"]
    finally:
        unmount_rootfs(container)


def test_mount_is_idempotent(workdir: Path, layers: list[Path]) -> None:
    container = workdir / "kubling-c1"
    first = mount_rootfs(layers, container)
    try:
        (first / "marker").write_bytes(b"still here")
        assert mount_rootfs(layers, container) == first
        assert mounts_below(container) == [str(first)]  # not mounted twice
        assert (first / "marker").read_bytes() == b"still here"
    finally:
        unmount_rootfs(container)
    unmount_rootfs(container)  # unmounting again is fine too


def test_is_mounted_with_a_space_in_the_path(workdir: Path, layers: list[Path]) -> None:
    container = workdir / "kubling container with spaces"
    rootfs = container / "rootfs"
    assert not is_mounted(rootfs)
    mount_rootfs(layers, container)
    try:
        assert is_mounted(rootfs)
        assert is_mounted(container / "x" / ".." / "rootfs")
        assert not is_mounted(container)
        assert not is_mounted(workdir / "kubling container")
    finally:
        unmount_rootfs(container)
    assert not is_mounted(rootfs)
    assert not container.exists()


def test_unmount_of_a_missing_dir_is_fine(workdir: Path) -> None:
    unmount_rootfs(workdir / "never-created")
    plain = workdir / "kubling-plain"
    (plain / "upper").mkdir(parents=True)
    unmount_rootfs(plain)  # not mounted: just removed
    assert not plain.exists()


def test_unmount_of_a_busy_rootfs_detaches_it(workdir: Path, layers: list[Path]) -> None:
    container = workdir / "kubling-c1"
    rootfs = mount_rootfs(layers, container)
    busy = os.open(rootfs / "base.txt", os.O_RDONLY)  # an open file keeps the mount busy
    try:
        unmount_rootfs(container)
        assert not is_mounted(rootfs)
        assert not container.exists()
        assert os.read(busy, 100) == b"base"  # still readable through the detached mount
    finally:
        os.close(busy)
        unmount_rootfs(container)


def test_too_many_layers_is_a_clear_error(workdir: Path) -> None:
    many = [make_layer(workdir / "layers" / f"{i:03d}-{'x' * 40}", {}) for i in range(100)]
    container = workdir / "kubling-c1"
    with pytest.raises(RootfsError, match=r"too many layers to mount: .* at most 4096"):
        mount_rootfs(many, container)
    assert mounts_below(workdir) == []
    assert not container.exists()


def test_missing_layer_is_a_clear_error(workdir: Path, layers: list[Path]) -> None:
    container = workdir / "kubling-c1"
    with pytest.raises(RootfsError, match="nope does not exist"):
        mount_rootfs([*layers, workdir / "nope"], container)
    assert mounts_below(workdir) == []
