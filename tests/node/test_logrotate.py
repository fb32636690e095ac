"""Container log rotation on files: the kubelet's ContainerLogManager policy."""

from __future__ import annotations

import datetime
import gzip
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubling.node import logrotate
from kubling.node.logrotate import LogRotatePolicy, RotationError

POLICY = LogRotatePolicy(max_size=100, max_files=3)


def at(second: int) -> datetime.datetime:
    return datetime.datetime(2026, 11, 27, 3, 4, second)


def conmon_reopen(path: Path) -> Callable[[], None]:
    """What conmon does on REOPEN_LOGS_EVENT: a new empty file at the path."""
    def reopen() -> None:
        tmp = Path(str(path) + ".tmp")
        tmp.write_bytes(b"")
        tmp.rename(path)
    return reopen


def test_policy_from_the_kubelet_flags() -> None:
    assert LogRotatePolicy.parse("10Mi", 5) == LogRotatePolicy(10 * 1024 * 1024, 5)
    assert logrotate.DEFAULT_POLICY == LogRotatePolicy(10485760, 5)
    assert LogRotatePolicy.parse("64Ki", 2).max_size == 65536
    with pytest.raises(ValueError, match="invalid MaxFiles 1, must be > 1"):
        LogRotatePolicy.parse("10Mi", 1)
    with pytest.raises(ValueError, match="failed to parse container log max size"):
        LogRotatePolicy.parse("ten", 5)


def test_only_a_log_at_its_max_size_needs_rotation(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    assert not logrotate.needs_rotation(log, POLICY)
    log.write_bytes(b"x" * 99)
    assert not logrotate.needs_rotation(log, POLICY)
    log.write_bytes(b"x" * 100)
    assert logrotate.needs_rotation(log, POLICY)
    assert not logrotate.needs_rotation(log, LogRotatePolicy(-1, 5))


def test_rotations_keep_the_newest_uncompressed_compress_older_and_drop_the_oldest(
        tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    for second in range(4):
        log.write_bytes(f"round {second}\n".encode() * 20)
        rotated = logrotate.rotate(log, POLICY, conmon_reopen(log), now=at(second))
        assert rotated.name == f"0.log.20261127-03040{second}"
        assert log.read_bytes() == b""  # the runtime's new file
    names = sorted(p.name for p in tmp_path.iterdir())
    # MaxFiles 3: the current log, the newest rotated (plain), one older (compressed).
    assert names == ["0.log", "0.log.20261127-030402.gz", "0.log.20261127-030403"]
    assert gzip.decompress((tmp_path / "0.log.20261127-030402.gz").read_bytes()) == \
        b"round 2\n" * 20
    assert (tmp_path / "0.log.20261127-030403").read_bytes() == b"round 3\n" * 20
    assert logrotate.all_logs(log) == [tmp_path / "0.log.20261127-030402.gz",
                                       tmp_path / "0.log.20261127-030403", log]


def test_a_failed_reopen_renames_the_log_back(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(b"x" * 200)

    def broken() -> None:
        raise OSError("no conmon")

    with pytest.raises(RotationError, match="failed to reopen"):
        logrotate.rotate(log, POLICY, broken, now=at(0))
    assert [p.name for p in tmp_path.iterdir()] == ["0.log"]
    assert log.read_bytes() == b"x" * 200


def test_leftovers_of_a_failed_rotation_are_cleaned_up(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(b"x" * 200)
    (tmp_path / "0.log.20261127-030000.gz.tmp").write_bytes(b"half")
    (tmp_path / "0.log.20261127-030001").write_bytes(b"compressed already")
    (tmp_path / "0.log.20261127-030001.gz").write_bytes(gzip.compress(b"compressed already"))
    logrotate.rotate(log, LogRotatePolicy(100, 5), conmon_reopen(log), now=at(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0.log", "0.log.20261127-030001.gz", "0.log.20261127-030402"]


def test_compress_keeps_the_file_mode(tmp_path: Path) -> None:
    plain = tmp_path / "0.log.20261127-030000"
    plain.write_bytes(b"line\n" * 100)
    os.chmod(plain, 0o600)
    packed = logrotate.compress(plain)
    assert not plain.exists()
    assert packed.stat().st_mode & 0o777 == 0o600
    assert gzip.decompress(packed.read_bytes()) == b"line\n" * 100


def test_the_manager_rotates_running_containers_only(tmp_path: Path) -> None:
    uid = "0" * 8 + "-0000-0000-0000-" + "0" * 12
    bundles, exits = tmp_path / "runtime" / "bundles", tmp_path / "runtime" / "exits"
    exits.mkdir(parents=True)
    logs_dir = tmp_path / "pods" / uid / "logs"
    for name, exited in (("app", False), ("done", True)):
        cid = f"{uid}_{name}_0"
        (bundles / cid).mkdir(parents=True)
        os.mkfifo(bundles / cid / "ctl")
        if exited:
            (exits / cid).write_text("0")
        (logs_dir / name).mkdir(parents=True)
        (logs_dir / name / "0.log").write_bytes(b"x" * 200)
    manager = logrotate.ContainerLogManager(data_dir=tmp_path, bundles=bundles, exits=exits,
                                            policy=POLICY)
    # A reader stands in for conmon: it answers the reopen message as conmon does.
    ctl = os.open(bundles / f"{uid}_app_0" / "ctl", os.O_RDONLY | os.O_NONBLOCK)
    try:
        def conmon() -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    data = os.read(ctl, 100)
                except BlockingIOError:
                    data = b""
                if data:
                    assert data == b"2 0 0\n"
                    conmon_reopen(logs_dir / "app" / "0.log")()
                    return
                time.sleep(0.01)

        thread = threading.Thread(target=conmon)
        thread.start()
        rotated = manager.rotate_all()
        thread.join()
    finally:
        os.close(ctl)
    assert [p.parent.name for p in rotated] == ["app"]
    assert (logs_dir / "app" / "0.log").read_bytes() == b""
    assert [p.name for p in (logs_dir / "done").iterdir()] == ["0.log"]
