"""How a container's volumeMounts become runtime mounts: read-only forced for projected
kinds, subPath resolved through the atomic writer's symlinks (pinning the current version),
subPathExpr expanded from the container's environment, escapes refused with upstream's
words."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kubling.node import containers
from kubling.node.sandbox import Sandbox
from kubling.node.volumes import Mounted, atomicwriter
from kubling.node.volumes.atomicwriter import FileProjection

POD: dict[str, Any] = {"metadata": {"name": "p"}, "spec": {}}


def _mounts(tmp_path: Path, volume_mounts: list[dict[str, Any]],
            volumes: dict[str, Mounted], env: dict[str, str] | None = None) -> list[Any]:
    sandbox = Sandbox("uid", tmp_path, None, ())
    container = {"name": "main", "volumeMounts": volume_mounts}
    # The first four are the sandbox's: /dev/shm, /etc/hosts, /etc/resolv.conf, hostname.
    managed = containers.mounts(POD, container, sandbox, volumes, env or {})
    assert [m.destination for m in managed[:4]] == [
        "/dev/shm", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"]
    return managed[4:]


def test_projected_kinds_are_read_only_and_others_follow_the_mount(tmp_path: Path) -> None:
    volumes = {"cm": Mounted(tmp_path / "cm", True), "scratch": Mounted(tmp_path / "s", False)}
    got = _mounts(tmp_path, [{"name": "cm", "mountPath": "/cm"},
                             {"name": "scratch", "mountPath": "/s"},
                             {"name": "scratch", "mountPath": "/ro", "readOnly": True}],
                  volumes)
    assert [(m.destination, m.source, "ro" in m.options) for m in got] == [
        ("/cm", str(tmp_path / "cm"), True), ("/s", str(tmp_path / "s"), False),
        ("/ro", str(tmp_path / "s"), True)]


def test_sub_path_of_a_config_map_key_pins_its_version(tmp_path: Path) -> None:
    volume = tmp_path / "cm"
    volume.mkdir()
    atomicwriter.write(volume, {"app.conf": FileProjection(b"v1", 0o644)})
    [mount] = _mounts(tmp_path, [{"name": "cm", "mountPath": "/app.conf",
                                  "subPath": "app.conf"}], {"cm": Mounted(volume, True)})
    assert mount.source == os.path.realpath(volume / "app.conf")
    assert os.readlink(volume / "..data") in mount.source


def test_sub_path_expr_is_expanded_and_made_in_a_writable_volume(tmp_path: Path) -> None:
    volume = tmp_path / "logs"
    volume.mkdir()
    [mount] = _mounts(tmp_path, [{"name": "logs", "mountPath": "/logs",
                                  "subPathExpr": "$(POD_NAME)/app"}],
                      {"logs": Mounted(volume, False)}, {"POD_NAME": "web-1"})
    assert mount.source == str(volume / "web-1" / "app") and (volume / "web-1" / "app").is_dir()


@pytest.mark.parametrize("sub_path", ["../etc", "/etc", "link/x", "missing"])
def test_sub_paths_that_leave_the_volume_are_refused(tmp_path: Path, sub_path: str) -> None:
    volume = tmp_path / "cm"
    volume.mkdir()
    (volume / "link").symlink_to("/etc")
    with pytest.raises(containers.ContainerSpecError,
                       match='failed to prepare subPath for volumeMount "cm" of container '
                             '"main"'):
        _mounts(tmp_path, [{"name": "cm", "mountPath": "/x", "subPath": sub_path}],
                {"cm": Mounted(volume, True)})


def test_a_mount_of_a_volume_not_set_up_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(containers.ContainerSpecError, match='cannot find volume "nope"'):
        _mounts(tmp_path, [{"name": "nope", "mountPath": "/x"}], {})


def test_fs_group_comes_before_supplemental_groups() -> None:
    pod = {"spec": {"securityContext": {"fsGroup": 2000, "supplementalGroups": [5, 2000, 7]}}}
    assert containers.supplemental_groups(pod) == [2000, 5, 7]
    assert containers.supplemental_groups({"spec": {}}) == []
