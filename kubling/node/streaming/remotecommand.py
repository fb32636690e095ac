"""An exec session between a client's streams and a process in a container, whatever
the wire (WebSocket channels or SPDY streams): the kubelet's ``remotecommand`` package.

The transport hands ``serve`` a ``Connection``: output is sent per stream (stdout,
stderr), input arrives as events (stdin bytes, stdin closed, a terminal size), and the
session ends with one ``Status`` on the error stream: ``Success``, or ``Failure`` with
reason ``NonZeroExitCode`` and an ``ExitCode`` cause that kubectl turns into its own exit
code, or an ``InternalError`` when the command could not be run at all. A client that goes
away ends the session and kills the process, so nothing outlives its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol

from kubling.api.meta import Object
from kubling.node.runtime import execsession
from kubling.node.streaming import StreamingError

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
_TRUE = frozenset({"1", "true", "True", "TRUE", "t", "T"})


@dataclasses.dataclass(frozen=True)
class Options:
    """The kubelet's exec/attach query: ``command`` (repeated), ``stdin``, ``stdout``,
    ``stderr``, ``tty``."""

    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, query: Mapping[str, str], *, command: tuple[str, ...] = (),
                   attach: bool = False) -> Options:
        flags = {name: query.get(name, "") in _TRUE
                 for name in ("stdin", "stdout", "stderr", "tty")}
        if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
            raise StreamingError(400, "you must specify at least 1 of stdin, stdout, stderr")
        if not attach and not command:
            raise StreamingError(400, "you must specify at least 1 command")
        # The kubelet drops stderr under a TTY: the terminal carries both.
        return cls(command=command, stdin=flags["stdin"], stdout=flags["stdout"],
                   stderr=flags["stderr"] and not flags["tty"], tty=flags["tty"])


@dataclasses.dataclass(frozen=True)
class Event:
    """Input from the client: ``stdin`` (``data``), ``stdin-eof`` or ``resize``."""

    kind: str
    data: bytes = b""
    width: int = 0
    height: int = 0


class Process(Protocol):
    """What a session streams: an exec'd process (``execsession.ExecSession``) or a
    container's own stdio (``attach.AttachSession``)."""

    async def read_stdout(self) -> bytes: ...

    async def read_stderr(self) -> bytes: ...

    async def write_stdin(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def resize(self, width: int, height: int) -> None: ...

    async def wait(self) -> int: ...

    async def close(self) -> None: ...


class Connection(Protocol):
    """One upgraded stream connection, as ``serve`` uses it."""

    async def send(self, stream: int, data: bytes) -> None:
        """Write output on ``STDOUT`` or ``STDERR``; raises ConnectionError once gone."""
        ...

    def events(self) -> AsyncIterator[Event]:
        """The client's input until it goes away."""
        ...

    async def finish(self, status: Object) -> None:
        """Write the final status on the error stream and close."""
        ...


# -- statuses (what the kubelet writes on the error stream) ------------------------------


def success() -> Object:
    return {"metadata": {}, "status": "Success"}


def exit_failure(code: int, command: tuple[str, ...], detail: str = "") -> Object:
    """``NonZeroExitCode``: kubectl exits with the ``ExitCode`` cause's number."""
    why = f"command '{shlex.join(command)}' exited with {code}: {detail}"
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: {why}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def internal_error(message: str) -> Object:
    return {"metadata": {}, "status": "Failure",
            "message": f"Internal error occurred: {message}", "reason": "InternalError",
            "details": {"causes": [{"message": message}]}, "code": 500}


def parse_sizes(data: bytes) -> list[tuple[int, int]]:
    """Terminal sizes from a resize message: one or more ``{"Width":..,"Height":..}``
    objects back to back (SPDY streams them, a WebSocket message holds one)."""
    decoder = json.JSONDecoder()
    text, sizes, position = data.decode(errors="replace"), [], 0
    while position < len(text):
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        try:
            value, position = decoder.raw_decode(text, position)
        except ValueError:
            break  # a malformed size is dropped, as the kubelet's decoder drops it
        if isinstance(value, dict):
            width, height = value.get("Width"), value.get("Height")
            if isinstance(width, int) and isinstance(height, int):
                sizes.append((width, height))
    return sizes


# -- the session -------------------------------------------------------------------------


async def serve(start: Callable[[], Awaitable[Process]], conn: Connection,
                options: Options) -> None:
    """Run one exec or attach: start, copy both ways, write the status. Returns when the
    process has ended and its output is sent, or when the client has gone away (an exec'd
    process is then killed; an attached container keeps running)."""
    try:
        session = await start()
    except Exception as err:  # runc could not even be asked: the container is gone
        with contextlib.suppress(ConnectionError):
            await conn.finish(internal_error(f"error executing command in container: {err}"))
        return
    outputs = [asyncio.create_task(_pump(session.read_stdout, conn, STDOUT))]
    if options.stderr:
        outputs.append(asyncio.create_task(_pump(session.read_stderr, conn, STDERR)))
    inputs = asyncio.create_task(_feed(session, conn))
    waiter = asyncio.create_task(_exit_status(session, options.command))
    try:
        done, _ = await asyncio.wait({inputs, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            return  # the client went away first
        status = waiter.result()
        delivered = await asyncio.gather(*outputs)
        if all(delivered):
            with contextlib.suppress(ConnectionError):
                await conn.finish(status)
    finally:
        for task in (inputs, waiter, *outputs):
            task.cancel()
        await asyncio.gather(inputs, waiter, *outputs, return_exceptions=True)
        await session.close()


async def _exit_status(session: Process, command: tuple[str, ...]) -> Object:
    try:
        code = await session.wait()
    except execsession.ExecStartError as err:
        return exit_failure(err.exit_code, command, str(err))
    return success() if code == 0 else exit_failure(code, command)


async def _pump(read: Callable[[], Awaitable[bytes]], conn: Connection, stream: int) -> bool:
    """Copy one output to the client; False when the client is gone."""
    while data := await read():
        try:
            await conn.send(stream, data)
        except ConnectionError:
            return False
    return True


async def _feed(session: Process, conn: Connection) -> None:
    """The client's input into the process; returns when the client has gone away."""
    async for event in conn.events():
        if event.kind == "stdin":
            await session.write_stdin(event.data)
        elif event.kind == "stdin-eof":
            session.close_stdin()
        elif event.kind == "resize":
            session.resize(event.width, event.height)
