"""Server-side secrets: encrypting ``session_key`` at rest and hashing bearer tokens.

Both are keyed from ``WXPAY_SECRET_KEY`` through HKDF, so one configured secret yields
independent keys per purpose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SEALED_PREFIX = "v1:"


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose``, derived from the server secret."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
    return hkdf.derive(secret.encode())


class SecretBox:
    """AES-256-GCM for small secrets stored in the database (``session_key``)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, *, context: str) -> str:
        """Encrypt ``plaintext`` bound to ``context`` (e.g. the openid), as printable text."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return _SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, token: str, *, context: str) -> str:
        """The plaintext of ``seal``; raises ``ValueError`` if it was altered or moved."""
        if not token.startswith(_SEALED_PREFIX):
            raise ValueError("unknown sealed-secret format")
        raw = base64.b64decode(token[len(_SEALED_PREFIX) :])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag as exc:
            raise ValueError("sealed secret failed authentication") from exc


def new_token() -> str:
    """An opaque bearer token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_token(token: str, key: bytes) -> str:
    """What the database keeps instead of the token: a keyed hash, useless if leaked alone."""
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()
