"""The atomic writer's on-disk layout and update rules, on a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubling.node.volumes import atomicwriter
from kubling.node.volumes.atomicwriter import FileProjection


def _files(*pairs: tuple[str, str], mode: int = 0o644) -> dict[str, FileProjection]:
    return {path: FileProjection(text.encode(), mode) for path, text in pairs}


def test_first_write_makes_upstreams_layout(tmp_path: Path) -> None:
    assert atomicwriter.write(tmp_path, _files(("a", "1"), ("dir/b", "2")))
    data = os.readlink(tmp_path / "..data")
    assert data.startswith("..") and (tmp_path / data).is_dir()
    assert os.readlink(tmp_path / "a") == "..data/a"
    assert os.readlink(tmp_path / "dir") == "..data/dir"
    assert (tmp_path / "a").read_text() == "1"
    assert (tmp_path / "dir" / "b").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["..data", data, "a", "dir"])
    assert (tmp_path / data).stat().st_mode & 0o777 == 0o755


def test_modes_are_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomicwriter.write(tmp_path, {"x": FileProjection(b"x", 0o444),
                                      "y": FileProjection(b"y", 0o640)})
    finally:
        os.umask(old)
    assert (tmp_path / "x").stat().st_mode & 0o7777 == 0o444
    assert (tmp_path / "y").stat().st_mode & 0o7777 == 0o640


def test_unchanged_payload_writes_nothing(tmp_path: Path) -> None:
    atomicwriter.write(tmp_path, _files(("a", "1")))
    before = os.readlink(tmp_path / "..data")
    assert not atomicwriter.write(tmp_path, _files(("a", "1")))
    assert os.readlink(tmp_path / "..data") == before


def test_update_swaps_data_and_removes_old_version_and_stale_keys(tmp_path: Path) -> None:
    atomicwriter.write(tmp_path, _files(("a", "1"), ("gone", "x")))
    old = os.readlink(tmp_path / "..data")
    held = open(tmp_path / "a")  # a reader holding the old version open
    assert atomicwriter.write(tmp_path, _files(("a", "2"), ("new", "n")))
    new = os.readlink(tmp_path / "..data")
    assert new != old and not (tmp_path / old).exists()
    assert (tmp_path / "a").read_text() == "2" and (tmp_path / "new").read_text() == "n"
    assert not os.path.lexists(tmp_path / "gone")
    assert held.read() == "1"  # the old inode lives on for whoever holds it (subPath mounts)
    held.close()
    assert not (tmp_path / "..data_tmp").exists()


def test_a_mode_change_alone_is_an_update(tmp_path: Path) -> None:
    atomicwriter.write(tmp_path, _files(("a", "1")))
    assert atomicwriter.write(tmp_path, _files(("a", "1"), mode=0o400))
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o400


@pytest.mark.parametrize("path", ["", "/abs", "a/../b", "..hidden", "x" * 256])
def test_invalid_paths_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(atomicwriter.PayloadError):
        atomicwriter.write(tmp_path, _files((path, "1")))
    assert not os.path.lexists(tmp_path / "..data")
