"""The embedded OCI distribution registry that ``kubling server`` serves (port 5000).

It is backed by the node's own :class:`ImageStore`, so what ``skopeo copy ...
docker://localhost:5000/app:dev`` or ``docker push localhost:5000/app:dev`` sends is an
image pods can use at once: blobs land in the content store through the same verifying
writer as pulls, and a manifest pushed under a tag becomes the store name
``<domain>/<repo>:<tag>`` (``localhost:5000/app:dev``).

Reads also make the server a pull-through source for other nodes: a manifest or tag list of
``<repo>`` is looked up under ``<domain>/<repo>``, then ``docker.io/<repo>`` (a Docker Hub
mirror, as dockerd's ``registry-mirrors`` asks, with no hint). A containerd mirror request
names its upstream with ``?ns=<registry>``; then only ``<ns>/<repo>`` is looked up, because
serving another registry's image of the same path would hand out the wrong image.

Choices, and why:

- No authentication: like k3s's embedded registry it is meant for the node and the cluster
  network (it listens on all addresses by default; ``--disable-registry`` turns it off).
- One content store for every repository: a blob or a manifest digest the node holds is
  served under any repository name (there are no per-repository blob links), which is
  also what makes cross-repository mounts free.
- Blobs are never deleted through the API (``DELETE`` blob is ``405 UNSUPPORTED``): the store
  reference-counts them and removes them when no image uses them any more. Deleting a
  manifest removes the names that point at it (by digest) or the tag (by tag, OCI 1.1).
- Upload sessions write into the content store's ``ingest/`` under their UUID, so an
  interrupted upload can be resumed by its Location even after a restart.
- A client whose ``Accept`` names manifest types but no index type gets this host's
  platform manifest from an index, as distribution does for old clients.
- Uploads, deletes and tag writes go only to ``<domain>/...``; mirrored names are read-only.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from kubling.node.images import manifest as mf
from kubling.node.images.content import (
    BlobNotFound,
    BlobWriter,
    DigestError,
    check_digest,
    sha256_digest,
)
from kubling.node.images.reference import (
    _PATH_RE,
    DOCKER_HUB,
    InvalidReference,
    is_digest,
    parse_reference,
)
from kubling.node.images.store import Image, ImageError, ImageNotFound, ImageStore

log = logging.getLogger("kubling.images.registry")

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
#: An upload nobody touched for this long is dropped (its partial ingest removed).
UPLOAD_IDLE_SECONDS = 3600.0
_READ_CHUNK = 1024 * 1024
_WRITE_BATCH = 4 * 1024 * 1024  # bytes gathered before one write (off the loop)
_MAX_NAME = 255
_TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_UUID_RE = re.compile(r"^[a-f0-9]{32}$")
_RANGE_RE = re.compile(r"^(?:bytes[= ])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")
#: Layers a registry never holds (Windows base layers fetched from their ``urls``).
_FOREIGN_MARKERS = ("foreign", "nondistributable")

Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]
InUse = Callable[[], Iterable[str]]


class RegistryError(Exception):
    """An error answered as the spec's JSON error body with its status and code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> web.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return _json({"errors": [error]}, self.status, self.headers)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(body=orjson.dumps(data), status=status, headers=headers)
    resp.content_type = "application/json"
    return resp


def _empty(status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, headers={**headers, "Content-Length": "0"})


def _range(offset: int) -> str:
    """The ``Range`` of an upload holding ``offset`` bytes (``0-0`` when empty, as
    distribution answers — the spec's inclusive ranges cannot say "nothing")."""
    return f"0-{max(offset - 1, 0)}"


@dataclass
class RegistryStats:
    """Counters for logs and tests: what crossed the wire, what was skipped."""

    blobs_uploaded: int = 0  # blobs committed from an upload (chunked or monolithic)
    blobs_mounted: int = 0  # cross-repository mounts answered without an upload
    bytes_received: int = 0
    manifests_pushed: int = 0


