"""The join token and the pod CIDRs of joining nodes (``kubling.apiserver.join``)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from kubling.apiserver import join, pki


def test_token_is_k3s_format_pinned_to_the_ca_and_stable(tmp_path: Path) -> None:
    cluster = pki.ensure_pki(tmp_path / "tls", hostnames=["h"], ips=["127.0.0.1"])
    token, created = join.ensure_token(tmp_path, cluster.ca_cert)
    assert created
    parsed = join.parse_token(token)
    assert parsed.ca_hash == hashlib.sha256(cluster.ca_cert.read_bytes()).hexdigest()
    assert token == f"K10{parsed.ca_hash}::server:{parsed.secret}" and len(parsed.secret) == 32
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
    assert join.ensure_token(tmp_path, cluster.ca_cert) == (token, False)


def test_parse_token_accepts_a_bare_secret_and_rejects_garbage() -> None:
    assert join.parse_token("  s3cret\n") == join.JoinToken(ca_hash="", secret="s3cret")
    with pytest.raises(ValueError, match="empty"):
        join.parse_token("  ")
    with pytest.raises(ValueError, match="malformed"):
        join.parse_token("K10abc::server:x")


def test_joined_nodes_get_free_subnets_after_the_servers_own() -> None:
    async def scenario() -> list[str]:
        cidrs = join.NodeCIDRs("10.42.0.0/16")
        taken = {"server": "10.42.0.0/24", "old": "10.42.1.0/24"}
        return [await cidrs.assign("a", taken), await cidrs.assign("b", taken),
                await cidrs.assign("a", taken), await cidrs.assign("old", taken)]

    assert asyncio.run(scenario()) == ["10.42.2.0/24", "10.42.3.0/24", "10.42.2.0/24",
                                       "10.42.1.0/24"]


def test_full_lower_half_is_an_error_not_a_collision() -> None:
    async def scenario() -> None:
        cidrs = join.NodeCIDRs("10.42.0.0/22")  # four /24s: the lower half is 0 and 1
        await cidrs.assign("a", {})
        await cidrs.assign("b", {})

    with pytest.raises(web.HTTPServiceUnavailable):
        asyncio.run(scenario())


def test_certificates_for_a_csr_key_carry_the_node_identity(tmp_path: Path) -> None:
    cluster = pki.ensure_pki(tmp_path / "tls", hostnames=["h"], ips=["127.0.0.1"])
    key = ec.generate_private_key(ec.SECP256R1())
    pem = pki.issue_for_public_key(cluster, key.public_key(), common_name="system:node:n1",
                                   organizations=["system:nodes"], client=False,
                                   dns_names=["n1"], ips=["10.0.0.5"])
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.public_key() == key.public_key()
    assert pki.user_from_certificate(cert) == ("system:node:n1", ["system:nodes"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["n1"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(cluster.ca_cert.read_bytes()))
