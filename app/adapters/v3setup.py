"""The v3 gateway from settings: key files read and checked once, at start-up.

A key that does not load stops the service with the setting's name: a misconfigured merchant
must not find out at its first payment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from app.adapters.wechatpay_v3 import WeChatPayV3Gateway
from app.wechat.retry import RetryPolicy
from app.wechat.v3 import MerchantSigner, load_private_key, load_public_key
from app.wechat.v3client import WeChatPayV3Client
from app.wechat.v3trust import WeChatPayTrust

if TYPE_CHECKING:
    from app.config import Settings


class V3ConfigError(RuntimeError):
    """A v3 setting cannot be used; the message names it."""


def build_v3_gateway(settings: Settings, http: httpx.AsyncClient) -> WeChatPayV3Gateway | None:
    """The v3 gateway, or None while v3 is not configured."""
    if settings.v3_missing:
        return None
    assert settings.api_v3_key is not None and settings.mch_cert_serial_no is not None
    if len(settings.api_v3_key.get_secret_value().encode()) != 32:
        raise V3ConfigError("WXPAY_API_V3_KEY must be 32 bytes")
    private = _read("WXPAY_MCH_PRIVATE_KEY_PATH", settings.merchant_private_key_path)
    try:
        key = load_private_key(private)
    except (ValueError, TypeError) as exc:
        raise V3ConfigError(f"WXPAY_MCH_PRIVATE_KEY_PATH: not an RSA private key ({exc})") from None
    client = WeChatPayV3Client(
        http,
        api_base=settings.pay_api,
        appid=settings.appid,
        signer=MerchantSigner(settings.mch_id, settings.mch_cert_serial_no.upper(), key),
        trust=_trust(settings),
        api_v3_key=settings.api_v3_key,
        retry=RetryPolicy(max_attempts=settings.wechat_max_attempts),
    )
    refund_notify = settings.v3_refund_notify_address
    return WeChatPayV3Gateway(
        client, notify_url=settings.v3_notify_address, refund_notify_url=refund_notify
    )


def _trust(settings: Settings) -> WeChatPayTrust:
    """WeChat Pay's public key when configured; its platform certificates are accepted either
    way, downloaded when first needed (§8.6)."""
    if settings.v3_certificate_mode:
        return WeChatPayTrust()
    assert settings.wechatpay_public_key_id is not None
    public = _read("WXPAY_WECHATPAY_PUBLIC_KEY_PATH", settings.wechatpay_public_key_path)
    try:
        wechat_key = load_public_key(public)
    except (ValueError, TypeError) as exc:
        raise V3ConfigError(
            f"WXPAY_WECHATPAY_PUBLIC_KEY_PATH: not an RSA public key ({exc})"
        ) from None
    return WeChatPayTrust((settings.wechatpay_public_key_id, wechat_key))


def _read(setting: str, path: str | None) -> bytes:
    assert path is not None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise V3ConfigError(f"{setting}: cannot read {path} ({exc.strerror})") from None
