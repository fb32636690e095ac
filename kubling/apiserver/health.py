"""``/healthz``, ``/livez`` and ``/readyz`` with per-check detail, as kube-apiserver.

A check is a named coroutine returning ``None`` when healthy or a reason when not.
``?verbose`` lists every check; ``/readyz/<check>`` runs one; ``?exclude=<check>`` skips.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Check = Callable[[], Awaitable[str | None]]


class HealthChecks:
    def __init__(self) -> None:
        self._checks: dict[str, list[tuple[str, Check]]] = {"healthz": [], "livez": [],
                                                              "readyz": []}

    def add(self, name: str, check: Check, *, endpoints: tuple[str, ...] = (
            "healthz", "livez", "readyz")) -> None:
        for endpoint in endpoints:
            self._checks[endpoint].append((name, check))

    async def run(self, endpoint: str) -> list[tuple[str, str | None]]:
        return [(name, await check()) for name, check in self._checks[endpoint]]

    async def respond(self, request: web.Request, endpoint: str) -> web.Response:
        checks = self._checks[endpoint]
        sub = request.path.rstrip("/")[len(endpoint) + 2:]
        if sub:
            chosen = [(n, c) for n, c in checks if n == sub]
            if not chosen:
                return web.Response(status=404, text="404 page not found\n")
            failure = await chosen[0][1]()
            if failure is None:
                return web.Response(text="ok")
            return web.Response(status=500, text=f"internal server error: {failure}\n")
        excluded = set(request.query.getall("exclude", []))
        lines: list[str] = []
        failed = False
        for name, check in checks:
            if name in excluded:
                lines.append(f"[+]{name} excluded: ok")
                continue
            failure = await check()
            if failure is None:
                lines.append(f"[+]{name} ok")
            else:
                failed = True
                lines.append(f"[-]{name} failed: reason withheld")
        verbose = "verbose" in request.query
        if failed:
            lines.append(f"{endpoint} check failed")
            return web.Response(status=500, text="\n".join(lines) + "\n")
        if verbose:
            lines.append(f"{endpoint} check passed")
            return web.Response(text="\n".join(lines) + "\n")
        return web.Response(text="ok")
