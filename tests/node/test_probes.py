"""Probes and hooks without a server or containers: defaults, the threshold state machine,
startup gating, liveness kills, and the exec / httpGet / tcpSocket actions against local
sockets, with upstream's messages."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Callable
from typing import Any

import pytest

from kubling.node import hooks, podstatus, probes
from kubling.node.probes import ProbeSpec, ProbeState


def test_defaults_are_upstreams() -> None:
    spec = ProbeSpec.parse("Liveness", {"exec": {"command": ["true"]}, "successThreshold": 3})
    assert (spec.initial_delay, spec.period, spec.timeout) == (0.0, 10.0, 1.0)
    assert (spec.success_threshold, spec.failure_threshold) == (1, 3)
    ready = ProbeSpec.parse("Readiness", {"exec": {}, "successThreshold": 2,
                                          "periodSeconds": 1, "failureThreshold": 1})
    assert (ready.success_threshold, ready.failure_threshold, ready.period) == (2, 1, 1.0)


def test_state_changes_only_after_the_threshold_in_a_row() -> None:
    state = ProbeState(success_threshold=2, failure_threshold=3)
    assert not state.observe(True) and state.result is None
    assert state.observe(True) and state.result is True
    assert not state.observe(False) and not state.observe(False)
    assert not state.observe(True)  # the run of failures is broken
    assert [state.observe(False) for _ in range(3)] == [False, False, True]
    assert state.result is False
    assert not state.observe(False)  # no change while it stays failed


@dataclasses.dataclass
class Script:
    """A fake container: each exec answers from a per-command function."""

    answers: dict[str, Callable[[], int]]
    calls: list[str] = dataclasses.field(default_factory=list)

    async def exec(self, argv: list[str], timeout: float) -> tuple[int, bytes]:
        self.calls.append(argv[0])
        answer = self.answers[argv[0]]
        code = answer()
        if code < 0:  # hangs: the runtime kills it after the timeout
            await asyncio.sleep(timeout)
            raise TimeoutError
        return code, b"" if code == 0 else f"{argv[0]} failed".encode()


def fast(kind: str, command: str, **extra: Any) -> Any:
    return {"exec": {"command": [command]}, **extra}


def run_prober(container: dict[str, Any], script: Script, *, seconds: float,
               ) -> tuple[probes.Prober, list[str], list[str]]:
    """Run a prober (periods shrunk to 20 ms) for `seconds`; its events and kills."""
    failures: list[str] = []
    kills: list[str] = []

    async def kill(kind: str) -> None:
        kills.append(kind)

    async def main() -> probes.Prober:
        prober = probes.Prober(container, probes.Target("127.0.0.1", (), script.exec),
                               probes.Callbacks(changed=lambda: None,
                                                failed=lambda k, m: failures.append(m),
                                                kill=kill))
        for attr in ("startup", "liveness", "readiness"):
            spec = getattr(prober, attr)
            if spec is not None:
                setattr(prober, attr, dataclasses.replace(spec, period=0.02, timeout=0.05))
        task = asyncio.create_task(prober.run())
        await asyncio.sleep(seconds)
        task.cancel()
        return prober

    return asyncio.run(main()), failures, kills


def test_startup_gates_liveness_and_readiness() -> None:
    healthy = {"ok": False}
    script = Script({"start": lambda: 0 if healthy["ok"] else 1, "live": lambda: 0,
                     "ready": lambda: 0})
    container = {"startupProbe": fast("s", "start", failureThreshold=1000),
                 "livenessProbe": fast("l", "live"), "readinessProbe": fast("r", "ready")}
    prober, failures, kills = run_prober(container, script, seconds=0.2)
    assert not prober.started and not prober.ready and not kills
    assert set(script.calls) == {"start"}
    assert failures[0] == "Startup probe failed: start failed"
    healthy["ok"] = True
    script.calls.clear()
    prober, _, kills = run_prober(container, script, seconds=0.2)
    assert prober.started and prober.ready and not kills
    assert {"live", "ready"} <= set(script.calls)


def test_liveness_kills_after_failure_threshold() -> None:
    script = Script({"live": lambda: 1})
    prober, failures, kills = run_prober(
        {"livenessProbe": fast("l", "live", failureThreshold=2)}, script, seconds=0.3)
    assert kills == ["Liveness"]
    assert len(script.calls) == 2  # it stops probing once it asked for the kill
    assert failures == ["Liveness probe failed: live failed"] * 2
    assert prober.started and prober.ready  # no readiness probe: ready when started


def test_startup_failure_kills_too() -> None:
    _, _, kills = run_prober({"startupProbe": fast("s", "nope", failureThreshold=1)},
                             Script({"nope": lambda: 1}), seconds=0.1)
    assert kills == ["Startup"]


def test_readiness_follows_the_probe() -> None:
    flips = iter([0, 0, 1, 1, 1, 0] + [0] * 100)
    prober, _, kills = run_prober({"readinessProbe": fast("r", "ready", failureThreshold=3)},
                                  Script({"ready": lambda: next(flips)}), seconds=0.07)
    assert prober.ready and not kills
    prober, _, _ = run_prober({"readinessProbe": fast("r", "ready", failureThreshold=3)},
                              Script({"ready": lambda: next(flips)}), seconds=0.3)
    assert prober.ready  # the fresh prober starts unready and sees successes again


def test_exec_timeout_message() -> None:
    target = probes.Target("127.0.0.1", (), Script({"sleep": lambda: -1}).exec)
    ok, out = asyncio.run(probes.run_action({"exec": {"command": ["sleep", "5"]}}, target,
                                            0.05))
    assert not ok and out == 'command "sleep 5" timed out'


async def _serve(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
                 ) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_http_get_statuses_headers_and_named_ports() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        status = 500 if b"/bad" in head else 302 if b"/moved" in head else 200
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    async def main() -> list[tuple[bool, str]]:
        server, port = await _serve(handler)
        target = probes.Target("127.0.0.1", ({"name": "web", "containerPort": port},),
                               Script({}).exec)
        out = []
        for path in ("/healthz", "/bad", "/moved"):
            action = {"httpGet": {"path": path, "port": "web",
                                  "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}}
            out.append(await probes.run_action(action, target, 1.0))
        server.close()
        out.append(await probes.run_action({"httpGet": {"path": "/", "port": port}},
                                           target, 1.0))
        return out

    results = asyncio.run(main())
    assert results[:3] == [(True, ""), (False, "HTTP probe failed with statuscode: 500"),
                           (True, "")]
    assert not results[3][0] and "connect: connection refused" in results[3][1]
    assert b"User-Agent: kube-probe/1.32" in seen[0] and b"X-Probe: yes" in seen[0]


def test_tcp_socket() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def main() -> tuple[tuple[bool, str], tuple[bool, str]]:
        server, port = await _serve(handler)
        target = probes.Target("127.0.0.1", (), Script({}).exec)
        good = await probes.run_action({"tcpSocket": {"port": port}}, target, 1.0)
        server.close()
        await server.wait_closed()
        bad = await probes.run_action({"tcpSocket": {"port": port}}, target, 1.0)
        return good, bad

    good, bad = asyncio.run(main())
    assert good == (True, "")
    assert not bad[0] and bad[1].startswith("dial tcp 127.0.0.1:")


def test_an_unknown_named_port_is_a_failure() -> None:
    target = probes.Target("127.0.0.1", (), Script({}).exec)
    with pytest.raises(probes.ProbeError, match="couldn't find port: web"):
        asyncio.run(probes.run_action({"tcpSocket": {"port": "web"}}, target, 1.0))


def test_hooks() -> None:
    target = probes.Target("127.0.0.1", (), Script({"false": lambda: 1, "true": lambda: 0}).exec)
    asyncio.run(hooks.run_hook({"exec": {"command": ["true"]}}, target, timeout=1))
    asyncio.run(hooks.run_hook({"sleep": {"seconds": 0}}, target, timeout=1))
    with pytest.raises(hooks.HookError, match=r"Exec lifecycle hook \(\['false'\]\) failed"):
        asyncio.run(hooks.run_hook({"exec": {"command": ["false"]}}, target, timeout=1))


def test_probe_verdicts_drive_the_containers_and_the_pods_readiness() -> None:
    view = podstatus.ContainerView(name="main", image="busybox",
                                   running_since=datetime.datetime.now(datetime.UTC),
                                   waiting_reason="", probe_started=False, probe_ready=False)
    status = view.to_status()
    assert (status["started"], status["ready"]) == (False, False)
    view.probe_started = True
    assert (view.to_status()["started"], view.to_status()["ready"]) == (True, False)
    conds = {c["type"]: c for c in podstatus.conditions(
        [], sandbox_ready=True, init=[], main=[view], pod_phase="Running")}
    assert conds["Ready"]["status"] == "False"
    assert conds["ContainersReady"]["message"] == "containers with unready status: [main]"
    view.probe_ready = True
    conds = {c["type"]: c for c in podstatus.conditions(
        [], sandbox_ready=True, init=[], main=[view], pod_phase="Running")}
    assert conds["Ready"]["status"] == conds["ContainersReady"]["status"] == "True"
