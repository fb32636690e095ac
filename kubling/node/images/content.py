"""Content-addressed blobs: ``<root>/blobs/sha256/<hex>``.

A blob enters the store only through a :class:`BlobWriter`, which hashes what it writes
and publishes the file by an atomic rename after an fsync — so a blob on disk is always
complete and has the digest it is named by, whatever crashes. Partial downloads live in
``<root>/ingest/`` under a caller-chosen key and can be resumed. Reads verify too
(:meth:`ContentStore.read` for documents, :meth:`ContentStore.verify` for layers before
they are unpacked), so a blob corrupted on disk is found rather than trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import BinaryIO

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_CHUNK = 1024 * 1024


class DigestError(ValueError):
    """Content whose digest is not the expected one, or a malformed digest."""


class BlobNotFound(KeyError):
    pass


def check_digest(digest: str) -> str:
    """Refuse anything but ``sha256:<64 hex>`` — digests become file names."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise DigestError(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return digest


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """Writes one blob. ``offset`` says how much a resumed ingest already holds;
    :meth:`commit` verifies the digest (and size) and publishes the blob."""

    def __init__(self, store: ContentStore, path: Path, expected: str | None, size: int | None):
        self._store = store
        self.path = path
        self.expected = expected
        self.size = size
        self._hash = hashlib.sha256()
        self.offset = 0
        self._file: BinaryIO = self._open_locked(path)
        #: Another process published the blob while we waited: writes are discarded.
        self.already_present = expected is not None and store.has(expected)
        if not self.already_present:  # resume: re-hash what the ingest already holds
            self._file.seek(0)
            while chunk := self._file.read(_CHUNK):
                self._hash.update(chunk)
                self.offset += len(chunk)

    @staticmethod
    def _open_locked(path: Path) -> BinaryIO:
        """Open the ingest file holding an exclusive flock: two processes (the server's
        pull and ``kubling image pull``) downloading one blob take turns instead of
        interleaving bytes. The file may have been published (renamed into blobs/) while
        we waited for the lock; then open the path afresh."""
        while True:
            f = path.open("a+b")
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                    return f
            except FileNotFoundError:
                pass
            f.close()

    def write(self, data: bytes) -> None:
        if self.already_present:
            return
        if self.size is not None and self.offset + len(data) > self.size:
            self.abort()
            raise DigestError(
                f"blob {self.expected or ''} is larger than its declared {self.size} bytes"
            )
        self._file.write(data)
        self._hash.update(data)
        self.offset += len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def commit(self) -> str:
        """Verify and publish; returns the digest. A mismatch removes the ingest. The
        rename happens while the lock is held, so no waiting writer can open the file
        that becomes the published blob."""
        if self.already_present and self.expected is not None:
            self.abort()
            return self.expected
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            digest = self.digest
            if self.expected is not None and digest != self.expected:
                self.path.unlink(missing_ok=True)
                raise DigestError(
                    f"content digest {digest} does not match the expected {self.expected}"
                )
            if self.size is not None and self.offset != self.size:
                self.path.unlink(missing_ok=True)
                raise DigestError(f"blob {digest} has {self.offset} bytes, expected {self.size}")
            target = self._store.path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, target)
            _fsync_dir(target.parent)
        finally:
            self._file.close()
        return digest

    def close(self) -> None:
        """Stop writing but keep the partial ingest for a later resume."""
        if not self._file.closed:
            self._file.close()

    def abort(self) -> None:
        """Drop the ingest (unlinked before the lock is released, for the same reason)."""
        if not self._file.closed:
            self.path.unlink(missing_ok=True)
        self.close()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.close()


class ContentStore:
    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.ingest = root / "ingest"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.ingest.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest).removeprefix("sha256:")

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def writer(
        self, expected: str | None = None, *, size: int | None = None, key: str | None = None
    ) -> BlobWriter:
        """A writer for a new blob. With ``key`` (a download's identity, e.g. the digest)
        an interrupted ingest under that key is resumed; without, a fresh one starts."""
        if expected is not None:
            check_digest(expected)
        if key is None:
            name = "w-" + secrets.token_hex(8)
        elif _KEY_RE.match(key):
            name = "k-" + key.replace(":", "-")
        else:
            raise ValueError(f"invalid ingest key {key!r}")
        return BlobWriter(self, self.ingest / name, expected, size)

    def put(self, data: bytes, expected: str | None = None) -> str:
        digest = sha256_digest(data)
        if expected is not None and digest != check_digest(expected):
            raise DigestError(f"content digest {digest} does not match the expected {expected}")
        if self.has(digest):
            return digest
        w = self.writer(digest, size=len(data))
        w.write(data)
        return w.commit()

    def read(self, digest: str) -> bytes:
        """The blob's bytes, verified: a blob damaged on disk raises DigestError."""
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        if sha256_digest(data) != digest:
            raise DigestError(f"blob {digest} is corrupted on disk (its content does not match)")
        return data

    def verify(self, digest: str) -> None:
        """Re-hash a (large) blob in chunks; raises DigestError if it was damaged."""
        h = hashlib.sha256()
        try:
            with self.path(digest).open("rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        if "sha256:" + h.hexdigest() != digest:
            raise DigestError(f"blob {digest} is corrupted on disk (its content does not match)")

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> list[str]:
        return sorted(
            "sha256:" + p.name for p in self.blobs.iterdir() if _DIGEST_RE.match("sha256:" + p.name)
        )

    def clean_ingest(self, older_than: float) -> list[Path]:
        """Drop partial downloads and uploads untouched for ``older_than`` seconds
        (called at start): fresher ones may still be resumed."""
        cutoff = time.time() - older_than
        dropped = []
        for p in self.ingest.iterdir():
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    dropped.append(p)
            except FileNotFoundError:
                continue
        return dropped
