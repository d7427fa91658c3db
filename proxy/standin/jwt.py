"""RS256 JSON Web Tokens for the stand-in's access tokens (RFC 7515, 7517, 7519, 7638).

Only what the stand-in needs: compact serialization, one signing key, its JWK Set, and a verifier
that distinguishes "not a JWT at all" (:class:`MalformedTokenError`) from "a JWT this key did not sign"
(:class:`InvalidTokenError`), because the gateway rejects the two with different bodies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ALGORITHM = "RS256"
TOKEN_TYPE = "at+jwt"


class MalformedTokenError(ValueError):
    """The value is not a compact JWT: wrong number of parts, bad base64url, or a header that is not a JSON object."""


class InvalidTokenError(ValueError):
    """The value is a JWT, but its algorithm, key id, signature or payload is not acceptable."""


def encode_segment(data: bytes) -> str:
    """Encode bytes as unpadded base64url, as every JWT segment is."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_segment(segment: str) -> bytes:
    """Decode one unpadded base64url JWT segment, raising ``binascii.Error`` or ``ValueError`` when invalid."""
    if "=" in segment:
        raise ValueError("JWT segments carry no base64 padding")
    padded = segment + "=" * (-len(segment) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def compact_json(value: Any) -> bytes:
    """Serialize like WSO2 does: no spaces, keys in insertion order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _int_to_segment(number: int) -> str:
    return encode_segment(number.to_bytes((number.bit_length() + 7) // 8, "big"))


class SigningKey:
    """An RSA key pair that signs and verifies RS256 tokens and publishes itself as a JWK.

    The key id is the key's RFC 7638 thumbprint, so it changes whenever a new key is generated.
    """

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private_key = private_key
        self._public_key = private_key.public_key()
        numbers = self._public_key.public_numbers()
        self._n = _int_to_segment(numbers.n)
        self._e = _int_to_segment(numbers.e)
        # RFC 7638: SHA-256 over the required members in lexicographic order, without spaces.
        thumbprint_input = compact_json({"e": self._e, "kty": "RSA", "n": self._n})
        self.kid = encode_segment(hashlib.sha256(thumbprint_input).digest())

    @classmethod
    def generate(cls, key_size: int = 2048) -> SigningKey:
        """Generate a fresh key pair. 2048 bits is the smallest size RS256 allows (RFC 7518 section 3.3)."""
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=key_size))

    def public_jwk(self) -> dict[str, str]:
        return {"kty": "RSA", "use": "sig", "alg": ALGORITHM, "kid": self.kid, "n": self._n, "e": self._e}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.public_jwk()]}

    def sign(self, claims: dict[str, Any]) -> str:
        """Return ``claims`` as a signed compact JWT with the header ``{"typ":"at+jwt","alg":"RS256","kid":...}``."""
        header = {"typ": TOKEN_TYPE, "alg": ALGORITHM, "kid": self.kid}
        signing_input = f"{encode_segment(compact_json(header))}.{encode_segment(compact_json(claims))}"
        signature = self._private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{encode_segment(signature)}"

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a token this key signed.

        Raises:
            MalformedTokenError: the value does not parse as a compact JWT.
            InvalidTokenError: the algorithm, ``kid`` or signature does not match this key, or
                the payload is not a JSON object.
        """
        header = parse_header(token)
        header_segment, payload_segment, signature_segment = token.split(".")

        if header.get("alg") != ALGORITHM:
            raise InvalidTokenError(f"algorithm {header.get('alg')!r} is not {ALGORITHM}")
        if header.get("kid") != self.kid:
            raise InvalidTokenError(f"key id {header.get('kid')!r} is unknown")

        try:
            signature = decode_segment(signature_segment)
            self._public_key.verify(
                signature,
                f"{header_segment}.{payload_segment}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (binascii.Error, ValueError, InvalidSignature) as exc:
            raise InvalidTokenError("signature does not verify") from exc

        try:
            claims = json.loads(decode_segment(payload_segment))
        except (binascii.Error, ValueError) as exc:
            raise InvalidTokenError("payload is not base64url-encoded JSON") from exc
        if not isinstance(claims, dict):
            raise InvalidTokenError("payload is not a JSON object")
        return claims


def parse_header(token: str) -> dict[str, Any]:
    """Return the JOSE header of a compact JWT, or raise :class:`MalformedTokenError`.

    This is the check Choreo Connect's enforcer makes before anything else. A value that fails it
    gets "Not a JWT token. Failed to decode the token header.".
    """
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise MalformedTokenError("a compact JWT has three dot-separated parts")
    try:
        header = json.loads(decode_segment(parts[0]))
    except (binascii.Error, ValueError) as exc:
        raise MalformedTokenError("the header is not base64url-encoded JSON") from exc
    if not isinstance(header, dict):
        raise MalformedTokenError("the header is not a JSON object")
    return header
