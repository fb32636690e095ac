"""Servers the pull tests talk to: Debian's docker-registry (the distribution project's real
registry) in a subprocess, and small aiohttp servers in front of it — a token realm with an
authenticating proxy, a proxy that corrupts or cuts off blobs — plus a server that accepts
connections and never answers."""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from kubling.apiserver.pki import ClusterPKI
from tests.node.images.imagefactory import Layout

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def closed_port() -> int:
    """A port nothing listens on: connections are refused at once."""
    return free_port()


# ---- docker-registry ------------------------------------------------------------------------


class DockerRegistry:
    """``docker-registry serve`` on a free port, storage under ``root``; optionally behind
    htpasswd Basic auth. Stopped by its PID."""

    def __init__(self, root: Path, *, user: str = "", password: str = "",
                 pki: ClusterPKI | None = None):
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if pki else 'http'}://{self.host}"
        self.user, self.password = user, password
        self.pki = pki
        tls = ""
        if pki is not None:  # HTTPS, and a client certificate from the same CA required
            tls = (f"  tls:\n    certificate: {pki.serving_cert}\n    key: {pki.serving_key}\n"
                   f"    clientcas:\n      - {pki.ca_cert}\n")
        auth = ""
        if user:
            htpasswd = root / "htpasswd"
            line = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True,
                                  text=True, check=True).stdout.strip()
            htpasswd.write_text(line + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: kubling-test\n    path: {htpasswd}\n"
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n" + tls + auth
        )
        self.log = (root / "registry.log").open("wb")
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=1,
                                       context=self._client_context()).close()
                return
            except urllib.error.HTTPError as err:
                if err.code == 401:  # up, and asking for credentials
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not answer /v2/ within 15s")

    def _client_context(self) -> ssl.SSLContext | None:
        if self.pki is None:
            return None
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(self.pki.admin_cert, self.pki.admin_key)
        return context

    def push(self, layout: Layout, src: str, repo_tag: str, *extra: str) -> None:
        """Push ``oci:LAYOUT:src`` with skopeo (``--all`` keeps an index whole)."""
        creds = ["--dest-creds", f"{self.user}:{self.password}"] if self.user else []
        if self.pki is not None:  # skopeo's cert dir: *.crt CAs, a *.cert/*.key pair
            certs = self.pki.ca_cert.parent / "skopeo"
            certs.mkdir(exist_ok=True)
            shutil.copy(self.pki.ca_cert, certs / "ca.crt")
            shutil.copy(self.pki.admin_cert, certs / "client.cert")
            shutil.copy(self.pki.admin_key, certs / "client.key")
            creds += ["--dest-cert-dir", str(certs)]
        result = subprocess.run(
            ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
             *creds, *extra, f"oci:{layout.root}:{src}", f"docker://{self.host}/{repo_tag}"],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


# ---- aiohttp servers in a thread ------------------------------------------------------------


