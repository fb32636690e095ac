"""Container logs as the kubelet serves them: CRI log files read back into what a user wrote.

conmon writes each container attempt's output to ``logs/<name>/<attempt>.log`` in the CRI
format, one entry per line::

    2024-05-01T12:00:00.123456789+00:00 stdout F the line the container wrote
    2024-05-01T12:00:00.223456789+00:00 stdout P a long line is split into partial entries
    2024-05-01T12:00:00.223556789+00:00 stdout F  and ends with a full one

``CRIParser`` turns that back into log lines (partial entries joined, the first fragment's
timestamp kept), ``LogOptions`` holds the kubelet's query parameters (``tailLines``,
``sinceSeconds``/``sinceTime``, ``timestamps``, ``limitBytes``, ``follow``, ``previous``),
``stream_log`` writes a file's lines with those options and, when following, keeps
polling the file until the container has exited (``kubectl logs -f`` ends when the
container does) and moving on to the new file when the log is rotated (``logrotate``), as
the kubelet's follower does; and ``locate`` picks the attempt whose log is wanted from the
container's status, with the kubelet's rules and error messages
(``validateContainerLogStatus``). Everything here is pure or file I/O, so the logic is
unit-tested without containers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import io
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from kubling.api.meta import Object
from kubling.node import containers

#: How often a followed log file is polled for new lines (inotify would save little here:
#: conmon writes in bursts and a 100 ms delay is below what a person notices).
FOLLOW_POLL_SECONDS = 0.1
_READ_CHUNK = 64 * 1024
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


class LogsError(Exception):
    """A request for logs the kubelet refuses: ``code`` is the HTTP status it answers
    with, the message its own words (the API server relays them to kubectl)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- timestamps --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timestamp:
    """An RFC 3339 time with nanoseconds (Python's datetime stops at microseconds)."""

    ns: int  # since the epoch
    offset_minutes: int

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        match = _TIMESTAMP.fullmatch(text)
        if match is None:
            raise ValueError(f"not an RFC 3339 time: {text!r}")
        year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
        fraction = (match.group(7) or "").ljust(9, "0")
        zone = match.group(8)
        offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (
            int(zone[1:3]) * 60 + int(zone[4:6]))
        tz = datetime.timezone(datetime.timedelta(minutes=offset))
        when = datetime.datetime(year, month, day, hour, minute, second, tzinfo=tz)
        return cls(ns=int(when.timestamp()) * 1_000_000_000 + int(fraction or "0"),
                   offset_minutes=offset)

    def format(self) -> str:
        """Go's RFC3339NanoFixed (``2006-01-02T15:04:05.000000000Z07:00``), what
        ``kubectl logs --timestamps`` shows."""
        seconds, nanos = divmod(self.ns, 1_000_000_000)
        tz = datetime.timezone(datetime.timedelta(minutes=self.offset_minutes))
        when = datetime.datetime.fromtimestamp(seconds, tz=tz)
        if self.offset_minutes == 0:
            zone = "Z"
        else:
            sign = "+" if self.offset_minutes > 0 else "-"
            hours, minutes = divmod(abs(self.offset_minutes), 60)
            zone = f"{sign}{hours:02d}:{minutes:02d}"
        return f"{when.strftime('%Y-%m-%dT%H:%M:%S')}.{nanos:09d}{zone}"


# -- the CRI format ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogLine:
    """One line as the container wrote it (without its newline)."""

    timestamp: Timestamp
    stream: str
    content: bytes

    def render(self, timestamps: bool) -> bytes:
        if timestamps:
            return self.timestamp.format().encode() + b" " + self.content + b"\n"
        return self.content + b"\n"


