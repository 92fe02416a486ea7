"""WeChat Pay v3 messages: the transaction and refund as the API and the notifies report them,
and the notify envelope with its AES-256-GCM resource (PROTOCOL.md §8.5, §8.7).

``signed_notify`` makes a standalone signed notify, for tests of a service's v3 notify route."""

from __future__ import annotations

import base64
import secrets
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.simulator.state import SimOrder, SimRefund, SimTradeState
from app.simulator.v3envelope import SignatureFlaw, WeChatPayKeys, encode_json
from app.simulator.v3keys import V3Config, WeChatPayKey
from app.wechat.timefmt import to_rfc3339

_NONCE_ALPHABET = string.ascii_letters + string.digits
TRADE_STATE_DESC_V3 = {
    SimTradeState.NOTPAY: "未支付",
    SimTradeState.SUCCESS: "支付成功",
    SimTradeState.CLOSED: "已关闭",
    SimTradeState.PAYERROR: "支付失败",
    SimTradeState.REFUND: "转入退款",
}
REFUND_EVENTS = {
    "SUCCESS": "REFUND.SUCCESS",
    "ABNORMAL": "REFUND.ABNORMAL",
    "CLOSED": "REFUND.CLOSED",
}
REFUND_SUMMARIES = {"SUCCESS": "退款成功", "ABNORMAL": "退款异常", "CLOSED": "退款关闭"}


def transaction_resource(
    order: SimOrder, mchid: str, *, total: int | None = None
) -> dict[str, Any]:
    """The transaction as order query answers it and the payment notify carries it (§8.5);
    ``total`` replaces ``amount.total`` (the ``tamper_amount`` fault)."""
    amount: dict[str, Any] = {
        "total": order.total_fee if total is None else total,
        "currency": "CNY",
        "payer_currency": "CNY",
    }
    resource: dict[str, Any] = {
        "appid": order.appid,
        "mchid": mchid,
        "out_trade_no": order.out_trade_no,
        "trade_state": order.state.value,
        "trade_state_desc": TRADE_STATE_DESC_V3[order.state],
        "attach": order.attach or "",
        "amount": amount,
    }
    if order.is_paid and order.time_end is not None:
        amount["payer_total"] = order.total_fee
        resource |= {
            "transaction_id": order.transaction_id,
            "trade_type": "JSAPI",
            "bank_type": "OTHERS",
            "success_time": to_rfc3339(order.time_end),
            "payer": {"openid": order.openid},
        }
    return resource


def refund_resource(order: SimOrder, refund: SimRefund) -> dict[str, Any]:
    """A refund as the refund API and refund query answer it (§8.7)."""
    resource: dict[str, Any] = {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": to_rfc3339(refund.created_at),
        "status": refund.status.value,
        "funds_account": "AVAILABLE",
        "amount": _refund_amount(order, refund),
    }
    if refund.success_time is not None:
        resource["success_time"] = to_rfc3339(refund.success_time)
    return resource


def refund_notice(order: SimOrder, refund: SimRefund, mchid: str) -> dict[str, Any]:
    """What a refund notify carries encrypted (§8.7): ``refund_status``, no appid."""
    notice: dict[str, Any] = {
        "mchid": mchid,
        "out_trade_no": order.out_trade_no,
        "transaction_id": order.transaction_id,
        "out_refund_no": refund.out_refund_no,
        "refund_id": refund.refund_id,
        "refund_status": refund.status.value,
        "user_received_account": "支付用户零钱",
        "amount": _refund_amount(order, refund),
    }
    if refund.success_time is not None:
        notice["success_time"] = to_rfc3339(refund.success_time)
    return notice


def _refund_amount(order: SimOrder, refund: SimRefund) -> dict[str, Any]:
    return {
        "total": order.total_fee,
        "refund": refund.refund_fee,
        "payer_total": order.total_fee,
        "payer_refund": refund.refund_fee,
        "settlement_total": order.total_fee,
        "settlement_refund": refund.refund_fee,
        "discount_refund": 0,
        "currency": "CNY",
    }


def encrypt_resource(
    plaintext: bytes, api_v3_key: str, *, associated_data: str, original_type: str
) -> dict[str, str]:
    """AEAD_AES_256_GCM with the APIv3 key; a 12-character nonce; the tag trails (§8.5)."""
    nonce = "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(12))
    sealed = AESGCM(api_v3_key.encode()).encrypt(
        nonce.encode(), plaintext, associated_data.encode()
    )
    return {
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(sealed).decode(),
        "associated_data": associated_data,
        "original_type": original_type,
        "nonce": nonce,
    }


def notify_body(
    *,
    event_type: str,
    summary: str,
    original_type: str,
    resource: dict[str, Any],
    api_v3_key: str,
    now: datetime,
) -> bytes:
    """A v3 notify: the envelope in clear, the resource encrypted (§8.5)."""
    sealed = encrypt_resource(
        encode_json(resource),
        api_v3_key,
        associated_data=original_type,
        original_type=original_type,
    )
    return encode_json(
        {
            "id": "EV-" + secrets.token_hex(12),
            "create_time": to_rfc3339(now),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": sealed,
        }
    )


def certificate_entry(key: WeChatPayKey, api_v3_key: str) -> dict[str, Any]:
    """One platform certificate as ``GET /v3/certificates`` lists it, the PEM encrypted with
    the APIv3 key under ``associated_data`` ``certificate`` (§8.6)."""
    assert key.certificate_pem is not None
    certificate = x509.load_pem_x509_certificate(key.certificate_pem)
    sealed = encrypt_resource(
        key.certificate_pem, api_v3_key, associated_data="certificate", original_type="certificate"
    )
    del sealed["original_type"]  # not part of encrypt_certificate
    return {
        "serial_no": key.serial,
        "effective_time": to_rfc3339(certificate.not_valid_before_utc),
        "expire_time": to_rfc3339(certificate.not_valid_after_utc),
        "encrypt_certificate": sealed,
    }


def signed_notify(
    config: V3Config,
    mchid: str,
    resource: Mapping[str, Any],
    *,
    event_type: str = "TRANSACTION.SUCCESS",
    flaw: SignatureFlaw | None = None,
) -> tuple[dict[str, str], bytes]:
    """A v3 notify (headers, body) as the simulator would send it, for tests of a notify route
    that need one without running a payment: ``resource`` is the transaction (§8.5) or, for a
    ``REFUND.*`` event, the refund (§8.7); ``flaw`` spoils the signature on purpose."""
    refund = event_type.startswith("REFUND.")
    outcome = event_type.removeprefix("REFUND.")
    body = notify_body(
        event_type=event_type,
        summary=REFUND_SUMMARIES.get(outcome, "退款") if refund else "支付成功",
        original_type="refund" if refund else "transaction",
        resource=dict(resource),
        api_v3_key=config.api_v3_key,
        now=datetime.now(UTC),
    )
    headers = WeChatPayKeys(config, mchid).signature_headers(body, flaw=flaw)
    return {"Content-Type": "application/json", **headers}, body