class Served:
    """An aiohttp application on a free port, its loop in a background thread so tests
    can drive it from synchronous code (and from another event loop)."""

    def __init__(self, app: web.Application):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(app, access_log=None)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        self.call(self._start())

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class ProxyLog:
    """What the proxy saw: (method, path, headers) of each request."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def blob_requests(self, digest: str) -> list[dict[str, str]]:
        return [h for m, p, h in self.requests if m == "GET" and p.endswith(f"/blobs/{digest}")]


@dataclass
class Behaviour:
    """How the proxy misbehaves: ``corrupt`` flips a byte of these blobs or manifests,
    ``cut`` sends only half of the next N responses for a blob; with a ``realm`` it demands
    a bearer token that realm issued (one of ``tokens``), and ``expire_after_manifest``
    revokes them all once a manifest was served; ``redirect_blobs`` sends blob requests
    elsewhere, as registries send them to object storage."""

    corrupt: set[str] = field(default_factory=set)
    cut: dict[str, int] = field(default_factory=dict)
    realm: str = ""
    scope: str = "repository:app:pull"
    tokens: set[str] = field(default_factory=set)
    expire_after_manifest: bool = False
    redirect_blobs: str = ""  # answer blob GETs with a redirect to this server ("storage")


def registry_proxy(upstream: str, behaviour: Behaviour, log: ProxyLog) -> web.Application:
    """A read-only reverse proxy to a registry that misbehaves as told."""

    async def handle(request: web.Request) -> web.StreamResponse:
        log.requests.append((request.method, request.path, dict(request.headers)))
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if behaviour.realm and presented not in behaviour.tokens:
            challenge = (f'Bearer realm="{behaviour.realm}",service="test",'
                         f'scope="{behaviour.scope}"')
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status=401, headers={"WWW-Authenticate": challenge})
        if behaviour.redirect_blobs and "/blobs/" in request.path:
            raise web.HTTPTemporaryRedirect(behaviour.redirect_blobs + request.path_qs)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("accept", "range")}
        async with aiohttp.ClientSession(auto_decompress=False) as session, session.request(
                request.method, upstream + request.path_qs, headers=headers) as upstream_resp:
            body = await upstream_resp.read()
            out_headers = {k: v for k, v in upstream_resp.headers.items() if k.lower() in
                           ("content-type", "docker-content-digest", "content-range",
                            "www-authenticate")}
            status = upstream_resp.status
        digest = request.path.rsplit("/", 1)[-1]
        if ("/blobs/" in request.path or "/manifests/" in request.path) and status in (200, 206):
            if digest in behaviour.corrupt and body:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            if behaviour.cut.get(digest, 0) > 0:
                behaviour.cut[digest] -= 1
                return await _cut_off(request, status, out_headers, body)
        if "/manifests/" in request.path and behaviour.expire_after_manifest:
            behaviour.tokens.clear()
        return web.Response(status=status, body=body, headers=out_headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _cut_off(
    request: web.Request, status: int, headers: dict[str, str], body: bytes
) -> web.StreamResponse:
    """Promise the whole body, send half, drop the connection."""
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    await resp.write(body[: len(body) // 2])
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.abort()
    return resp


def token_realm(
    user: str, password: str, behaviour: Behaviour, log: ProxyLog
) -> web.Application:
    """The Docker token protocol: GET /token?service&scope with Basic auth → a new token,
    which the proxy of ``behaviour`` then accepts."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    async def handle(request: web.Request) -> web.Response:
        log.requests.append((request.method, request.path_qs, dict(request.headers)))
        if request.headers.get("Authorization") != expected:
            return web.json_response({"details": "incorrect username or password"}, status=401)
        token = secrets.token_urlsafe(16)
        behaviour.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 300})

    app = web.Application()
    app.router.add_get("/token", handle)
    return app


# ---- a server that never answers --------------------------------------------------------------


class Hanging:
    """Accepts TCP connections and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        for conn in self.held:
            conn.close()
        self.sock.close()


# ---- reading an unpacked image --------------------------------------------------------------


def merged_files(layer_dirs: list[Path]) -> dict[str, bytes | str | None]:
    """The files of stacked layers (no whiteouts in these tests), in imagefactory's form:
    bytes for a file, the target for a symlink, None for a directory."""
    out: dict[str, bytes | str | None] = {}
    for layer in layer_dirs:
        for path in sorted(layer.rglob("*")):
            name = str(path.relative_to(layer))
            if path.is_symlink():
                out[name] = str(path.readlink())
            elif path.is_dir():
                out[name + "/"] = None
            else:
                out[name] = path.read_bytes()
    return out


def expected_files(*layers: dict[str, bytes | str | None]) -> dict[str, bytes | str | None]:
    out: dict[str, bytes | str | None] = {}
    for files in layers:
        for name, content in files.items():
            key = name if content is not None or name.endswith("/") else name + "/"
            out[key] = content
    return out


