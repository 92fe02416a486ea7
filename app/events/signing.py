"""Webhook signatures, Stripe's scheme: ``Wxpay-Signature: t=<unix>,v1=<hex>[,v1=<hex>]``
where each ``v1`` is HMAC-SHA256 keyed with a secret's UTF-8 bytes over ``"<t>.<raw body>"``.
During a rotation there is one ``v1`` per valid secret. Pure functions: no clock, no I/O."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "Wxpay-Signature"
EVENT_ID_HEADER = "Wxpay-Event-Id"


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The header value for ``body`` sent at ``timestamp``, signed with every secret given."""
    signatures = (f"v1={sign_webhook(secret, timestamp, body)}" for secret in secrets)
    return ",".join([f"t={timestamp}", *signatures])


def verify_webhook(header: str, body: bytes, secret: str, now: int, tolerance: int = 300) -> bool:
    """Whether one ``v1`` in ``header`` is ``secret``'s signature of ``body`` and its ``t`` is
    within ``tolerance`` seconds of ``now`` (an old signature replayed is refused)."""
    parts = [item.partition("=") for item in header.split(",")]
    stamps = [value for key, _, value in parts if key == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    expected = sign_webhook(secret, int(stamps[0]), body)
    return any(key == "v1" and hmac.compare_digest(value, expected) for key, _, value in parts)
