"""Refund notify ``req_info``: AES-256-ECB with PKCS#7, keyed from the API key (PROTOCOL.md §6.5).

The key is the 32 ASCII characters of the lowercase hex MD5 of the APIv2 key, used as raw
AES-256 key bytes. ECB has no integrity: a ``req_info`` that decrypts and unpads cleanly is
trusted only because the API key is secret, so callers still match it against their records.
``encrypt_req_info`` exists for the simulator, which plays WeChat.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_BLOCK_BITS = 128


class ReqInfoInvalid(ValueError):
    """``req_info`` is not base64, not whole AES blocks, or does not unpad under our key."""


def refund_notify_key(api_key: str) -> bytes:
    """The AES-256 key: lowercase hex MD5 of the API key, as its 32 ASCII bytes."""
    return hashlib.md5(api_key.encode(), usedforsecurity=False).hexdigest().encode("ascii")


def decrypt_req_info(req_info: str, api_key: str) -> bytes:
    """The plaintext (a ``<root>`` XML document) inside a refund notify's ``req_info``.

    base64-decode, AES-256-ECB decrypt, strip PKCS#7 padding. Raises ``ReqInfoInvalid`` when
    any step fails, which is what a wrong key or a forged value looks like.
    """
    try:
        ciphertext = base64.b64decode(req_info, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReqInfoInvalid("req_info is not base64") from exc
    if not ciphertext or len(ciphertext) % (_BLOCK_BITS // 8):
        raise ReqInfoInvalid("req_info is not a whole number of AES blocks")
    decryptor = _cipher(api_key).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(_BLOCK_BITS).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise ReqInfoInvalid("req_info does not decrypt under this API key") from exc


def encrypt_req_info(plaintext: bytes, api_key: str) -> str:
    """``plaintext`` as WeChat would send it in ``req_info``: PKCS#7, AES-256-ECB, base64."""
    padder = padding.PKCS7(_BLOCK_BITS).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = _cipher(api_key).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def _cipher(api_key: str) -> Cipher[modes.ECB]:
    # ECB is WeChat's choice for this message, not ours; nothing else here uses it.
    return Cipher(algorithms.AES(refund_notify_key(api_key)), modes.ECB())  # noqa: S305
