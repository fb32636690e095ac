"""Container probes as the kubelet runs them: startup, liveness and readiness.

A ``Prober`` per running container attempt probes on its own asyncio task, so a slow probe
never holds up the pod worker. Startup gates the others: until the startup probe succeeds the
container is not ``started`` and neither liveness nor readiness runs. Results go through a
``ProbeState`` (upstream's thresholds: a result changes only after ``successThreshold``
consecutive successes or ``failureThreshold`` consecutive failures). Readiness and start
changes wake the pod worker (which writes the status at once, so the EndpointSlice controller
drops an unready pod promptly); a liveness or startup failure asks it to kill the container,
which is then restarted per ``restartPolicy``.

The actions (exec, httpGet, tcpSocket) are shared with lifecycle hooks (``hooks``) and report
upstream's wording, since users grep events for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from kubling.api.meta import Object

#: What the kubelet sends as User-Agent: kube-probe/<major>.<minor>.
USER_AGENT = "kube-probe/1.32"
#: An exec probe's output is cut to this many bytes in events (upstream: 10 KiB).
MAX_OUTPUT = 10 * 1024

#: Runs argv inside the container: (exit code, combined output); raises TimeoutError.
ExecFn = Callable[[list[str], float], Awaitable[tuple[int, bytes]]]


class ProbeError(Exception):
    """The probe's definition cannot be run (e.g. a named port the container lacks)."""


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    """One probe of a container spec, with upstream's defaults filled in."""

    kind: str  # "Startup", "Liveness" or "Readiness": the word events use
    handler: Object
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def parse(cls, kind: str, probe: Object) -> ProbeSpec:
        """Defaults as the API server would default them; successThreshold is forced to 1
        for liveness and startup (validation rejects anything else upstream)."""
        def num(key: str, default: int, minimum: int) -> int:
            value = probe.get(key)
            return max(minimum, int(value)) if isinstance(value, int) and value else default

        success = num("successThreshold", 1, 1) if kind == "Readiness" else 1
        return cls(kind=kind, handler=probe, initial_delay=float(num(
            "initialDelaySeconds", 0, 0)), period=float(num("periodSeconds", 10, 1)),
            timeout=float(num("timeoutSeconds", 1, 1)), success_threshold=success,
            failure_threshold=num("failureThreshold", 3, 1))


@dataclasses.dataclass
class ProbeState:
    """Upstream's result smoothing: the last result plus how many in a row agreed."""

    success_threshold: int
    failure_threshold: int
    result: bool | None = None
    _last: bool | None = None
    _run: int = 0

    def observe(self, ok: bool) -> bool:
        """Count one probe outcome; True when ``result`` changed because of it."""
        if ok == self._last:
            self._run += 1
        else:
            self._last, self._run = ok, 1
        needed = self.success_threshold if ok else self.failure_threshold
        if self._run < needed or self.result == ok:
            return False
        self.result = ok
        return True

    def reset(self) -> None:
        self._last, self._run = None, 0


@dataclasses.dataclass(frozen=True)
class Target:
    """Where actions of one container go: the pod IP, its ports, exec into it."""

    pod_ip: str
    ports: tuple[Object, ...]
    exec: ExecFn


def target_for(container: Object, pod_ip: str, exec_fn: ExecFn) -> Target:
    return Target(pod_ip=pod_ip or "127.0.0.1", ports=tuple(container.get("ports") or ()),
                  exec=exec_fn)


# -- actions -------------------------------------------------------------------------------


async def run_action(action: Object, target: Target, timeout: float) -> tuple[bool, str]:
    """Run an exec / httpGet / tcpSocket action: (success, upstream's output text)."""
    if "exec" in action:
        return await _exec(list((action["exec"] or {}).get("command") or []), target, timeout)
    if "httpGet" in action:
        return await _http_get(action["httpGet"] or {}, target, timeout)
    if "tcpSocket" in action:
        spec = action["tcpSocket"] or {}
        host = spec.get("host") or target.pod_ip
        return await _tcp(host, resolve_port(spec.get("port"), target), timeout)
    if "grpc" in action:
        return False, "grpc probes are not supported by this node"
    raise ProbeError("probe has no handler (exec, httpGet, tcpSocket)")


def resolve_port(port: object, target: Target) -> int:
    """A port number, or the name of one of the container's ports (upstream's findPortByName)."""
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for entry in target.ports:
            if entry.get("name") == port:
                return int(entry.get("containerPort", 0))
    raise ProbeError(f"couldn't find port: {port} in the container's ports")


