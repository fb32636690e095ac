"""Compact JSON Web Tokens (RFC 7519), signed ES256 or RS256: what service-account tokens are.

Only the JWS compact form with an asymmetric signature is made or accepted; ``none`` and the
HMAC algorithms are refused outright, so a token can never choose a weaker check than the
key it is verified with. The claims are not interpreted here (expiry, audience and issuer
are the caller's rules, ``kubling.api.satoken``): this module answers only "who signed these
bytes". Built on ``cryptography`` alone, as the whole job is sixty lines.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeAlias

import orjson
from cryptography import exceptions
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: The coordinate size of a P-256 signature half (JWS wants r || s, not DER).
_ES256_HALF = 32


class InvalidToken(ValueError):
    """Not a token this key signed: malformed, another algorithm, or a bad signature."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:
        raise InvalidToken("malformed token") from err


def algorithm(key: PrivateKey | PublicKey) -> str:
    """The JWS ``alg`` of a key: ES256 for P-256, RS256 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("only P-256 elliptic-curve keys can sign ES256 tokens")
        return "ES256"
    return "RS256"


def load_private_key(pem: bytes) -> PrivateKey:
    """A PEM signing key; ``ValueError`` unless it is RSA or ECDSA P-256."""
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey) or (
            isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
        return key
    raise ValueError("service-account keys must be RSA or ECDSA P-256")


def key_id(key: PublicKey) -> str:
    """Upstream's ``kid``: the unpadded base64url SHA-256 of the DER public key, so that a
    verifier holding several keys (after a rotation) can pick the right one."""
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return _b64(digest.finalize())


def encode(claims: dict[str, Any], key: PrivateKey, *, kid: str = "") -> str:
    """The signed compact token of ``claims``."""
    header: dict[str, str] = {"alg": algorithm(key)}
    if kid:
        header["kid"] = kid
    signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}".encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = utils.decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(_ES256_HALF, "big") + s.to_bytes(_ES256_HALF, "big")
    return f"{signing_input.decode()}.{_b64(signature)}"


def decode(token: str, key: PublicKey) -> dict[str, Any]:
    """The claims of a token signed by ``key``; ``InvalidToken`` for anything else."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed token")
    try:
        header = orjson.loads(_unb64(parts[0]))
    except orjson.JSONDecodeError as err:
        raise InvalidToken("malformed token header") from err
    if not isinstance(header, dict) or header.get("alg") != algorithm(key):
        raise InvalidToken("unexpected signing algorithm")
    signing_input, signature = f"{parts[0]}.{parts[1]}".encode(), _unb64(parts[2])
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            if len(signature) != 2 * _ES256_HALF:
                raise InvalidToken("invalid signature")
            der = utils.encode_dss_signature(int.from_bytes(signature[:_ES256_HALF], "big"),
                                             int.from_bytes(signature[_ES256_HALF:], "big"))
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except exceptions.InvalidSignature as err:
        raise InvalidToken("invalid signature") from err
    try:
        claims = orjson.loads(_unb64(parts[1]))
    except orjson.JSONDecodeError as err:
        raise InvalidToken("malformed token claims") from err
    if not isinstance(claims, dict):
        raise InvalidToken("malformed token claims")
    return claims
