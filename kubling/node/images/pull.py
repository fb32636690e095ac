"""Pulling images from OCI distribution registries into the node's image store.

What containerd does for the kubelet, in the same order and with its wording: resolve the
reference (the tag's manifest, or the manifest a digest names) on the first endpoint that
has it — mirrors from registries.yaml, then the registry itself — pick this host's manifest
from an index, fetch the config and the layers, verify every byte against its digest, and
unpack. Only then is the name recorded, so a failed pull leaves no half image behind:
manifests and blobs it fetched are content-addressed and unreferenced (the store's sweep
removes them), and a layer cut off mid-transfer stays in ``ingest/`` to be resumed with a
``Range`` request by the next attempt.

Authentication is the registry's to ask for: a request goes out anonymously, and a 401
with ``WWW-Authenticate: Bearer`` sends us to the token realm (with credentials when we
have some), ``Basic`` to sending credentials directly. Credentials come from the endpoint's
registries.yaml ``auth``, then from the caller (a pod's pull secrets), tried in turn.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import ssl
import time
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import urlsplit

import aiohttp
import orjson

from kubling.node.images import manifest as mf
from kubling.node.images.content import (
    BlobWriter,
    ContentStore,
    DigestError,
    check_digest,
    sha256_digest,
)
from kubling.node.images.credentials import Credentials
from kubling.node.images.reference import InvalidReference, Reference, parse_reference
from kubling.node.images.registries import Endpoint, RegistryConfig, TLSConfig, is_loopback
from kubling.node.images.store import Image, ImageError, ImageStore

Progress = Callable[[str], None]

#: Bytes gathered from the socket before one write to the ingest file (in a thread).
_FLUSH_BYTES = 4 * 1024 * 1024
_READ_CHUNK = 256 * 1024
#: A blob whose transfer is cut off is resumed this many times within one pull.
_RESUME_ATTEMPTS = 3
_TOKEN_DOC_LIMIT = 1024 * 1024
_CLIENT_ID = "kubling"
_TOKEN_TRUSTED_SECONDS = 20.0

#: One ingest per blob at a time in this process: two pulls sharing a layer must not append
#: to the same partial file. The second waits, then finds the blob committed.
_INGEST_LOCKS: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


class PullError(Exception):
    """A pull that failed; ``str()`` is the message the kubelet puts in the container's
    ``ErrImagePull`` status, :attr:`event_message` the ``Failed`` event's text."""

    def __init__(self, message: str, reason: str = "ErrImagePull", *, image: str = ""):
        super().__init__(message)
        self.reason = reason  # ErrImagePull | InvalidImageName | Unauthorized | NotFound | Timeout
        self.image = image

    @property
    def event_message(self) -> str:
        return f'Failed to pull image "{self.image}": {self}'


@dataclass
class PullResult:
    image: Image
    size: int  # the image's size (config + compressed layers), as the kubelet reports it
    seconds: float  # the whole pull, unpacking included
    cached: bool  # every blob was already in the store: only manifests were fetched
    downloaded: int = 0  # bytes of blobs transferred
    endpoint: str = ""  # where the image came from


class _EndpointError(Exception):
    """One endpoint failed; the pull moves on to the next endpoint."""

    def __init__(self, message: str, reason: str = "ErrImagePull"):
        super().__init__(message)
        self.reason = reason


class _BodyCut(Exception):
    """A transfer that ended before its last byte: resumable."""


@dataclass(frozen=True)
class _Limits:
    timeout: aiohttp.ClientTimeout
    connect: float
    read: float


# ---- the entry point ---------------------------------------------------------------------


