"""WeChat Pay v2 signatures and ``wx.requestPayment`` parameters (PROTOCOL.md §3, §4).

The rule, stated once: take every field except ``sign``, drop empty values (the string ``"0"``
is not empty), sort the names in ASCII order, join ``k=v`` with ``&`` using raw values, append
``&key=<API key>``, then hash with MD5 or HMAC-SHA256 (keyed with the same API key) and
upper-case the hex digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from collections.abc import Mapping
from enum import StrEnum

_NONCE_ALPHABET = string.ascii_letters + string.digits


class SignType(StrEnum):
    MD5 = "MD5"
    HMAC_SHA256 = "HMAC-SHA256"


def new_nonce(length: int = 32) -> str:
    """A random ``nonce_str``; WeChat allows at most 32 characters."""
    if not 1 <= length <= 32:
        raise ValueError("nonce length must be between 1 and 32")
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


def string_to_sign(fields: Mapping[str, object], api_key: str) -> str:
    """The exact text that is hashed (``stringSignTemp`` in WeChat's documentation)."""
    parts = [
        f"{name}={value}"
        for name, value in sorted(fields.items())
        if name != "sign" and value is not None and value != ""
    ]
    parts.append(f"key={api_key}")
    return "&".join(parts)


def sign(fields: Mapping[str, object], api_key: str, sign_type: SignType = SignType.MD5) -> str:
    """The v2 ``sign`` of ``fields``: 32 (MD5) or 64 (HMAC-SHA256) upper-case hex digits."""
    message = string_to_sign(fields, api_key).encode()
    if sign_type is SignType.HMAC_SHA256:
        return hmac.new(api_key.encode(), message, hashlib.sha256).hexdigest().upper()
    return hashlib.md5(message, usedforsecurity=False).hexdigest().upper()


def verify(fields: Mapping[str, str], api_key: str, sign_type: SignType = SignType.MD5) -> bool:
    """Whether ``fields["sign"]`` signs every other received field.

    Never a whitelist: unknown fields such as ``coupon_id_0`` take part, as WeChat signs them.
    The comparison is constant-time.
    """
    received = fields.get("sign")
    if not received:
        return False
    expected = sign(fields, api_key, sign_type)
    return hmac.compare_digest(expected.encode(), received.upper().encode())


def sign_type_of(fields: Mapping[str, str], default: SignType) -> SignType:
    """The sign type a message declares in ``sign_type``, else ``default``.

    Raises ``ValueError`` for a declared type WeChat does not define.
    """
    declared = fields.get("sign_type")
    return SignType(declared) if declared else default


def build_pay_params(
    *,
    appid: str,
    prepay_id: str,
    api_key: str,
    sign_type: SignType,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The five parameters ``wx.requestPayment`` takes for a v2 prepay order (PROTOCOL.md §4).

    ``appId`` is signed but not returned; ``signType`` must be the unified order's sign type;
    ``timeStamp`` is a string of Unix seconds.
    """
    params = {
        "timeStamp": str(int(time.time()) if timestamp is None else timestamp),
        "nonceStr": nonce or new_nonce(),
        "package": f"prepay_id={prepay_id}",
        "signType": sign_type.value,
    }
    params["paySign"] = sign({**params, "appId": appid}, api_key, sign_type)
    return params
