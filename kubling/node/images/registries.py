"""``<data-dir>/registries.yaml``: registry mirrors, rewrites, auth and TLS, in k3s's format.

```yaml
mirrors:
  docker.io:
    endpoint: ["http://10.0.0.5:5000", "https://mirror.example"]
    rewrite: {"^library/(.*)": "mirror/$1"}
  "*": {endpoint: ["https://fallback.example"]}    # every registry without an entry
configs:
  "mirror.example":
    auth: {username: u, password: p}               # or auth: <base64 u:p>, identity_token
    tls: {ca_file: ..., cert_file: ..., key_file: ..., insecure_skip_verify: true}
```

The semantics are those k3s gives containerd, so its documentation applies: a registry's
mirror endpoints are tried in order and the registry's own ("default") endpoint always last;
rewrites apply to mirror endpoints only; ``configs`` are keyed by the host an endpoint
connects to. An endpoint without a scheme is HTTPS, except on a loopback host, which is
plain HTTP as containerd treats localhost. Docker Hub's default endpoint is
``registry-1.docker.io``.

Parsing is strict about types and values (a wrong type is an error naming the file and the
key) and tolerant of unknown keys, which are logged: a file written for k3s keeps working.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from kubling.node.images.credentials import Credentials, CredentialsError, decode_auth
from kubling.node.images.reference import DOCKER_HUB, Reference

log = logging.getLogger(__name__)

#: Where containerd sends Docker Hub's traffic (``docker.io`` itself serves no registry API).
DOCKER_HUB_HOST = "registry-1.docker.io"
WILDCARD = "*"

_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_GO_TEMPLATE = re.compile(r"\$(?:(\$)|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


class RegistryConfigError(ValueError):
    """registries.yaml cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class TLSConfig:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class HostConfig:
    """One ``configs`` entry: what to present to, and how to trust, one host."""

    auth: Credentials | None = None
    tls: TLSConfig | None = None


@dataclass(frozen=True)
class Rewrite:
    pattern: re.Pattern[str]
    replacement: str  # Go template syntax: $1, ${1}, ${name}, $$

    def apply(self, repository: str) -> str:
        """Go's ``Regexp.ReplaceAllString``, which k3s uses."""
        return self.pattern.sub(lambda m: _expand_go(m, self.replacement), repository)


@dataclass(frozen=True)
class Mirror:
    endpoints: tuple[str, ...] = ()
    rewrites: tuple[Rewrite, ...] = ()

    def rewrite(self, repository: str) -> str:
        """The first rule whose pattern matches rewrites the repository; file order."""
        for rule in self.rewrites:
            if rule.pattern.search(repository):
                return rule.apply(repository)
        return repository


@dataclass(frozen=True)
class Endpoint:
    """One place to pull a repository from, with everything needed to talk to it."""

    url: str  # the API root: scheme://host[:port]/v2 (or the path a mirror was given)
    host: str  # host[:port] connected to, the key of ``configs``
    repository: str  # the repository path on this endpoint, after rewrites
    mirror: bool  # False for the registry's own endpoint
    registry: str  # the image's registry (``docker.io``), sent to mirrors as ``?ns=``
    auth: Credentials | None = None
    tls: TLSConfig | None = None

    @property
    def plain_http(self) -> bool:
        return self.url.startswith("http://")

    @property
    def origin(self) -> str:
        """``scheme://host``, how messages name the endpoint."""
        return self.url.split("://", 1)[0] + "://" + self.host

    def manifest_url(self, reference: str) -> str:
        return f"{self.url}/{self.repository}/manifests/{reference}"

    def blob_url(self, digest: str) -> str:
        return f"{self.url}/{self.repository}/blobs/{digest}"

    @property
    def query(self) -> dict[str, str]:
        """containerd tells a mirror which registry it stands in for (``?ns=docker.io``):
        one mirror can then serve several registries."""
        return {"ns": self.registry} if self.mirror else {}


