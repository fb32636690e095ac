"""SetVolumeOwnership on a real directory tree (as root: chown to any group)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kubling.node.volumes.ownership import set_volume_ownership


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_text("x")
    (root / "top").write_text("y")
    (root / "link").symlink_to("/etc/hostname")
    for path, mode in ((root, 0o755), (root / "sub", 0o700), (root / "sub" / "f", 0o600),
                       (root / "top", 0o400)):
        os.chmod(path, mode)


def test_every_file_gets_the_group_and_group_permissions(tmp_path: Path) -> None:
    root = tmp_path / "vol"
    _tree(root)
    host_mode = os.stat("/etc/hostname").st_mode
    set_volume_ownership(root, 4321)
    modes = {p.name: stat.S_IMODE(os.lstat(p).st_mode) for p in
             (root, root / "sub", root / "sub" / "f", root / "top")}
    assert modes == {"vol": 0o2775, "sub": 0o2770, "f": 0o660, "top": 0o660}
    for path in (root, root / "sub", root / "sub" / "f", root / "top", root / "link"):
        assert os.lstat(path).st_gid == 4321, path
    assert os.stat("/etc/hostname").st_mode == host_mode  # not followed


def test_read_only_and_on_root_mismatch(tmp_path: Path) -> None:
    root = tmp_path / "vol"
    _tree(root)
    set_volume_ownership(root, 99, read_only=True)
    assert stat.S_IMODE(os.stat(root / "sub" / "f").st_mode) == 0o640
    os.chmod(root / "sub" / "f", 0o600)
    set_volume_ownership(root, 99, read_only=True, policy="OnRootMismatch")
    assert stat.S_IMODE(os.stat(root / "sub" / "f").st_mode) == 0o600  # root matched: skipped
    set_volume_ownership(root, 100, policy="OnRootMismatch")
    assert os.stat(root / "sub" / "f").st_gid == 100
    assert stat.S_IMODE(os.stat(root / "sub" / "f").st_mode) == 0o660