async def pull_image(
    store: ImageStore,
    image: str,
    *,
    registries: RegistryConfig | None = None,
    credentials: Sequence[Credentials] = (),
    progress: Progress | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    max_concurrent_layers: int = 3,
    platform: mf.Platform | None = None,
    session: aiohttp.ClientSession | None = None,
) -> PullResult:
    """Pull ``image`` (as written in a pod spec) into ``store`` and unpack it.

    ``credentials`` are tried after the endpoint's registries.yaml ``auth``, in order (a
    pod's pull secrets: ``Keyring.lookup``). ``read_timeout`` bounds each wait for data (a
    registry that stops sending), not the whole transfer. ``platform`` picks another entry
    of an index than the host's. ``session`` lets a long-lived caller share its connection
    pool; without, the pull has its own. Raises :class:`PullError`; a cancelled pull
    leaves its partial layers to be resumed."""
    started = time.monotonic()
    say: Progress = progress or (lambda _line: None)
    try:
        ref = parse_reference(image)
    except InvalidReference as err:
        raise PullError(str(err), "InvalidImageName", image=image) from None
    if ref.digest is not None and not ref.digest.startswith("sha256:"):
        raise PullError(f'failed to pull and unpack image "{ref}": unsupported digest '
                        f"algorithm {ref.digest.split(':')[0]}", image=image)
    limits = _Limits(
        aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_connect=connect_timeout,
                              sock_read=read_timeout),
        connect_timeout, read_timeout)
    say(f"Pulling {ref}")
    http = session or aiohttp.ClientSession(auto_decompress=False, read_bufsize=_READ_CHUNK)
    try:
        fetched = await _from_endpoints(
            store.content, ref, image, (registries or RegistryConfig()).endpoints(ref),
            _Shared(http, limits, tuple(credentials), say, max(1, max_concurrent_layers)),
            platform)
    finally:
        if session is None:
            await http.close()
    say(f"Unpacking {ref}")
    try:
        recorded = await asyncio.to_thread(store.add, fetched.target, [str(ref)])
    except ImageError as err:
        raise PullError(f'failed to pull and unpack image "{ref}": {err}', image=image) from None
    seconds = time.monotonic() - started
    say(f"Pulled {ref} ({recorded.id[:19]}, {_mb(recorded.size)}) in {seconds:.1f}s")
    return PullResult(recorded, recorded.size, seconds, fetched.downloaded == 0,
                      fetched.downloaded, fetched.endpoint)


@dataclass
class _Shared:
    """What every endpoint of one pull shares."""

    http: aiohttp.ClientSession
    limits: _Limits
    credentials: tuple[Credentials, ...]
    say: Progress
    concurrency: int
    proxies: _Proxies = field(default_factory=lambda: _Proxies())
    tokens: dict[tuple[str, str, str], _Token] = field(default_factory=dict)
    ssl_contexts: dict[TLSConfig, ssl.SSLContext] = field(default_factory=dict)


@dataclass
class _Fetched:
    target: str  # what the name will point at: the manifest or index digest
    downloaded: int
    endpoint: str


async def _from_endpoints(
    content: ContentStore, ref: Reference, image: str, endpoints: list[Endpoint],
    shared: _Shared, platform: mf.Platform | None,
) -> _Fetched:
    """Try each endpoint in turn; every failure is kept for the final message."""
    failures: list[tuple[Endpoint, _EndpointError]] = []
    for i, endpoint in enumerate(endpoints):
        try:
            return await _EndpointPull(content, endpoint, shared).pull(ref, platform)
        except _EndpointError as err:
            failures.append((endpoint, err))
            if i + 1 < len(endpoints):
                shared.say(f"{endpoint.origin}: {err} — trying {endpoints[i + 1].origin}")
    _fail(ref, image, failures)


def _fail(ref: Reference, image: str, failures: list[tuple[Endpoint, _EndpointError]]) -> NoReturn:
    """One error for all endpoints. The reason is that of the first failure that is not a
    plain "not found" (a mirror that lacks an image says little), as containerd picks."""
    prefix = f'failed to pull and unpack image "{ref}": '
    reasons = [err.reason for _, err in failures]
    reason = next((r for r in reasons if r != "NotFound"), "NotFound")
    if len(failures) == 1:
        raise PullError(prefix + str(failures[0][1]), reason, image=image)
    detail = "; ".join(f"{ep.origin}: {err}" for ep, err in failures)
    raise PullError(f"{prefix}all {len(failures)} endpoints failed: {detail}", reason,
                    image=image)