async def _exec(argv: list[str], target: Target, timeout: float) -> tuple[bool, str]:
    try:
        code, out = await target.exec(argv, timeout)
    except TimeoutError:
        return False, f'command "{" ".join(argv)}" timed out'
    text = out[:MAX_OUTPUT].decode(errors="replace")
    return code == 0, text


async def _tcp(host: str, port: int, timeout: float) -> tuple[bool, str]:
    address = f"{host}:{port}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return False, f"dial tcp {address}: i/o timeout"
    except OSError as err:
        return False, f"dial tcp {address}: connect: {_errtext(err)}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


async def _http_get(spec: Object, target: Target, timeout: float) -> tuple[bool, str]:
    scheme = str(spec.get("scheme") or "HTTP").upper()
    host = spec.get("host") or target.pod_ip
    port = resolve_port(spec.get("port"), target)
    path = str(spec.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme.lower()}://{_hostport(host, port)}{path}"
    headers: dict[str, str] = {"Host": _hostport(host, port), "User-Agent": USER_AGENT,
                               "Accept": "*/*", "Connection": "close"}
    for header in spec.get("httpHeaders") or []:
        name = str(header.get("name", ""))
        for key in list(headers):  # a user header replaces ours (case-insensitively)
            if key.lower() == name.lower():
                del headers[key]
        headers[name] = str(header.get("value", ""))
    try:
        status = await asyncio.wait_for(_request(scheme, host, port, path, headers), timeout)
    except TimeoutError:
        return False, (f'Get "{url}": context deadline exceeded (Client.Timeout exceeded '
                       "while awaiting headers)")
    except (OSError, ValueError) as err:
        return False, f'Get "{url}": dial tcp {_hostport(host, port)}: connect: {_errtext(err)}'
    if 200 <= status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {status}"


async def _request(scheme: str, host: str, port: int, path: str,
                   headers: dict[str, str]) -> int:
    context: ssl.SSLContext | None = None
    if scheme == "HTTPS":  # the kubelet does not verify probe certificates
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write((head + "\r\n").encode("latin-1"))
        await writer.drain()
        line = await reader.readline()
        parts = line.decode("latin-1").split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"malformed HTTP response {line[:80]!r}")
        return int(parts[1])
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _errtext(err: BaseException) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err)


# -- the prober ----------------------------------------------------------------------------


@dataclasses.dataclass
class Callbacks:
    """How a prober talks back to its pod worker."""

    changed: Callable[[], None]  # started or ready changed: write the status now
    failed: Callable[[str, str], None]  # (kind, message): an Unhealthy event
    kill: Callable[[str], Awaitable[None]]  # (kind): liveness/startup gave up on it


class Prober:
    """Probes one container attempt until cancelled (the attempt ended) or it kills it."""

    def __init__(self, container: Object, target: Target, callbacks: Callbacks) -> None:
        self.target = target
        self.callbacks = callbacks
        self.startup = _spec("Startup", container.get("startupProbe"))
        self.liveness = _spec("Liveness", container.get("livenessProbe"))
        self.readiness = _spec("Readiness", container.get("readinessProbe"))
        #: No startup probe: started as soon as it runs. No readiness probe: ready once started.
        self.started = self.startup is None
        self.ready = self.readiness is None

    @property
    def needed(self) -> bool:
        return any((self.startup, self.liveness, self.readiness))

    async def run(self) -> None:
        if self.startup is not None:
            if not await self._loop(self.startup):
                return
            self.started = True
            self.callbacks.changed()
        loops = [self._loop(spec) for spec in (self.liveness, self.readiness) if spec]
        if loops:
            await asyncio.gather(*loops)

    async def _loop(self, spec: ProbeSpec) -> bool:
        """Probe every period. Startup: True once it succeeded, False after it killed the
        container. Liveness: returns after killing. Readiness: runs until cancelled."""
        state = ProbeState(spec.success_threshold, spec.failure_threshold)
        await asyncio.sleep(spec.initial_delay)
        while True:
            try:
                ok, output = await run_action(spec.handler, self.target, spec.timeout)
            except ProbeError as err:
                ok, output = False, str(err)
            if not ok:
                self.callbacks.failed(spec.kind, f"{spec.kind} probe failed: {output}")
            changed = state.observe(ok)
            if spec.kind == "Startup" and state.result is True:
                return True
            if spec.kind in ("Startup", "Liveness") and state.result is False:
                await self.callbacks.kill(spec.kind)
                return False
            if spec.kind == "Readiness" and changed:
                self.ready = bool(state.result)
                self.callbacks.changed()
            await asyncio.sleep(spec.period)


def _spec(kind: str, probe: Any) -> ProbeSpec | None:
    return ProbeSpec.parse(kind, probe) if isinstance(probe, dict) and probe else None
