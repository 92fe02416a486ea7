"""WeChat Pay API v3 primitives (PROTOCOL.md §8): request signatures, verification of WeChat's
signatures, the AES-256-GCM resources of notifies, and the mini-program's v3 ``paySign``.

Pure functions of their inputs, no I/O. The v3 HTTP client (``app.wechat.v3client``), its
gateway adapter (``app.adapters.wechatpay_v3``) and the simulator's v3 endpoints are built on them.

- Requests are signed with the merchant's RSA key over
  ``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` (§8.2): sign exactly the bytes sent.
- WeChat signs ``TIMESTAMP\\nNONCE\\nBODY\\n`` (§8.3); a signature older or newer than five
  minutes is refused, as are WeChat's deliberate ``WECHATPAY/SIGNTEST/`` probes.
- Resources are AES-256-GCM with the 32-byte APIv3 key; the tag trails the ciphertext (§8.5).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.wechat.signing import new_nonce

AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
MAX_CLOCK_SKEW_SECONDS = 300
_SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureRejected(ValueError):
    """WeChat's signature is missing, stale, a probe, or does not verify."""


class ResourceUnreadable(ValueError):
    """An encrypted resource does not decrypt with our APIv3 key (forged or not ours)."""


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the merchant API key must be an RSA private key")
    return key


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("WeChat's public key must be an RSA public key")
    return key


def rsa_sign(message: str, key: rsa.RSAPrivateKey) -> str:
    """base64 of RSASSA-PKCS1-v1_5 with SHA-256 over the UTF-8 message."""
    signature = key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def request_message(method: str, url: str, timestamp: str, nonce: str, body: bytes) -> str:
    """What a v3 request signature covers (§8.2); ``url`` is path and query, no host."""
    return f"{method.upper()}\n{url}\n{timestamp}\n{nonce}\n{body.decode()}\n"


@dataclass(frozen=True, slots=True)
class MerchantSigner:
    """Our side of v3 signing: merchant id, API certificate serial and private key."""

    mchid: str
    serial_no: str
    key: rsa.RSAPrivateKey

    def authorization(
        self,
        method: str,
        url: str,
        body: bytes,
        *,
        timestamp: str,
        nonce: str | None = None,
    ) -> str:
        """The ``Authorization`` header for one request; ``body`` is the exact bytes sent."""
        nonce = nonce or new_nonce()
        signature = rsa_sign(request_message(method, url, timestamp, nonce, body), self.key)
        return (
            f'{AUTH_SCHEME} mchid="{self.mchid}",nonce_str="{nonce}",'
            f'timestamp="{timestamp}",serial_no="{self.serial_no}",signature="{signature}"'
        )

    def pay_params(
        self, appid: str, prepay_id: str, *, timestamp: str, nonce: str | None = None
    ) -> dict[str, str]:
        """What ``wx.requestPayment`` takes for a v3 order (§8.4): ``signType`` is ``RSA`` and is
        not itself signed."""
        nonce = nonce or new_nonce()
        package = f"prepay_id={prepay_id}"
        message = f"{appid}\n{timestamp}\n{nonce}\n{package}\n"
        return {
            "timeStamp": timestamp,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": rsa_sign(message, self.key),
        }


def verify_wechat_signature(
    *,
    timestamp: str,
    nonce: str,
    body: bytes,
    signature: str,
    key: rsa.RSAPublicKey,
    now: int,
) -> None:
    """Check a response's or notify's ``Wechatpay-*`` headers over the raw body (§8.3); raises
    ``SignatureRejected`` with the reason."""
    if not (timestamp and nonce and signature):
        raise SignatureRejected("Wechatpay-Timestamp, -Nonce or -Signature is missing")
    if signature.startswith(_SIGNTEST_PREFIX):
        raise SignatureRejected("a WeChat signature-check probe")
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not _TIMESTAMP.fullmatch(timestamp) or abs(now - int(timestamp)) >= MAX_CLOCK_SKEW_SECONDS:
        raise SignatureRejected("Wechatpay-Timestamp is more than five minutes away from now")
    try:
        raw = base64.b64decode(signature, validate=True)
        message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, InvalidSignature):  # binascii.Error is a ValueError; so is non-ASCII
        raise SignatureRejected("the signature does not verify") from None


def decrypt_resource(
    api_v3_key: str, *, nonce: str, associated_data: str, ciphertext: str
) -> bytes:
    """An AEAD_AES_256_GCM resource of a v3 notify or certificate (§8.5)."""
    key = api_v3_key.encode()
    if len(key) != 32:
        raise ValueError("the APIv3 key is 32 bytes")
    try:
        data = base64.b64decode(ciphertext, validate=True)
        return AESGCM(key).decrypt(nonce.encode(), data, associated_data.encode())
    except (binascii.Error, InvalidTag, ValueError):
        raise ResourceUnreadable("the resource does not decrypt with our APIv3 key") from None