@dataclass(frozen=True)
class RegistryConfig:
    mirrors: Mapping[str, Mirror] = field(default_factory=dict)
    configs: Mapping[str, HostConfig] = field(default_factory=dict)
    source: str = ""

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Where to pull ``ref`` from, in the order to try: the mirrors, then the registry."""
        out: list[Endpoint] = []
        mirror = self.mirrors.get(ref.domain) or self.mirrors.get(WILDCARD)
        if mirror is not None:
            repository = mirror.rewrite(ref.path)
            for raw in mirror.endpoints:
                url, host = normalize_endpoint(raw)
                out.append(self._endpoint(url, host, repository, True, ref.domain))
        url, host = normalize_endpoint(ref.domain)
        own = self._endpoint(url, host, ref.path, False, ref.domain)
        # An endpoint listed twice (a "mirror" that is the registry itself) is tried once.
        seen: set[tuple[str, str]] = set()
        unique = []
        for ep in [*out, own]:
            if (ep.url, ep.repository) not in seen:
                seen.add((ep.url, ep.repository))
                unique.append(ep)
        return unique

    def _endpoint(
        self, url: str, host: str, repository: str, mirror: bool, registry: str
    ) -> Endpoint:
        names = [host]
        if not mirror:
            names.append(registry)  # configs: {docker.io: ...} covers Docker Hub's host
        config = self.host_config(*names)
        return Endpoint(url, host, repository, mirror and host != registry, registry,
                        config.auth, config.tls)

    def host_config(self, *hosts: str) -> HostConfig:
        for host in (*hosts, WILDCARD):
            found = self.configs.get(host)
            if found is not None:
                return found
        return HostConfig()


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1 — the hosts containerd reaches over plain HTTP."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_endpoint(raw: str) -> tuple[str, str]:
    """An endpoint as written (``http://h:5000``, ``h``, ``https://h/prefix``) → its API
    root URL and its ``host[:port]``. Raises ValueError for what is not an HTTP(S) URL."""
    text = raw.strip()
    parts = urlsplit(text if "://" in text else "//" + text)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{raw!r}: an endpoint is scheme://host[:port][/path]")
    try:
        hostname, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError(f"{raw!r}: invalid port") from None
    if not hostname:
        raise ValueError(f"{raw!r}: no host")
    scheme = parts.scheme.lower()
    if not scheme:
        scheme = "http" if is_loopback(hostname) and port != 443 else "https"
    if scheme not in ("http", "https"):
        raise ValueError(f"{raw!r}: the scheme must be http or https")
    host = parts.netloc.lower()
    if hostname == DOCKER_HUB and port is None:
        host = DOCKER_HUB_HOST
    path = parts.path.rstrip("/")
    if path in ("", "/v2"):
        path = "/v2"  # any other path is the API root as given (containerd's override_path)
    return f"{scheme}://{host}{path}", host


def _expand_go(match: re.Match[str], template: str) -> str:
    """Expand a Go replacement template: ``$1``, ``${1}``, ``${name}``, ``$$``; a group
    that does not exist expands to nothing, as in Go."""

    def one(t: re.Match[str]) -> str:
        if t.group(1):
            return "$"
        name = t.group(2) or t.group(3)
        if name.isdigit():
            index = int(name)
            return (match.group(index) or "") if index <= match.re.groups else ""
        return match.groupdict().get(name) or ""

    return _GO_TEMPLATE.sub(one, template)


# ---- loading -------------------------------------------------------------------------


class _Parser:
    """Walks the YAML document, checking each value and naming it in errors."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str) -> RegistryConfigError:
        return RegistryConfigError(f"{self.path}: {key}: {problem}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {_type(value)}")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(key, f"key {k!r} is not a string")
        return value

    def string(self, value: Any, key: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_type(value)}")
        return value

    def known(self, value: dict[str, Any], key: str, allowed: tuple[str, ...]) -> None:
        for k in value:
            if k not in allowed:
                log.warning("%s: %s: unknown key %r ignored (known: %s)",
                            self.path, key, k, ", ".join(allowed))

    def config(self, doc: Any) -> RegistryConfig:
        top = self.mapping(doc, "(top level)")
        self.known(top, "(top level)", ("mirrors", "configs"))
        mirrors = {
            name: self.mirror(value, f"mirrors.{_q(name)}")
            for name, value in self.mapping(top.get("mirrors"), "mirrors").items()
        }
        configs = {
            _host_key(name): self.host_config(value, f"configs.{_q(name)}")
            for name, value in self.mapping(top.get("configs"), "configs").items()
        }
        return RegistryConfig(mirrors, configs, str(self.path))

    def mirror(self, value: Any, key: str) -> Mirror:
        body = self.mapping(value, key)
        self.known(body, key, ("endpoint", "rewrite"))
        raw_endpoints = body.get("endpoint") or []
        if not isinstance(raw_endpoints, list):
            raise self.fail(f"{key}.endpoint", f"expected a list of URLs, got "
                            f"{_type(raw_endpoints)}")
        endpoints = []
        for i, raw in enumerate(raw_endpoints):
            item = self.string(raw, f"{key}.endpoint[{i}]")
            try:
                normalize_endpoint(item)
            except ValueError as err:
                raise self.fail(f"{key}.endpoint[{i}]", str(err)) from None
            endpoints.append(item)
        rewrites = []
        for pattern, replacement in self.mapping(body.get("rewrite"), f"{key}.rewrite").items():
            rkey = f"{key}.rewrite.{_q(pattern)}"
            try:
                compiled = re.compile(pattern)
            except re.error as err:
                raise self.fail(rkey, f"invalid regular expression: {err}") from None
            rewrites.append(Rewrite(compiled, self.string(replacement, rkey)))
        return Mirror(tuple(endpoints), tuple(rewrites))

    def host_config(self, value: Any, key: str) -> HostConfig:
        body = self.mapping(value, key)
        self.known(body, key, ("auth", "tls"))
        auth = None
        if body.get("auth") is not None:
            auth = self.auth(body["auth"], f"{key}.auth")
        tls = None
        if body.get("tls") is not None:
            tls = self.tls(body["tls"], f"{key}.tls")
        return HostConfig(auth, tls)

    def auth(self, value: Any, key: str) -> Credentials:
        body = self.mapping(value, key)
        self.known(body, key, ("username", "password", "auth", "identity_token"))
        username = self.string(body.get("username"), f"{key}.username")
        password = self.string(body.get("password"), f"{key}.password")
        token = self.string(body.get("identity_token"), f"{key}.identity_token")
        encoded = self.string(body.get("auth"), f"{key}.auth")
        # containerd's order: username/password, then the identity token, then ``auth``.
        if not username and not token and encoded:
            try:
                username, password = decode_auth(encoded)
            except CredentialsError as err:
                raise self.fail(f"{key}.auth", str(err)) from None
        return Credentials(username=username, password=password, identity_token=token)

    def tls(self, value: Any, key: str) -> TLSConfig:
        body = self.mapping(value, key)
        allowed = ("ca_file", "cert_file", "key_file", "insecure_skip_verify")
        self.known(body, key, allowed)
        skip = body.get("insecure_skip_verify", False)
        if not isinstance(skip, bool):
            raise self.fail(f"{key}.insecure_skip_verify", f"expected true or false, got "
                            f"{_type(skip)}")
        tls = TLSConfig(
            ca_file=self.string(body.get("ca_file"), f"{key}.ca_file"),
            cert_file=self.string(body.get("cert_file"), f"{key}.cert_file"),
            key_file=self.string(body.get("key_file"), f"{key}.key_file"),
            insecure_skip_verify=skip,
        )
        if bool(tls.cert_file) != bool(tls.key_file):
            raise self.fail(key, "cert_file and key_file go together")
        return tls


def _type(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _q(name: str) -> str:
    """Quote a key that has dots, so ``mirrors."docker.io".endpoint`` reads unambiguously."""
    return f'"{name}"' if "." in name or not name else name


def _host_key(name: str) -> str:
    """``configs`` keys are hosts; a scheme or a trailing slash some users add is dropped."""
    key = name.strip().lower()
    if "://" in key:
        key = key.split("://", 1)[1]
    return key.rstrip("/")


def load_registries(path: Path) -> RegistryConfig:
    """Read registries.yaml; a missing file is an empty configuration (no mirrors, every
    registry reached directly)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return RegistryConfig(source=str(path))
    except OSError as err:
        raise RegistryConfigError(f"{path}: cannot be read: {err.strerror}") from None
    try:
        doc = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(err, "problem", None) or str(err)
        raise RegistryConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    return _Parser(path).config(doc)