# ---- one endpoint ------------------------------------------------------------------------


class _EndpointPull:
    def __init__(self, content: ContentStore, endpoint: Endpoint, shared: _Shared):
        self.content = content
        self.endpoint = endpoint
        self.shared = shared
        self.client = _Client(endpoint, shared)
        self.downloaded = 0

    async def pull(self, ref: Reference, platform: mf.Platform | None) -> _Fetched:
        target, manifest = await self._resolve(ref, platform)
        blobs = [manifest.config, *manifest.layers]
        for desc in blobs:
            try:
                check_digest(desc.digest)
            except DigestError as err:
                raise _EndpointError(f"manifest of {ref}: {err}") from None
        semaphore = asyncio.Semaphore(self.shared.concurrency)

        async def one(desc: mf.Descriptor, kind: str) -> None:
            async with semaphore:
                await self._blob(desc, kind)

        try:
            async with asyncio.TaskGroup() as group:
                for i, desc in enumerate(blobs):
                    group.create_task(one(desc, "layer" if i else "config"))
        except BaseExceptionGroup as group_error:
            raise _first(group_error) from None
        return _Fetched(target, self.downloaded, self.endpoint.origin)

    async def _resolve(
        self, ref: Reference, platform: mf.Platform | None
    ) -> tuple[str, mf.Manifest]:
        """The digest the name will point at, and this platform's manifest."""
        where = f'failed to resolve reference "{ref}"'
        data, declared, digest = await self.client.manifest(ref.digest or ref.tag or "latest",
                                                            ref.digest, ref, where)
        doc = _parse(data, declared, where)
        await self._put(data, digest)
        if isinstance(doc, mf.Manifest):
            return digest, doc
        try:
            entry = mf.select_platform(doc, platform)
        except mf.ManifestError as err:
            raise _EndpointError(f"{ref}: {err}", "NotFound") from None
        where = f"failed to fetch manifest {entry.digest} of {ref}"
        inner_data, inner_type, _ = await self.client.manifest(entry.digest, entry.digest, ref,
                                                               where)
        inner = _parse(inner_data, entry.media_type or inner_type, where)
        if not isinstance(inner, mf.Manifest):
            raise _EndpointError(f"{where}: the index entry is not an image manifest")
        await self._put(inner_data, entry.digest)
        # The store records an index for the host's platform; another platform is recorded
        # by its own manifest.
        foreign = platform is not None and platform != mf.host_platform()
        return (entry.digest if foreign else digest), inner

    async def _put(self, data: bytes, digest: str) -> None:
        """Store a verified document (fsync: in a thread)."""
        try:
            await asyncio.to_thread(self.content.put, data, digest)
        except (OSError, DigestError) as err:
            raise _EndpointError(f"failed to write {digest}: {_describe(err)}") from None

    async def _blob(self, desc: mf.Descriptor, kind: str) -> None:
        if self.content.has(desc.digest):
            self.shared.say(f"{kind} {_short(desc.digest)} exists")
            return
        key = f"{self.content.root}:{desc.digest}"
        lock = _INGEST_LOCKS.get(key)
        if lock is None:
            lock = _INGEST_LOCKS[key] = asyncio.Lock()
        async with lock:
            if self.content.has(desc.digest):
                return
            try:
                ingest = await _Ingest.open(self.content, desc)
                try:
                    await self._download(desc, ingest)
                finally:
                    ingest.close()
            except OSError as err:  # the node's disk, not the registry: full, read-only...
                raise _EndpointError(f"failed to write {desc.digest}: {_describe(err)}") \
                    from None
        self.shared.say(f"{kind} {_short(desc.digest)} {_mb(desc.size)}")

    async def _download(self, desc: mf.Descriptor, ingest: _Ingest) -> None:
        """Transfer and commit one blob, resuming a transfer that is cut off."""
        resumes = 0
        fresh_retry = ingest.offset > 0  # a stale ingest that fails its digest gets one retry
        while True:
            if ingest.offset > desc.size:
                await ingest.restart()
            before = ingest.offset
            if ingest.offset < desc.size:
                try:
                    await self._transfer(desc, ingest)
                except _BodyCut as cut:
                    if ingest.offset > before and resumes < _RESUME_ATTEMPTS:
                        resumes += 1
                        self.shared.say(f"layer {_short(desc.digest)}: {cut}; resuming at "
                                        f"byte {ingest.offset}")
                        continue
                    raise _EndpointError(f"failed to copy {desc.digest}: {cut}") from None
            try:
                await ingest.commit()
                return
            except DigestError as err:
                if fresh_retry:
                    fresh_retry = False
                    await ingest.restart()
                    continue
                raise _EndpointError(f"failed to copy {desc.digest}: {err}") from None

    async def _transfer(self, desc: mf.Descriptor, ingest: _Ingest) -> None:
        url = self.endpoint.blob_url(desc.digest)
        headers = {"Range": f"bytes={ingest.offset}-"} if ingest.offset else {}
        what = f"failed to copy {desc.digest}"
        async with self.client.request(url, headers, what) as resp:
            if resp.status == 404:
                raise _EndpointError(f"{what}: {desc.digest}: not found", "NotFound")
            if resp.status == 206 and ingest.offset:
                if not resp.headers.get("Content-Range", "").startswith(
                        f"bytes {ingest.offset}-"):
                    raise _EndpointError(f"{what}: the registry answered the range request "
                                         f"with {resp.headers.get('Content-Range')!r}")
            elif resp.status == 200:
                if ingest.offset:  # the server ignored Range: start again
                    await ingest.restart()
            else:
                _unexpected(resp, "GET", url, what)
            await self._stream(resp, ingest, url, what)

    async def _stream(
        self, resp: aiohttp.ClientResponse, ingest: _Ingest, url: str, what: str
    ) -> None:
        """Copy the body into the ingest. Writes (and hashing) run in a thread while the
        next buffer is read, so the loop never blocks on the disk and the disk and the
        network work at the same time."""
        pending: asyncio.Future[None] | None = None
        buffer: list[bytes] = []
        buffered = 0
        cut = False
        failure: _EndpointError | None = None  # raised once what arrived is written
        try:
            try:
                async for chunk in resp.content.iter_chunked(_READ_CHUNK):
                    buffer.append(chunk)
                    buffered += len(chunk)
                    if buffered >= _FLUSH_BYTES:
                        if pending is not None:
                            await pending
                        pending = asyncio.ensure_future(ingest.write(b"".join(buffer)))
                        self.downloaded += buffered
                        buffer, buffered = [], 0
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                    aiohttp.ClientOSError):
                cut = True
            except (TimeoutError, aiohttp.ClientError) as err:
                failure = _translate(err, "GET", url, what, self.shared.limits)
            if pending is not None:
                await pending
                pending = None
            if buffer:  # what arrived before a cut is kept for the resume
                await ingest.write(b"".join(buffer))
                self.downloaded += buffered
        except DigestError as err:
            raise _EndpointError(f"{what}: {err}") from None
        finally:
            if pending is not None:  # never close the ingest under a running write
                await asyncio.wait([pending])
        if failure is not None:
            raise failure
        if cut or ingest.offset < ingest.size:
            raise _BodyCut(f"the transfer was cut off after {ingest.offset} of "
                           f"{ingest.size} bytes")


