"""The exec session without containers: options, statuses, and ``serve`` between a fake
process and a fake connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from multidict import MultiDict

from kubling.node.runtime import execsession
from kubling.node.streaming import StreamingError, remotecommand


def test_options_follow_the_kubelet() -> None:
    options = remotecommand.Options.from_query(
        MultiDict(stdin="1", stdout="true", stderr="true", tty="true"), command=("sh",))
    assert (options.stdin, options.stdout, options.stderr, options.tty) == (
        True, True, False, True)  # no stderr under a terminal


@pytest.mark.parametrize(("query", "command", "message"), [
    ({}, ("sh",), "you must specify at least 1 of stdin, stdout, stderr"),
    ({"stdout": "1"}, (), "you must specify at least 1 command"),
])
def test_bad_options_are_400(query: dict[str, str], command: tuple[str, ...],
                             message: str) -> None:
    with pytest.raises(StreamingError) as caught:
        remotecommand.Options.from_query(MultiDict(query), command=command)
    assert (caught.value.code, caught.value.message) == (400, message)


def test_exit_status_carries_the_code_as_a_cause() -> None:
    status = remotecommand.exit_failure(3, ("sh", "-c", "exit 3"))
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert status["message"].startswith("command terminated with non-zero exit code: ")
    assert remotecommand.success() == {"metadata": {}, "status": "Success"}


def test_sizes_back_to_back_and_malformed() -> None:
    data = b'{"Width":80,"Height":24}\n{"Width":100,"Height":30}'
    assert remotecommand.parse_sizes(data) == [(80, 24), (100, 30)]
    assert remotecommand.parse_sizes(b'{"Width":"x"} nonsense') == []


class FakeProcess:
    def __init__(self, code: int | BaseException, output: list[bytes]) -> None:
        self.code = code
        self.output = list(output)
        self.stdin: list[bytes] = []
        self.sizes: list[tuple[int, int]] = []
        self.closed = False
        self.exited = asyncio.Event()
        if output or not isinstance(code, int) or code >= 0:
            self.exited.set()

    async def read_stdout(self) -> bytes:
        return self.output.pop(0) if self.output else b""

    async def read_stderr(self) -> bytes:
        return b""

    async def write_stdin(self, data: bytes) -> None:
        self.stdin.append(data)

    def close_stdin(self) -> None:
        self.stdin.append(b"<eof>")

    def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))

    async def wait(self) -> int:
        await self.exited.wait()
        if isinstance(self.code, BaseException):
            raise self.code
        return self.code

    async def close(self) -> None:
        self.closed = True


class FakeConnection:
    def __init__(self, events: list[remotecommand.Event], *, stay: bool = True) -> None:
        self._events = events
        self.stay = stay
        self.sent: list[tuple[int, bytes]] = []
        self.status: dict[str, Any] | None = None

    async def send(self, stream: int, data: bytes) -> None:
        self.sent.append((stream, data))

    async def events(self) -> AsyncIterator[remotecommand.Event]:
        for event in self._events:
            yield event
        if self.stay:
            await asyncio.Event().wait()

    async def finish(self, status: dict[str, Any]) -> None:
        self.status = status


OPTIONS = remotecommand.Options(command=("cat",), stdin=True, stdout=True, stderr=True,
                                tty=False)


def serve(process: FakeProcess, conn: FakeConnection) -> None:
    async def start() -> FakeProcess:
        return process

    asyncio.run(asyncio.wait_for(remotecommand.serve(start, conn, OPTIONS), 5))


def test_output_then_the_status() -> None:
    process = FakeProcess(0, [b"a", b"b"])
    conn = FakeConnection([remotecommand.Event("stdin", b"in"),
                           remotecommand.Event("resize", width=80, height=24)])
    serve(process, conn)
    assert conn.sent == [(1, b"a"), (1, b"b")]
    assert conn.status == remotecommand.success()
    assert process.closed


def test_a_command_that_could_not_start() -> None:
    process = FakeProcess(execsession.ExecStartError('exec: "x": not found', 127), [])
    conn = FakeConnection([])
    serve(process, conn)
    assert conn.status is not None
    assert conn.status["details"]["causes"][0]["message"] == "127"


def test_a_client_that_leaves_ends_the_process() -> None:
    process = FakeProcess(-1, [])
    process.exited.clear()
    conn = FakeConnection([remotecommand.Event("stdin", b"x")], stay=False)
    serve(process, conn)
    assert conn.status is None
    assert process.closed and process.stdin == [b"x"]


def test_a_runtime_that_fails_is_an_internal_error() -> None:
    async def start() -> FakeProcess:
        raise RuntimeError("container gone")

    conn = FakeConnection([])
    asyncio.run(remotecommand.serve(start, conn, OPTIONS))
    assert conn.status is not None and conn.status["reason"] == "InternalError"
    assert "container gone" in conn.status["message"]
