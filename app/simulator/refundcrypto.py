"""Refund notify ``req_info``: AES-256-ECB, PKCS#7, base64 (PROTOCOL.md §6.5).

The key is the lower-case hex MD5 of the API key, used as its 32 ASCII bytes. ECB is WeChat's
choice, not ours; the notify has no other authentication. (A private copy until the protocol
package's own helper lands.)
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def _cipher(api_key: str) -> Cipher[modes.ECB]:
    key = hashlib.md5(api_key.encode(), usedforsecurity=False).hexdigest().encode()
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 - WeChat's scheme


def encrypt_req_info(plaintext: bytes, api_key: str) -> str:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = _cipher(api_key).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def decrypt_req_info(req_info: str, api_key: str) -> bytes:
    decryptor = _cipher(api_key).decryptor()
    padded = decryptor.update(base64.b64decode(req_info)) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()