class _Ingest:
    """A blob being written: the content store's writer, driven from the loop, with every
    file operation in a thread."""

    def __init__(self, content: ContentStore, desc: mf.Descriptor, writer: BlobWriter):
        self.content = content
        self.desc = desc
        self.writer = writer

    @classmethod
    async def open(cls, content: ContentStore, desc: mf.Descriptor) -> _Ingest:
        return cls(content, desc, await asyncio.to_thread(cls._writer, content, desc))

    @staticmethod
    def _writer(content: ContentStore, desc: mf.Descriptor) -> BlobWriter:
        # Keyed by digest: an interrupted transfer of the same blob is found and resumed.
        return content.writer(desc.digest, size=desc.size, key=desc.digest)

    @property
    def offset(self) -> int:
        return self.writer.offset

    @property
    def size(self) -> int:
        return self.desc.size

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self.writer.write, data)

    async def restart(self) -> None:
        await asyncio.to_thread(self.writer.abort)
        self.writer = await asyncio.to_thread(self._writer, self.content, self.desc)

    async def commit(self) -> None:
        await asyncio.to_thread(self.writer.commit)

    def close(self) -> None:
        self.writer.close()


# ---- HTTP with registry authentication ------------------------------------------------------


class _Client:
    """Requests to one endpoint, answering its authentication challenges."""

    def __init__(self, endpoint: Endpoint, shared: _Shared):
        self.endpoint = endpoint
        self.shared = shared
        candidates = [c for c in (endpoint.auth, *shared.credentials) if c]
        self.auth = _Authorizer(self, candidates)

    def ssl_for(self, host: str) -> ssl.SSLContext | bool:
        """Verification as configured for the endpoint's host; the system's elsewhere
        (a token realm on another host)."""
        tls = self.endpoint.tls
        if tls is None or host != self.endpoint.host:
            return True
        context = self.shared.ssl_contexts.get(tls)
        if context is None:
            context = self.shared.ssl_contexts[tls] = _ssl_context(tls)
        return context

    @contextlib.asynccontextmanager
    async def send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One HTTP exchange; transport failures become endpoint errors naming the URL."""
        host = _host_of(url)
        try:
            ssl_arg = self.ssl_for(host)
        except ValueError as err:
            raise _EndpointError(f"{what}: tls configuration for {host}: {err}") from None
        try:
            resp = await self.shared.http.request(
                method, url, headers=headers, params=params, data=data, ssl=ssl_arg,
                proxy=self.shared.proxies.proxy_for(url),
                timeout=self.shared.limits.timeout, auto_decompress=False,
                read_bufsize=_READ_CHUNK)
        except (TimeoutError, aiohttp.ClientError) as err:
            raise _translate(err, method, url, what, self.shared.limits) from None
        try:
            yield resp
        finally:
            resp.release()

    @contextlib.asynccontextmanager
    async def request(
        self, url: str, headers: dict[str, str], what: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET that authenticates as the registry asks; yields a response that is not a
        401 (or raises "Unauthorized" once every credential was tried)."""
        for _ in range(2 + 2 * len(self.auth.candidates)):
            sent = self.auth.header
            request_headers = dict(headers)
            if sent:
                request_headers["Authorization"] = sent
            async with self.send("GET", url, what, headers=request_headers,
                                 params=self.endpoint.query) as resp:
                if resp.status in (401, 403):
                    challenges = resp.headers.getall("WWW-Authenticate", [])
                    body = await _error_text(resp)
                    await self.auth.answer(resp.status, challenges, sent, url, body, what)
                    continue
                yield resp
                return
        raise _EndpointError(f"{what}: pull access denied, repository does not exist or may "
                             "require authorization: too many authentication rounds",
                             "Unauthorized")

    async def manifest(
        self, reference: str, expected: str | None, ref: Reference, what: str
    ) -> tuple[bytes, str, str]:
        """A manifest or index: its bytes, declared media type and verified digest."""
        url = self.endpoint.manifest_url(reference)
        async with self.request(url, {"Accept": mf.ACCEPT}, what) as resp:
            if resp.status == 404:
                raise _EndpointError(f"{what}: {ref}: not found", "NotFound")
            if resp.status != 200:
                _unexpected(resp, "GET", url, what)
            if (resp.content_length or 0) > mf.MAX_DOCUMENT:
                raise _EndpointError(f"{what}: the manifest is larger than "
                                     f"{mf.MAX_DOCUMENT} bytes")
            data = await self.read_limited(resp, mf.MAX_DOCUMENT, url, what)
            declared = resp.headers.get("Content-Type", "")
            claimed = resp.headers.get("Docker-Content-Digest", "")
        digest = sha256_digest(data)
        if expected is not None and digest != expected:
            raise _EndpointError(f"{what}: manifest digest mismatch: the registry sent "
                                 f"content with digest {digest}, expected {expected}")
        if claimed.startswith("sha256:") and claimed != digest:
            raise _EndpointError(f"{what}: manifest digest mismatch: Docker-Content-Digest "
                                 f"says {claimed}, the content has {digest}")
        return data, declared, digest

    async def read_limited(
        self, resp: aiohttp.ClientResponse, limit: int, url: str, what: str
    ) -> bytes:
        data = bytearray()
        try:
            async for chunk in resp.content.iter_chunked(65536):
                data += chunk
                if len(data) > limit:
                    raise _EndpointError(f"{what}: the response is larger than {limit} bytes")
        except (TimeoutError, aiohttp.ClientError) as err:
            raise _translate(err, "GET", url, what, self.shared.limits) from None
        return bytes(data)