class CRIParser:
    """Incremental: ``feed`` bytes as they arrive, get the lines completed so far. A
    torn last entry (conmon mid-write) waits for the next feed; partial (``P``) entries
    wait for the full (``F``) one that ends them."""

    def __init__(self) -> None:
        self._pending = b""
        self._partial: dict[str, tuple[Timestamp, list[bytes]]] = {}

    def feed(self, data: bytes) -> list[LogLine]:
        self._pending += data
        *complete, self._pending = self._pending.split(b"\n")
        out: list[LogLine] = []
        for raw in complete:
            line = self._entry(raw)
            if line is not None:
                out.append(line)
        return out

    def _entry(self, raw: bytes) -> LogLine | None:
        parts = raw.split(b" ", 3)
        if len(parts) < 3:
            return None  # not a CRI entry: skipped, as the kubelet does
        try:
            timestamp = Timestamp.parse(parts[0].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
        stream = parts[1].decode("ascii", errors="replace")
        partial = parts[2].split(b":", 1)[0] == b"P"
        content = parts[3] if len(parts) == 4 else b""
        first, fragments = self._partial.pop(stream, (timestamp, []))
        fragments.append(content)
        if partial:
            self._partial[stream] = (first, fragments)
            return None
        return LogLine(first, stream, b"".join(fragments))


def parse(data: bytes) -> list[LogLine]:
    """Every complete line of a CRI log file's content."""
    return CRIParser().feed(data)


# -- options ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogOptions:
    """The kubelet's ``PodLogOptions`` (the API server validated them already)."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    #: Lines older than this (ns since the epoch) are left out.
    since_ns: int | None = None
    limit_bytes: int | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str], *, now_ns: int) -> LogOptions:
        """Read the kubelet's query; a malformed value raises ``LogsError`` (400)."""
        since_ns: int | None = None
        since_seconds = _int(query, "sinceSeconds")
        if since_seconds is not None:
            since_ns = now_ns - since_seconds * 1_000_000_000
        if query.get("sinceTime"):
            try:
                since_ns = Timestamp.parse(query["sinceTime"]).ns
            except ValueError as err:
                raise LogsError(400, str(err)) from None
        return cls(follow=_bool(query, "follow"), previous=_bool(query, "previous"),
                   timestamps=_bool(query, "timestamps"), tail_lines=_int(query, "tailLines"),
                   since_ns=since_ns, limit_bytes=_int(query, "limitBytes"))

    def wanted(self, line: LogLine) -> bool:
        return self.since_ns is None or line.timestamp.ns >= self.since_ns


def _bool(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "")
    if value in ("", "0", "f", "F", "false", "False", "FALSE"):
        return False
    if value in ("1", "t", "T", "true", "True", "TRUE"):
        return True
    raise LogsError(400, f'strconv.ParseBool: parsing "{value}": invalid syntax')


def _int(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise LogsError(400, f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def select(lines: Sequence[LogLine], options: LogOptions) -> list[LogLine]:
    """The lines a non-following read shows: newer than ``since``, then the last
    ``tailLines`` of those."""
    kept = [line for line in lines if options.wanted(line)]
    if options.tail_lines is not None:
        kept = kept[len(kept) - options.tail_lines:] if options.tail_lines else []
    return kept


class Limit:
    """``limitBytes``: the output stops after that many bytes, even mid-line."""

    def __init__(self, limit: int | None) -> None:
        self.remaining = limit

    @property
    def reached(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def cut(self, data: bytes) -> bytes:
        if self.remaining is None:
            return data
        data = data[:max(self.remaining, 0)]
        self.remaining -= len(data)
        return data


# -- reading and following ----------------------------------------------------------------

Write = Callable[[bytes], Awaitable[None]]


async def stream_log(path: Path, options: LogOptions, write: Write,
                     finished: Callable[[], bool], *,
                     poll: float = FOLLOW_POLL_SECONDS) -> None:
    """Write the log at ``path`` with ``options``. Following, keep writing new lines
    until ``finished()`` (the container has exited) and the file has been read to its
    end; a file not there yet counts as empty."""
    limit = Limit(options.limit_bytes)
    parser = CRIParser()
    handle = None
    try:
        handle = await asyncio.to_thread(_open, path)
        data = await asyncio.to_thread(handle.read) if handle is not None else b""
        if not await _emit(select(parser.feed(data), options), options, limit, write):
            return
        while options.follow and not limit.reached:
            if handle is None:
                handle = await asyncio.to_thread(_open, path)
            done = finished()  # before the read: what was written before the exit is read
            data = await asyncio.to_thread(handle.read, _READ_CHUNK) if handle else b""
            if data:
                lines = [line for line in parser.feed(data) if options.wanted(line)]
                if not await _emit(lines, options, limit, write):
                    return
                continue
            if handle is not None and await asyncio.to_thread(_rotated, handle, path):
                # The runtime writes to a new file now (conmon closed the old one before the
                # new one appeared). What it wrote to the old one after our last read and
                # before closing it is read first, then the new file is followed.
                rest = await asyncio.to_thread(handle.read)
                lines = [line for line in parser.feed(rest) if options.wanted(line)]
                if not await _emit(lines, options, limit, write):
                    return
                handle.close()
                handle = await asyncio.to_thread(_open, path)
                continue
            if done:
                return
            await asyncio.sleep(poll)
    finally:
        if handle is not None:
            handle.close()


def _open(path: Path) -> io.BufferedReader | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _rotated(handle: io.BufferedReader, path: Path) -> bool:
    """Whether ``path`` names another file than the open ``handle`` — the log was rotated
    (renamed) and the runtime has reopened a new one. Between the two, ``path`` is missing:
    not rotated yet, the runtime may still write to the old file."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    was = os.fstat(handle.fileno())
    return (now.st_ino, now.st_dev) != (was.st_ino, was.st_dev)


async def _emit(lines: Sequence[LogLine], options: LogOptions, limit: Limit,
                write: Write) -> bool:
    """Write the lines; False once the byte limit is used up."""
    if not lines:
        return not limit.reached
    chunk = limit.cut(b"".join(line.render(options.timestamps) for line in lines))
    if chunk:
        await write(chunk)
    return not limit.reached


# -- which attempt ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogTarget:
    """The log file of one container attempt, and the runtime id to ask whether it ended."""

    path: Path
    container_id: str


def locate(pod: Object, statuses: Sequence[Object], container: str, *, previous: bool,
           pod_dir: Path) -> LogTarget:
    """The attempt whose log is wanted, from the container's status: the kubelet's
    ``validateContainerLogStatus`` with its error messages (all 400 but an unknown
    container, 404)."""
    pod_name = pod["metadata"]["name"]
    spec = pod.get("spec") or {}
    names = [c.get("name") for key in ("initContainers", "containers", "ephemeralContainers")
             for c in spec.get(key) or []]
    if container not in names:
        raise LogsError(404, f'container "{container}" not found in pod "{pod_name}"')
    status = next((s for s in statuses if s.get("name") == container), None)
    if status is None:
        raise LogsError(400, f'container "{container}" in pod "{pod_name}" is not available')
    state = status.get("state") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    waiting, running, terminated = state.get("waiting"), state.get("running"), \
        state.get("terminated")
    terminated_msg = f'container "{container}" in pod "{pod_name}" is terminated'
    if previous:
        if not last.get("containerID"):
            raise LogsError(400, f'previous terminated container "{container}" in pod '
                                 f'"{pod_name}" not found')
        cid = last["containerID"]
    elif running is not None:
        cid = status.get("containerID", "")
    elif terminated is not None:
        cid = terminated.get("containerID") or last.get("containerID") or ""
        if not cid:
            raise LogsError(400, terminated_msg)
    elif last:
        cid = last.get("containerID") or ""
        if not cid:
            raise LogsError(400, terminated_msg)
    elif waiting is not None:
        reason = waiting.get("reason", "")
        why = {"ErrImagePull": "image can't be pulled",
               "ImagePullBackOff": "trying and failing to pull image"}.get(reason, reason)
        raise LogsError(400, f'container "{container}" in pod "{pod_name}" is waiting to '
                             f"start: {why}")
    else:
        raise LogsError(400, f'container "{container}" in pod "{pod_name}" is waiting to '
                             "start - no logs yet")
    runtime_id = str(cid).split("://", 1)[-1]
    parsed = containers.ContainerId.parse(runtime_id)
    if parsed is None:
        raise LogsError(500, f"container {cid} has no log file on this node")
    path = containers.ContainerPaths(pod_dir, parsed.name).log_path(parsed.attempt)
    return LogTarget(path=path, container_id=runtime_id)
