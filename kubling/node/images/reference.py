"""Image references as users write them (``nginx``, ``localhost:5000/app:dev``,
``busybox@sha256:...``) and their normalised, fully qualified form.

Kubernetes hands the runtime the string from ``spec.containers[].image`` untouched; the
runtime normalises it the way Docker does: a first component without ``.``/``:`` and other
than ``localhost`` means Docker Hub, one-component Hub names live under ``library/``, and
no tag and no digest means ``:latest``. The grammar is the distribution project's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?$|^\[[0-9a-fA-F:.]+\](?::[0-9]+)?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_MAX_NAME = 255


class InvalidReference(ValueError):
    """A string that is not an image reference; the message is the one users see in
    ``InvalidImageName`` (``couldn't parse image name "X": invalid reference format``)."""


@dataclass(frozen=True)
class Reference:
    """A parsed image reference. ``domain`` and ``path`` are normalised (Docker Hub and
    ``library/`` filled in); ``tag`` is ``None`` only when a digest is given."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The repository: ``docker.io/library/nginx``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar(self) -> str:
        """The short form Docker prints: ``nginx:latest``, ``user/app:1``."""
        path = self.path
        if self.domain == DOCKER_HUB:
            path = path.removeprefix("library/")
            base = path
        else:
            base = self.name
        return (
            base + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")
        )

    @property
    def is_latest(self) -> bool:
        """True when the image moves under the user (``:latest`` or no tag, no digest):
        Kubernetes then defaults ``imagePullPolicy`` to ``Always``."""
        return self.digest is None and self.tag in (None, DEFAULT_TAG)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise ``text``; without tag or digest the tag is ``latest`` (unless
    ``default_tag`` is false, for ``kubling image rm`` patterns)."""
    invalid = InvalidReference(f'couldn\'t parse image name "{text}": invalid reference format')
    if not text or text != text.strip() or len(text) > 4096:
        raise invalid
    remainder = text
    digest: str | None = None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise invalid
        if digest.startswith("sha256:") and not _SHA256_RE.match(digest):
            raise invalid
    tag: str | None = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise invalid
    first, sep, rest = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
        if not _DOMAIN_RE.match(domain):
            raise invalid
    else:
        domain, path = DOCKER_HUB, remainder
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if path != path.lower() and _PATH_RE.match(path.lower()):
        raise InvalidReference(
            f'couldn\'t parse image name "{text}": repository name must be lowercase'
        )
    if not _PATH_RE.match(path) or len(domain) + 1 + len(path) > _MAX_NAME:
        raise invalid
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def normalize(text: str) -> str:
    """``nginx`` → ``docker.io/library/nginx:latest``."""
    return str(parse_reference(text))


def is_digest(text: str) -> bool:
    return bool(_SHA256_RE.match(text))