@dataclass(frozen=True)
class _Token:
    """A bearer token, the credentials it was issued for, and when."""

    token: str
    creds: Credentials | None
    issued: float

    def expired_maybe(self) -> bool:
        """A token refused right after it was issued lacks access; an older one may have
        expired (Docker Hub's last 5 minutes, a big pull lasts longer)."""
        return time.monotonic() - self.issued > _TOKEN_TRUSTED_SECONDS


@dataclass(frozen=True)
class _Challenge:
    scheme: str  # lower case: "bearer" | "basic"
    params: dict[str, str]


_PARAM_RE = re.compile(r'([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))')


def parse_challenges(headers: Sequence[str]) -> list[_Challenge]:
    """``WWW-Authenticate`` values → challenges (RFC 7235, the subset registries send)."""
    out: list[_Challenge] = []
    for header in headers:
        for piece in re.split(r",\s*(?=[A-Za-z]+\s+[A-Za-z0-9_.-]+\s*=)", header.strip()):
            scheme, _, rest = piece.strip().partition(" ")
            if not scheme:
                continue
            params = {}
            for m in _PARAM_RE.finditer(rest):
                quoted = m.group(2)
                value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else m.group(3)
                params[m.group(1).lower()] = value
            out.append(_Challenge(scheme.lower(), params))
    return out


