"""How an agent on another machine joins: the join token and the endpoints it unlocks.

This follows k3s. ``kubling server`` makes ``<data-dir>/token`` on its first start, in
k3s's "secure" format ``K10<sha256 of the CA bundle>::server:<secret>``: the hash lets
the agent check, before it trusts anything, that the CA it downloads from ``/cacerts``
(served to anyone, over TLS it cannot verify yet) is the cluster's; the secret proves to
the server that the agent may join. With it the agent asks, under ``/v1-kubling/``:

- ``client-kubelet.crt``: a client certificate for ``system:node:<name>`` in group
  ``system:nodes``, the identity upstream's kubelets have;
- ``serving-kubelet.crt``: the certificate of its :10250 server for its name and
  addresses, so the API server (which trusts only the cluster CA) can reach it;
- ``config``: what the agent must agree on with the server (cluster CIDR, its pod CIDR).

As k3s does, each agent also sends its node password (a random secret it keeps): the
first join of a node name records a hash of it in the Secret
``kube-system/<node>.node-password.kubling``, and later joins under that name must present
the same password, so one token holder cannot take over another node's identity.

Both certificates are issued for the public key of a CSR the agent sends: the private
keys never leave the agent's machine. Subject and names come from the request headers,
never from the CSR, so a token holder gets exactly a node identity. The secret arrives as
HTTP basic auth (user ``node``), as k3s's agents send it. These paths bypass the API
server's authentication (the token is the credential) and a wrong token is a 401 with a
message, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from aiohttp import web
from cryptography import x509

from kubling.api import names
from kubling.api.meta import Object
from kubling.apiserver import errors, pki
from kubling.apiserver.registry.registry import Registry

log = logging.getLogger("kubling.apiserver.join")

TOKEN_PREFIX = "K10"
TOKEN_FILE = "token"
#: The paths served here (``/cacerts`` is k3s's; the rest is k3s's ``/v1-k3s/``).
CACERTS_PATH = "/cacerts"
PREFIX = "/v1-kubling/"
NODE_NAME_HEADER = "Kubling-Node-Name"
NODE_IP_HEADER = "Kubling-Node-IP"
NODE_PASSWORD_HEADER = "Kubling-Node-Password"
#: Where a node name's password hash lives (k3s: ``<node>.node-password.k3s``).
NODE_PASSWORD_NAMESPACE = "kube-system"
NODE_PASSWORD_SUFFIX = ".node-password.kubling"
NODE_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
#: Pod networks per node, as upstream's node IPAM gives them (``--node-cidr-mask-size``).
NODE_CIDR_PREFIX = 24
MAX_CSR_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class JoinToken:
    """A parsed token: ``ca_hash`` is empty for a bare secret (k3s's "short" token)."""

    ca_hash: str
    secret: str


def parse_token(text: str) -> JoinToken:
    """``K10<hash>::<user>:<secret>`` or a bare secret; ValueError for anything else."""
    text = text.strip()
    if not text:
        raise ValueError("the join token is empty")
    if not text.startswith(TOKEN_PREFIX) or "::" not in text:
        return JoinToken(ca_hash="", secret=text)
    ca_hash, _, credentials = text[len(TOKEN_PREFIX):].partition("::")
    _user, _, secret = credentials.partition(":")
    if len(ca_hash) != 64 or not secret:
        raise ValueError("the join token is malformed (expected K10<sha256>::server:<secret>)")
    return JoinToken(ca_hash=ca_hash.lower(), secret=secret)


def ca_hash(ca_pem: bytes) -> str:
    """The hash a token pins: sha256 over the exact bytes ``/cacerts`` serves."""
    return hashlib.sha256(ca_pem).hexdigest()


def ensure_token(data_dir: Path, ca_cert: Path) -> tuple[str, bool]:
    """The server's join token and whether it was made just now (then the CLI prints it).

    Stable across restarts: agents that joined keep the token they were given. The file is
    0600, written atomically, because it lets its reader obtain node credentials.
    """
    path = data_dir / TOKEN_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing, False
    token = f"{TOKEN_PREFIX}{ca_hash(ca_cert.read_bytes())}::server:{secrets.token_hex(16)}"
    data_dir.mkdir(parents=True, exist_ok=True)
    pki.write_private_file(path, (token + "\n").encode())
    return token, True


class NodeCIDRs:
    """Which /24 of the cluster CIDR each joined node uses.

    The server's own node always has the first one (``nodestatus.first_subnet``) and
    simulated nodes take theirs from the upper half, so joined nodes take the lowest free
    one from the second on. A node that joins again keeps the one its Node object has.
    ``taken`` is read from the Nodes the cluster has; reservations made here cover two
    agents joining at once (one server: the lock is in this process).
    """

    def __init__(self, cluster_cidr: str) -> None:
        self.network = ipaddress.ip_network(cluster_cidr, strict=False)
        self._reserved: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def assign(self, node_name: str, taken: dict[str, str]) -> str:
        """The pod CIDR of ``node_name``, given ``taken`` (node name → its podCIDR)."""
        async with self._lock:
            for registered in [n for n in self._reserved if taken.get(n)]:
                del self._reserved[registered]  # its Node has it now
            if taken.get(node_name):
                return taken[node_name]
            if node_name in self._reserved:
                return self._reserved[node_name]
            if self.network.version != 4 or self.network.prefixlen >= NODE_CIDR_PREFIX:
                return str(self.network)
            used = {*taken.values(), *self._reserved.values()}
            subnets = list(self.network.subnets(new_prefix=NODE_CIDR_PREFIX))
            for subnet in subnets[1:len(subnets) // 2]:
                if str(subnet) not in used:
                    self._reserved[node_name] = str(subnet)
                    return str(subnet)
            raise web.HTTPServiceUnavailable(
                text=f"no free /{NODE_CIDR_PREFIX} left in the cluster CIDR {self.network}")


#: ``async () -> {node name: podCIDR}`` over the cluster's Nodes.
NodeLister = Callable[[], Awaitable[dict[str, str]]]


#: ``async (node name, password) -> None``; raises ``web.HTTPForbidden`` on a mismatch.
PasswordCheck = Callable[[str, str], Awaitable[None]]


class NodePasswords:
    """k3s's node passwords, kept as Secrets through the registry (the server's own write,
    like the bootstrap objects). The password is 128 random bits made by the agent, so a
    salted sha256 is enough: there is nothing to brute-force that a slow hash would
    protect."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = asyncio.Lock()

    async def check(self, node_name: str, password: str) -> None:
        if not password:
            raise web.HTTPBadRequest(text=f"the {NODE_PASSWORD_HEADER} header is required\n")
        secrets_type = self.registry.catalogue.lookup("", "v1", "secrets")
        assert secrets_type is not None
        store = self.registry.store(secrets_type)
        name = node_name + NODE_PASSWORD_SUFFIX
        async with self._lock:
            try:
                secret = await store.get(NODE_PASSWORD_NAMESPACE, name)
            except errors.APIError as err:
                if err.code != 404:
                    raise
                if await self._node_exists(node_name):
                    # A Node that never joined with a password (the server's own): its name
                    # is not free for the first token holder who asks for it.
                    raise web.HTTPForbidden(
                        text=f"node {node_name!r} is already registered and did not join "
                             "with a node password — pass another --node-name\n") from None
                obj = _password_secret(name, node_name, password)
                store.strategy.default(obj)
                await store.create(obj, namespace=NODE_PASSWORD_NAMESPACE)
                return
        recorded = base64.b64decode((secret.get("data") or {}).get("hash", "")).decode()
        if not _password_matches(recorded, password):
            raise web.HTTPForbidden(
                text=f"node {node_name!r} already joined with another node password — pass "
                     f"another --node-name, or, if that node is gone, delete the Secret "
                     f"{NODE_PASSWORD_NAMESPACE}/{name} on the server\n")


    async def _node_exists(self, node_name: str) -> bool:
        nodes_type = self.registry.catalogue.lookup("", "v1", "nodes")
        assert nodes_type is not None
        try:
            await self.registry.store(nodes_type).get("", node_name)
        except errors.APIError as err:
            if err.code != 404:
                raise
            return False
        return True


def _password_secret(name: str, node_name: str, password: str) -> Object:
    salt = secrets.token_hex(16)
    digest = hashlib.sha256((salt + password).encode()).hexdigest()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubling.io/node-password",
            "metadata": {"name": name, "namespace": NODE_PASSWORD_NAMESPACE,
                         "labels": {"kubling.io/node": node_name}},
            "immutable": True,
            "data": {"hash": base64.b64encode(f"sha256${salt}${digest}".encode()).decode()}}


def _password_matches(recorded: str, password: str) -> bool:
    scheme, _, rest = recorded.partition("$")
    salt, _, digest = rest.partition("$")
    if scheme != "sha256" or not salt or not digest:
        return False
    given = hashlib.sha256((salt + password).encode()).hexdigest()
    return hmac.compare_digest(given, digest)


class JoinHandlers:
    """The aiohttp handlers for ``/cacerts`` and ``/v1-kubling/*``."""

    def __init__(self, cluster_pki: pki.ClusterPKI, token: str, *, cluster_cidr: str,
                 service_cidr: str, node_pod_cidrs: NodeLister,
                 node_passwords: PasswordCheck) -> None:
        self.pki = cluster_pki
        self.secret = parse_token(token).secret
        self.cluster_cidr = cluster_cidr
        self.service_cidr = service_cidr
        self.cidrs = NodeCIDRs(cluster_cidr)
        self.node_pod_cidrs = node_pod_cidrs
        self.node_passwords = node_passwords

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == CACERTS_PATH and request.method in ("GET", "HEAD"):
            return web.Response(body=self.pki.ca_cert.read_bytes(),
                                content_type="application/x-pem-file")
        self._check_secret(request)
        if path == PREFIX + "client-kubelet.crt" and request.method == "POST":
            return await self._client_cert(request)
        if path == PREFIX + "serving-kubelet.crt" and request.method == "POST":
            return await self._serving_cert(request)
        if path == PREFIX + "config" and request.method == "GET":
            return await self._config(request)
        raise web.HTTPNotFound(text=f"no join endpoint {request.method} {path}\n")

    def _check_secret(self, request: web.Request) -> None:
        """401 unless basic auth carries this server's secret (or its whole token)."""
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        given = ""
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(encoded, validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                given = ""
        if given:
            try:
                given = parse_token(given).secret
            except ValueError:
                given = ""
        if not given or not hmac.compare_digest(given.encode(), self.secret.encode()):
            log.warning("join refused from %s: wrong token", request.remote)
            raise web.HTTPUnauthorized(
                text="the join token is not valid for this server — copy <data-dir>/token "
                     "from the server again\n",
                headers={"WWW-Authenticate": 'Basic realm="kubling-join"'})

    async def _client_cert(self, request: web.Request) -> web.Response:
        name = _node_name(request)
        await self.node_passwords(name, request.headers.get(NODE_PASSWORD_HEADER, ""))
        csr = await _read_csr(request)
        cert = await asyncio.to_thread(
            pki.issue_for_public_key, self.pki, csr.public_key(),
            common_name=NODE_USER_PREFIX + name, organizations=[NODE_GROUP], client=True)
        log.info("issued the client certificate of node %s", name)
        return _pem_chain(cert, self.pki)

    async def _serving_cert(self, request: web.Request) -> web.Response:
        name = _node_name(request)
        ips = _node_ips(request)
        await self.node_passwords(name, request.headers.get(NODE_PASSWORD_HEADER, ""))
        csr = await _read_csr(request)
        cert = await asyncio.to_thread(
            pki.issue_for_public_key, self.pki, csr.public_key(),
            common_name=NODE_USER_PREFIX + name, organizations=[NODE_GROUP], client=False,
            dns_names=[name, "localhost"], ips=sorted({*ips, "127.0.0.1"}))
        log.info("issued the serving certificate of node %s (%s)", name, ", ".join(ips))
        return _pem_chain(cert, self.pki)

    async def _config(self, request: web.Request) -> web.Response:
        name = _node_name(request)
        await self.node_passwords(name, request.headers.get(NODE_PASSWORD_HEADER, ""))
        taken = await self.node_pod_cidrs()
        pod_cidr = await self.cidrs.assign(name, taken)
        return web.json_response({"clusterCIDR": self.cluster_cidr,
                                  "serviceCIDR": self.service_cidr, "podCIDR": pod_cidr})


def _node_name(request: web.Request) -> str:
    name = request.headers.get(NODE_NAME_HEADER, "").strip().lower()
    problems = names.is_dns1123_subdomain(name) if name else ["must not be empty"]
    if problems:
        raise web.HTTPBadRequest(
            text=f"{NODE_NAME_HEADER}: {name!r} is not a valid node name: {'; '.join(problems)}\n")
    return name


def _node_ips(request: web.Request) -> list[str]:
    ips = [ip.strip() for ip in request.headers.get(NODE_IP_HEADER, "").split(",") if ip.strip()]
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise web.HTTPBadRequest(text=f"{NODE_IP_HEADER}: not an IP address: {ip}\n") from None
    return ips


async def _read_csr(request: web.Request) -> x509.CertificateSigningRequest:
    # Read to the end (a body split across TLS records arrives in pieces), never more than
    # the limit plus one byte.
    body = b""
    while len(body) <= MAX_CSR_BYTES and (chunk := await request.content.read(
            MAX_CSR_BYTES + 1 - len(body))):
        body += chunk
    if len(body) > MAX_CSR_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_CSR_BYTES, actual_size=len(body))
    try:
        csr = x509.load_pem_x509_csr(body)
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be a PEM certificate request\n") from None
    if not csr.is_signature_valid:
        raise web.HTTPBadRequest(text="the certificate request's signature is not valid\n")
    return csr


def _pem_chain(cert_pem: bytes, cluster_pki: pki.ClusterPKI) -> web.Response:
    """The leaf then the CA, as k3s answers: one file a TLS stack loads as a chain."""
    return web.Response(body=cert_pem + cluster_pki.ca_cert.read_bytes(),
                        content_type="application/x-pem-file")


def pod_cidrs_of(nodes: Iterable[dict[str, object]]) -> dict[str, str]:
    """{node name: spec.podCIDR} of Node objects (those that have one)."""
    result: dict[str, str] = {}
    for node in nodes:
        metadata = node.get("metadata")
        spec = node.get("spec")
        if isinstance(metadata, dict) and isinstance(spec, dict) and spec.get("podCIDR"):
            result[str(metadata.get("name", ""))] = str(spec["podCIDR"])
    return result
