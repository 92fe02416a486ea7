"""The v3 envelope: the merchant's ``Authorization`` checked, every answer and notify signed.

WeChat Pay v3 (PROTOCOL.md §8.2, §8.3) answers with an HTTP status and JSON; errors are
``{"code", "message"}``. It refuses a request whose signature does not verify with the merchant's
public key with ``401 SIGN_ERROR``, and signs what it sends (answers, errors and notifies alike)
over ``TIMESTAMP\\nNONCE\\nBODY\\n`` with the ``Wechatpay-*`` headers.

Signature timestamps are real Unix time, not the simulator clock: that clock moves forward for
validity periods, while both sides check signatures against their own wall clocks.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from app.simulator.v3keys import V3Config, WeChatPayKey
from app.wechat.signing import new_nonce
from app.wechat.v3 import (
    AUTH_SCHEME,
    MAX_CLOCK_SKEW_SECONDS,
    load_private_key,
    load_public_key,
    request_message,
    rsa_sign,
)

SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
_AUTH_PARAM = re.compile(r'([a-z_]+)="([^"]*)"')
_AUTH_PARAMS = ("mchid", "nonce_str", "timestamp", "serial_no", "signature")


class V3Error(Exception):
    """An error answer: WeChat's HTTP status and ``code``, with a human ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message}


class SignatureFlaw(StrEnum):
    """How a signature may be made wrong on purpose (the fault switches of the same names)."""

    BAD_SIGNATURE = "bad_signature"  # valid base64, does not verify
    STALE_TIMESTAMP = "stale_timestamp"  # verifies, but the timestamp is too old
    SIGNTEST_PROBE = "signtest_probe"  # WeChat's deliberate probe: must be refused


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """JSON as WeChat sends it: UTF-8, Chinese not escaped, no spaces."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class WeChatPayKeys:
    """WeChat Pay's keys at run time: the one signing now, rotation, and the merchant's key."""

    def __init__(self, config: V3Config, mchid: str) -> None:
        self.config = config
        self._mchid = mchid
        self._signing = [load_private_key(key.private_key_pem) for key in config.signing_keys]
        self._merchant_key = load_public_key(config.merchant_public_key_pem)
        self._active = 0

    @property
    def active(self) -> WeChatPayKey:
        return self.config.signing_keys[self._active]

    def published(self) -> list[WeChatPayKey]:
        """What ``/v3/certificates`` lists: every certificate used so far, the newest last, so
        the old one stays listed through the overlap after a rotation (§8.6)."""
        return list(self.config.signing_keys[: self._active + 1])

    def rotate(self) -> WeChatPayKey:
        """Sign with the next platform certificate from now on (certificate mode only)."""
        if not self.config.certificate_mode:
            raise ValueError("rotation needs certificate mode")
        if self._active + 1 >= len(self._signing):
            raise ValueError("no further platform certificate is configured")
        self._active += 1
        return self.active

    def reset(self) -> None:
        self._active = 0

    def signature_headers(
        self, body: bytes, *, flaw: SignatureFlaw | None = None, stale_seconds: float = 600
    ) -> dict[str, str]:
        """The ``Wechatpay-*`` headers over ``body`` as sent, made wrong as ``flaw`` says."""
        timestamp = int(time.time())
        if flaw is SignatureFlaw.STALE_TIMESTAMP:
            timestamp -= max(int(stale_seconds), MAX_CLOCK_SKEW_SECONDS)
        nonce = new_nonce()
        message = f"{timestamp}\n{nonce}\n{body.decode()}\n"
        signature = rsa_sign(message, self._signing[self._active])
        if flaw is SignatureFlaw.BAD_SIGNATURE:
            signature = ("B" if signature[0] == "A" else "A") + signature[1:]
        elif flaw is SignatureFlaw.SIGNTEST_PROBE:
            signature = SIGNTEST_PREFIX + base64.b64encode(secrets.token_bytes(256)).decode()
        return {
            "Wechatpay-Timestamp": str(timestamp),
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature,
            "Wechatpay-Serial": self.active.serial,
            "Wechatpay-Signature-Type": AUTH_SCHEME,
            "Request-ID": str(uuid.uuid4()),
        }

    def verify_authorization(
        self, header: str | None, *, method: str, url: str, body: bytes
    ) -> None:
        """``401 SIGN_ERROR`` unless ``header`` is our merchant's signature over this request.

        Rules (§8.2): scheme ``WECHATPAY2-SHA256-RSA2048``; ``mchid``, ``nonce_str``,
        ``timestamp``, ``serial_no`` and ``signature`` present; our mchid and merchant serial;
        the timestamp within five minutes of now; RSA-SHA256 over
        ``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` with the merchant's public key.
        """
        params = _authorization_params(header)
        if params["mchid"] != self._mchid:
            raise _sign_error("Authorization中的商户号与请求不匹配")
        if params["serial_no"].upper() != self.config.merchant_serial_no.upper():
            raise _sign_error("商户证书序列号有误。请使用签名私钥匹配的证书序列号")
        timestamp = params["timestamp"]
        if not timestamp.isascii() or not timestamp.isdigit():
            raise _sign_error("timestamp格式错误")
        if abs(time.time() - int(timestamp)) >= MAX_CLOCK_SKEW_SECONDS:
            raise _sign_error("请求的时间戳已过期")
        message = request_message(method, url, timestamp, params["nonce_str"], body)
        self._check_signature(params["signature"], message)

    def _check_signature(self, signature: str, message: str) -> None:
        try:
            raw = base64.b64decode(signature, validate=True)
            self._merchant_key.verify(raw, message.encode(), padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature):
            raise _sign_error("签名错误，请检查后再试") from None


def _sign_error(message: str) -> V3Error:
    return V3Error(401, "SIGN_ERROR", message)


def _authorization_params(header: str | None) -> dict[str, str]:
    scheme, _, rest = (header or "").strip().partition(" ")
    if scheme != AUTH_SCHEME:
        raise _sign_error("错误的签名方式，请使用WECHATPAY2-SHA256-RSA2048")
    params = dict(_AUTH_PARAM.findall(rest))
    for name in _AUTH_PARAMS:
        if not params.get(name):
            raise _sign_error(f"Authorization中缺少{name}")
    return params