class _Authorizer:
    """The Authorization header for one endpoint, and how to get a better one when the
    registry refuses it. Shared by the layer downloads running at once; the lock makes one
    of them answer a challenge while the others wait and reuse the result."""

    def __init__(self, client: _Client, candidates: list[Credentials]):
        self.client = client
        self.candidates = candidates
        self.header: str | None = None
        # Credentials still to try, in order; None is "anonymous", tried only when there
        # are no credentials at all (as the kubelet pulls without auth only then).
        self._untried: list[Credentials | None] = [*candidates] if candidates else [None]
        self._refusal = ""  # the token realm's last refusal, the better explanation
        self._lock = asyncio.Lock()

    async def answer(
        self, status: int, headers: Sequence[str], sent: str | None, url: str, body: str,
        what: str,
    ) -> None:
        """Prepare the header for the retry of a refused request, or raise Unauthorized."""
        async with self._lock:
            if self.header != sent:
                return  # another request already answered this challenge
            challenges = parse_challenges(headers)
            bearer = next((c for c in challenges if c.scheme == "bearer"), None)
            basic = next((c for c in challenges if c.scheme == "basic"), None)
            if status == 401 and bearer is not None:
                await self._bearer(bearer, sent, what)
                if self.header != sent:
                    return
            elif status == 401 and basic is not None and self._basic():
                return
            raise _denied(what, status, url, body, self._refusal)

    async def _bearer(self, challenge: _Challenge, sent: str | None, what: str) -> None:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise _EndpointError(f"{what}: failed to authorize: the registry's token realm "
                                 f"{realm!r} is not an http(s) URL")
        service = challenge.params.get("service", "")
        scopes = _scopes(challenge.params.get("scope", ""), self.client.endpoint.repository)
        key = (realm, service, " ".join(scopes))
        tokens = self.client.shared.tokens
        cached = tokens.pop(key, None)
        if cached is not None and sent != f"Bearer {cached.token}":
            tokens[key] = cached
            self.header = f"Bearer {cached.token}"  # fetched already in this pull
            return
        attempts: list[Credentials | None] = []
        if cached is not None and cached.expired_maybe():
            attempts.append(cached.creds)  # a long pull outlived its token: renew it
        while attempts or self._untried:
            creds = attempts.pop() if attempts else self._untried.pop(0)
            token = await self._fetch_token(realm, service, scopes, creds, what)
            if token is not None:
                tokens[key] = _Token(token, creds, time.monotonic())
                self.header = f"Bearer {token}"
                return

    def _basic(self) -> bool:
        while self._untried:
            creds = self._untried.pop(0)
            if creds is not None and (creds.username or creds.password):
                self.header = _basic_header(creds)
                return True
        return False

    async def _fetch_token(
        self, realm: str, service: str, scopes: list[str], creds: Credentials | None, what: str
    ) -> str | None:
        """A token from the realm, or None when the realm refuses these credentials.
        Identity tokens use OAuth2's refresh-token grant (POST); anything else the Docker
        token protocol (GET, with Basic auth when there is a user)."""
        if creds is not None and creds.registry_token:
            return creds.registry_token
        kind = "anonymous token" if creds is None else "token"
        where = f"{what}: failed to authorize: failed to fetch {kind}"
        if creds is not None and creds.identity_token:
            method = "POST"
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "service": service, "scope": " ".join(scopes), "client_id": _CLIENT_ID}
            request = self.client.send(method, realm, where, data=form)
        else:
            method = "GET"
            query = [("service", service)] if service else []
            query += [("scope", s) for s in scopes]
            headers = {}
            if creds is not None and creds.username:
                headers["Authorization"] = _basic_header(creds)
            request = self.client.send(method, realm, where, params=query, headers=headers)
        async with request as resp:
            if resp.status in (401, 403):
                self._refusal = (f"failed to authorize: failed to fetch {kind}: unexpected "
                                 f"status from {method} request to {realm}: {resp.status} "
                                 f"{resp.reason or _status_text(resp.status)}")
                return None
            if resp.status != 200:
                _unexpected(resp, method, realm, where)
            body = await self.client.read_limited(resp, _TOKEN_DOC_LIMIT, realm, where)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _EndpointError(f"{where}: the token server's answer is not JSON") from None
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise _EndpointError(f"{where}: the token server's answer has no token")
        return token


