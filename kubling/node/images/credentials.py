"""Registry credentials, and the keyring the kubelet builds from a pod's ``imagePullSecrets``.

A pull secret is either ``kubernetes.io/dockerconfigjson`` (a ``~/.docker/config.json``:
``{"auths": {"<registry>": {...}}}`` under the key ``.dockerconfigjson``) or the older
``kubernetes.io/dockercfg`` (the inner map alone, under ``.dockercfg``). Which entries apply
to an image follows the kubelet's ``credentialprovider`` keyring, so a secret that works on
another cluster works here:

- a key is a registry host, optionally with a scheme, a port and a path prefix
  (``https://index.docker.io/v1/``, ``registry.example.com/team``); ``/v1/`` and ``/v2/``
  mean the registry root;
- it matches an image whose host has the same number of dot-separated parts, each matching
  the key's (glob wildcards allowed, ``*.example.com``), the same port, and whose repository
  path starts with the key's path;
- more specific keys come first; Docker Hub images (``nginx``, ``docker.io/...``) fall back
  to the credentials stored for ``index.docker.io``.

Every matching credential is returned; the puller tries them in order, as the kubelet does.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from kubling.node.images.reference import DOCKER_HUB, InvalidReference, Reference, parse_reference

log = logging.getLogger(__name__)

DOCKERCONFIGJSON_KEY = ".dockerconfigjson"
DOCKERCFG_KEY = ".dockercfg"
#: Where the Docker CLI files credentials for Docker Hub (``docker login`` writes
#: ``https://index.docker.io/v1/``); the keyring's fallback for Hub images.
_DEFAULT_REGISTRY_HOST = "index.docker.io"


class CredentialsError(ValueError):
    """An ``auth`` field that is not ``base64(username:password)``."""


@dataclass(frozen=True)
class Credentials:
    """What a registry may be shown: a user and password (Basic auth, or to get a token),
    an identity token (an OAuth refresh token, as ``docker login`` stores for some
    registries) or a registry token (a bearer token used as is). Secrets stay out of
    ``repr`` so that they never reach a log line."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.identity_token or self.registry_token)


def decode_auth(value: str) -> tuple[str, str]:
    """``base64("user:password")`` → ``(user, password)`` — the ``auth`` field of Docker
    config files and of k3s's registries.yaml."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CredentialsError("auth is not valid base64") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise CredentialsError("unable to parse auth field, must be formatted as "
                               "base64(username:password)")
    return user, password.strip("\x00")


def _entry_credentials(entry: Any) -> Credentials:
    if not isinstance(entry, Mapping):
        raise CredentialsError("entry is not an object")
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    if entry.get("auth"):
        # The kubelet lets ``auth`` override username and password when both are given.
        username, password = decode_auth(str(entry["auth"]))
    return Credentials(
        username=username,
        password=password,
        identity_token=str(entry.get("identitytoken") or entry.get("identityToken") or ""),
        registry_token=str(entry.get("registrytoken") or entry.get("registryToken") or ""),
    )


@dataclass(frozen=True)
class _Key:
    """A parsed keyring key: host (with port) and path prefix, scheme dropped."""

    text: str  # host + path, what the kubelet indexes and sorts by
    hostname: str
    port: str
    path: str

    @classmethod
    def parse(cls, location: str) -> _Key | None:
        value = location.strip()
        if not value:
            return None
        if "://" not in value:
            value = "https://" + value
        parts = urlsplit(value)
        if not parts.hostname:
            return None
        path = parts.path
        if path.startswith(("/v1/", "/v2/")):
            path = path[3:]
        path = "" if path == "/" else path
        host = parts.netloc.lower()
        return cls(host + path, parts.hostname.lower(), str(parts.port or ""), path)

    def matches(self, target: _Key) -> bool:
        """The kubelet's ``URLsMatch``: same port, same number of host parts each matching
        the key's glob, and the key's path a prefix of the image's."""
        if self.port != target.port:
            return False
        mine, theirs = self.hostname.split("."), target.hostname.split(".")
        if len(mine) != len(theirs) or not target.path.startswith(self.path):
            return False
        return all(fnmatch.fnmatchcase(t, m) for m, t in zip(mine, theirs, strict=True))


class Keyring:
    """The credentials of a pod's pull secrets, looked up per image."""

    def __init__(self) -> None:
        self._creds: dict[str, list[Credentials]] = {}
        self._keys: dict[str, _Key] = {}

    @classmethod
    def from_secrets(cls, secrets: Iterable[Mapping[str, bytes | str]]) -> Keyring:
        """A keyring from secrets' (base64-decoded) ``data``. A secret that cannot be
        parsed is skipped with a log line, as the kubelet skips it."""
        keyring = cls()
        for data in secrets:
            try:
                keyring.add_secret(data)
            except CredentialsError as err:
                log.warning("ignoring an image pull secret: %s", err)
        return keyring

    def add_secret(self, data: Mapping[str, bytes | str]) -> None:
        if DOCKERCONFIGJSON_KEY in data:
            doc = _json(data[DOCKERCONFIGJSON_KEY], DOCKERCONFIGJSON_KEY)
            auths = doc.get("auths", {})
            if not isinstance(auths, Mapping):
                raise CredentialsError(f"{DOCKERCONFIGJSON_KEY}: auths is not an object")
            self.add_config(auths)
        elif DOCKERCFG_KEY in data:
            self.add_config(_json(data[DOCKERCFG_KEY], DOCKERCFG_KEY))

    def add_config(self, auths: Mapping[str, Any]) -> None:
        """Add a Docker config's ``auths`` map (registry location → entry)."""
        for location, entry in auths.items():
            key = _Key.parse(str(location))
            if key is None:
                continue
            try:
                creds = _entry_credentials(entry)
            except CredentialsError as err:
                raise CredentialsError(f"{location}: {err}") from None
            self._creds.setdefault(key.text, []).append(creds)
            self._keys[key.text] = key

    def lookup(self, image: Reference | str) -> list[Credentials]:
        """Every credential that applies to ``image``, most specific key first."""
        try:
            ref = image if isinstance(image, Reference) else parse_reference(image)
        except InvalidReference:
            return []
        target = _Key.parse(ref.name)
        if target is None:
            return []
        found: list[Credentials] = []
        # Reverse-sorted, as the kubelet does, so that "quay.io/team" precedes "quay.io".
        for text in sorted(self._keys, reverse=True):
            if self._keys[text].matches(target):
                found.extend(self._creds[text])
        if not found and ref.domain == DOCKER_HUB:
            found.extend(self._creds.get(_DEFAULT_REGISTRY_HOST, []))
        return found

    def __len__(self) -> int:
        return sum(len(c) for c in self._creds.values())


def _json(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CredentialsError(f"{what} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"{what} is not a JSON object")
    return doc
