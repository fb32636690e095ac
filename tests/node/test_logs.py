"""The agent's log logic without containers: CRI parsing, options, tail/since/limit,
following until the container ends, and which attempt's log a request means."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kubling.node import logs
from kubling.node.logs import LogOptions, LogsError, Timestamp

T0 = "2024-05-01T12:00:00.000000001+00:00"
T1 = "2024-05-01T12:00:01.5+00:00"
T2 = "2024-05-01T14:00:02.123456789+02:00"
UID = "0" * 8 + "-0000-0000-0000-" + "0" * 12


def cri(*entries: tuple[str, str, str, str]) -> bytes:
    return b"".join(f"{ts} {stream} {tag} {text}\n".encode() for ts, stream, tag, text in entries)


SAMPLE = cri((T0, "stdout", "F", "one"), (T1, "stderr", "F", "two"),
             (T2, "stdout", "P", "thr"), (T2, "stdout", "F", "ee"))


def test_parse_strips_the_prefix_and_joins_partial_lines() -> None:
    lines = logs.parse(SAMPLE)
    assert [(line.stream, line.content) for line in lines] == [
        ("stdout", b"one"), ("stderr", b"two"), ("stdout", b"three")]


def test_an_empty_line_and_a_torn_entry() -> None:
    parser = logs.CRIParser()
    data = f"{T0} stdout F \n{T1} stdout F\n{T2} stdout F hal".encode()
    assert [line.content for line in parser.feed(data)] == [b"", b""]
    assert [line.content for line in parser.feed(b"f\n")] == [b"half"]


def test_garbage_lines_are_skipped() -> None:
    assert [line.content for line in logs.parse(b"nonsense\n" + SAMPLE)][:1] == [b"one"]


def test_timestamps_are_shown_with_nine_digits_and_their_zone() -> None:
    assert Timestamp.parse(T0).format() == "2024-05-01T12:00:00.000000001Z"
    assert Timestamp.parse(T1).format() == "2024-05-01T12:00:01.500000000Z"
    assert Timestamp.parse(T2).format() == "2024-05-01T14:00:02.123456789+02:00"
    assert Timestamp.parse("2024-05-01T12:00:02.123456789Z").ns == Timestamp.parse(T2).ns
    rendered = logs.parse(SAMPLE)[0].render(True)
    assert rendered == b"2024-05-01T12:00:00.000000001Z one\n"


def test_tail_and_since() -> None:
    lines = logs.parse(SAMPLE)
    assert [x.content for x in logs.select(lines, LogOptions(tail_lines=2))] == [b"two", b"three"]
    assert logs.select(lines, LogOptions(tail_lines=0)) == []
    assert len(logs.select(lines, LogOptions(tail_lines=10))) == 3
    since = LogOptions(since_ns=Timestamp.parse(T1).ns)
    assert [x.content for x in logs.select(lines, since)] == [b"two", b"three"]
    both = LogOptions(since_ns=Timestamp.parse(T1).ns, tail_lines=1)
    assert [x.content for x in logs.select(lines, both)] == [b"three"]


def test_limit_cuts_mid_line() -> None:
    limit = logs.Limit(5)
    assert limit.cut(b"one\ntwo\n") == b"one\nt"
    assert limit.reached and limit.cut(b"more") == b""


def test_options_from_the_query() -> None:
    now = 1_000 * 1_000_000_000
    options = LogOptions.from_query({"follow": "true", "tailLines": "3", "sinceSeconds": "10",
                                     "limitBytes": "7", "timestamps": "1"}, now_ns=now)
    assert options == LogOptions(follow=True, timestamps=True, tail_lines=3,
                                 since_ns=now - 10_000_000_000, limit_bytes=7)
    assert LogOptions.from_query({"sinceTime": "2024-05-01T12:00:01Z"}, now_ns=now).since_ns == \
        Timestamp.parse("2024-05-01T12:00:01Z").ns
    with pytest.raises(LogsError, match='parsing "x": invalid syntax'):
        LogOptions.from_query({"tailLines": "x"}, now_ns=now)
    with pytest.raises(LogsError, match="ParseBool"):
        LogOptions.from_query({"follow": "yes"}, now_ns=now)


def run_stream(path: Path, options: LogOptions, finished: Any = lambda: True) -> bytes:
    out: list[bytes] = []

    async def write(data: bytes) -> None:
        out.append(data)

    asyncio.run(logs.stream_log(path, options, write, finished, poll=0.02))
    return b"".join(out)


def test_stream_a_file(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(SAMPLE)
    assert run_stream(path, LogOptions()) == b"one\ntwo\nthree\n"
    assert run_stream(path, LogOptions(tail_lines=1, timestamps=True)) == \
        b"2024-05-01T14:00:02.123456789+02:00 three\n"
    assert run_stream(path, LogOptions(limit_bytes=6)) == b"one\ntw"
    assert run_stream(tmp_path / "missing.log", LogOptions()) == b""


def test_follow_ends_when_the_container_has_exited(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(cri((T0, "stdout", "F", "first")))
    exited = threading.Event()

    def writer() -> None:
        for i in range(5):
            time.sleep(0.05)
            with path.open("ab") as f:
                f.write(cri((T1, "stdout", "F", f"line {i}")))
        exited.set()

    thread = threading.Thread(target=writer)
    thread.start()
    started = time.monotonic()
    out = run_stream(path, LogOptions(follow=True, tail_lines=1), exited.is_set)
    thread.join()
    assert out == b"first\n" + b"".join(f"line {i}\n".encode() for i in range(5))
    assert time.monotonic() - started < 3


def test_follow_stops_at_the_byte_limit(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(SAMPLE)
    assert run_stream(path, LogOptions(follow=True, limit_bytes=3), lambda: False) == b"one"


def pod(*names: str, init: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default", "uid": UID},
            "spec": {"containers": [{"name": n} for n in names],
                     "initContainers": [{"name": n} for n in init]}}


def status(name: str, state: dict[str, Any], last: dict[str, Any] | None = None,
           cid: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "state": state,
                           "lastState": {"terminated": last} if last else {}}
    if cid:
        out["containerID"] = cid
    return out


def test_locate_the_running_attempt_and_the_previous_one(tmp_path: Path) -> None:
    running = status("c", {"running": {}}, {"exitCode": 1, "containerID": f"runc://{UID}_c_1"},
                     cid=f"runc://{UID}_c_2")
    target = logs.locate(pod("c"), [running], "c", previous=False, pod_dir=tmp_path)
    assert target.path == tmp_path / "logs" / "c" / "2.log"
    assert target.container_id == f"{UID}_c_2"
    previous = logs.locate(pod("c"), [running], "c", previous=True, pod_dir=tmp_path)
    assert previous.path == tmp_path / "logs" / "c" / "1.log"
    backing_off = status("c", {"waiting": {"reason": "CrashLoopBackOff"}},
                         {"exitCode": 1, "containerID": f"runc://{UID}_c_3"})
    assert logs.locate(pod("c"), [backing_off], "c", previous=False,
                       pod_dir=tmp_path).path.name == "3.log"


@pytest.mark.parametrize(("statuses", "container", "previous", "code", "message"), [
    ([], "x", False, 404, 'container "x" not found in pod "p"'),
    ([], "c", False, 400, 'container "c" in pod "p" is not available'),
    ([status("c", {"waiting": {"reason": "ContainerCreating"}})], "c", False, 400,
     'container "c" in pod "p" is waiting to start: ContainerCreating'),
    ([status("c", {"waiting": {"reason": "ErrImagePull"}})], "c", False, 400,
     'container "c" in pod "p" is waiting to start: image can\'t be pulled'),
    ([status("c", {"running": {}}, cid=f"runc://{UID}_c_0")], "c", True, 400,
     'previous terminated container "c" in pod "p" not found'),
    ([status("c", {"terminated": {"exitCode": 128}})], "c", False, 400,
     'container "c" in pod "p" is terminated'),
])
def test_locate_errors(tmp_path: Path, statuses: list[dict[str, Any]], container: str,
                       previous: bool, code: int, message: str) -> None:
    with pytest.raises(LogsError) as caught:
        logs.locate(pod("c"), statuses, container, previous=previous, pod_dir=tmp_path)
    assert (caught.value.code, caught.value.message) == (code, message)


def test_follow_moves_on_to_the_new_file_after_a_rotation(tmp_path: Path) -> None:
    """As conmon reopens: the old file is renamed, written to a little more, then a new
    file appears at the path; the follower reads the old one to its end, then the new."""
    path = tmp_path / "0.log"
    path.write_bytes(cri((T0, "stdout", "F", "line 0")))
    exited = threading.Event()

    def writer() -> None:
        time.sleep(0.1)
        with path.open("ab") as f:
            f.write(cri((T1, "stdout", "F", "line 1")))
        rotated = tmp_path / "0.log.20240501-120000"
        path.rename(rotated)
        time.sleep(0.1)  # renamed, not reopened yet: conmon still writes to the old file
        with rotated.open("ab") as f:
            f.write(cri((T1, "stdout", "F", "line 2")))
        tmp = tmp_path / "0.log.tmp"
        tmp.write_bytes(b"")
        tmp.rename(path)
        for i in (3, 4):
            time.sleep(0.1)
            with path.open("ab") as f:
                f.write(cri((T1, "stdout", "F", f"line {i}")))
        exited.set()

    thread = threading.Thread(target=writer)
    thread.start()
    out = run_stream(path, LogOptions(follow=True), exited.is_set)
    thread.join()
    assert out == b"".join(f"line {i}\n".encode() for i in range(5))


def test_lines_written_to_the_old_file_just_before_the_switch_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """conmon may write to the old file between the follower's last read of it and its
    check for a new one: those lines are read before the follower moves on."""
    path = tmp_path / "0.log"
    path.write_bytes(cri((T0, "stdout", "F", "line 0")))
    original = logs._rotated
    switched = threading.Event()

    def rotated_in_the_window(handle: Any, where: Path) -> bool:
        if not switched.is_set():
            switched.set()
            old = tmp_path / "0.log.20240501-120000"
            path.rename(old)
            with old.open("ab") as f:  # written after the follower's read, before the check
                f.write(cri((T1, "stdout", "F", "line 1")))
            path.write_bytes(cri((T1, "stdout", "F", "line 2")))
        return original(handle, where)

    monkeypatch.setattr(logs, "_rotated", rotated_in_the_window)
    out = run_stream(path, LogOptions(follow=True), switched.is_set)
    assert out == b"line 0\nline 1\nline 2\n"