def _basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _scopes(challenged: str, repository: str) -> list[str]:
    """The scopes to ask for: the challenge's, and always pull access to our repository
    (containerd adds it too: some registries challenge without a scope)."""
    wanted = [s for s in challenged.split(" ") if s]
    own = f"repository:{repository}:pull"
    if own not in wanted:
        wanted.append(own)
    return wanted


def _denied(what: str, status: int, url: str, body: str, refusal: str) -> _EndpointError:
    """containerd's words for a refusal, with the best explanation we have: the token
    realm's refusal of our credentials, else the registry's own message."""
    message = (f"{what}: pull access denied, repository does not exist or may require "
               "authorization: ")
    detail = _server_message(body)
    if refusal:
        message += refusal
    elif detail:
        message += f"server message: {detail}"
    else:
        message += (f"failed to authorize: unexpected status from GET request to {url}: "
                    f"{status} {_status_text(status)}")
    return _EndpointError(message, "Unauthorized")


def _server_message(body: str) -> str:
    """The distribution API's ``{"errors": [{"code", "message"}]}`` as ``code: message``."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return ""
    code = str(errors[0].get("code", "")).lower()
    text = str(errors[0].get("message", ""))
    return f"{code}: {text}" if code else text


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    """A small error body, best effort (it only decorates a message)."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError, UnicodeDecodeError):
        return (await resp.content.read(16384)).decode()
    return ""