@dataclass
class _Upload:
    id: str
    writer: BlobWriter
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    touched: float = field(default_factory=time.monotonic)


class _Registry:
    """The handlers and the state they share (open uploads, background unpacks)."""

    def __init__(self, store: ImageStore, domain: str, in_use: InUse | None):
        self.store = store
        self.domain = domain
        self.in_use = in_use
        self.stats = RegistryStats()
        self.uploads: dict[str, _Upload] = {}
        self.unpacking: set[asyncio.Task[None]] = set()
        manifests: dict[str, Handler] = {
            "GET": self.get_manifest,
            "HEAD": self.get_manifest,
            "PUT": self.put_manifest,
            "DELETE": self.delete_manifest,
        }
        uploads: dict[str, Handler] = {
            "GET": self.upload_status,
            "PATCH": self.patch_upload,
            "PUT": self.finish_upload,
            "DELETE": self.cancel_upload,
        }
        blobs: dict[str, Handler] = {
            "GET": self.get_blob,
            "HEAD": self.get_blob,
            "DELETE": self.delete_blob,
        }
        #: Tried in order: upload URLs before blob URLs (``.../blobs/uploads/<uuid>``).
        self.routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r"^$"), {"GET": self.base, "HEAD": self.base}),
            (re.compile(r"^_catalog$"), {"GET": self.catalog}),
            (re.compile(r"^(?P<name>.+)/tags/list$"), {"GET": self.tags}),
            (re.compile(r"^(?P<name>.+)/manifests/(?P<ref>[^/]+)$"), manifests),
            (re.compile(r"^(?P<name>.+)/blobs/uploads/?$"), {"POST": self.start_upload}),
            (re.compile(r"^(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]+)$"), uploads),
            (re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)$"), blobs),
        ]

    # ---- dispatch -----------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route by hand: repository names contain slashes, and a bad name or method
        must get the spec's JSON error rather than a bare 404 from the router."""
        tail = request.match_info.get("tail", "")
        for pattern, methods in self.routes:
            match = pattern.match(tail)
            if match is None:
                continue
            params = match.groupdict()
            try:
                handler = methods.get(request.method)
                if handler is None:
                    raise RegistryError(
                        405,
                        "UNSUPPORTED",
                        f"{request.method} is not supported here",
                        headers={"Allow": ", ".join(methods)},
                    )
                if "name" in params:
                    self._check_name(params["name"])
                return await handler(request, params)
            except RegistryError as err:
                return err.response()
            except (web.HTTPException, ConnectionError):
                raise
            except Exception:
                log.exception("registry: %s %s failed", request.method, request.path)
                return RegistryError(
                    500, "UNKNOWN", "internal error, see the server log"
                ).response()
        return RegistryError(404, "NAME_UNKNOWN", f"no such endpoint: /v2/{tail}").response()

    def _check_name(self, name: str) -> None:
        """The distribution grammar (lowercase components), and a store name that fits."""
        if (
            len(name) > _MAX_NAME
            or not _PATH_RE.match(name)
            or self._repo(self.domain, name) is None
        ):
            raise RegistryError(
                400, "NAME_INVALID", f"invalid repository name {name!r}", {"name": name}
            )

    # ---- names --------------------------------------------------------------------------

    @staticmethod
    def _repo(domain: str, name: str) -> str | None:
        """The store repository ``name`` stands for under ``domain`` (Hub names get
        ``library/``), or None when that is no valid reference."""
        try:
            return parse_reference(f"{domain}/{name}").name
        except InvalidReference:
            return None

    def _read_repos(self, name: str, request: web.Request) -> list[str]:
        """The store repositories a read of ``name`` may come from, in order."""
        ns = request.query.get("ns")
        domains = [ns] if ns else [self.domain, DOCKER_HUB]
        repos: list[str] = []
        for domain in domains:
            repo = self._repo(domain, name)
            if repo is not None and repo not in repos:
                repos.append(repo)
        return repos

    @staticmethod
    def _tags(names: dict[str, str], repo: str) -> dict[str, str]:
        """Tag → target digest of one store repository."""
        out: dict[str, str] = {}
        for name, target in names.items():
            if not name.startswith(repo + ":"):
                continue
            try:
                ref = parse_reference(name)
            except InvalidReference:
                continue
            if ref.name == repo and ref.tag and not ref.digest:
                out[ref.tag] = target
        return out

    # ---- base, catalog, tags ------------------------------------------------------------

    async def base(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        return _json({})

    async def catalog(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        """Repositories served without ``ns``: this registry's, then Docker Hub's."""
        query = _page_query(request)
        names = await asyncio.to_thread(self.store.names)
        repos: set[str] = set()
        for name in names:
            try:
                ref = parse_reference(name)
            except InvalidReference:
                continue
            if ref.domain in (self.domain, DOCKER_HUB):
                repos.add(ref.path)
        page, link = _paginate(sorted(repos), query, "/v2/_catalog")
        return _json({"repositories": page}, headers=link)

    async def tags(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        query = _page_query(request)
        names = await asyncio.to_thread(self.store.names)
        for repo in self._read_repos(params["name"], request):
            tags = self._tags(names, repo)
            if tags:
                page, link = _paginate(sorted(tags), query, f"/v2/{params['name']}/tags/list")
                return _json({"name": params["name"], "tags": page}, headers=link)
        raise RegistryError(
            404, "NAME_UNKNOWN", f"repository {params['name']} is not known to this registry"
        )

    # ---- manifests ----------------------------------------------------------------------

    async def get_manifest(
        self, request: web.Request, params: dict[str, str]
    ) -> web.StreamResponse:
        name, ref = params["name"], params["ref"]
        digest = await self._resolve(name, ref, request)
        data, media_type = await asyncio.to_thread(self._read_manifest, digest, ref)
        if media_type in mf.INDEX_TYPES and not _accepts_index(request):
            digest, data, media_type = await asyncio.to_thread(
                self._platform_manifest, data, media_type, ref
            )
        return web.Response(
            body=data,
            headers={
                "Content-Type": media_type,
                "Docker-Content-Digest": digest,
                "ETag": f'"{digest}"',
            },
        )

    async def _resolve(self, name: str, ref: str, request: web.Request) -> str:
        """The digest a manifest reference names (a tag is looked up, a digest is itself)."""
        label = f"{name}@{ref}" if ":" in ref else f"{name}:{ref}"
        unknown = RegistryError(
            404, "MANIFEST_UNKNOWN", f"manifest {label} is not known", {"name": name}
        )
        if ":" in ref:
            if not is_digest(ref):
                raise unknown
            return ref
        if not _TAG_RE.match(ref):
            raise unknown
        names = await asyncio.to_thread(self.store.names)
        for repo in self._read_repos(name, request):
            target = names.get(f"{repo}:{ref}")
            if target is not None:
                return target
        raise unknown

    def _read_manifest(self, digest: str, ref: str) -> tuple[bytes, str]:
        """A manifest or index from the content store and its media type; a blob that is
        no manifest (a layer, a config) is no manifest to this endpoint either."""
        unknown = RegistryError(404, "MANIFEST_UNKNOWN", f"manifest {ref} is not known")
        try:
            if self.store.content.size(digest) > mf.MAX_DOCUMENT:
                raise unknown
            data = self.store.content.read(digest)
        except BlobNotFound:
            raise unknown from None
        except DigestError as exc:
            raise RegistryError(500, "UNKNOWN", str(exc)) from None
        try:
            return data, mf.media_type_of(data)
        except mf.ManifestError:
            raise unknown from None

    def _platform_manifest(self, data: bytes, media_type: str, ref: str) -> tuple[str, bytes, str]:
        """This host's manifest from an index, for a client that does not take indexes."""
        try:
            index = mf.parse(data, media_type)
            assert isinstance(index, mf.Index)
            entry = mf.select_platform(index)
        except mf.ManifestError as exc:
            raise RegistryError(
                404,
                "MANIFEST_UNKNOWN",
                f"manifest {ref} is an index and the client accepts no index: {exc}",
            ) from None
        child, child_type = self._read_manifest(entry.digest, entry.digest)
        return entry.digest, child, child_type

    async def put_manifest(
        self, request: web.Request, params: dict[str, str]
    ) -> web.StreamResponse:
        name, ref = params["name"], params["ref"]
        data = await _read_document(request)
        digest = sha256_digest(data)
        tag: str | None = None
        if ":" in ref:
            if not is_digest(ref) or ref != digest:
                raise RegistryError(
                    400,
                    "DIGEST_INVALID",
                    f"the manifest's digest is {digest}, not {ref}",
                    {"digest": digest},
                )
        elif _TAG_RE.match(ref):
            tag = ref
        else:
            raise RegistryError(400, "MANIFEST_INVALID", f"invalid tag {ref!r}", {"tag": ref})
        doc = _parse_pushed(data, request.headers.get("Content-Type", ""))
        await asyncio.to_thread(self._check_blobs, doc)
        await asyncio.to_thread(self.store.content.put, data, digest)
        self.stats.manifests_pushed += 1
        if tag is not None:
            full = f"{self.domain}/{name}:{tag}"
            image = await asyncio.to_thread(self.store.tag, full, digest)
            log.info("registry: pushed %s (%s)", full, digest)
            if image is not None:
                self._unpack_later(image)
        return _empty(
            201, {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        )

    def _check_blobs(self, doc: mf.Manifest | mf.Index) -> None:
        """Every blob the document references is here with its declared size (child
        manifests for an index) — a name must never point at an image that cannot run."""
        if isinstance(doc, mf.Index):
            wanted = list(doc.manifests)
        else:
            wanted = [doc.config] + [
                la for la in doc.layers if not any(m in la.media_type for m in _FOREIGN_MARKERS)
            ]
        for desc in wanted:
            try:
                size = self.store.content.size(desc.digest)
            except BlobNotFound:
                raise RegistryError(
                    400,
                    "MANIFEST_BLOB_UNKNOWN",
                    f"blob {desc.digest} is not known to this registry: push it first",
                    {"digest": desc.digest},
                ) from None
            if size != desc.size:
                raise RegistryError(
                    400,
                    "MANIFEST_INVALID",
                    f"blob {desc.digest} has {size} bytes, the manifest says {desc.size}",
                    {"digest": desc.digest},
                )

    def _unpack_later(self, image: Image) -> None:
        """Unpack a pushed image's layers in the background, so the first pod using it
        does not wait; a layer that does not unpack is logged (the pod will report it)."""

        async def unpack() -> None:
            try:
                await asyncio.to_thread(self.store.unpack, image)
            except Exception as exc:  # a bad layer is the pusher's problem, not the server's
                log.warning("registry: image %s was pushed but does not unpack: %s", image.id, exc)

        task = asyncio.create_task(unpack(), name=f"registry-unpack-{image.id[7:19]}")
        self.unpacking.add(task)
        task.add_done_callback(self.unpacking.discard)

    async def delete_manifest(
        self, request: web.Request, params: dict[str, str]
    ) -> web.StreamResponse:
        """By tag: untag. By digest: remove every tag of this repository pointing at it
        (the store then frees what no image uses), or an untagged manifest nothing uses."""
        name, ref = params["name"], params["ref"]
        repo = self._repo(self.domain, name)
        assert repo is not None  # checked with the name
        names = await asyncio.to_thread(self.store.names)
        tags = self._tags(names, repo)
        if ":" not in ref:
            if ref not in tags:
                raise RegistryError(404, "MANIFEST_UNKNOWN", f"tag {name}:{ref} is not known")
            doomed = [f"{repo}:{ref}"]
        elif is_digest(ref):
            doomed = [f"{repo}:{tag}" for tag, target in tags.items() if target == ref]
        else:
            raise RegistryError(400, "DIGEST_INVALID", f"invalid digest {ref!r}")
        if not doomed:
            await asyncio.to_thread(self._delete_untagged, name, ref)
            return _empty(202, {})
        busy = list(self.in_use()) if self.in_use is not None else []
        for full in doomed:
            try:
                await asyncio.to_thread(self.store.remove, full, in_use=busy)
            except ImageNotFound:
                continue  # removed meanwhile
            except ImageError as exc:
                raise RegistryError(409, "DENIED", str(exc)) from None
            log.info("registry: deleted %s", full)
        return _empty(202, {})

    def _delete_untagged(self, name: str, digest: str) -> None:
        """Delete a manifest pushed by digest only — unless a name, an image or an index
        uses it: the content is shared, and deleting it would break them."""
        self._read_manifest(digest, f"{name}@{digest}")  # 404 unless it is a manifest here
        names = self.store.names()
        users = [n for n, target in names.items() if target == digest]
        users += [i.id for i in self.store.images() if i.manifest == digest]
        for name_, target in names.items():
            try:
                doc = mf.parse(self.store.content.read(target))
            except (BlobNotFound, DigestError, mf.ManifestError):
                continue
            if isinstance(doc, mf.Index) and any(d.digest == digest for d in doc.manifests):
                users.append(name_)
        if users:
            raise RegistryError(
                409,
                "DENIED",
                f"manifest {digest} is not tagged in {name} but is used by "
                f"{', '.join(sorted(set(users))[:5])}",
            )
        self.store.content.delete(digest)

    # ---- blobs --------------------------------------------------------------------------

    async def get_blob(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        """Served from the file (sendfile), with Range support for resumed pulls."""
        digest = _digest_param(params["digest"])
        path = self.store.content.path(digest)
        try:
            if request.method == "HEAD":
                # A client that finds a blob skips its upload: keep it out of the sweep's
                # reach (fresh unreferenced blobs are kept) until its manifest arrives.
                os.utime(path)
            exists = path.is_file()
        except FileNotFoundError:
            exists = False
        if not exists:
            raise RegistryError(
                404, "BLOB_UNKNOWN", f"blob {digest} is not known", {"digest": digest}
            )
        return web.FileResponse(
            path,
            chunk_size=_READ_CHUNK,
            headers={"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest},
        )

    async def delete_blob(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        raise RegistryError(
            405,
            "UNSUPPORTED",
            "blobs are not deleted through the registry: the store removes a blob when no "
            "image uses it any more (delete the manifest, or kubling image rm/prune)",
        )

    # ---- uploads ------------------------------------------------------------------------

    def _upload_headers(self, name: str, upload: _Upload) -> dict[str, str]:
        return {
            "Location": f"/v2/{name}/blobs/uploads/{upload.id}",
            "Range": _range(upload.writer.offset),
            "Docker-Upload-UUID": upload.id,
        }

    def _blob_created(self, name: str, digest: str) -> web.Response:
        return _empty(
            201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest}
        )

    async def start_upload(
        self, request: web.Request, params: dict[str, str]
    ) -> web.StreamResponse:
        """A new session (202); a mount of a blob already here (201, nothing sent); or a
        whole blob in the POST body with ``?digest=`` (201)."""
        name = params["name"]
        self._expire_idle()
        mount = request.query.get("mount")
        if mount is not None and is_digest(mount) and self.store.content.has(mount):
            try:
                os.utime(self.store.content.path(mount))  # see get_blob
            except FileNotFoundError:
                pass
            else:
                self.stats.blobs_mounted += 1
                return self._blob_created(name, mount)
        digest = request.query.get("digest")
        if digest is not None and mount is None:
            _digest_param(digest)
            writer = self.store.content.writer(digest)
            try:
                await self._receive(request, writer)
                await asyncio.to_thread(writer.commit)
            except DigestError as exc:
                raise RegistryError(400, "DIGEST_INVALID", str(exc), {"digest": digest}) from None
            finally:
                writer.abort()  # a no-op after a commit: the ingest file was renamed
            self.stats.blobs_uploaded += 1
            return self._blob_created(name, digest)
        upload_id = uuid.uuid4().hex
        writer = await asyncio.to_thread(self.store.content.writer, key=upload_id)
        upload = _Upload(upload_id, writer)
        self.uploads[upload_id] = upload
        return _empty(202, self._upload_headers(name, upload))

    async def _upload(self, upload_id: str) -> _Upload:
        """An open session, or one resumed from its ingest file (after a restart)."""
        unknown = RegistryError(
            404, "BLOB_UPLOAD_UNKNOWN", f"upload {upload_id} is not known", {"uuid": upload_id}
        )
        if not _UUID_RE.match(upload_id):
            raise unknown
        upload = self.uploads.get(upload_id)
        if upload is None:
            # ContentStore.writer(key=K) keeps its ingest as ingest/k-K.
            if not (self.store.content.ingest / f"k-{upload_id}").is_file():
                raise unknown
            writer = await asyncio.to_thread(self.store.content.writer, key=upload_id)
            upload = self.uploads.get(upload_id)  # resumed meanwhile by another request?
            if upload is None:
                upload = self.uploads[upload_id] = _Upload(upload_id, writer)
            else:
                writer.close()
        upload.touched = time.monotonic()
        return upload

    def _expire_idle(self) -> None:
        cutoff = time.monotonic() - UPLOAD_IDLE_SECONDS
        for upload in list(self.uploads.values()):
            if upload.touched < cutoff and not upload.lock.locked():
                del self.uploads[upload.id]
                upload.writer.abort()

    def _forget(self, upload: _Upload, *, remove: bool) -> None:
        self.uploads.pop(upload.id, None)
        if remove:
            upload.writer.abort()
        else:
            upload.writer.close()

    async def upload_status(
        self, request: web.Request, params: dict[str, str]
    ) -> web.StreamResponse:
        upload = await self._upload(params["uuid"])
        return _empty(204, self._upload_headers(params["name"], upload))

    async def patch_upload(
        self, request: web.Request, params: dict[str, str]
    ) -> web.StreamResponse:
        upload = await self._upload(params["uuid"])
        async with upload.lock:
            await self._append(request, params["name"], upload)
            return _empty(202, self._upload_headers(params["name"], upload))

    async def finish_upload(
        self, request: web.Request, params: dict[str, str]
    ) -> web.StreamResponse:
        """Append the final chunk (if any), then verify and publish the blob."""
        name = params["name"]
        digest = request.query.get("digest")
        if digest is None:
            raise RegistryError(400, "DIGEST_INVALID", "the digest query parameter is required")
        _digest_param(digest)
        upload = await self._upload(params["uuid"])
        async with upload.lock:
            await self._append(request, name, upload)
            upload.writer.expected = digest
            try:
                await asyncio.to_thread(upload.writer.commit)
            except DigestError as exc:
                self._forget(upload, remove=True)
                raise RegistryError(400, "DIGEST_INVALID", str(exc), {"digest": digest}) from None
            self._forget(upload, remove=False)
        self.stats.blobs_uploaded += 1
        return self._blob_created(name, digest)

    async def cancel_upload(
        self, request: web.Request, params: dict[str, str]
    ) -> web.StreamResponse:
        upload = await self._upload(params["uuid"])
        async with upload.lock:
            self._forget(upload, remove=True)
        return _empty(204, {})

    async def _append(self, request: web.Request, name: str, upload: _Upload) -> None:
        """Append the body; a ``Content-Range`` must start where the upload stands (416
        otherwise, with the Range to resume from)."""
        header = request.headers.get("Content-Range")
        expected: int | None = None
        if header is not None:
            match = _RANGE_RE.match(header.strip())
            start, end = (int(match[1]), int(match[2])) if match else (-1, -1)
            if match is None or start != upload.writer.offset or end < start:
                raise RegistryError(
                    416,
                    "BLOB_UPLOAD_INVALID",
                    f"Content-Range {header!r} does not continue the upload, which holds "
                    f"{upload.writer.offset} bytes",
                    headers=self._upload_headers(name, upload),
                )
            expected = end - start + 1
            if request.content_length is not None and request.content_length != expected:
                raise RegistryError(
                    400,
                    "BLOB_UPLOAD_INVALID",
                    f"Content-Range {header!r} says {expected} bytes, Content-Length "
                    f"{request.content_length}",
                )
        elif not request.body_exists:
            return
        received = await self._receive(request, upload.writer)
        if expected is not None and received != expected:
            self._forget(upload, remove=True)
            raise RegistryError(
                400,
                "BLOB_UPLOAD_INVALID",
                f"the chunk had {received} bytes, its Content-Range said {expected}; "
                "the upload is cancelled",
            )

    async def _receive(self, request: web.Request, writer: BlobWriter) -> int:
        """Stream the body into ``writer``: batches are written (and hashed) in a thread
        while the next batch is read, so a layer is never held whole in memory."""
        pending: asyncio.Future[None] | None = None
        batch = bytearray()
        received = 0
        try:
            async for chunk in request.content.iter_chunked(_READ_CHUNK):
                batch += chunk
                received += len(chunk)
                if len(batch) >= _WRITE_BATCH:
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(asyncio.to_thread(writer.write, bytes(batch)))
                    batch.clear()
            if pending is not None:
                await pending
                pending = None
            if batch:
                await asyncio.to_thread(writer.write, bytes(batch))
        finally:
            if pending is not None:  # the client went away: let the write finish first
                await asyncio.wait([pending])
        self.stats.bytes_received += received
        return received

    async def close(self) -> None:
        """Keep open uploads' ingests (resumable) and let background unpacks finish."""
        for upload in list(self.uploads.values()):
            self._forget(upload, remove=False)
        if self.unpacking:
            await asyncio.wait(list(self.unpacking))


# ---- helpers ------------------------------------------------------------------------------


def _digest_param(digest: str) -> str:
    try:
        return check_digest(digest)
    except DigestError as exc:
        raise RegistryError(400, "DIGEST_INVALID", str(exc), {"digest": digest}) from None


def _accepts_index(request: web.Request) -> bool:
    """Whether the client takes an index; no Accept at all means "anything" (curl)."""
    accept = ",".join(request.headers.getall("Accept", []))
    if not accept.strip():
        return True
    types = {part.split(";")[0].strip() for part in accept.split(",")}
    return "*/*" in types or any(t in types for t in mf.INDEX_TYPES)


async def _read_document(request: web.Request) -> bytes:
    """A manifest body, refused (413 SIZE_INVALID) past the 4 MiB registries allow."""
    too_big = RegistryError(
        413, "SIZE_INVALID", f"manifests are limited to {mf.MAX_DOCUMENT} bytes"
    )
    if request.content_length is not None and request.content_length > mf.MAX_DOCUMENT:
        raise too_big
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > mf.MAX_DOCUMENT:
            raise too_big
    return bytes(data)


def _parse_pushed(data: bytes, content_type: str) -> mf.Manifest | mf.Index:
    """Parse a pushed manifest; its ``mediaType`` field, if any, must agree with the
    Content-Type, and every digest it references must be one the store can hold."""
    declared = content_type.split(";")[0].strip()
    known = declared if declared in mf.MANIFEST_TYPES + mf.INDEX_TYPES else None
    try:
        doc = mf.parse(data, known)
        body_type = orjson.loads(data).get("mediaType")
    except (mf.ManifestError, orjson.JSONDecodeError) as exc:
        raise RegistryError(400, "MANIFEST_INVALID", str(exc)) from None
    if known and isinstance(body_type, str) and body_type and body_type != known:
        raise RegistryError(
            400,
            "MANIFEST_INVALID",
            f"the manifest's mediaType {body_type} is not its Content-Type {known}",
        )
    descriptors = doc.manifests if isinstance(doc, mf.Index) else (doc.config, *doc.layers)
    for desc in descriptors:
        try:
            check_digest(desc.digest)
        except DigestError as exc:
            raise RegistryError(400, "MANIFEST_INVALID", str(exc)) from None
    return doc


def _page_query(request: web.Request) -> tuple[int | None, str | None]:
    """The ``n`` and ``last`` query parameters of a tag list or catalog request."""
    raw_n = request.query.get("n")
    if raw_n is not None and not raw_n.isdigit():
        raise RegistryError(
            400, "PAGINATION_NUMBER_INVALID", f"invalid number of results requested: {raw_n!r}"
        )
    return (int(raw_n) if raw_n is not None else None), request.query.get("last")


def _paginate(
    items: Sequence[str], query: tuple[int | None, str | None], path: str
) -> tuple[list[str], dict[str, str]]:
    """A page as the spec pages tag lists and catalogs (sorted, after ``last``, at most
    ``n``), with the ``Link`` to the next page when there is one."""
    n, last = query
    rest = [i for i in items if last is None or i > last]
    if n is None:
        return rest, {}
    page = rest[:n]
    if n == 0 or len(rest) <= n:
        return page, {}
    return page, {"Link": f'<{path}?{urlencode({"n": n, "last": page[-1]})}>; rel="next"'}


# ---- the application and its server ---------------------------------------------------------

_REGISTRY: web.AppKey[_Registry] = web.AppKey("registry", _Registry)


def registry_app(
    store: ImageStore, *, domain: str = "localhost:5000", in_use: InUse | None = None
) -> web.Application:
    """The registry as an aiohttp app. ``domain`` is the registry part of the store names
    pushes create; ``in_use`` gives the image IDs containers use, which a manifest delete
    must not remove."""
    try:
        canonical = parse_reference(f"{domain}/x").domain
    except InvalidReference:
        raise ValueError(f"invalid registry domain {domain!r}") from None
    registry = _Registry(store, canonical, in_use)
    app = web.Application()
    app[_REGISTRY] = registry

    async def version_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault(*API_VERSION)

    async def close(app: web.Application) -> None:
        await registry.close()

    app.on_response_prepare.append(version_header)
    app.on_cleanup.append(close)
    app.router.add_route("*", "/v2", registry.dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", registry.dispatch)
    return app


class RegistryServer:
    """Runs :func:`registry_app` on ``host:port`` — plain HTTP by default, as k3s's embedded
    registry on localhost; with ``ssl_context``, HTTPS. ``port=0`` binds an ephemeral port
    (``port`` then says which, after :meth:`start`)."""

    def __init__(
        self,
        store: ImageStore,
        host: str = "0.0.0.0",
        port: int = 5000,
        *,
        domain: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        in_use: InUse | None = None,
    ):
        self.store = store
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._fixed_domain = domain is not None
        self.app = registry_app(store, domain=domain or f"localhost:{port}", in_use=in_use)
        self._runner: web.AppRunner | None = None

    @property
    def domain(self) -> str:
        return self.app[_REGISTRY].domain

    @property
    def stats(self) -> RegistryStats:
        return self.app[_REGISTRY].stats

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner, self.host, self.port, ssl_context=self.ssl_context, reuse_address=True
        )
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            if err.errno == errno.EADDRINUSE:
                raise OSError(
                    errno.EADDRINUSE,
                    f"port {self.port} is in use — stop what uses it or pass --registry-port",
                ) from None
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        if not self._fixed_domain:
            self.app[_REGISTRY].domain = f"localhost:{self.port}"
        log.info("registry: serving on %s:%d as %s", self.host, self.port, self.domain)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