def _unexpected(resp: aiohttp.ClientResponse, method: str, url: str, what: str) -> NoReturn:
    raise _EndpointError(f"{what}: unexpected status from {method} request to {url}: "
                         f"{resp.status} {resp.reason or _status_text(resp.status)}")


def _translate(
    err: BaseException, method: str, url: str, what: str, limits: _Limits
) -> _EndpointError:
    """A transport failure in containerd's shape: ``failed to do request: Get "URL": ...``."""
    verb = method.capitalize()
    host = _host_of(url)
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        detail = f"dial tcp {host}: i/o timeout (no connection within {limits.connect:g}s)"
        return _EndpointError(f'{what}: failed to do request: {verb} "{url}": {detail}',
                              "Timeout")
    if isinstance(err, TimeoutError):
        detail = f"timeout: {host} sent nothing for {limits.read:g}s"
        return _EndpointError(f'{what}: failed to do request: {verb} "{url}": {detail}',
                              "Timeout")
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        cause = err.certificate_error
        reason = getattr(cause, "verify_message", "") or _describe(cause)
        detail = f"tls: failed to verify certificate: {reason}"
    elif isinstance(err, aiohttp.ClientConnectorError):
        detail = f"dial tcp {host}: {_describe(err.os_error)}"
    else:
        detail = _describe(err)
    return _EndpointError(f'{what}: failed to do request: {verb} "{url}": {detail}')


# ---- small helpers --------------------------------------------------------------------------


def _ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """registries.yaml ``tls``: the CA added to the system's (as containerd appends it to
    the system pool), a client certificate, or no verification at all. Raises ValueError
    naming the setting that cannot be used."""
    context = ssl.create_default_context()
    try:
        if tls.ca_file:
            context.load_verify_locations(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"ca_file {tls.ca_file}: {_describe(err)}") from None
    try:
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file or None)
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"cert_file {tls.cert_file}, key_file {tls.key_file}: "
                         f"{_describe(err)}") from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Proxies:
    """``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` as Go's HTTP client (so containerd)
    applies them: loopback hosts are never proxied, so a local registry or mirror keeps
    working on a node whose traffic otherwise goes through a proxy."""

    def __init__(self) -> None:
        self.proxies = urllib.request.getproxies_environment()

    def proxy_for(self, url: str) -> str | None:
        scheme = url.split("://", 1)[0]
        proxy = self.proxies.get(scheme)
        if not proxy:
            return None
        host = urlsplit(url).hostname or ""
        if is_loopback(host) or urllib.request.proxy_bypass(host):
            return None
        return proxy


def _parse(data: bytes, declared: str, what: str) -> mf.Manifest | mf.Index:
    try:
        return mf.parse(data, declared or None)
    except mf.ManifestError as err:
        raise _EndpointError(f"{what}: {err}") from None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a group of failed downloads: an endpoint error first."""
    flat: list[BaseException] = list(_leaves(group))
    return next((e for e in flat if isinstance(e, _EndpointError)), flat[0])


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _host_of(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _describe(err: BaseException | None) -> str:
    if err is None:
        return "unknown error"
    if isinstance(err.__cause__, ssl.SSLError):  # aiohttp wraps a failed handshake
        err = err.__cause__
    if isinstance(err, ssl.SSLError):  # its errno is OpenSSL's, not the system's
        return "tls: " + (err.reason or str(err)).lower().replace("_", " ")
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno).lower()  # "connection refused", as Go prints it
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__


def _status_text(status: int) -> str:
    return {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}.get(status, "")


def _short(digest: str) -> str:
    return digest[:19]


def _mb(size: int) -> str:
    """Sizes as the CLI prints them: 12.3 MB, 4.1 kB, 310 B."""
    if size >= 1_000_000:
        return f"{size / 1e6:.1f} MB"
    if size >= 1000:
        return f"{size / 1e3:.1f} kB"
    return f"{size} B"
